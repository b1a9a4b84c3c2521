# Modelworks developer entry points. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: help
help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

.PHONY: bootstrap
bootstrap: ## create .venv with the pinned Python packages (cached)
	@hack/bootstrap.sh

.PHONY: crds
crds: bootstrap ## regenerate crds/ from the API models
	$(PY) -m modelworks crds --write crds

.PHONY: crds-check
crds-check: bootstrap ## fail when crds/ differs from the API models
	$(PY) -m modelworks crds --check crds

.PHONY: lint
lint: bootstrap ## ruff (lint + format check), mypy --strict and shellcheck
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	MYPY_CACHE_DIR=$${HOME}/.cache/modelworks/mypy .venv/bin/mypy
	hack/shellcheck.sh

.PHONY: unit
unit: bootstrap ## the pure tier: seconds, no cluster
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

.PHONY: test
test: bootstrap crds-check lint ## everything CI runs: lint, unit, integration, e2e (starts the local cluster if needed)
	MODELWORKS_REQUIRE_NODE=$${MODELWORKS_REQUIRE_NODE:-$$( [[ $${MODELWORKS_NODE:-1} == 0 ]] && echo 0 || echo 1 )} \
	  $(PY) -m pytest tests -m "not chaos" -n $${MODELWORKS_TEST_WORKERS:-2} --dist loadgroup --durations=25 $(PYTEST_ARGS)

.PHONY: chaos
chaos: bootstrap ## the full fault-injection matrices: crash at every write of every kind, every misoperation (docs/reliability.md)
	$(PY) -m pytest tests/reliability -m chaos -n $${MODELWORKS_TEST_WORKERS:-2} --dist loadgroup --durations=25 $(PYTEST_ARGS)

.PHONY: cluster-up
cluster-up: ## build (once) and start the local control plane; kubeconfig in .cluster/kubeconfig
	hack/cluster.sh up

.PHONY: cluster-down
cluster-down: ## stop the demo operator and the local cluster, remove their state
	hack/demo.sh stop
	hack/cluster.sh down

.PHONY: cluster-status
cluster-status: ## what runs
	hack/cluster.sh status

.PHONY: demo
demo: bootstrap ## the main job: cluster, CRDs, operator, samples (safe to rerun)
	hack/demo.sh

.PHONY: run
run: bootstrap ## run the operator in the foreground against $$KUBECONFIG (or the local cluster)
	@if [[ -z "$${KUBECONFIG:-}" ]]; then eval "$$(hack/cluster.sh env)"; fi; $(PY) -m modelworks run
