# Every target works on a fresh machine: it creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench soak clean reach-node screenshots

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/safeship demo

test: $(STAMP)
	scripts/ensure-system-deps
	$(MAKE) reach-node
	$(BIN)/python -m pytest -n auto --dist loadgroup

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

bench: $(STAMP)
	scripts/ensure-system-deps
	@for script in benchmarks/*.py; do echo "# $$script" >&2; $(BIN)/python $$script || exit 1; done

# The stock Node SDKs the reach tests run (tests/reach/node, pinned by its package-lock.json).
NODE_REACH := tests/reach/node
reach-node: $(NODE_REACH)/node_modules/.package-lock.json
$(NODE_REACH)/node_modules/.package-lock.json: $(NODE_REACH)/package-lock.json
	cd $(NODE_REACH) && npm ci --no-audit --no-fund --loglevel=error

soak: $(STAMP)
	SAFESHIP_SOAK=1 $(BIN)/python -m pytest -m slow tests/outbox tests/rollouts tests/jobs

# Chromium screenshots of every dashboard page into artifacts/; the README's overview copy.
screenshots: $(STAMP)
	scripts/ensure-system-deps
	$(BIN)/python -m pytest -q tests/server/test_dashboard_browser.py
	cp artifacts/overview.png docs/images/overview.png

clean:
	rm -rf $(VENV) dist build .pytest_cache .mypy_cache .ruff_cache
