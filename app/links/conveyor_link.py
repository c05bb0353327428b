"""The conveyor link: verdicts delivered in order with acknowledgement, timeout and retry,
none lost and none acted on twice; heartbeats for the conveyor's watchdog; belt commands."""

from __future__ import annotations

import collections
import secrets
import threading
import time

from app.links import protocol
from app.links.protocol import Ack, BeltEvent, BeltStatus, ConveyorParser
from app.links.serial_link import LOST, SerialLink


class ConveyorLink:
    """Talks to the conveyor Arduino (or its simulator) over any pyserial URL."""

    def __init__(self, url: str, ack_timeout_s: float = 0.15, retries: int = 5, heartbeat_s: float = 0.2,
                 prototype: bool = False, **link_options):
        self.parser = ConveyorParser()
        self.ack_timeout_s = ack_timeout_s
        self.retries = retries
        self.heartbeat_s = heartbeat_s
        self.prototype = prototype  # send bare '0'/'1' like the prototype: no acknowledgement, no heartbeat
        self.heartbeats_enabled = not prototype
        self.belt_state = "?"
        self.status: BeltStatus | None = None
        self.delivered = 0
        self.acks_received = 0
        self.late_acks = 0  # acknowledgements of no verdict in flight (a resend's late duplicate): ignored
        self.resends = 0
        self.failures = 0
        # Why the link is holding the belt stopped ("" = it is not): a verdict that could not be
        # delivered, or a conveyor speaking an older protocol. Holding = a stop command and no
        # heartbeats, so the conveyor's watchdog stops the belt even if the stop is lost.
        self.holding = ""
        self.conveyor_version: int | None = None
        self.latencies_s: collections.deque[float] = collections.deque(maxlen=10_000)
        self._queue: collections.deque[tuple[int, bool, float]] = collections.deque()
        self._acked: set[int] = set()  # holds at most the verdict in flight: a late duplicate of an
        # earlier acknowledgement must not mark the same number delivered one wrap (65 535 verdicts) later
        self._seq = 0
        # A new random id per connection: the conveyor never takes this connection's seq 1 for a
        # resend of the previous PC run's seq 1 (docs/protocols.md, "Sessions").
        self.session = secrets.randbelow(65535) + 1
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._last_tx = 0.0
        self.link = SerialLink(url, self._on_bytes, name="conveyor", **link_options)
        self._sender = threading.Thread(target=self._send_loop, name="conveyor-sender", daemon=True)

    # -- incoming (reader thread) ---------------------------------------------------------------
    def _on_bytes(self, data: bytes) -> bool:
        messages = self.parser.feed(data)
        with self._cond:
            for m in messages:
                if isinstance(m, Ack):
                    self.acks_received += 1
                    if self._queue and self._queue[0][0] == m.seq:
                        self._acked.add(m.seq)
                    else:
                        self.late_acks += 1
                elif isinstance(m, BeltEvent):
                    self.belt_state = m.state
                elif isinstance(m, BeltStatus):
                    self.status = m
                    self.belt_state = m.state
                    self.conveyor_version = m.version
            if messages:
                self._cond.notify_all()
        return bool(messages)

    # -- outgoing -----------------------------------------------------------------------------
    def send_verdict(self, defect: bool) -> int:
        """Queue a verdict; returns its sequence number. Never blocks."""
        with self._cond:
            self._seq = self._seq % 65535 + 1
            self._queue.append((self._seq, bool(defect), time.monotonic()))
            self._cond.notify_all()
            return self._seq

    @property
    def last_tx(self) -> float:
        """time.monotonic() of the last frame written to the conveyor (its watchdog counts from it)."""
        return self._last_tx

    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def resume(self) -> bool:
        """Ask the belt to run; refused (False) while the conveyor speaks an older protocol: it would
        run without heartbeats until its watchdog stopped it."""
        if self.conveyor_version is not None and self.conveyor_version < protocol.VERSION:
            return False
        return self._command(protocol.RESUME)

    def stop_belt(self) -> bool:
        return self._command(protocol.STOP)

    def set_speed(self, steps_per_s: int) -> bool:
        return self._command(protocol.speed_frame(steps_per_s))

    def request_status(self) -> bool:
        return self._command(protocol.STATUS)

    def _command(self, data: bytes) -> bool:
        self._last_tx = time.monotonic()
        return self.link.write(data)

    def state(self) -> str:
        return self.link.state()

    def wait_delivered(self, timeout_s: float) -> bool:
        """Block (not for the Tk thread) until every queued verdict is acknowledged."""
        end = time.monotonic() + timeout_s
        with self._cond:
            while self._queue and time.monotonic() < end:
                self._cond.wait(0.05)
            return not self._queue

    def _deliver(self, seq: int, defect: bool) -> bool:
        if self.prototype:
            return self.link.write(b"1" if defect else b"0")
        data = protocol.verdict_frame(seq, defect, self.session)
        for attempt in range(self.retries + 1):
            if attempt:
                self.resends += 1
            if not self.link.write(data):
                return False
            self._last_tx = time.monotonic()
            end = self._last_tx + self.ack_timeout_s
            with self._cond:
                while seq not in self._acked and not self._stop.is_set():
                    left = end - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                if seq in self._acked:
                    self._acked.discard(seq)
                    return True
        return False

    def _hold_belt(self, why: str) -> None:
        """Any doubt that verdicts reach the conveyor stops the belt; resuming is the operator's call."""
        if not self.holding and not self.prototype:
            self._command(protocol.STOP)
        self.holding = why

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                head = self._queue[0] if self._queue else None
            if head is not None and self.link.port is not None:
                seq, defect, _ = head
                started = time.monotonic()
                if self._deliver(seq, defect):
                    with self._cond:
                        self._queue.popleft()
                        self.delivered += 1
                        self.latencies_s.append(time.monotonic() - started)  # first send to acknowledgement
                        self._cond.notify_all()
                    continue
                self.failures += 1  # kept at the head of the queue: tried again, never dropped
                self._hold_belt(f"verdict {seq} not acknowledged after {self.retries + 1} sends")
                self._stop.wait(0.05)
            elif head is not None:
                self._stop.wait(0.02)  # port closed: the reader is reconnecting
            if self.conveyor_version is not None and self.conveyor_version < protocol.VERSION:
                self._hold_belt(f"the conveyor speaks protocol version {self.conveyor_version}, this PC "
                                f"{protocol.VERSION}: flash the current firmware")
            elif self.holding and head is None:
                self.holding = ""  # every verdict delivered: heartbeats again (the belt stays stopped)
            if self.heartbeats_enabled and not self.holding and time.monotonic() - self._last_tx >= self.heartbeat_s:
                self._command(protocol.HEARTBEAT)
            with self._cond:
                if not self._queue:
                    self._cond.wait(min(self.heartbeat_s, 0.05))

    # -- life cycle -----------------------------------------------------------------------------
    def start(self, require_open: bool = False) -> "ConveyorLink":
        """Start; with `require_open` a port that cannot be opened now is a GutcheckError."""
        self.link.start(require_open)
        self._sender.start()
        return self

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._sender.join(timeout=2)
        self.link.close()

    @property
    def lost(self) -> bool:
        return self.state() == LOST
