# Mobile Video Box: `make demo` runs the box on its embedded default; `make test` installs what the
# tests need and runs them. Both create .venv at the repository root when it is missing.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench torture clean system-deps

$(PY):
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
		echo "python3-venv missing: installing it with apt"; \
		apt-get update -qq && apt-get install -y -qq python3-venv python3-pip; \
		$(PYTHON) -m venv $(VENV); }

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

# Debian packages the tests use (none needed beyond coreutils/util-linux yet; later issues add
# gpsd-clients, ffmpeg, chromium). Kept as a target so CI and a fresh machine run the same step.
system-deps:
	@command -v mount >/dev/null || { apt-get update -qq && apt-get install -y -qq mount; }

demo: $(STAMP)
	$(PY) -m gateway.demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP) system-deps
	$(VENV)/bin/pytest -q

test: lint typecheck unit

bench: $(STAMP)
	$(PY) -m bench.store

torture: $(STAMP)
	$(PY) -m bench.torture --kills 500

clean:
	rm -rf $(VENV) demo-out .mypy_cache .ruff_cache .pytest_cache
