# Set-up and everyday commands. Only Python 3.10+ is needed; `make` creates .venv itself.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= demo-output
# The demo first segments this real CT with the bundled model (skipped where it is absent).
REAL_CT ?= ../shared/data/real-ct/lowdose_abdomen_4mm.nii.gz
REAL_CT_LABELS ?= ../shared/data/real-ct/lowdose_abdomen_4mm_kidneys.nii.gz

.PHONY: setup demo test test-all lint bench wheel

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/install-torch.sh
	$(PYTHON) -m venv $(VENV)
	bash scripts/install-torch.sh $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

demo: setup
	$(BIN)/kidneyseg demo --out $(OUT) \
		$(if $(wildcard $(REAL_CT)),--real-ct $(REAL_CT)) \
		$(if $(wildcard $(REAL_CT_LABELS)),--real-ct-labels $(REAL_CT_LABELS))

# Tests run in this many processes (pytest-xdist; 0: in this one).
TEST_WORKERS ?= 2

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

test-all: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) -m ""

wheel: setup
	bash scripts/check-wheel.sh $(BIN)/python

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check src tests benchmarks scripts
