# The two commands the README opens with: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench reliability clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/planfix-notifier demo

lint: $(STAMP)
	$(BIN)/ruff check notifier tests bench
	$(BIN)/ruff format --check notifier tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -m "not slow"

# All of tests/reliability, the slow crash runs too; then the README's table.
reliability: $(STAMP)
	mkdir -p bench/results
	$(BIN)/pytest tests/reliability -p no:logging --junitxml=bench/results/reliability.xml
	$(BIN)/python -m tests.reliability.report bench/results/reliability.xml README.md

bench: $(STAMP)
	$(BIN)/python -m bench.client_overhead
	$(BIN)/python -m bench.detection_latency
	$(BIN)/python -m bench.dispatch
	$(BIN)/python -m bench.footprint

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache bench/results
