# source-bulk-export: build, test and run targets.
#
#   make setup      install the locked dependencies into .venv (Poetry; installs Poetry too)
#   make test       setup, lint (ruff + mypy), then pytest; non-zero on any failure
#   make lint       ruff check + mypy source_bulk_export
#   make fix        ruff check --fix (import order and other safe fixes)
#   make snapshots  pytest --insta=update (re-record snapshots)
#   make demo | bench | emulator PORT=8765 ROWS=10000
#   make chaos      the fault matrix of issue 7 on ~200k Accounts (CHAOS_ARGS="--cells 'everything/*'")
#   make catalog    regenerate test.flow.yaml bindings and acmeCo/ from a discover against the emulator
#   make lock       re-resolve poetry.lock after editing pyproject.toml
#   make clean      remove .venv, .tools and caches
#
# Poetry is `poetry` from PATH (>= 2), or else one installed into .tools/venv; either way
# tools/poetry runs it (e.g. `tools/poetry run pytest -k foo`). Once .venv exists, a plain
# `poetry run pytest` works as usual too. See tools/bootstrap.sh for the details.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

POETRY_RUN := tools/poetry run
# test.flow.yaml names this port, so a flowctl user can run it against `make emulator`.
PORT ?= 8765
ROWS ?= 10000
# LINT=0 skips ruff and mypy in `make test`.
LINT ?= 1
PYTEST_ARGS ?=
# Extra arguments of `python -m tests.chaos` (--accounts N, --cells PATTERN, --seed S).
CHAOS_ARGS ?=

# Poetry would pick an activated virtualenv over the project's .venv.
unexport VIRTUAL_ENV

.PHONY: setup test lint fix pytest snapshots demo bench chaos emulator catalog lock check-lock clean

setup:
	@tools/bootstrap.sh

# Lint first, then the tests whatever lint said, so the pytest summary closes the output;
# fail if either failed.
test: setup
	@rc=0; \
	if [ "$(LINT)" != 0 ]; then $(MAKE) --no-print-directory lint || rc=$$?; fi; \
	$(POETRY_RUN) pytest $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -ne 0 ]; then echo "make test: FAILED (exit $$rc)" >&2; fi; \
	exit $$rc

pytest: setup
	$(POETRY_RUN) pytest $(PYTEST_ARGS)

lint: setup
	@rc=0; \
	echo "+ ruff check"; $(POETRY_RUN) ruff check . || rc=1; \
	echo "+ mypy source_bulk_export"; $(POETRY_RUN) mypy source_bulk_export || rc=1; \
	exit $$rc

fix: setup
	$(POETRY_RUN) ruff check --fix .

snapshots: setup
	$(POETRY_RUN) pytest --insta=update $(PYTEST_ARGS)

demo: setup
	$(POETRY_RUN) python -m tests.demo

bench: setup
	$(POETRY_RUN) python -m tests.bench && $(POETRY_RUN) python -m tests.bench_floor

# Every fault x restart cell on a large org; prints the table, non-zero if a cell fails.
chaos: setup
	$(POETRY_RUN) python -m tests.chaos $(CHAOS_ARGS)

emulator: setup
	$(POETRY_RUN) python -m tests.emulator --port $(PORT) --rows $(ROWS)

catalog: setup
	$(POETRY_RUN) python -m tests.regenerate_catalog

# Re-resolve the lock file (through the simple-index fallback where needed), then install.
lock:
	@tools/bootstrap.sh poetry
	tools/poetry lock
	@tools/bootstrap.sh

check-lock:
	tools/poetry check --lock

clean:
	rm -rf .venv .tools .pytest_cache .mypy_cache .ruff_cache .bench
	find . -path ./.git -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
