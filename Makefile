# One-command setup for okx-candles. `make run` on a fresh machine: venv, services, migrations, server.
# Settings come from the environment and `.env` (read by Python itself); see .env.example.

.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
VENV_PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
REQUIREMENTS := $(wildcard requirements/*.txt)
PYTEST_ARGS ?=
# Three workers (pytest-xdist), each with a test database of its own; PYTEST_WORKERS=0 runs in one process.
# Three on two cores: the tests mostly wait (sockets, subprocesses, timers), and on the 2-core machine three
# took 4 min 47 s where two took 8 min 12 s, back to back. --dist load hands tests out in collection order,
# so each worker keeps pytest-django's order (transactional tests empty the tables, so they come after the
# others); work stealing would not.
PYTEST_WORKERS ?= 3
FIREHOSE_ARGS ?=

.PHONY: help venv services browser compose-tool migrate run demo test lint bench-upsert bench-firehose bench-storage bench-stream bench

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

venv: $(STAMP) ## Create .venv (python3.11) and install requirements/dev.txt

# Re-run pip only when a requirements file changed; the stamp is touched last, so a failed install retries.
$(STAMP): $(REQUIREMENTS)
	@test -x $(VENV_PY) || $(PYTHON) -m venv $(VENV)
	$(VENV_PY) -m pip install --disable-pip-version-check -q -r requirements/dev.txt
	@touch $@

services: venv ## Start local PostgreSQL/Redis if down, create the database
	$(VENV_PY) scripts/ensure_services.py

browser: ## Install Debian's chromium for the browser test when missing
	scripts/ensure_apt.sh "$${CHROMIUM_PATH:-/usr/bin/chromium}" chromium "the browser test"

# Not fatal: without it tests/test_compose.py skips and says why; the rest of the suite still runs.
compose-tool: ## Install Debian's docker-compose (validates docker-compose.yml in the tests) when missing
	-scripts/ensure_apt.sh /usr/bin/docker-compose docker-compose "the compose file's test"

migrate: services ## Apply database migrations
	$(VENV_PY) manage.py migrate --noinput

run: migrate ## Run the whole system in the foreground: web, collectors, workers, beat, flower
	scripts/run.sh

demo: migrate ## The whole system against the OKX simulator, a few instruments in 1s and 1m
	scripts/demo.sh

test: services browser compose-tool ## Run the test suite in three workers (PYTEST_ARGS="-k foo", PYTEST_WORKERS=0 for one)
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist load $(PYTEST_ARGS)

lint: venv ## Lint with ruff
	$(VENV)/bin/ruff check .

bench-upsert: migrate ## Benchmark the candle upsert against a raw COPY
	$(VENV_PY) bench/upsert.py

bench-firehose: venv ## Issue 14's benchmark: 1,000 instruments x 27 bars, the whole system, 10 minutes (~20 min)
	$(VENV_PY) bench/firehose.py $(FIREHOSE_ARGS)

bench-storage: services ## Issue 15's benchmark: a month of 1s (31 M candles) in its own database (~15 min; STORAGE_ARGS=--reuse to keep it)
	$(VENV_PY) bench/storage.py $(STORAGE_ARGS)

bench-stream: services ## Issue 16's benchmark: the live stream's commit → client latency at 30k versions/s, 1/100/500 clients (~4 min)
	$(VENV_PY) bench/stream.py $(STREAM_ARGS)

bench: migrate ## Every benchmark in one sitting (about an hour; output in bench/results/)
	bench/run_all.sh
