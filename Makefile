# Two commands on a fresh machine:  make demo   |   make test     (then: make notebooks, make docs)
# Both create .venv on first use. torch: where no NVIDIA GPU is present we ask for the CPU build that
# is at hand (torch==2.13.0, found by pip's find-links on the project machines; elsewhere set
# TORCH_PIP_ARGS="--index-url <your CPU wheel index>" to avoid the multi-GB CUDA build). With a GPU,
# pip's default CUDA build is installed.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "torch>=2.3" || echo "torch==2.13.0")
TORCH_PIP_ARGS ?=
PYTEST_ARGS ?=

.PHONY: demo test prepare app install notebooks docs docs-build clean-runs bench

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check "$(TORCH_SPEC)" $(TORCH_PIP_ARGS)
	# dev: pytest, nbmake and ipykernel (the notebooks run in the suite without JupyterLab); docs: mkdocs,
	# for the strict docs build the suite runs (tests/test_docs.py)
	$(BIN)/pip install -q --disable-pip-version-check -e ".[dev,docs,influence,trl]"
	# kronfluence (the EK-FAC check, tests/test_ekfac.py) without its torchvision requirement: it never
	# imports torchvision, and the torchvision wheel pip resolves is built for CUDA torch and breaks
	# transformers beside a CPU torch (see pyproject's influence extra)
	$(BIN)/pip install -q --disable-pip-version-check --no-deps "kronfluence>=1.0.1"
	touch $@

install: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/explorer demo

# notebooks run with EXPLORER_NB_QUICK=1: smaller step counts, the same code
test: $(BIN)/.installed
	EXPLORER_NB_QUICK=1 $(BIN)/python -m pytest -q $(PYTEST_ARGS)

# JupyterLab (the notebooks extra) only for a person who opens the notebooks: the tests do not need it
$(BIN)/.notebooks: $(BIN)/.installed
	$(BIN)/pip install -q --disable-pip-version-check -e ".[notebooks]"
	touch $@

notebooks: $(BIN)/.notebooks
	$(BIN)/jupyter lab notebooks/

# this documentation as a site: mkdocs serves it on 127.0.0.1:8000; docs-build writes site/ and fails on
# a broken link or a page missing from mkdocs.yml's nav, as the test suite does
docs: $(BIN)/.installed
	$(BIN)/mkdocs serve

docs-build: $(BIN)/.installed
	$(BIN)/mkdocs build --strict --site-dir site

prepare: $(BIN)/.installed
	$(BIN)/explorer prepare

app: $(BIN)/.installed
	$(BIN)/explorer app runs

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_scoring.py
	$(BIN)/python benchmarks/bench_app.py

clean-runs:
	rm -rf runs
