# beamscore: `make run` scores the bundled sample tranches; `make test` runs the suite.
# Both create their own virtualenv (.venv) and need nothing but the package registries.
VENV   ?= .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DAYS   ?= --from 2026-01-01 --to 2026-01-03
# pytest-xdist workers (0: none).
JOBS   ?= 2
XDIST  := -n $(JOBS) --dist worksteal

.PHONY: install run test test-fast lint docs bench bench-small bench-small-files bench-featurise bench-scaling bench-sink image image-test airflow-test clean

$(STAMP): setup.py
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) -m landing.samples --root var
	@test -n "$$(ls var/registry/demo 2>/dev/null)" || \
	  $(BIN)/beamscore train --docs 'var/train/*.jsonl' --name demo
	$(BIN)/beamscore score --model demo $(DAYS)

# The whole suite; stops at once, with how to start it, if PostgreSQL is down.
test: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(PY) -m tests.postgres
	$(BIN)/pytest -q $(XDIST)

# The inner loop: no PostgreSQL, no slow tests.
test-fast: install
	$(BIN)/pytest -q $(XDIST) -m "not postgres and not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# The manual (docs/, mkdocs.yml) into site/; --strict fails on a broken link or a page left out.
docs: install
	$(BIN)/mkdocs build --strict --site-dir site

bench: install
	$(PY) bench/run_bench.py

# CI regression guard: fails only if beamscore drops below 0.8x the plain script. 100k docs
# so that start-up (~2 s) does not dominate.
bench-small: install
	$(PY) bench/run_bench.py --docs 100000 --contenders a,c --guard 0.8

# A tranche of many small files: 1,500 JSONL files of 10 documents, 2 workers, 3 runs.
bench-small-files: install
	$(PY) bench/small_files.py

# The vectoriser alone: the fast path against scikit-learn's transform, bit for bit.
bench-featurise: install
	$(PY) bench/featurise_bench.py --stages

# 1 vs 2 workers where start-up (~2.3 s of imports both pay) does not dominate.
bench-scaling: install
	$(PY) bench/run_bench.py --docs 1000000 --contenders c1,c --repeat 2

# The sink alone: 1M rows from 1, 2, 4 and 8 writers, SQLite and PostgreSQL (docs/sink.md).
bench-sink: install
	$(PY) bench/sink_bench.py --repeat 3

# Opt-in, long: an OCI image built offline with buildah (about 4 GB of disk, minutes).
image:
	deploy/image/build.sh

image-test: image
	deploy/image/test.sh

# Opt-in: loads deploy/airflow/beamscore_dag.py in a real Airflow, in its own virtualenv.
airflow-test:
	deploy/airflow/test.sh

clean:
	rm -rf var bench/out
