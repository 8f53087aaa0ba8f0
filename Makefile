# priorflow: the two commands a new machine needs are `make demo` and `make test`.
# Both set up .venv on first use. GPU users: install your own torch build into .venv first
# (or set TORCH=...); an importable torch is kept as it is.

VENV    ?= .venv
PYTHON  ?= python3
TORCH   ?= torch==2.13.0
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.priorflow-installed
# Test processes (pytest-xdist): each runs its own Prefect server; SLURM tests share one.
TEST_WORKERS ?= 2

.PHONY: setup demo ui test lint format bench train-reference clean-runs

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

demo: setup  ## run the embedded default end to end (builds the synthetic archive if missing)
	$(VENV)/bin/priorflow run configs/demo.yaml

ui: setup  ## the demo, leaving its Prefect server running to browse the run in the UI
	$(VENV)/bin/priorflow run configs/demo.yaml --keep-server

test: setup  ## the whole test suite (CI runs exactly this), in $(TEST_WORKERS) processes
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadgroup

lint: setup  ## ruff format + check, and the import contracts of the layers (pyproject.toml)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: setup  ## speed ratios measured side by side, and sampler accuracy per evaluation (exact)
	$(PY) benchmarks/bench_samplers.py
	$(PY) benchmarks/bench_worker.py
	$(PY) benchmarks/bench_blanket.py
	$(PY) benchmarks/bench_members.py

train-reference: setup  ## reproduce models/reference (750 steps, 0.5-2.5 s each on 2 cores)
	test -d data/archive.zarr || $(VENV)/bin/priorflow archive synth --start 2000-01-01 --end 2001-12-31 --out data/archive.zarr
	$(VENV)/bin/priorflow train --archive data/archive.zarr --out models/reference --steps 750 --batch-size 16 --seed 0 --blanket-size 8 --threads 2 --padding circular --temporal-kernel 7 --channels 24,48,96 --spectral-skip

clean-runs:
	rm -rf runs
