# The two commands of the README: `make lab` and `make test`. Everything they need is installed here.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev
PYTEST_ARGS ?=

.PHONY: lab test check screenshots lint typecheck bench demo clean

$(STAMP): pyproject.toml scripts/ensure-chromium.sh scripts/ensure-postgres.sh
	@# system packages the tests need (Debian's chromium for the browser tests, PostgreSQL for the
	@# workflow stores); each is quick when already installed
	bash scripts/ensure-chromium.sh
	bash scripts/ensure-postgres.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(PY) -m wippy.kernel install --sys-prefix
	@touch $(STAMP)

## lab: the venv, the package, JupyterLab on notebooks/
lab: $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,lab]'
	$(PY) -m wippy.kernel install --sys-prefix
	$(VENV)/bin/jupyter lab notebooks/

## test: lint, types, then every test, then the notebooks run under nbval against their saved outputs
test: $(STAMP) lint typecheck
	$(PY) -m pytest $(PYTEST_ARGS)
	@# each notebook on a fresh data directory: a tutorial starts from an empty registry
	@for nb in notebooks/*.ipynb; do \
	  echo "nbval $$nb"; WIPPY_DATA_DIR=$$(mktemp -d) $(PY) -m pytest --nbval $$nb --nbval-kernel-name wippy || exit 1; \
	done

## check: the quick inner loop (no slow tests, stop at the first failure)
check: $(STAMP) lint typecheck
	$(PY) -m pytest -m "not slow" -x -q $(PYTEST_ARGS)
	@for nb in notebooks/*.ipynb; do \
	  WIPPY_DATA_DIR=$$(mktemp -d) $(PY) -m pytest --nbval $$nb --nbval-kernel-name wippy -x -q || exit 1; \
	done

## screenshots: the browser tests, saving their pictures over the committed ones in docs/screenshots
## (`make test` saves them under build/screenshots, so a test run leaves the tree clean)
screenshots: $(STAMP)
	WIPPY_SCREENSHOTS=$(CURDIR)/docs/screenshots $(PY) -m pytest tests/browser -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .

typecheck: $(STAMP)
	$(PY) -m mypy

## bench: print the figures of docs/performance.md (never a test: figures, not verdicts)
bench: $(STAMP)
	@# Erlang for the BEAM side of bench_beam.py; without it that script skips BEAM and says so
	-bash scripts/ensure-erlang.sh
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

## demo: the ping-pong example, headless
demo: $(STAMP)
	$(VENV)/bin/wippy run examples/pingpong --entry app:main

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
