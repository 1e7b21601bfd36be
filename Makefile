# Two commands do all the set-up on a fresh machine:
#   make run    install, prepare PhysioNet 2012, then train and evaluate HyMaTE with a report (the main job)
#   make test   install, then run the linter and the test suite (what .ci/run calls)
# Data: $HYMATE_DATA if set, else ../shared/data if present, else downloaded from PhysioNet.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SHARED := $(wildcard ../shared/data)
export HYMATE_DATA ?= $(if $(SHARED),$(abspath $(SHARED)),)

.PHONY: install run test lint bench clean

install: $(VENV)/.installed

# torch is installed first and pinned: an unpinned torch pulls several GB of CUDA wheels.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

run: install
	$(BIN)/hymate prepare physionet2012 --download
	$(BIN)/hymate describe physionet2012
	$(BIN)/hymate train physionet2012 --protocol strats --seeds 0 --out reports/p12-strats

lint: install
	$(BIN)/ruff check src tests benchmarks

test: lint
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/prepare.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
