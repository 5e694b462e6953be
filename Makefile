# Everything runs from the project's own virtual environment (.venv), created on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

LOCK := $(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links

.PHONY: install install-dev lock demo test test-no-urls lint bench clean

# requirements*.txt are lock files with hashes (pip-tools), written by `make lock` from requirements*.in.
$(BIN)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements.txt
	touch $@

$(BIN)/.installed-dev: $(BIN)/.installed requirements-dev.txt
	$(BIN)/pip install --quiet --require-hashes -r requirements-dev.txt
	touch $@

install: $(BIN)/.installed
install-dev: $(BIN)/.installed-dev

## make demo: embedded PostgreSQL + Redis (unless URLs are set), worker, demo photos, web :8000, Flower :5555
demo: $(BIN)/.installed
	$(BIN)/python -m dev.demo

## make test: lint, types, the import layering (pyproject's [tool.importlinter]) and the test suite
## (embedded servers when no URLs are set)
test: $(BIN)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## make test-no-urls: worker and demo tests as on a machine with no PostgreSQL or Redis of its own:
## URLs unset and, where `unshare` is allowed, no network but loopback (nothing answers on 5432/6379).
test-no-urls: $(BIN)/.installed-dev
	env -u DATABASE_URL -u CELERY_BROKER_URL dev/without-network.sh \
		$(BIN)/python -m pytest -q tests/workers/test_classify.py tests/test_demo.py $(PYTEST_ARGS)

## make bench: throughput and latency of the whole system (embedded servers when no URLs are set);
## BENCH_ARGS=--quick for smaller sizes. Writes bench/results.json and docs/BENCHMARKS.md.
bench: $(BIN)/.installed-dev
	$(BIN)/python -m bench $(BENCH_ARGS)

## make lock: re-resolve requirements*.in into the hashed lock files (runtime, GPU, dev).
lock: $(BIN)/.installed-dev
	$(LOCK) -o requirements.txt requirements.in
	$(LOCK) -o requirements-gpu.txt requirements-gpu.in
	$(LOCK) -o requirements-dev.txt requirements-dev.in

lint: $(BIN)/.installed-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf .run media test-artifacts .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
