# The two set-up commands a new user needs: `make run` and `make test`.
# Both create .venv and install exactly what uv.lock pins; nothing depends on what was
# installed by hand.

PYTHON ?= python3
TOOLS  := .tools
UV     := $(TOOLS)/bin/uv
VENV   := .venv
PY     := $(VENV)/bin/python
UV_VERSION := 0.13.9

.PHONY: run test lint typecheck unit e2e browser sync sim-server bench bench-store screenshots clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet "uv==$(UV_VERSION)"

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --quiet
	@touch $@

sync: $(VENV)/.synced

## Start the dashboard on http://localhost:8501 (SQLite store; the simulated panel when no key is set).
run: sync
	$(PY) -m core dashboard

## Every check CI runs: lint, format, types, unit and integration tests, then the browser tests.
test: sync browser lint typecheck
	$(PY) -m pytest -m "not e2e"
	$(PY) -m pytest -m e2e

lint: sync
	$(VENV)/bin/ruff check core tests pages app.py benchmarks
	$(VENV)/bin/ruff format --check core tests pages app.py benchmarks

typecheck: sync
	$(VENV)/bin/mypy

## The headless browser the end-to-end tests drive: Debian's Chromium (never a downloaded build).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

unit: sync
	$(PY) -m pytest -m "not e2e"

e2e: sync browser
	$(PY) -m pytest -m e2e

## Refresh the README's pictures in docs/screenshots/ (a plain test run never writes there).
screenshots: sync browser
	TALLY_REFRESH_DOCS_SCREENSHOTS=1 $(PY) -m pytest -m e2e tests/e2e/test_run_history.py

sim-server: sync
	$(PY) -m core sim-server

## Throughput against a lean loopback endpoint (transports, the SDK, the engine and its store
## writers, targets met or missed), then rate limits in short mode. BENCH_LEVELS narrows it.
BENCH_LEVELS ?= 8:0.5,64:0.5,512:1,1024:2
bench: sync
	$(PY) benchmarks/fanout.py --levels $(BENCH_LEVELS)
	$(PY) benchmarks/ratelimits.py --repeats 1

## The store's own benchmark: writers, commit forms, persistence against none.
bench-store: sync
	$(PY) benchmarks/store.py

clean:
	rm -rf $(VENV) $(TOOLS) .mypy_cache .ruff_cache .pytest_cache
