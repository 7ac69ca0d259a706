# marketbus: `make run` (Redis + publisher + live view) and `make test` (the whole suite).
# Every target installs what it needs: the virtualenv, and redis-server from apt when missing.

PYTHON ?= python3
# the interpreter itself: $(PYTHON) when it runs, else pyenv's build of it (a pyenv shim of a
# version that is not selected exists on PATH but does not run)
PY     := $(shell for c in "$(PYTHON)" $$(ls -d $$HOME/.pyenv/versions/*/bin/$(PYTHON) 2>/dev/null | sort -V | tail -n 1); do \
            "$$c" -c 'import sys' >/dev/null 2>&1 && { echo "$$c"; break; }; done)
# `make test PYTHON=python3.13` keeps its own virtualenv beside the default one
VENV   ?= $(if $(filter python3,$(PYTHON)),.venv,.venv-$(notdir $(PYTHON)))
BIN    := $(VENV)/bin
# the suite runs in this many processes (pytest-xdist, a test file per process at a time):
# most tests wait on sockets and subprocesses, so two halve the time on a 2-core machine
TEST_JOBS ?= 2
STAMP  := $(VENV)/.installed
LOCK   := requirements.lock
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# what `make lock` resolves for: every supported Python (3.11 up) and platform, one file
LOCK_ARGS := pyproject.toml --extra dev --group build --universal --python-version 3.11 \
             --generate-hashes --custom-compile-command "make lock" --quiet -o $(LOCK)

.PHONY: run test lint typecheck deps venv bench soak fake-exchange publish clean help \
        lock test-latest test-lowest

help:
	@echo "make run          Redis + publisher + live view (live Binance, or the bundled replay offline)"
	@echo "make test         the whole test suite (unit, integration with real redis-server, end to end)"
	@echo "make lint         ruff format check + ruff lint + mypy"
	@echo "make bench        benchmarks (table + JSON under bench-results/)"
	@echo "make lock         re-resolve $(LOCK) to the newest releases pyproject.toml allows"
	@echo "make test-latest  the suite against the newest releases, in a throwaway virtualenv"
	@echo "make test-lowest  the suite against pyproject.toml's floors, in a throwaway virtualenv"

# The virtualenv holds exactly the lock: every package pinned and its hash checked by pip
# (--require-hashes), the build backend too (--no-build-isolation), nothing resolved here.
# It is rebuilt from scratch whenever the lock or pyproject.toml changes, so nothing stale stays.
$(STAMP): $(LOCK) pyproject.toml
	@test -n "$(PY)" || { echo "no working $(PYTHON) found (PATH or pyenv)" >&2; exit 1; }
	@$(PY) -c 'import sys; assert sys.version_info >= (3, 11), "marketbus needs Python >= 3.11"'
	rm -rf $(VENV)
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --no-deps --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
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
	$(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadfile

lint: venv
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: deps
	$(BIN)/python -m bench

soak: deps
	$(BIN)/python -m bench.soak

# Upgrades on purpose: re-resolve to the newest allowed releases, then `make test`, commit both.
lock: venv
	UV_PYTHON_DOWNLOADS=never $(BIN)/uv pip compile --upgrade $(LOCK_ARGS)
	@echo "$(LOCK) re-resolved: run make test, then commit it with pyproject.toml"

# the two tests that check the venv against requirements.lock: these venvs differ on purpose
NOT_THE_LOCK := --deselect tests/unit/test_lockfile.py::test_the_venv_holds_exactly_the_lock \
                --deselect tests/unit/test_lockfile.py::test_the_runtime_subset_has_no_test_tools

# What a user who `pip install`s us today gets: the newest releases pyproject.toml allows.
# Not part of CI (a release elsewhere must not turn CI red); run it before re-locking.
test-latest: deps
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(PY) -m venv "$$tmp/venv" && \
	"$$tmp/venv/bin/python" -m pip install -q --upgrade pip && \
	"$$tmp/venv/bin/python" -m pip install -q --upgrade '.[dev]' && \
	echo "newest releases (differences from $(LOCK)):" && \
	"$$tmp/venv/bin/python" tools/lockfile.py $(LOCK) && \
	"$$tmp/venv/bin/python" -m pytest -q -p no:cacheprovider -n $(TEST_JOBS) --dist loadfile $(NOT_THE_LOCK)

# The floors pyproject.toml declares, resolved by uv (--resolution lowest-direct).
test-lowest: deps
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	UV_PYTHON_DOWNLOADS=never $(BIN)/uv pip compile pyproject.toml --extra dev --group build \
	  --resolution lowest-direct --python $(PY) --quiet -o "$$tmp/lowest.txt" && \
	$(PY) -m venv "$$tmp/venv" && \
	"$$tmp/venv/bin/python" -m pip install -q --no-deps -r "$$tmp/lowest.txt" && \
	"$$tmp/venv/bin/python" -m pip install -q --no-deps --no-build-isolation . && \
	echo "lowest direct releases (differences from $(LOCK)):" && \
	"$$tmp/venv/bin/python" tools/lockfile.py $(LOCK) && \
	"$$tmp/venv/bin/python" -m pytest -q -p no:cacheprovider -n $(TEST_JOBS) --dist loadfile $(NOT_THE_LOCK)

clean:
	rm -rf .venv .venv-* .pytest_cache .mypy_cache .ruff_cache bench-results .run
