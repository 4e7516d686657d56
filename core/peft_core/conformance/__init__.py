"""The shared conformance suite: checks every method plugin must pass (importable without pytest)."""
