# The two commands a newcomer needs: `make run` (whole local stack on an embedded
# broker) and `make test` (lint, type-check, then the suite against a real Kafka
# broker and a real S3-compatible server, both fetched and started by the harness).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
PYTEST_ARGS ?=

# Deployment checks (tests/deploy/): kustomize built from the Go module proxy, nginx and
# promtool unpacked from Debian's packages (seconds, where building promtool from the Go
# module proxy takes about 25 minutes cold), kept under .cache/tools (kustomize versioned,
# so a version bump refetches); Go's own module and build caches make a rebuild fast.
TOOLS := .cache/tools
KUSTOMIZE_VERSION := v5.8.2
KUSTOMIZE := $(TOOLS)/kustomize-$(KUSTOMIZE_VERSION)/kustomize
PROMTOOL := $(TOOLS)/deb/prometheus/usr/bin/promtool
NGINX := $(TOOLS)/deb/nginx/usr/sbin/nginx
LOCKS := deploy/requirements.lock deploy/requirements-build.lock
WHEELS := .cache/wheels
WHEELS_STAMP := $(WHEELS)/.fetched-$(shell cat $(LOCKS) | sha256sum | cut -c1-12)

.PHONY: run test lint bench bench-smoke bench-tools bench-image-venv install fetch-services fetch-deploy-tools lock clean help

help:
	@echo "make run    start the local stack (embedded broker, gateway, archiver, metrics)"
	@echo "make test   lint, type-check and run the whole test suite against real services"
	@echo "make lint   ruff + mypy --strict only"
	@echo "make bench  the gateway beside its contenders: throughput, latency, memory (~30 min)"
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

$(KUSTOMIZE):
	@mkdir -p $(@D)
	GOTOOLCHAIN=local GOBIN=$(abspath $(@D)) go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)

# Only the binaries, unpacked from Debian's packages: nothing is installed or started.
$(TOOLS)/deb/%/.unpacked:
	@rm -rf $(TOOLS)/deb/$* $(TOOLS)/deb/$*-deb && mkdir -p $(TOOLS)/deb/$*-deb
	cd $(TOOLS)/deb/$*-deb && (apt-get download $* 2>/dev/null || \
		(apt-get update -qq && apt-get download $*))
	dpkg -x $(TOOLS)/deb/$*-deb/$*_*.deb $(TOOLS)/deb/$* && rm -rf $(TOOLS)/deb/$*-deb
	@touch $@

$(PROMTOOL): $(TOOLS)/deb/prometheus/.unpacked
$(NGINX): $(TOOLS)/deb/nginx/.unpacked

# The locked wheels, so the packaging test installs the image's dependencies offline.
$(WHEELS_STAMP): $(LOCKS) $(STAMP)
	@rm -rf $(WHEELS) && mkdir -p $(WHEELS)
	$(PY) -m pip download --quiet --require-hashes --no-deps --dest $(WHEELS) \
		-r deploy/requirements.lock -r deploy/requirements-build.lock
	@touch $@

fetch-deploy-tools: $(KUSTOMIZE) $(PROMTOOL) $(NGINX) $(WHEELS_STAMP)
	@mkdir -p $(TOOLS)/bin
	@ln -sf $(abspath $(KUSTOMIZE)) $(TOOLS)/bin/kustomize
	@ln -sf $(abspath $(PROMTOOL)) $(TOOLS)/bin/promtool
	@ln -sf $(abspath $(NGINX)) $(TOOLS)/bin/nginx

# Re-lock after changing dependencies in pyproject.toml (hashes for every platform's wheel).
lock: $(STAMP)
	$(VENV)/bin/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe \
		--no-emit-index-url --no-emit-find-links --output-file deploy/requirements.lock pyproject.toml
	$(VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --no-emit-index-url \
		--no-emit-find-links --output-file deploy/requirements-build.lock deploy/requirements-build.in

lint: $(STAMP)
	$(VENV)/bin/ruff check service tests
	$(VENV)/bin/mypy

test: lint fetch-services fetch-deploy-tools
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

# The service's processes run in the bench on the image's dependencies only (no dev tools),
# installed offline from the locked wheels; the code is this tree's (run from the repo).
IMAGE_VENV := .cache/bench/image-venv
IMAGE_VENV_STAMP := $(IMAGE_VENV)/.installed-$(shell cat deploy/requirements.lock | sha256sum | cut -c1-12)

$(IMAGE_VENV_STAMP): $(WHEELS_STAMP)
	@rm -rf $(IMAGE_VENV) && $(PYTHON) -m venv $(IMAGE_VENV)
	$(IMAGE_VENV)/bin/python -m pip install --quiet --no-index --find-links $(WHEELS) \
		--require-hashes --no-deps -r deploy/requirements.lock
	@touch $@

bench-image-venv: $(IMAGE_VENV_STAMP)

bench: $(STAMP) fetch-services bench-tools $(IMAGE_VENV_STAMP)
	$(PY) -m tests.bench.run_all

bench-smoke: $(STAMP) fetch-services bench-tools
	$(PY) -m tests.bench.harness --smoke

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache .hypothesis .bench
