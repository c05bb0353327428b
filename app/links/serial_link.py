"""A serial port that survives a shop floor: a reader thread feeds a parser, the link state
comes from the age of the last valid message, and an unplugged port is reopened with backoff.

Any pyserial URL works: ``COM7``, ``/dev/rfcomm0``, ``/dev/ttyACM0``, ``socket://host:port``, ``loop://``.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

import serial

from capture.errors import GutcheckError

CONNECTED, STALE, LOST = "connected", "stale", "lost"
BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 5.0)


class SerialLink:
    """Owns one port. `on_bytes(data) -> bool` is called in the reader thread for everything read
    and returns whether it held at least one valid message (that is what keeps the link alive)."""

    def __init__(self, url: str, on_bytes: Callable[[bytes], bool], baudrate: int = 115200,
                 stale_after_s: float = 1.5, lost_after_s: float = 5.0, name: str = "link",
                 backoff_s: tuple[float, ...] = BACKOFF_S):
        self.url = url
        self.on_bytes = on_bytes
        self.baudrate = baudrate
        self.stale_after_s = stale_after_s
        self.lost_after_s = lost_after_s
        self.name = name
        self.backoff_s = backoff_s
        self.port: serial.SerialBase | None = None
        self.last_valid: float | None = None
        self.connects = 0
        self.drops = 0  # times an open port was lost (an error, or silence past lost_after_s) while running
        self.last_error = ""
        self._opened_at = 0.0
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- state ------------------------------------------------------------------------------
    def state(self, now: float | None = None) -> str:
        """connected / stale / lost, by the age of the last valid message."""
        if self.port is None or self.last_valid is None:
            return LOST
        age = (time.monotonic() if now is None else now) - self.last_valid
        return CONNECTED if age < self.stale_after_s else STALE if age < self.lost_after_s else LOST

    def age(self) -> float | None:
        return None if self.last_valid is None else time.monotonic() - self.last_valid

    # -- life cycle ---------------------------------------------------------------------------
    def start(self, require_open: bool = False) -> "SerialLink":
        """Start the reader thread. With `require_open` the port is opened here first and a port that
        cannot be opened is a GutcheckError: a link named on the command line or in the settings is
        never skipped silently. Later drops are reopened with backoff and shown by state()."""
        if require_open:
            try:
                port = serial.serial_for_url(self.url, baudrate=self.baudrate, timeout=0.02)
            except (serial.SerialException, OSError, ValueError) as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise GutcheckError(f"{self.name} port {self.url!r} cannot be opened ({reason}); check the cable "
                                    f"and the port name (`python -m serial.tools.list_ports` lists them)") from None
            self._adopt(port)
        self._thread = threading.Thread(target=self._run, name=f"{self.name}-reader", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
        self._drop_port()

    def write(self, data: bytes) -> bool:
        """Write now; False when the port is not open or the write failed (the reader reconnects)."""
        with self._write_lock:
            port = self.port
            if port is None:
                return False
            try:
                port.write(data)
                return True
            except (serial.SerialException, OSError) as exc:
                self.last_error = str(exc)
                return False

    def _drop_port(self) -> None:
        with self._write_lock:
            port, self.port = self.port, None
        if port is not None:
            try:
                port.close()
            except (serial.SerialException, OSError):
                pass

    def _adopt(self, port: serial.SerialBase) -> None:
        with self._write_lock:
            self.port = port
        self.connects += 1
        self.last_valid = None
        self._opened_at = time.monotonic()

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            if self.port is None:
                try:
                    port = serial.serial_for_url(self.url, baudrate=self.baudrate, timeout=0.02)
                except (serial.SerialException, OSError, ValueError) as exc:
                    self.last_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    self._stop.wait(self.backoff_s[min(attempt, len(self.backoff_s) - 1)])
                    attempt += 1
                    continue
                self._adopt(port)
                attempt = 0
            try:
                data = self.port.read(self.port.in_waiting or 1)  # returns as soon as a byte is there
            except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
                self.last_error = str(exc) or type(exc).__name__
                if not self._stop.is_set():
                    self.drops += 1
                self._drop_port()
                continue
            now = time.monotonic()
            if data and self.on_bytes(data):
                self.last_valid = now
            # Silence for too long (a Bluetooth link that died without an error): reopen.
            if now - (self.last_valid or self._opened_at) > self.lost_after_s:
                self.last_error = f"nothing valid for {self.lost_after_s:g} s"
                self.drops += 1
                self._drop_port()
