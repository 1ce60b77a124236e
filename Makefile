# `make test` and `make demo` do all set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
CHROMIUM := /usr/bin/chromium

.PHONY: test lint format demo demo-models clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

# The Space's browser test drives Debian's Chromium (playwright cannot download its own browser here).
$(CHROMIUM):
	apt-get update -q && apt-get install -y -q chromium

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: lint $(CHROMIUM)
	OMP_NUM_THREADS=1 $(VENV)/bin/pytest -n 2 -q --durations=25 tests

# Retrains the two demo models that ship in demo_models/ with their recipes (hf_swin_ddpm/training/demo_models.py);
# it prints how long each took here (165 + 45 minutes on 2 shared CPU cores).
demo-models: $(STAMP)
	$(PY) -m hf_swin_ddpm.training.demo_models --force

# Serves the Space with the shipped demo models.
demo: $(STAMP)
	$(PY) spaces_app/app.py

clean:
	rm -rf $(VENV) build *.egg-info
