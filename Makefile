# Portico — the two commands a new user needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.9
PIP_QUIET := --quiet --disable-pip-version-check
# Two installs in one virtual environment. `make demo` needs the runtime only (requirements.lock);
# `make test`, `lint` and `bench` sync everything (requirements-dev.lock: the runtime at the same
# versions, the tools, and mypyc's toolchain). The runtime step installs without removing, so a
# `make demo` after `make test` keeps the tools.
RUNTIME_STAMP := $(VENV)/.installed-runtime
DEV_STAMP := $(VENV)/.installed-dev
NATIVE_TOOLS_STAMP := $(VENV)/.installed-native-tools
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
# The background build of `make demo` runs in a session of its own, so the Ctrl-C that stops the
# demo does not stop it (nohup where util-linux's setsid is missing: a background job of a
# non-interactive shell ignores Ctrl-C already).
DETACH := $(if $(shell command -v setsid),setsid -f,nohup)
# Options for `portico demo`, e.g. make demo DEMO_ARGS='--port 8081'
DEMO_ARGS ?=

.PHONY: install demo test lint bench lock clean native-staged

install: $(DEV_STAMP) $(NATIVE)

# The venv gets no pip of its own: ensurepip alone took 15-20 s on two busy cores, more than the
# rest of a first install. The interpreter's pip installs uv into it when it can (pip >= 22.3 has
# --python); else the venv's own pip is bootstrapped for that.
$(VENV)/bin/uv:
	@echo "make: creating the virtual environment $(VENV)"
	@test -x $(PY) || $(PYTHON) -m venv --without-pip $(VENV)
	@echo "make: installing uv $(UV_VERSION) into $(VENV) (the installer of the lock files)"
	@$(PYTHON) -m pip --python $(PY) install $(PIP_QUIET) uv==$(UV_VERSION) 2>/dev/null \
		|| { $(PY) -m ensurepip --default-pip > /dev/null \
		&& $(PY) -m pip install $(PIP_QUIET) uv==$(UV_VERSION); }

$(RUNTIME_STAMP): requirements.lock pyproject.toml | $(VENV)/bin/uv
	@echo "make: installing Portico and its runtime dependencies (requirements.lock) into $(VENV)"
	@$(UV) pip install --quiet --python $(PY) -r requirements.lock
	@$(UV) pip install --quiet --python $(PY) --no-deps -e .
	@touch $@

# The development install compiles the packages' bytecode as it installs them (uv, in parallel:
# ~15 s of CPU, once). Python would write it at the first import, except where
# PYTHONDONTWRITEBYTECODE is set, as in CI and sandboxes: there each `portico` the suite starts
# compiled SQLAlchemy, pydantic and the rest again, 1.5-2.3 s of CPU every time. The runtime
# install does not: compiling its ~1,000 files costs more CPU (5.5 s) than a first `portico demo`
# spends compiling the ~400 it imports (2.3 s), so a first `make demo` would only start later.
$(DEV_STAMP): requirements-dev.lock pyproject.toml | $(VENV)/bin/uv
	@echo "make: installing Portico and the development tools (requirements-dev.lock) into $(VENV)"
	@$(UV) pip sync --quiet --python $(PY) --compile-bytecode requirements-dev.lock
	@$(UV) pip install --quiet --python $(PY) --no-deps -e .
	@touch $@ $(RUNTIME_STAMP) $(NATIVE_TOOLS_STAMP)

$(NATIVE_TOOLS_STAMP): requirements-dev.lock pyproject.toml $(RUNTIME_STAMP)
	@echo "make: installing mypyc's toolchain (the [native] extra, versions of requirements-dev.lock)"
	@$(UV) pip install --quiet --python $(PY) -c requirements-dev.lock \
		-r <($(PY) scripts/build_native.py --requirements)
	@touch $@

$(NATIVE_MANIFEST): $(DEV_STAMP) $(NATIVE_SOURCES) pyproject.toml scripts/build_native.py
	@$(PY) scripts/build_native.py || true

# The demo starts at once, interpreted. When the compiled hot path is missing or stale, it is
# built beside the running demo (`native-staged`, at the lowest priority) and put into place by the
# next `make demo` (or `make install`); build_native.py --adopt says which applies.
demo: $(RUNTIME_STAMP)
ifneq ($(PORTICO_NATIVE),0)
	@$(PY) scripts/build_native.py --adopt; status=$$?; \
	if [ $$status -eq 3 ]; then \
		mkdir -p build/native; \
		$(DETACH) nice -n 19 $(MAKE) --no-print-directory native-staged \
			> build/native/background.log 2>&1 < /dev/null & \
	fi
endif
	@echo "make: starting portico demo: sample backends, gateway, operations listener"
	@$(VENV)/bin/portico demo $(DEMO_ARGS)

native-staged: $(NATIVE_TOOLS_STAMP)
	$(PY) scripts/build_native.py --stage

test: install
	bash scripts/ensure-system-packages.sh test
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

bench: install
	bash scripts/ensure-system-packages.sh bench
	$(PY) bench/gateway.py

# The development lock first; the runtime lock takes its versions from it (-c), so a `make demo`
# venv and a `make test` venv run the same runtime.
lock: | $(VENV)/bin/uv
	$(UV) pip compile --quiet pyproject.toml --extra dev --extra native -o requirements-dev.lock
	$(UV) pip compile --quiet pyproject.toml -c requirements-dev.lock -o requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build $(NATIVE_MANIFEST)
	find src -name '*.so' -delete
