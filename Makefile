# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest install clean bench

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

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

test: lint typecheck pytest

# Needs Debian's postfix package for smtp-sink (see bench/README.md).
bench: $(STAMP)
	$(BIN)/python bench/send.py
	$(BIN)/python bench/track.py
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) nurture.db nurture.db-* outbox .pytest_cache .mypy_cache .ruff_cache
