# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast lint imports typecheck pytest pythons install clean bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/nurture demo

lint: $(STAMP)
	$(BIN)/ruff check nurture tests $(wildcard bench)
	$(BIN)/ruff format --check nurture tests $(wildcard bench)

# The architecture (pyproject.toml [tool.importlinter], docs/architecture.md).
imports: $(STAMP)
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

# The header and MIME tests on the other CPythons the package allows (3.12, 3.13), when
# this machine has them (.ci/pythons says which it skipped).
pythons:
	bash .ci/pythons 3.12 3.13

test: lint imports typecheck pytest pythons

# Day-to-day: the pure decisions only (no database, no network), in seconds.
test-fast: $(STAMP)
	$(BIN)/pytest tests/unit -q

# Needs Debian's postfix package for smtp-sink (see bench/README.md).
bench: $(STAMP)
	$(BIN)/python bench/send.py
	$(BIN)/python bench/track.py
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) .venv-3.* nurture.db nurture.db-* outbox .pytest_cache .mypy_cache .ruff_cache
