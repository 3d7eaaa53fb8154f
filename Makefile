# fleetscan: `make demo` and `make test` work on a fresh Debian/Ubuntu machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# What the emulator needs from the OS: busybox for container images, a C toolchain for its
# static container helper, util-linux for namespaces. Installed only when missing.
APT_PACKAGES := busybox-static gcc libc6-dev util-linux
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup apt test lint demo bench clean

setup: apt $(VENV)/.installed

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

test: setup
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check fleetscan tests benchmarks
	$(BIN)/mypy fleetscan

demo: setup
	$(BIN)/fleetscan demo

bench: setup
	$(BIN)/python benchmarks/emulator_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
