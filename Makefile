# Everything a fresh machine needs is installed or built from here: Python packages from the lock
# file into .venv, the control-plane binaries into a cache outside the repository.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
UV_VERSION := 0.13.9
CHECKOV_VERSION := 3.3.30
CACHE ?= $(or $(SIDECAR_OPERATOR_CACHE),$(HOME)/.cache/sidecar-operator)
UV := $(CACHE)/tools/uv-$(UV_VERSION)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
# N: side by side in N pytest-xdist workers on the one control plane (hack/test.sh): a clean
# clone's make test in 7.5 min with 4 on two cores; 0: one test at a time
# (docs/local-control-plane.md).
TEST_WORKERS ?= 4
export TEST_WORKERS
BENCH_ARGS ?=
CHAOS_ARGS ?=

export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
export SIDECAR_OPERATOR_CACHE := $(CACHE)
export UV

.PHONY: help install binaries tools lint test bench chaos demo down lock clean crds manifests

help:  ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(UV):
	$(PYTHON) -m venv $(CACHE)/tools/uv-$(UV_VERSION)
	$(CACHE)/tools/uv-$(UV_VERSION)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --extra dev --python $(PYTHON)
	touch $@

install: $(VENV)/.installed  ## Create .venv with the package (editable), its dev tools and kubectl.

lock: | $(UV)  ## Re-resolve uv.lock after changing dependencies in pyproject.toml.
	$(UV) lock --python $(PYTHON)

binaries:  ## Build (once, then cached) etcd, kube-apiserver, -controller-manager, -scheduler, kwok.
	bash hack/build-control-plane.sh >/dev/null

tools:  ## Build (once, then cached) helm and promtool from their pinned Go modules.
	bash hack/build-tools.sh >/dev/null

lint: install tools  ## Static checks, the chart's and its rendered output's among them.
	$(BIN)/ruff check operator tests bench
	$(BIN)/ruff format --check operator tests bench
	$(BIN)/mypy --cache-dir $(CACHE)/mypy  # kept outside: a fresh clone checks in 1 s, not 25
	cd operator && ../$(BIN)/lint-imports ../pyproject.toml
	$(BIN)/hadolint Dockerfile
	$(BIN)/kubectl kustomize manifests/ > .venv/manifests.yaml
	helm="$$(bash hack/build-tools.sh 2>/dev/null)/helm"; \
	"$$helm" lint --strict charts/sidecar-operator; \
	"$$helm" template sidecar-operator charts/sidecar-operator --namespace sidecar-operator-system \
	  --set serviceMonitor.enabled=true,prometheusRule.enabled=true,dashboard.enabled=true \
	  > .venv/chart-monitoring.yaml; \
	"$$helm" template sidecar-operator charts/sidecar-operator --namespace sidecar-operator-system \
	  --set webhook.certificate.source=cert-manager > .venv/chart-cert-manager.yaml
	$(UV) tool run --python $(PYTHON) --from checkov==$(CHECKOV_VERSION) checkov --quiet --compact \
	  --skip-download --framework kubernetes \
	  -f .venv/manifests.yaml -f .venv/chart-monitoring.yaml -f .venv/chart-cert-manager.yaml

test: install binaries tools  ## Everything CI runs: install, build, lint and the whole test suite.
	TEST_LINT="$(MAKE) --no-print-directory lint" bash hack/test.sh $(PYTEST_ARGS)

bench: install binaries  ## Rollout time against a bare client and the peers (Kyverno, textbook Kopf), API writes, memory (`BENCH_ARGS=--sizes 100`).
	$(BIN)/python -m bench $(BENCH_ARGS)

chaos: install binaries  ## Faults and bad input, each trial audited (not in `make test`; `CHAOS_ARGS=--seed 1`).
	$(BIN)/python -m tests.chaos $(CHAOS_ARGS)

demo: install binaries  ## Start the local cluster and the operator, apply the samples, show the result.
	bash hack/demo.sh

down:  ## Stop the demo's operator and the local cluster, and delete its data.
	bash hack/demo.sh down

clean: down  ## Also remove .venv.
	rm -rf $(VENV)

crds: install binaries  ## Regenerate crds/ (and the chart's copy) and the core/v1 shapes table from the models and the pinned release's OpenAPI document.
	openapi="$$(bash hack/build-control-plane.sh 2>/dev/null)/../openapi/api__v1_openapi.json"; \
	$(BIN)/python -m sidecar_operator.api.crd "$$openapi" > crds/sidecarpolicies.sidecars.dev.yaml; \
	$(BIN)/python -m sidecar_operator.api.corev1 "$$openapi" > operator/sidecar_operator/api/corev1.json
	cp crds/sidecarpolicies.sidecars.dev.yaml crds/clusterkopfpeerings.kopf.dev.yaml charts/sidecar-operator/crds/

manifests: install tools  ## Regenerate manifests/ from the chart with its default values.
	$(BIN)/python hack/render-manifests.py "$$(bash hack/build-tools.sh 2>/dev/null)/helm"
