# beamscore: `make run` scores the bundled sample tranches; `make test` runs the suite.
# Both create their own virtualenv (.venv) and need nothing but the package registries.
VENV   ?= .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DAYS   ?= --from 2026-01-01 --to 2026-01-03

.PHONY: install run test lint bench bench-small clean

$(STAMP): setup.py
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) -m pipelines.samples --root var
	@test -n "$$(ls var/registry/demo 2>/dev/null)" || \
	  $(BIN)/beamscore train --docs 'var/train/*.jsonl' --name demo
	$(BIN)/beamscore score $(DAYS)

test: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: install
	$(PY) bench/run_bench.py

bench-small: install
	$(PY) bench/run_bench.py --docs 50000 --guard 0.8

clean:
	rm -rf var bench/out
