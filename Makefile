# The one entry point for humans and CI. Needs only Python 3.11+; `make` sets up the rest.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PACKAGES := $(sort $(wildcard packages/*))
STAMP := $(VENV)/.installed

.PHONY: install demo test lint format typecheck budget bench chaos check clean

$(STAMP): requirements-dev.txt $(wildcard packages/*/pyproject.toml)
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "qtasks needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt $(foreach p,$(PACKAGES),-e $(p))
	touch $(STAMP)

install: $(STAMP)  ## create .venv with every package of the repo (editable) and the dev tools

demo: $(STAMP)  ## the main job on the embedded default: start a worker, submit tasks, print results
	cd examples/quickstart && ../../$(PY) demo.py

test: $(STAMP)  ## the whole test suite (starts its own servers)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check packages tests examples bench scripts
	$(VENV)/bin/ruff format --check packages tests examples bench scripts

format: $(STAMP)
	$(VENV)/bin/ruff format packages tests examples bench scripts
	$(VENV)/bin/ruff check --fix packages tests examples bench scripts

typecheck: $(STAMP)
	$(VENV)/bin/mypy packages/qtasks-core/src packages/qtasks-redis/src packages/qtasks-otel/src packages/qtasks-postgres/src packages/qtasks-kafka/src

budget:  ## qtasks-core stays small: kernel ~1,500 lines, whole package ~3,500
	$(PYTHON) scripts/budget.py

bench: $(STAMP)  ## throughput and latency per backend, next to a raw-client floor
	$(PY) bench/run.py

chaos: $(STAMP)  ## the full crash drill: 20,000 tasks per backend, workers killed, servers restarted
	$(PY) -m tests.chaos.run

check: lint typecheck budget test

clean:
	rm -rf $(VENV)
