"""The firmware logic, built for the PC with g++, runs its unit tests (filtering, parsing, state
machine, watchdog); and the conveyor sketch compiles for the Arduino Uno."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests import firmware


@pytest.mark.parametrize("index", [0, 1], ids=["conveyor", "knob_box"])
def test_host_build_of_firmware_logic_passes_its_unit_tests(index):
    binary = firmware.host_logic_tests()[index]
    proc = subprocess.run([str(binary)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout
    m = re.search(r"(\d+) passed, (\d+) failed", proc.stdout)
    assert m and int(m.group(1)) >= 15 and m.group(2) == "0", proc.stdout


def test_conveyor_sketch_compiles_for_the_uno_and_fits():
    elf = firmware.uno_elf()
    size = subprocess.run(["avr-size", str(elf)], capture_output=True, text=True, check=True).stdout
    text, data, bss = map(int, size.splitlines()[1].split()[:3])
    assert text + data < 32256  # flash of an Uno minus the bootloader
    assert data + bss < 1536  # leave room for the stack in 2 KB of RAM
