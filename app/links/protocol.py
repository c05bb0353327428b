"""Gutcheck line protocol v3, as pure functions of bytes: no ports, no threads, no clocks.

Frames are ``$<body>*<CCCC>\\n`` with CCCC the CRC-16/CCITT-FALSE of body; see docs/protocols.md.
The knob parser also reads the prototype's ``_34#<raw>#34_`` / ``_39#<raw>#39_`` lines, the
conveyor side also the prototype's bare ``0`` / ``1`` verdict bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

MAX_LINE = 48  # longest frame without its "$" and newline: body, "*" and the four check digits
VERSION = 3
PROTOTYPE_FULL_SCALE = 4095


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: polynomial 0x1021, initial value 0xFFFF, no reflection.

    Versions 1 and 2 used CRC-8, which let about 1 in 256 frames damaged by a dropped or doubled
    byte through: over a bad cable, a verdict the PC never sent (issue 13, CI at f953445)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def crc8(data: bytes) -> int:
    """CRC-8, polynomial 0x07, initial value 0: versions 1 and 2, only to recognise old firmware."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def frame(body: str) -> bytes:
    """One protocol line for `body`."""
    raw = body.encode("ascii")
    if b"$" in raw or b"*" in raw or len(raw) > MAX_LINE - 5:
        raise ValueError(f"not a frame body: {body!r}")
    return b"$" + raw + b"*%04X\n" % crc16(raw)


def _checked_body(line: bytes, digits: int, crc) -> str | None:
    line = line.rstrip(b"\r")
    if len(line) < digits + 2 or line[:1] != b"$" or line[-digits - 1:-digits] != b"*" or len(line) > MAX_LINE + 1:
        return None
    body, cc = line[1:-digits - 1], line[-digits:]
    if not all(c in b"0123456789ABCDEF" for c in cc):  # upper-case hex only; int() would accept " 6" or "\t6"
        return None
    if int(cc, 16) != crc(body) or not all(32 <= b <= 126 and b not in b"$*" for b in body):
        return None
    return body.decode("ascii")


def check_frame(line: bytes) -> str | None:
    """The body of a complete line (without the newline) if it is a valid frame, else None."""
    return _checked_body(line, 4, crc16)


def old_frame_body(line: bytes) -> str | None:
    """The body of a version 1 or 2 frame (``*CC``, CRC-8), else None. Only to recognise old firmware
    (and so refuse to run the belt with it): no verdict, acknowledgement or knob reading is ever
    taken from such a frame."""
    return _checked_body(line, 2, crc8)


class LineSplitter:
    """Bytes in, complete lines out; an overlong line is dropped whole and counted."""

    def __init__(self, max_line: int = MAX_LINE + 8):
        self.max_line = max_line
        self.buffer = bytearray()
        self.overflowed = False
        self.dropped = 0

    def feed(self, data: bytes) -> list[bytes]:
        lines = []
        for byte in data:
            if byte == 0x0A:
                if self.overflowed:
                    self.dropped += 1
                else:
                    lines.append(bytes(self.buffer))
                self.buffer.clear()
                self.overflowed = False
            elif len(self.buffer) >= self.max_line:
                self.overflowed = True
            else:
                self.buffer.append(byte)
        return lines


def _uint(text: str, high: int) -> int | None:
    if not text.isdigit() or len(text) > 5:
        return None
    value = int(text)
    return value if value <= high else None


class LineParser:
    """Bytes in, messages out: splits lines, parses each with `parse_line`, counts the garbage."""

    letters = ""  # the message letters this device sends

    def __init__(self) -> None:
        self.splitter = LineSplitter()
        self.garbage = 0
        self.old_frames = 0  # valid version 1 or 2 frames of this device's kind: it runs old firmware

    def parse_line(self, line: bytes):
        raise NotImplementedError

    def feed(self, data: bytes) -> list:
        out = []
        for line in self.splitter.feed(data):
            msg = self.parse_line(line)
            old = old_frame_body(line)
            if old and old[0] in self.letters:
                self.old_frames += 1
            elif msg is None and line.strip():
                self.garbage += 1
            if msg is not None:
                out.append(msg)
        self.garbage += self.splitter.dropped
        self.splitter.dropped = 0
        return out


@dataclass(frozen=True)
class KnobReading:
    """Both knob positions in permille (0..1000); seq is None for the prototype's lines."""

    a: int
    b: int
    seq: int | None = None


_PROTO_KNOB = re.compile(rb"^_(34|39)#(\d{1,4})#(34|39)_\r?$")


class KnobParser(LineParser):
    """Parses knob box bytes into readings; counts what it drops as garbage."""

    letters = "K"

    def __init__(self) -> None:
        super().__init__()
        self.last = (0, 0)  # prototype lines come one pin at a time

    def parse_line(self, line: bytes) -> KnobReading | None:
        body = check_frame(line)
        if body is not None:
            fields = body.split(",")
            if len(fields) == 4 and fields[0] == "K":
                seq, a, b = _uint(fields[1], 255), _uint(fields[2], 1000), _uint(fields[3], 1000)
                if None not in (seq, a, b):
                    self.last = (a, b)
                    return KnobReading(a, b, seq)
            return None
        m = _PROTO_KNOB.match(line)
        if not m or m.group(1) != m.group(3) or int(m.group(2)) > PROTOTYPE_FULL_SCALE:
            return None
        value = round(int(m.group(2)) * 1000 / PROTOTYPE_FULL_SCALE)
        a, b = self.last
        self.last = (value, b) if m.group(1) == b"34" else (a, value)
        return KnobReading(*self.last)


@dataclass(frozen=True)
class Ack:
    seq: int


@dataclass(frozen=True)
class BeltEvent:
    state: str  # W R D T C (docs/protocols.md)


@dataclass(frozen=True)
class BeltStatus:
    state: str
    steps_per_s: int
    last_seq: int
    errors: int
    version: int = 1  # the conveyor's protocol version: a field of its own from version 2 on


BELT_STATES = {"W": "waiting", "R": "running", "D": "stopped: defect", "T": "stopped: watchdog",
               "C": "stopped: command"}


class ConveyorParser(LineParser):
    """Parses what the conveyor sends: acknowledgements, state events, status."""

    letters = "AES"

    def parse_line(self, line: bytes) -> Ack | BeltEvent | BeltStatus | None:
        body = check_frame(line)
        if body is not None:
            return self._message(body)
        # A version 1 or 2 conveyor (CRC-8): only its status is read, so that the link can hold the
        # belt and say which firmware to flash; its version is at most 2 whatever the frame says.
        old = self._message(old_frame_body(line) or "")
        return replace(old, version=min(old.version, 2)) if isinstance(old, BeltStatus) else None

    @staticmethod
    def _message(body: str) -> Ack | BeltEvent | BeltStatus | None:
        f = body.split(",")
        # Fields beyond the ones known here are a later version's additions: ignored.
        if f[0] == "A" and len(f) >= 2:
            seq = _uint(f[1], 65535)
            return Ack(seq) if seq else None
        if f[0] == "E" and len(f) >= 2 and f[1] in BELT_STATES:
            return BeltEvent(f[1])
        if f[0] == "S" and len(f) >= 5 and f[1] in BELT_STATES:
            sps, seq, err = _uint(f[2], 65535), _uint(f[3], 65535), (int(f[4]) if f[4].isdigit() else None)
            version = _uint(f[5], 255) if len(f) >= 6 else 1
            if None not in (sps, seq, err, version):
                return BeltStatus(f[1], sps, seq, err, version)
        return None


def verdict_frame(seq: int, defect: bool, session: int) -> bytes:
    """A verdict for part `seq` of the PC connection `session` (1-65535, random per connection)."""
    if not 1 <= session <= 65535:
        raise ValueError(f"session must be 1-65535, not {session}")
    return frame(f"V,{seq},{1 if defect else 0},{session}")


HEARTBEAT = frame("H")
RESUME = frame("R")
STOP = frame("X")
STATUS = frame("Q")


def speed_frame(steps_per_s: int) -> bytes:
    return frame(f"P,{int(steps_per_s)}")


def knob_frame(seq: int, a: int, b: int) -> bytes:
    return frame(f"K,{seq % 256},{a},{b}")
