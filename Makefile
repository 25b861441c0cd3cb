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

.PHONY: venv chromium test lint demo bench clean

$(UV):
	$(PY) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet "uv==$(UV_VERSION)"

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --all-extras --python $(PY) --quiet
	touch $@

venv: $(VENV)/.synced

# Debian's chromium for the browser test (installed only as root when missing; never a download by playwright).
chromium:
	@sh scripts/install_chromium.sh

test: venv chromium
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The benchmark suite (not part of test): SIZE=small for 120k requests only.
SIZE ?= full
bench: venv
	$(VENV)/bin/python benchmarks/suite.py --size $(SIZE)

demo: venv
	$(VENV)/bin/python scripts/demo.py --dag $(DAG)

clean:
	rm -rf $(VENV) $(TOOLS) .demo .pytest_cache .mypy_cache .ruff_cache
