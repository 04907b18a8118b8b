# hybrid-router: every target sets itself up from nothing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Every version the venv gets, with hashes: the project's dependencies, its test tools and its
# build requirements (the project itself installs with --no-deps --no-build-isolation).
LOCK := requirements.lock
# The resolver that writes the lock; only `make lock` and `make upgrade-check` install it.
UV_VERSION := 0.13.8
UV := $(VENV)/bin/uv
UV_COMPILE = $(PY) -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))' \
	| $(UV) pip compile --quiet --universal --python-version 3.11 --generate-hashes \
	  --extra test --custom-compile-command 'make lock' pyproject.toml -
GEN := router/_gen
PROTOS := $(wildcard protos/*.proto)

.PHONY: all demo test check lint type fmt bench protos clean sysdeps lock upgrade-check

all: test

$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes -r $(LOCK)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

$(UV):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q uv==$(UV_VERSION)

# Re-resolve after editing pyproject.toml: versions already locked stay unless they must move.
lock: $(UV)
	$(UV_COMPILE) -o $(LOCK)

# What the newest versions allowed by pyproject.toml would be, against the lock; the lock is
# left as it is (to take them: `make lock` after deleting the lines to move, or all of it).
upgrade-check: $(UV)
	$(UV_COMPILE) --upgrade --no-header -o $(VENV)/upgrade.lock
	$(PY) scripts/lockdiff.py $(LOCK) $(VENV)/upgrade.lock

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

# Two passes: every test but the `alone` ones spread over the cores (pytest-xdist; at most 4
# workers, as a container may see more cores than its quota lets it use), then the `alone`
# ones, which judge timing or drift, one at a time with nothing else of ours running.
test: sysdeps $(STAMP) protos
	$(PY) -m pytest -q -n auto --maxprocesses 4 -m "not alone"
	$(PY) -m pytest -q -m alone

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
