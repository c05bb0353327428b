"""The technician's hardware check, GUI-free: find the knob box and the conveyor among the serial
ports, show what they speak, and walk through the first-power-on checklist of docs/wiring.md.

Steps talk through `say(line)`; knob steps are timed (they end early once the knob has been seen at
both ends), so the check runs the same in a terminal, in the dashboard's Tools menu and in a test.
`gutcheck hardware check` prints the lines; the dashboard shows them in a window.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import serial
from serial.tools import list_ports

from app.links import protocol
from app.links.conveyor_link import ConveyorLink
from app.links.knob_link import KnobLink
from app.links.protocol import BeltStatus, ConveyorParser, KnobParser, KnobReading
from capture.errors import GutcheckError

KNOB_NOISE_LIMIT = 10  # permille a knob left alone may wander (the box's own dead band is 4)
KNOB_END_MARGIN = 20  # a knob turned end to end reaches within 2 % of 0 and of 1000
WATCHDOG_WINDOW_S = (0.8, 1.6)  # the conveyor stops 1 s after the last frame (docs/protocols.md)
LABELS = {"knobs": "knob box", "conveyor": "conveyor", "": "no Gutcheck device"}
KNOB_NAMES = {"a": "knob A (GPIO34, density threshold)", "b": "knob B (GPIO39, error threshold)"}


@dataclass
class Device:
    """What answered on a port: `kind` "knobs", "conveyor" or "" (nothing recognised)."""

    url: str
    kind: str = ""
    detail: str = ""
    version: int | None = None


@dataclass
class CheckResult:
    name: str
    ok: bool
    detail: str


@dataclass
class CheckReport:
    results: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(r.ok for r in self.results)


def serial_ports() -> list[tuple[str, str]]:
    """(device, description) of every serial port the system lists (USB, Bluetooth SPP, built-in)."""
    return sorted((p.device, f"{p.description} [{p.hwid}]") for p in list_ports.comports())


def open_port(url: str) -> serial.SerialBase:
    """The port at `url`, opened at the links' speed, or a one-line GutcheckError saying why not."""
    try:
        return serial.serial_for_url(url, baudrate=115200, timeout=0.05)
    except (serial.SerialException, OSError, ValueError) as exc:
        reason = os.strerror(exc.errno) if getattr(exc, "errno", None) else str(exc)
        raise GutcheckError(f"{url}: cannot open the port ({reason})") from None


def identify(url: str, listen_s: float = 1.2, answer_s: float = 3.0) -> Device:
    """Which Gutcheck device answers at `url`: first listen (the knob box talks on its own, every
    500 ms at least), then ask for the conveyor's status (an Uno resets when the port opens: its
    bootloader takes up to 2 s). Raises GutcheckError when the port cannot be opened."""
    port = open_port(url)
    knobs, conveyor = KnobParser(), ConveyorParser()
    try:
        end = time.monotonic() + listen_s
        while time.monotonic() < end:
            readings = knobs.feed(port.read(256))
            if readings:
                return Device(url, "knobs", _knob_format(readings[-1]),
                              protocol.VERSION if readings[-1].seq is not None else 1)
            if knobs.old_frames:
                return Device(url, "knobs", "protocol version 2 frames (CRC-8, `*CC`): flash the current knob "
                              "box sketch", 2)
        end, asked = time.monotonic() + answer_s, 0.0
        while time.monotonic() < end:
            if time.monotonic() - asked > 0.5:
                port.write(protocol.STATUS)
                asked = time.monotonic()
            for message in conveyor.feed(port.read(256)):
                if isinstance(message, BeltStatus):
                    return Device(url, "conveyor", f"protocol version {message.version}, belt "
                                  f"{protocol.BELT_STATES[message.state]}, {message.steps_per_s} steps/s",
                                  message.version)
        return Device(url)
    except (serial.SerialException, OSError) as exc:
        return Device(url, "", f"port failed while listening ({exc})")
    finally:
        port.close()


def _knob_format(reading: KnobReading) -> str:
    if reading.seq is None:
        return "prototype line format (_34#...#34_): flash the current knob box sketch for checksums"
    return f"protocol version {protocol.VERSION} frames ($K), knobs at {reading.a} / {reading.b} permille"


class HardwareCheck:
    """The checklist. `conveyor_url` / `knobs_url` name the ports; those left empty are searched for
    among `candidates` (default: every listed serial port)."""

    def __init__(self, say: Callable[[str], None], conveyor_url: str = "", knobs_url: str = "",
                 candidates: list[str] | None = None, check_knobs: bool = True, check_conveyor: bool = True,
                 rest_s: float = 2.0, sweep_s: float = 20.0, stop: threading.Event | None = None):
        self.say = say
        self.conveyor_url, self.knobs_url = conveyor_url, knobs_url
        self.candidates = candidates
        self.check_knobs, self.check_conveyor = check_knobs, check_conveyor
        self.rest_s, self.sweep_s = rest_s, sweep_s
        self.stop = stop or threading.Event()
        self.report = CheckReport()

    def _result(self, name: str, ok: bool, detail: str) -> bool:
        self.report.results.append(CheckResult(name, ok, detail))
        self.say(f"  {'PASS' if ok else 'FAIL'}  {name}: {detail}")
        return ok

    def run(self) -> CheckReport:
        """Every step in order; a port named but not there is a GutcheckError before anything runs."""
        for url in (self.knobs_url, self.conveyor_url):
            if url:
                open_port(url).close()
        self.say("1. Serial ports")
        listed = serial_ports()
        for device, description in listed:
            self.say(f"  {device}  {description}")
        if not listed:
            self.say("  (the system lists none; ports named with --conveyor / --knobs are still tried)")
        found = self._find_devices([d for d, _ in listed] if self.candidates is None else self.candidates)
        if self.check_knobs and not self.stop.is_set():
            self._knob_steps(found.get("knobs"))
        if self.check_conveyor and not self.stop.is_set():
            self._conveyor_steps(found.get("conveyor"))
        passed = sum(r.ok for r in self.report.results)
        self.say(f"{passed} of {len(self.report.results)} checks passed"
                 + ("" if self.report.ok else ": see FAIL lines above and docs/wiring.md"))
        return self.report

    # -- 2: which port is which ------------------------------------------------------------------
    def _find_devices(self, candidates: list[str]) -> dict[str, Device]:
        self.say("2. Devices")
        found: dict[str, Device] = {}
        named = {"knobs": self.knobs_url, "conveyor": self.conveyor_url}
        for kind, url in named.items():
            if url:
                device = identify(url)  # a named port that cannot open: GutcheckError (bad input)
                self.say(f"  {url}: {LABELS[device.kind]} {device.detail}".rstrip())
                if device.kind == kind:
                    found[kind] = device
        wanted = [k for k in ("knobs", "conveyor") if k not in found and not named[k]
                  and getattr(self, f"check_{k}")]
        for url in candidates:
            if not wanted or self.stop.is_set():
                break
            if url in named.values():
                continue
            try:
                device = identify(url)
            except GutcheckError as exc:
                self.say(f"  {exc}")
                continue
            self.say(f"  {url}: {LABELS[device.kind]} {device.detail}".rstrip())
            if device.kind in wanted:
                found[device.kind] = device
                wanted.remove(device.kind)
        for kind in ("knobs", "conveyor"):
            label = LABELS[kind]
            if getattr(self, f"check_{kind}"):
                device = found.get(kind)
                self._result(f"{label} found", device is not None,
                             f"on {device.url}, {device.detail}" if device else
                             f"no port answered as the {label}: check its cable or Bluetooth pairing and that it "
                             "runs the Gutcheck sketch")
        return found

    # -- 3: knobs ----------------------------------------------------------------------------------
    def _knob_steps(self, device: Device | None) -> None:
        self.say("3. Knob box")
        if device is None:
            self.say("  skipped: no knob box")
            return
        self._result("knob box protocol", device.version == protocol.VERSION, device.detail)
        readings: list[KnobReading] = []
        link = KnobLink(device.url, on_reading=readings.append).start(require_open=True)
        try:
            self.say(f"  leave both knobs alone for {self.rest_s:g} s ...")
            self._wait(self.rest_s)
            rest = list(readings)
            if len(rest) < 2:
                self._result("knobs at rest", False, f"{len(rest)} readings in {self.rest_s:g} s: the box sends "
                                                     "every 500 ms; check the Bluetooth link")
            else:
                noise = {k: max(getattr(r, k) for r in rest) - min(getattr(r, k) for r in rest) for k in "ab"}
                self._result("knobs at rest", max(noise.values()) <= KNOB_NOISE_LIMIT,
                             f"noise A {noise['a']}, B {noise['b']} permille peak to peak over {len(rest)} "
                             f"readings (limit {KNOB_NOISE_LIMIT})")
            for knob in "ab":
                self._sweep(knob, readings)
        finally:
            link.close()

    def _sweep(self, knob: str, readings: list[KnobReading]) -> None:
        start = len(readings)  # before the instruction: a quick hand's first reading must count
        self.say(f"  turn {KNOB_NAMES[knob]} slowly from one end to the other (up to {self.sweep_s:g} s) ...")

        def seen() -> tuple[int, int]:
            values = [getattr(r, knob) for r in readings[start:]]
            return (min(values), max(values)) if values else (1000, 0)

        end = time.monotonic() + self.sweep_s
        while time.monotonic() < end and not self.stop.is_set():
            low, high = seen()
            if low <= KNOB_END_MARGIN and high >= 1000 - KNOB_END_MARGIN:
                break
            time.sleep(0.05)
        low, high = seen()
        ok = low <= KNOB_END_MARGIN and high >= 1000 - KNOB_END_MARGIN
        self._result(f"{KNOB_NAMES[knob]} range", ok, f"{low} to {high} permille seen" + (
            "" if ok else f"; both ends must come within {KNOB_END_MARGIN} of 0 and 1000: check the wiring of "
                          "its pot (3.3 V, GND, wiper) or turn it all the way"))

    # -- 4: conveyor -------------------------------------------------------------------------------
    def _conveyor_steps(self, device: Device | None) -> None:
        self.say("4. Conveyor")
        if device is None:
            self.say("  skipped: no conveyor")
            return
        if not self._result("conveyor protocol", device.version == protocol.VERSION,
                            device.detail + ("" if device.version == protocol.VERSION else
                                             f"; this PC speaks version {protocol.VERSION}: flash the current "
                                             "sketch (docs/wiring.md)")):
            return
        link = ConveyorLink(device.url).start(require_open=True)
        try:
            self.say("  starting the belt: the motor should turn now")
            link.resume()
            self._result("belt starts", self._state(link, "R"), self._belt(link))
            link.send_verdict(False)
            delivered = link.wait_delivered(1.0)
            time.sleep(0.1)
            self._result("OK verdict", delivered and link.belt_state == "R",
                         f"acknowledged: {'yes' if delivered else 'no'}, {self._belt(link)}")
            link.send_verdict(True)
            delivered = link.wait_delivered(1.0)
            self._result("defect verdict", delivered and self._state(link, "D"),
                         f"acknowledged: {'yes' if delivered else 'no'}, {self._belt(link)}; the lamp should be on "
                         "and the motor still")
            link.resume()
            self._state(link, "R")
            self.say("  pausing heartbeats: the conveyor's watchdog must stop the belt within about 1 s")
            link.heartbeats_enabled = False
            stopped = self._state(link, "T", timeout_s=WATCHDOG_WINDOW_S[1] + 0.5, ask=False)
            # from the last frame the link wrote, not from the pause: on a busy machine the last
            # heartbeat may have gone out a few tenths of a second before it
            took = time.monotonic() - link.last_tx
            link.heartbeats_enabled = True
            self._result("watchdog", stopped and WATCHDOG_WINDOW_S[0] <= took <= WATCHDOG_WINDOW_S[1],
                         f"belt stopped {took:.2f} s after the last heartbeat" if stopped else
                         f"belt still {self._belt(link)} {took:.1f} s after the heartbeats stopped")
            link.stop_belt()
            self._state(link, "C")
            self.say(f"  belt left stopped ({self._belt(link)}); inspection starts it again")
        finally:
            link.close()

    @staticmethod
    def _belt(link: ConveyorLink) -> str:
        state = protocol.BELT_STATES.get(link.belt_state, link.belt_state)
        return f"belt {state}" + (f" at {link.status.steps_per_s} steps/s" if link.status else "")

    def _state(self, link: ConveyorLink, state: str, timeout_s: float = 1.0, ask: bool = True) -> bool:
        """Wait for the belt state; `ask` requests status meanwhile (any frame feeds the watchdog: off
        while the watchdog is being checked, when the conveyor's own state event tells)."""
        end = time.monotonic() + timeout_s
        asked = 0.0
        while time.monotonic() < end and not self.stop.is_set():
            if link.belt_state == state:
                return True
            if ask and time.monotonic() - asked > 0.3:
                link.request_status()
                asked = time.monotonic()
            time.sleep(0.02)
        return link.belt_state == state

    def _wait(self, seconds: float) -> None:
        self.stop.wait(seconds)
