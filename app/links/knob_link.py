"""The knob box link: the two knob positions (permille) and the link state."""

from __future__ import annotations

import threading
from typing import Callable

from app.links.protocol import KnobParser, KnobReading
from app.links.serial_link import SerialLink


class KnobLink:
    """Reads the knob box over any pyserial URL (Bluetooth SPP: COMx or /dev/rfcomm0)."""

    def __init__(self, url: str, on_reading: Callable[[KnobReading], None] | None = None, **link_options):
        self.parser = KnobParser()
        self.on_reading = on_reading
        self.latest: KnobReading | None = None
        self.readings = 0
        self.missed = 0  # gaps in the sequence numbers
        self._last_seq: int | None = None
        self._lock = threading.Lock()
        self.link = SerialLink(url, self._on_bytes, name="knobs", **link_options)

    def _on_bytes(self, data: bytes) -> bool:
        readings = self.parser.feed(data)
        for r in readings:
            with self._lock:
                if r.seq is not None and self._last_seq is not None:
                    self.missed += (r.seq - self._last_seq - 1) % 256
                self._last_seq = r.seq
                self.latest = r
                self.readings += 1
            if self.on_reading:
                self.on_reading(r)
        return bool(readings)

    @property
    def garbage(self) -> int:
        return self.parser.garbage

    def state(self) -> str:
        return self.link.state()

    def start(self, require_open: bool = False) -> "KnobLink":
        """Start; with `require_open` a port that cannot be opened now is a GutcheckError."""
        self.link.start(require_open)
        return self

    def close(self) -> None:
        self.link.close()
