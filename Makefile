# marketbus: `make run` (Redis + publisher + live view) and `make test` (the whole suite).
# Every target installs what it needs: the virtualenv, and redis-server from apt when missing.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test lint typecheck deps venv bench soak fake-exchange publish clean help

help:
	@echo "make run        Redis + publisher + live view (live Binance, or the bundled replay offline)"
	@echo "make test       the whole test suite (unit, integration with real redis-server, end to end)"
	@echo "make lint       ruff format check + ruff lint + mypy"
	@echo "make bench      benchmarks (table + JSON under bench-results/)"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "marketbus needs Python >= 3.11"'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

# redis-server is needed by `make run` (unless REDIS_URL is set) and by the integration tests;
# openssl makes the TLS test's self-signed certificate.
deps: venv
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	if [ -n "$$missing" ]; then \
	  if [ -n "$$REDIS_URL" ] && [ "$(MAKECMDGOALS)" = run ]; then exit 0; fi; \
	  echo "missing:$$missing: installing from the OS packages"; \
	  if command -v apt-get >/dev/null 2>&1; then \
	    $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	  else echo "no apt-get here: install$$missing yourself, or set REDIS_URL" >&2; exit 1; fi; \
	fi

run: deps
	$(BIN)/marketbus demo

test: deps
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: deps
	$(BIN)/python -m bench

soak: deps
	$(BIN)/python -m bench.soak

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache bench-results .run
