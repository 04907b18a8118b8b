# hybrid-router: every target sets itself up from nothing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
GEN := router/_gen
PROTOS := $(wildcard protos/*.proto)

.PHONY: all demo test check lint type fmt bench protos clean sysdeps

all: test

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

$(GEN)/.stamp: $(PROTOS) $(STAMP)
	$(PY) -m router.protos_build
	touch $@

protos: $(GEN)/.stamp

# Debian packages the real-process tests and the demo need (redis-server, chromium,
# prometheus/promtool); installs only what is missing.
sysdeps:
	./scripts/sysdeps.sh

demo: sysdeps $(STAMP) protos
	$(PY) -m router demo

test: sysdeps $(STAMP) protos
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check router simulator tests bench
	$(VENV)/bin/lint-imports

type: $(STAMP) protos
	$(PY) -m mypy

check: lint type test

bench: $(STAMP) protos
	$(PY) bench/core.py

clean:
	rm -rf $(VENV) $(GEN) .pytest_cache .mypy_cache .ruff_cache state
