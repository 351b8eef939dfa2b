# rft-operator developer entry points. Everything sets itself up: the virtualenv (.venv, built with
# uv from its cache outside the tree) and the control-plane binaries (built from the Go module proxy
# into ~/.cache/rft-operator, or taken from $RFT_BIN_DIR).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON_BOOTSTRAP ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.9
VENV_STAMP := $(VENV)/.rft-stamp
VENV_KEY := $(shell cat pyproject.toml | sha256sum | cut -c1-16)-$(CURDIR)
STATE_DIR ?= $(CURDIR)/.cluster
PYTEST_ARGS ?=

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

# The venv is rebuilt when pyproject.toml changes (or the checkout moves); uv's cache makes it quick.
$(VENV_STAMP): pyproject.toml
	@if [[ ! -f $(VENV_STAMP) || "$$(cat $(VENV_STAMP))" != "$(VENV_KEY)" ]]; then \
	  echo "==> preparing $(VENV) (uv $(UV_VERSION), cache in $${UV_CACHE_DIR:-~/.cache/uv})"; \
	  [[ -x $(PY) ]] || $(PYTHON_BOOTSTRAP) -m venv $(VENV); \
	  $(PY) -m pip install -q --disable-pip-version-check uv==$(UV_VERSION); \
	  $(VENV)/bin/uv pip install -q --python $(PY) -e '.[dev]'; \
	  echo "$(VENV_KEY)" > $(VENV_STAMP); \
	fi
	@touch $(VENV_STAMP)

.PHONY: venv
venv: $(VENV_STAMP) ## Create or refresh .venv

.PHONY: control-plane
control-plane: ## Build (or locate) etcd, kube-*, kubectl, kwok, helm
	@bash tools/build-control-plane.sh >/dev/null

.PHONY: crds
crds: venv ## Regenerate crds/ (and the chart's copy) from the Pydantic models
	$(PY) -m rft.api.crdgen --out crds $(if $(wildcard charts/rft-operator/crds),--out charts/rft-operator/crds,)

.PHONY: lint
lint: venv ## ruff and mypy (strict)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

.PHONY: test
test: venv control-plane lint ## The whole suite: lint, unit, control-plane, local-node and end-to-end tests
	$(VENV)/bin/pytest $(PYTEST_ARGS)

.PHONY: cluster
cluster: venv control-plane ## Start the local cluster in the background; prints `export KUBECONFIG=...` last
	@$(PY) -m rft_devcluster up --state-dir $(STATE_DIR)

.PHONY: cluster-down
cluster-down: venv ## Stop the local cluster
	@$(PY) -m rft_devcluster down --state-dir $(STATE_DIR)

.PHONY: demo
demo: venv control-plane ## The main job: the iterative RL loop on the local cluster
	$(PY) -m rft_devcluster.demo --state-dir $(CURDIR)/.demo

.PHONY: bench
bench: venv control-plane ## Benchmarks (figures and ratios, JSON under bench/results/)
	$(PY) -m bench

.PHONY: clean
clean: ## Remove caches in the tree (not the venv, not ~/.cache)
	rm -rf .pytest_cache .mypy_cache .ruff_cache
