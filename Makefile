# Gutcheck: `make demo` runs the whole chain on synthetic parts, `make test` runs the tests.
# Both create or refresh .venv with the exact versions in constraints.txt. `make demo` needs only
# Python (3.11 or newer) with venv and Tk; `make test` also installs, through apt-get, the firmware
# toolchain, simavr, Xvfb and mosquitto. Without make: docs/install.md (pip alone, any OS).

# The tests' version (constraints.txt) first; any Python 3.11 or newer works.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export DEBIAN_FRONTEND := noninteractive

.PHONY: demo test python-deps test-deps venv bench screenshots clean-venv

demo: $(STAMP)
	$(BIN)/gutcheck demo

test: $(STAMP) test-deps
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup tests --durations=20

bench: $(STAMP)
	$(BIN)/python bench/detection.py

# The README's pictures: a detector v2 model on the synthetic nut, its report's heatmaps, the dashboard.
screenshots: $(STAMP) test-deps
	$(BIN)/python docs/refresh_images.py

venv: $(STAMP)

# Python 3.11 or newer with venv and Tk: all the demo and the product need.
python-deps:
	@if ! $(PYTHON) -c 'import sys, venv, ensurepip, tkinter; assert sys.version_info >= (3, 11)' 2>/dev/null; then \
	  echo "installing system packages (python3, venv, Tk) with apt-get"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3 python3-venv python3-tk >/dev/null; \
	fi

# Debian packages for the tests only: the AVR toolchain, Debian's Arduino core and simavr for the firmware,
# Xvfb for the windows, mosquitto (and openssl for its test certificates) for publishing verdicts.
FIRMWARE_PKGS := g++ make pkg-config gcc-avr avr-libc arduino-core-avr arduino-mk simavr libsimavr-dev \
                 libsimavrparts1 libelf-dev xvfb mosquitto openssl

test-deps:
	@if ! { command -v avr-gcc && command -v g++ && test -f /usr/share/arduino/Arduino.mk && \
	        pkg-config --exists simavr simavrparts && test -f /usr/include/libelf.h && command -v Xvfb && \
	        { command -v mosquitto || test -x /usr/sbin/mosquitto; } && command -v mosquitto_passwd && command -v openssl; } \
	        >/dev/null 2>&1; then \
	  echo "installing the firmware toolchain, Xvfb and mosquitto with apt-get: $(FIRMWARE_PKGS)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $(FIRMWARE_PKGS) >/dev/null; \
	fi

$(STAMP): pyproject.toml constraints.txt | python-deps
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

clean-venv:
	rm -rf $(VENV)
