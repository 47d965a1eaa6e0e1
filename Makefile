# The two commands a newcomer needs: `make run` (whole local stack on an embedded
# broker) and `make test` (lint, type-check, then the suite against a real Kafka
# broker and a real S3-compatible server, both fetched and started by the harness).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: run test lint bench install fetch-services clean help

help:
	@echo "make run    start the local stack (embedded broker, gateway, archiver, metrics)"
	@echo "make test   lint, type-check and run the whole test suite against real services"
	@echo "make lint   ruff + mypy --strict only"
	@echo "make bench  throughput, latency and memory benchmarks"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

fetch-services: $(STAMP)
	$(PY) -m tests.harness.kafka_broker fetch
	$(PY) -m tests.harness.s3proxy fetch

lint: $(STAMP)
	$(VENV)/bin/ruff check service tests
	$(VENV)/bin/mypy

test: lint fetch-services
	$(VENV)/bin/pytest $(PYTEST_ARGS)

run: $(STAMP)
	$(PY) -m service dev

bench: $(STAMP) fetch-services
	$(PY) -m tests.bench.run_all

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache .hypothesis
