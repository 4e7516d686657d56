"""``python -m benchmarks``: run the side-by-side benchmarks and print the table."""

from .harness import main

raise SystemExit(main())
