# The two commands of the README: `make demo` and `make test`. Both create .venv on first use.
# torch comes first and pinned: an unpinned torch would pull a multi-GB CUDA build on a CPU machine.
# On a GPU machine: make demo TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean check-portability

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet $(TORCH_SPEC)
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/tinyminds demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

test: $(STAMP) lint
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest -q

# Loads a fresh tiny model under transformers 4.51.3 (the BabyLM 2025 pipeline's pin) and lm-eval's
# HFLM in a scratch environment (.venv-tf4, built on first use) and compares with transformers 5.
check-portability: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/python benchmarks/check_portability.py --venv .venv-tf4

clean:
	rm -rf $(VENV) .venv-tf4 tinyminds-demo
