# Gutcheck: `make demo` runs the whole chain on synthetic parts, `make test` runs the tests.
# Both create or refresh .venv and install what is missing (system packages through apt-get).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export DEBIAN_FRONTEND := noninteractive

.PHONY: demo test system-deps venv bench clean-venv

demo: $(STAMP)
	$(BIN)/gutcheck demo

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

bench: $(STAMP)
	$(BIN)/python bench/detection.py

venv: $(STAMP)

# System packages: Python 3.11 with venv and Tk.
system-deps:
	@if ! $(PYTHON) -c 'import sys, venv, ensurepip, tkinter; assert sys.version_info[:2] == (3, 11)' 2>/dev/null; then \
	  echo "installing system packages (python3.11, venv, Tk) with apt-get"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3 python3-venv python3-tk >/dev/null; \
	fi

$(STAMP): pyproject.toml | system-deps
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

clean-venv:
	rm -rf $(VENV)
