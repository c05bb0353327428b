"""Device simulators for the demo and the tests: a knob box and a conveyor speaking protocol v2
over a device end the links open as a real serial port.

The product's device end is a loopback TCP socket (`socket://127.0.0.1:<port>`, a pyserial URL),
which works on every system; the tests also drive the simulators over pseudo-terminals
(tests/ptydevice.py, POSIX only), the closest thing to a USB serial port a test machine has.

The conveyor model mirrors arduino_firmware/conveyor/conveyor_logic.cpp; the conformance tests
run the same checks against both (and against the firmware in the AVR emulator).
"""

from __future__ import annotations

import select
import socket
import threading
import time
from typing import Protocol

from app.links import protocol
from app.links.protocol import LineSplitter, check_frame


class DeviceEnd(Protocol):
    """The simulated device's side of a serial link; `url` is what the link opens."""

    url: str

    def plug(self) -> None: ...
    def unplug(self) -> None: ...
    def read(self, timeout_s: float) -> bytes: ...
    def write(self, data: bytes) -> None: ...


class SocketDevice:
    """A device end on a loopback TCP port: the link connects to `url` (socket://127.0.0.1:<port>).
    `unplug()` closes the port and drops the connection, like a USB cable pulled; `plug()` listens
    on the same port again. One connection at a time, as a serial port has one end."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host, self.port = host, port
        self._server: socket.socket | None = None
        self._client: socket.socket | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"socket://{self.host}:{self.port}"

    def plug(self) -> None:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((self.host, self.port))
        server.listen(1)
        self.port = server.getsockname()[1]  # port 0 picks a free one; a re-plug keeps it
        self._server = server

    def unplug(self) -> None:
        with self._lock:
            for sock in (self._client, self._server):
                if sock is not None:
                    sock.close()
            self._client = self._server = None

    def read(self, timeout_s: float) -> bytes:
        with self._lock:
            server, client = self._server, self._client
        if server is None:
            time.sleep(timeout_s)
            return b""
        try:
            if client is None:  # nobody connected yet: wait for the link to open the port
                ready, _, _ = select.select([server], [], [], timeout_s)
                if ready:
                    client, _ = server.accept()
                    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # serial-like latency
                    with self._lock:
                        self._client = client
                return b""
            ready, _, _ = select.select([client], [], [], timeout_s)
            if not ready:
                return b""
            data = client.recv(1024)
            if not data:  # the link closed its end: wait for the next one
                self._drop(client)
            return data
        except OSError:  # unplugged while waiting
            return b""

    def write(self, data: bytes) -> None:
        with self._lock:
            client = self._client
        if client is not None:
            try:
                client.sendall(data)
            except OSError:
                self._drop(client)

    def _drop(self, client: socket.socket) -> None:
        with self._lock:
            if self._client is client:
                self._client = None
        client.close()


class ConveyorModel:
    """The conveyor's logic (protocol v2): states, acknowledgements, watchdog. Time in seconds."""

    def __init__(self, watchdog_s: float = 1.0, status_s: float = 0.5, prototype_compat: bool = False):
        self.watchdog_s = watchdog_s
        self.status_s = status_s
        self.prototype_compat = prototype_compat
        self.state = "R" if prototype_compat else "W"
        self.steps_per_s = 800
        self.last_seq = 0
        self.last_session = 0  # 0: none yet, or the last verdict had none (a version 1 PC)
        self.lamp = False
        self.errors = 0
        self.acted: list[bool] = []  # every verdict acted on, in order (True = defect)
        self.last_rx = 0.0
        self.last_status = 0.0
        self.splitter = LineSplitter(max_line=protocol.MAX_LINE + 8)
        self.out = bytearray()
        self._in_frame = False

    def _send(self, body: str) -> None:
        self.out += protocol.frame(body)

    def _set(self, state: str) -> None:
        if state == "R":
            self.lamp = False  # on from a defect until the belt runs again
        if state != self.state:
            self.state = state
            self._send(f"E,{state}")

    def _status(self) -> None:
        self._send(f"S,{self.state},{self.steps_per_s},{self.last_seq},{self.errors},{protocol.VERSION}")

    def _verdict(self, defect: bool) -> None:
        self.acted.append(defect)
        if defect:
            self.lamp = True
            self._set("D")

    def feed(self, data: bytes, now: float) -> None:
        for byte in data:
            if not self._in_frame and byte in b"01":
                if self.prototype_compat:  # only the prototype's PC sends bare verdict bytes
                    self.last_rx = now
                    self._verdict(byte == ord("1"))
                else:
                    self.errors += 1
                continue
            if byte == ord("$"):
                if self._in_frame and self.splitter.buffer:
                    self.errors += 1
                self._in_frame = True
                self.splitter.buffer.clear()
                self.splitter.overflowed = False
            if byte == 0x0D and self._in_frame:
                continue  # as the firmware: a carriage return inside a frame is ignored
            if not self._in_frame:
                if byte not in b"\r\n":
                    self.errors += 1
                continue
            for line in self.splitter.feed(bytes([byte])):
                self._in_frame = False
                self._line(line, now)
            if self.splitter.dropped:
                self.errors += self.splitter.dropped
                self.splitter.dropped = 0
                self._in_frame = False

    @staticmethod
    def _number(field: str, low: int, high: int) -> int | None:
        return int(field) if field.isdigit() and len(field) <= 5 and low <= int(field) <= high else None

    def _line(self, line: bytes, now: float) -> None:
        body = check_frame(line)
        f = body.split(",") if body else [""]
        ok = True
        # Fields after the known ones are a later version's additions: ignored (docs/protocols.md).
        if f[0] == "H":
            pass
        elif f[0] == "V" and len(f) >= 3 and self._number(f[1], 1, 65535) and f[2] in ("0", "1"):
            seq = int(f[1])
            session = (self._number(f[3], 1, 65535) or 0) if len(f) >= 4 else 0
            resend = session != 0 and session == self.last_session and seq == self.last_seq
            self.last_seq, self.last_session = seq, session
            if not resend:
                self._verdict(f[2] == "1")
            self._send(f"A,{seq}")
        elif f[0] == "R":
            if self.state == "R":
                self._send("E,R")  # answered even when it changes nothing
            self._set("R")
        elif f[0] == "X":
            self._set("C")
        elif f[0] == "Q":
            self._status()
        elif f[0] == "P" and len(f) >= 2 and self._number(f[1], 50, 4000):
            self.steps_per_s = int(f[1])
            self._status()
        else:
            ok = False
        if ok:
            self.last_rx = now
        else:
            self.errors += 1

    def tick(self, now: float) -> None:
        if not self.prototype_compat and self.state == "R" and now - self.last_rx > self.watchdog_s:
            self._set("T")
        if now - self.last_status >= self.status_s:
            self.last_status = now
            self._status()

    def press_button(self, now: float) -> None:
        """A debounced press of the resume button: resumes from a stop, never from power-up."""
        if self.state in ("D", "T", "C"):
            self.last_rx = now
            self._set("R")

    def take_output(self) -> bytes:
        data, self.out = bytes(self.out), bytearray()
        return data


class _DeviceThread:
    def __init__(self, device: DeviceEnd | None = None):
        self.device = device if device is not None else SocketDevice()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=type(self).__name__)
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        """The serial port a link opens to reach this device (a pyserial URL or a device path)."""
        return self.device.url

    def start(self):
        self.device.plug()
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.device.unplug()

    def unplug(self) -> None:
        with self.lock:
            self.device.unplug()

    def plug(self) -> None:
        with self.lock:
            self.device.plug()

    def _run(self) -> None:
        raise NotImplementedError


class ConveyorSimulator(_DeviceThread):
    """The conveyor behind `device` (default: a loopback socket); `url` is its serial port.
    `model` holds the belt state."""

    def __init__(self, device: DeviceEnd | None = None, **model_options):
        super().__init__(device)
        self.model = ConveyorModel(**model_options)

    def press_button(self, pressed: bool = True) -> None:
        """The resume button on the conveyor (already debounced)."""
        if pressed:
            with self.lock:
                self.model.press_button(time.monotonic())

    @property
    def running(self) -> bool:
        return self.model.state == "R"

    def _run(self) -> None:
        self.model.last_rx = time.monotonic()
        while not self._stop.is_set():
            data = self.device.read(0.005)
            with self.lock:
                now = time.monotonic()
                self.model.feed(data, now)
                self.model.tick(now)
                out = self.model.take_output()
                if out:
                    self.device.write(out)


class KnobBoxSimulator(_DeviceThread):
    """The knob box behind `device` (default: a loopback socket): sends both positions on change and every `heartbeat_s`.
    `script` is a list of (seconds from start, a, b) moves, for demos; `set()` moves the knobs now."""

    def __init__(self, device: DeviceEnd | None = None, heartbeat_s: float = 0.5, prototype_format: bool = False,
                 script: list[tuple[float, int, int]] | None = None):
        super().__init__(device)
        self.heartbeat_s = heartbeat_s
        self.prototype_format = prototype_format
        self.script = sorted(script or [])
        self.a, self.b = 500, 500
        self.seq = 0
        self._changed = True
        self.silent = False  # True: the box is on but sends nothing (a hung Bluetooth link)

    def set(self, a: int, b: int) -> None:
        with self.lock:
            self.a, self.b = max(0, min(1000, int(a))), max(0, min(1000, int(b)))
            self._changed = True

    def _line(self) -> bytes:
        if self.prototype_format:
            raw = [round(v * protocol.PROTOTYPE_FULL_SCALE / 1000) for v in (self.a, self.b)]
            return f"_34#{raw[0]}#34_\n_39#{raw[1]}#39_\n".encode()
        line = protocol.knob_frame(self.seq, self.a, self.b)
        self.seq = (self.seq + 1) % 256
        return line

    def _run(self) -> None:
        start = time.monotonic()
        last = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            while self.script and now - start >= self.script[0][0]:
                _, a, b = self.script.pop(0)
                self.set(a, b)
            with self.lock:
                if not self.silent and (self._changed or now - last >= self.heartbeat_s):
                    self.device.write(self._line())
                    self._changed, last = False, now
            self.device.read(0.01)  # drain anything written to us; doubles as the tick
