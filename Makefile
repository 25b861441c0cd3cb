# Quick start: `make demo` runs the quickstart DAG against the local emulator; `make test` runs the suite.
# Both create their own virtual environment (.venv/) from uv.lock; only python3 and make are needed.

PY ?= python3
VENV := .venv
TOOLS := .tools
UV := $(TOOLS)/bin/uv
UV_VERSION := 0.13.9
DAG ?= openai_batch_quickstart
PYTEST_ARGS ?=

export UV_PROJECT_ENVIRONMENT := $(CURDIR)/$(VENV)

.PHONY: venv install-wheel install-wheel-lowest chromium test test-lowest lint demo bench dist clean

$(UV):
	$(PY) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet "uv==$(UV_VERSION)"

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --all-extras --python $(PY) --quiet --compile-bytecode
	touch $@

venv: $(VENV)/.synced

# The package as users get it: a wheel built from the tree and installed (not editable), so the Airflow
# components the tests start (and the demo) import that copy, and a file missing from the wheel fails a
# test. pytest itself imports the tree. Rebuilt on every run: it takes a few seconds.
WHEEL_DIR := .wheel
define install_wheel_into
	rm -rf $(WHEEL_DIR)
	$(UV) build --wheel --out-dir $(WHEEL_DIR) --quiet
	$(UV) pip install --python $(1)/bin/python --no-deps --reinstall --quiet --compile-bytecode $(WHEEL_DIR)/*.whl
endef

install-wheel: venv
	$(call install_wheel_into,$(VENV))

# Debian's chromium for the browser test (installed only as root when missing; never a download by playwright).
chromium:
	@sh scripts/install_chromium.sh

test: install-wheel chromium
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# The declared floors: apache-airflow, openai and every other direct dependency at its lowest allowed
# version (uv's lowest-direct), the rest resolved as of the day after the floor Airflow's release
# (standing in for Airflow's constraint file); openai 2.0.0 came a month later, so it gets its own
# date. The test tools are the newest of that day that fit those pins.
LOWEST := .venv-lowest
FLOOR_DATE ?= 2025-08-30
OPENAI_FLOOR_DATE ?= 2025-10-01
COMPAT_FLOOR_DATE ?= 2026-01-18
MSGSPEC_FLOOR_DATE ?= 2026-09-30
TEST_TOOLS := "pytest>=8" "pytest-asyncio>=0.24" "pytest-timeout>=2.3" "moto[server]>=5.0" "playwright>=1.45" "orjson>=3.10" "psycopg[binary]>=3.1"

$(LOWEST)/.synced: pyproject.toml | $(UV)
	$(UV) venv $(LOWEST) --python $(PY) --quiet --allow-existing
	$(UV) pip compile pyproject.toml --all-extras --resolution lowest-direct --python $(LOWEST)/bin/python \
		--exclude-newer $(FLOOR_DATE) --exclude-newer-package openai=$(OPENAI_FLOOR_DATE) \
		--exclude-newer-package apache-airflow-providers-common-compat=$(COMPAT_FLOOR_DATE) \
		--exclude-newer-package msgspec=$(MSGSPEC_FLOOR_DATE) \
		--quiet --no-header -o $(LOWEST)/requirements.txt
	$(UV) pip sync --python $(LOWEST)/bin/python --quiet $(LOWEST)/requirements.txt
	$(UV) pip install --python $(LOWEST)/bin/python --quiet --exclude-newer $(FLOOR_DATE) \
		-c $(LOWEST)/requirements.txt $(TEST_TOOLS)
	touch $@

install-wheel-lowest: $(LOWEST)/.synced
	$(call install_wheel_into,$(LOWEST))

test-lowest: install-wheel-lowest chromium
	@$(LOWEST)/bin/python -c "import airflow, openai; print(f'airflow={airflow.__version__} openai={openai.__version__}')"
	$(LOWEST)/bin/pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The benchmark suite (not part of test): SIZE=small for 120k requests only.
SIZE ?= full
bench: venv
	$(VENV)/bin/python benchmarks/suite.py --size $(SIZE)

demo: install-wheel
	$(VENV)/bin/python scripts/demo.py --dag $(DAG)

# The wheel and sdist, in dist/ (until the package is on PyPI: `pip install dist/*.whl`).
dist: | $(UV)
	$(UV) build --out-dir dist

clean:
	rm -rf $(VENV) $(LOWEST) $(TOOLS) $(WHEEL_DIR) .demo dist .pytest_cache .mypy_cache .ruff_cache
