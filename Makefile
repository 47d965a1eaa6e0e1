# The two commands a newcomer needs: `make run` (whole local stack on an embedded
# broker) and `make test` (lint, type-check, then the suite against a real Kafka
# broker and a real S3-compatible server, both fetched and started by the harness).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: run test lint bench bench-smoke bench-tools install fetch-services clean help

help:
	@echo "make run    start the local stack (embedded broker, gateway, archiver, metrics)"
	@echo "make test   lint, type-check and run the whole test suite against real services"
	@echo "make lint   ruff + mypy --strict only"
	@echo "make bench  the gateway beside its contenders: throughput, latency, memory (~25 min)"
	@echo "make bench-smoke  the same in a few seconds per contender (what CI runs)"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

fetch-services: $(STAMP)
	$(PY) -m tests.harness.kafka_broker fetch
	$(PY) -m tests.harness.s3proxy fetch
	$(PY) -m tests.bench.tools

lint: $(STAMP)
	$(VENV)/bin/ruff check service tests
	$(VENV)/bin/mypy

test: lint fetch-services
	$(VENV)/bin/pytest $(PYTEST_ARGS)

run: $(STAMP)
	$(PY) -m service dev

# wrk (the closed-loop load generator) is a Debian package; as root it is installed here.
# Without it the benchmark measures the closed loop with its own Go load generator.
bench-tools:
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && (apt-get install -y -qq wrk >/dev/null 2>&1 \
	      || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)); } \
	  || echo "wrk not installed (needs root and apt-get): the Go load generator measures instead"

bench: $(STAMP) fetch-services bench-tools
	$(PY) -m tests.bench.run_all

bench-smoke: $(STAMP) fetch-services bench-tools
	$(PY) -m tests.bench.harness --smoke

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache .hypothesis .bench
