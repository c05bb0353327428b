"""Builds the firmware pieces the tests run: host builds of the logic (g++), the conveyor sketch
for the Uno (Debian's Arduino AVR core via arduino-mk) and the simavr harness (gcc)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build" / "firmware"
CONVEYOR = REPO / "arduino_firmware" / "conveyor"
HOST = REPO / "arduino_firmware" / "host"
KNOB = REPO / "esp32_firmware" / "knob_box"


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def _fresh(target: Path, sources: list[Path]) -> bool:
    return target.exists() and all(target.stat().st_mtime >= s.stat().st_mtime for s in sources)


def gxx(name: str, sources: list[Path]) -> Path:
    BUILD.mkdir(parents=True, exist_ok=True)
    out = BUILD / name
    headers = list(CONVEYOR.glob("*.h")) + list(KNOB.glob("*.h")) + list(HOST.glob("*.h"))
    if not _fresh(out, sources + headers):
        _run(["g++", "-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", "-o", str(out), *map(str, sources)])
    return out


def host_logic_tests() -> list[Path]:
    return [
        gxx("test_conveyor_logic", [HOST / "test_conveyor_logic.cpp", CONVEYOR / "conveyor_logic.cpp"]),
        gxx("test_knob_logic", [HOST / "test_knob_logic.cpp", KNOB / "knob_logic.cpp"]),
    ]


def conveyor_host() -> Path:
    return gxx("conveyor_host", [HOST / "conveyor_host.cpp", CONVEYOR / "conveyor_logic.cpp"])


def uno_elf() -> Path:
    """The conveyor sketch compiled for the ATmega328P exactly as it would be flashed."""
    _run(["make", "-s", "-C", str(CONVEYOR)])
    elf = CONVEYOR / "build-uno" / "conveyor_.elf"
    if not elf.is_file():
        raise RuntimeError(f"arduino-mk did not produce {elf}")
    return elf


def uno_harness() -> Path:
    BUILD.mkdir(parents=True, exist_ok=True)
    out = BUILD / "uno_harness"
    src = REPO / "arduino_firmware" / "emulator" / "uno_harness.c"
    if not _fresh(out, [src]):
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "simavr", "simavrparts"], capture_output=True,
                               text=True, check=True).stdout.split()
        _run(["gcc", "-O2", "-Wall", "-o", str(out), str(src), *flags, "-lelf", "-lpthread", "-lutil"])
    return out


def have_avr_toolchain() -> bool:
    return all(shutil.which(t) for t in ("avr-gcc", "pkg-config")) and Path("/usr/share/arduino/Arduino.mk").exists()
