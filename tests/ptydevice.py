"""A simulated device's end of a pseudo-terminal pair (POSIX only, tests only): the link opens a
real serial port, the closest a test machine has to the knob box's or conveyor's USB port."""

from __future__ import annotations

import os
import select
import time
import tty
from pathlib import Path


class PtyDevice:
    """The device end of a pty pair. The serial side is reachable at `path` (a symlink to the
    slave), so `unplug()` and `plug()` look to the link like a USB cable pulled and put back."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.master: int | None = None
        self._slave: int | None = None

    @property
    def url(self) -> str:
        return str(self.path)

    def plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        self.master, self._slave = master, slave
        tmp = self.path.with_name(self.path.name + ".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.ttyname(slave))
        os.replace(tmp, self.path)

    def unplug(self) -> None:
        self.path.unlink(missing_ok=True)
        for fd in (self.master, self._slave):
            if fd is not None:
                os.close(fd)
        self.master = self._slave = None

    def read(self, timeout_s: float) -> bytes:
        master = self.master
        if master is None:
            time.sleep(timeout_s)
            return b""
        try:
            ready, _, _ = select.select([master], [], [], timeout_s)
            return os.read(master, 1024) if ready else b""
        except OSError:
            return b""

    def write(self, data: bytes) -> None:
        if self.master is not None:
            try:
                os.write(self.master, data)
            except OSError:
                pass
