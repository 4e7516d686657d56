# peft-core developer entry points. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch lies on this machine's disk; any other spec pulls a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
PLUGINS := $(sort $(dir $(wildcard plugins/*/pyproject.toml)))
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast docs bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements-test.txt $(wildcard plugins/*/pyproject.toml)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -r requirements-test.txt -e . $(addprefix -e ,$(PLUGINS))
	touch $(STAMP)

DEMO_RUN ?= runs/demo
demo: setup
	rm -rf $(DEMO_RUN)
	$(BIN)/peft-core train --out $(DEMO_RUN) --target-modules all-linear --r 16 --lora-alpha 32 --prompt "The miller"
	$(BIN)/peft-core inspect $(DEMO_RUN)/adapter
	$(BIN)/peft-core merge $(DEMO_RUN)/base_model $(DEMO_RUN)/adapter $(DEMO_RUN)/merged --prompt "The baker"
	$(BIN)/peft-core plot $(DEMO_RUN)

test: setup
	PEFT_CORE_STRICT_PLUGINS=1 $(BIN)/python -m pytest -q

docs: setup
	$(BIN)/mkdocs build --strict

bench: setup
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) site build *.egg-info
