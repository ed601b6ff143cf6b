# Two commands for a newcomer: `make demo` and `make test` (README).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all
CONFIG ?= config.yaml
TEST_WORKERS ?= 2
EXP = $(shell $(BIN)/python -c "import yaml,sys; print(yaml.safe_load(open('$(CONFIG)'))['experiment'])")

.PHONY: venv demo test test-fast lint bench clean

$(BIN)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.lock 2>&1 | grep -v '^WARNING: Location' || true
	$(BIN)/python -m pip install -q --no-deps -e . 2>&1 | grep -v '^WARNING: Location' || true
	$(BIN)/python -c "import torch, zarr, snakemake, pycocotools, cv2, pyarrow, maskless"
	touch $@

venv: $(BIN)/.installed

# The whole pipeline on the embedded synthetic dataset (or CONFIG=...).
demo: venv
	$(BIN)/snakemake --profile profiles/local --cores $(CORES) --configfile $(CONFIG)
	@echo
	@echo "metrics table:   results/$(EXP)/tables/metrics.md"
	@echo "metrics parquet: results/$(EXP)/eval/*/metrics.parquet"
	@echo "paper tables:    results/$(EXP)/tables/paper/ (markdown, CSV, LaTeX)"
	@echo "run record:      results/$(EXP)/record.json"
	@echo "HTML report:     $(BIN)/snakemake --configfile $(CONFIG) --report report.html"
	@cat results/$(EXP)/tables/metrics.md 2>/dev/null || true

test: venv  # on TEST_WORKERS processes (pytest-xdist); TEST_WORKERS=0 runs them in this one
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

test-fast: venv
	$(BIN)/python -m pytest -q -m "not workflow"

lint: venv
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile rules/

# Model FLOP utilisation of every training loop and of Free Mask (BENCHMARKS.md "Model FLOP utilisation").
bench: venv
	$(BIN)/python bench/mfu.py

clean:
	rm -rf results/ data/synthetic/ .snakemake/
