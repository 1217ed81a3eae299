# Portico — the two commands a new user needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.installed
# The gateway's hot modules compiled with mypyc, listed under [tool.portico.native] in
# pyproject.toml. The manifest is the build's target: make rebuilds when a listed source, the list
# or the build script is newer. PORTICO_NATIVE=0 skips the build (and, at run time, the compiled
# modules). A failed or impossible build says so in one line and Portico runs as pure Python.
NATIVE_MANIFEST := src/portico/_native.json
NATIVE_SOURCES := $(shell $(PYTHON) scripts/build_native.py --sources)
ifeq ($(PORTICO_NATIVE),0)
NATIVE :=
else
NATIVE := $(NATIVE_MANIFEST)
endif

.PHONY: install demo test lint bench lock clean

install: $(STAMP) $(NATIVE)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) || $(VENV)/bin/pip install --quiet --disable-pip-version-check uv==0.13.9
	$(UV) pip sync --quiet --python $(PY) requirements.lock
	$(UV) pip install --quiet --python $(PY) --no-deps -e .
	@touch $(STAMP)

$(NATIVE_MANIFEST): $(STAMP) $(NATIVE_SOURCES) pyproject.toml scripts/build_native.py
	@$(PY) scripts/build_native.py || true

demo: install
	$(VENV)/bin/portico demo

test: install
	bash scripts/ensure-system-packages.sh test
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

bench: install
	bash scripts/ensure-system-packages.sh bench
	$(PY) bench/gateway.py

lock:
	$(UV) pip compile --quiet pyproject.toml --extra dev -o requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build $(NATIVE_MANIFEST)
	find src -name '*.so' -delete
