"""Knob and conveyor links over real pseudo-terminals (and loop://, socket://): states,
unplug and replug, and 10,000 verdicts over a lossy line with none lost and none acted twice."""

from __future__ import annotations

import random
import socket
import threading
import time

import pytest

from app.links import protocol
from app.links.conveyor_link import ConveyorLink
from app.links.knob_link import KnobLink
from app.links.protocol import KnobReading
from app.links.serial_link import CONNECTED, LOST, STALE
from app.links.simulators import ConveyorModel, ConveyorSimulator, KnobBoxSimulator, SocketDevice
from tests.ptydevice import PtyDevice
from tests.test_protocol import old_frame


def wait_for(predicate, timeout_s: float = 3.0) -> float:
    """Seconds it took for predicate() to hold; fails the test after timeout_s."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(0.005)
    return time.monotonic() - start


# Each link test runs over a pty (a serial port, as the devices' USB ports) and over the loopback
# socket the demo's simulated devices use on every system.
DEVICE_ENDS = {"pty": PtyDevice, "socket": lambda path: SocketDevice()}


@pytest.fixture(params=sorted(DEVICE_ENDS))
def knob_box(tmp_path, request):
    sim = KnobBoxSimulator(DEVICE_ENDS[request.param](tmp_path / "knobs"), heartbeat_s=0.1).start()
    yield sim
    sim.close()


@pytest.fixture(params=sorted(DEVICE_ENDS))
def conveyor(tmp_path, request):
    sim = ConveyorSimulator(DEVICE_ENDS[request.param](tmp_path / "conveyor")).start()
    yield sim
    sim.close()


def test_knob_link_follows_the_knobs(knob_box):
    link = KnobLink(knob_box.url).start()
    try:
        wait_for(lambda: link.state() == CONNECTED)
        knob_box.set(123, 987)
        wait_for(lambda: link.latest == KnobReading(123, 987, link.latest.seq if link.latest else None))
        assert link.garbage == 0
    finally:
        link.close()


def test_silent_knob_box_goes_stale_then_lost(knob_box):
    link = KnobLink(knob_box.url, stale_after_s=0.3, lost_after_s=0.8).start()
    try:
        wait_for(lambda: link.state() == CONNECTED)
        knob_box.silent = True
        wait_for(lambda: link.state() == STALE, 1.0)
        wait_for(lambda: link.state() == LOST, 2.0)
        knob_box.silent = False
        wait_for(lambda: link.state() == CONNECTED, 3.0)
    finally:
        link.close()


def test_unplug_shows_lost_and_replug_recovers_within_2_s(knob_box):
    link = KnobLink(knob_box.url, backoff_s=(0.1, 0.2, 0.4)).start()
    try:
        wait_for(lambda: link.state() == CONNECTED)
        knob_box.unplug()
        wait_for(lambda: link.state() == LOST, 1.0)
        time.sleep(0.5)
        knob_box.plug()
        took = wait_for(lambda: link.state() == CONNECTED, 2.0)
        assert took < 2.0
        assert link.link.connects >= 2
    finally:
        link.close()


def test_prototype_knob_box_is_understood(tmp_path):
    sim = KnobBoxSimulator(PtyDevice(tmp_path / "old"), prototype_format=True, heartbeat_s=0.1).start()
    link = KnobLink(sim.url).start()
    try:
        sim.set(250, 750)
        wait_for(lambda: link.latest is not None and (link.latest.a, link.latest.b) == (250, 750))
    finally:
        link.close()
        sim.close()


def test_loop_url_works():
    link = KnobLink("loop://").start()
    try:
        wait_for(lambda: link.link.port is not None)
        link.link.write(protocol.knob_frame(1, 400, 600))
        wait_for(lambda: link.latest == KnobReading(400, 600, 1))
    finally:
        link.close()


def test_socket_url_works():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def serve():
        conn, _ = server.accept()
        with conn:
            for i in range(20):
                try:
                    conn.sendall(protocol.knob_frame(i, 10 * i, 5))
                except OSError:
                    return  # the link closed its end: done
                time.sleep(0.02)

    threading.Thread(target=serve, daemon=True).start()
    link = KnobLink(f"socket://127.0.0.1:{server.getsockname()[1]}").start()
    try:
        wait_for(lambda: link.readings >= 10)
        assert link.missed == 0
    finally:
        link.close()
        server.close()


def test_conveyor_defect_stops_belt_and_resume_restarts(conveyor):
    link = ConveyorLink(conveyor.url).start()
    try:
        wait_for(lambda: link.state() == CONNECTED)
        link.resume()
        wait_for(lambda: conveyor.running and link.belt_state == "R")
        link.send_verdict(False)
        link.send_verdict(True)
        assert link.wait_delivered(2.0)
        wait_for(lambda: link.belt_state == "D")
        assert conveyor.model.acted == [False, True]
        link.resume()
        wait_for(lambda: link.belt_state == "R")
    finally:
        link.close()


def test_conveyor_watchdog_stops_the_belt_when_the_pc_goes_quiet(conveyor):
    link = ConveyorLink(conveyor.url).start()
    try:
        wait_for(lambda: link.link.port is not None)
        link.resume()
        wait_for(lambda: link.belt_state == "R")
        time.sleep(1.5)
        assert conveyor.running  # heartbeats keep it alive
        link.heartbeats_enabled = False
        took = wait_for(lambda: link.belt_state == "T", 2.0)
        assert 0.7 < took < 1.5
    finally:
        link.close()


def test_a_late_duplicate_acknowledgement_never_marks_a_later_verdict_delivered(tmp_path):
    """Issue 13 item 8: an acknowledgement that arrives when no verdict with its number is in flight
    (a resend's late duplicate, or one from before the wrap) is ignored; only an acknowledgement of
    the frame actually sent delivers it."""
    device = PtyDevice(tmp_path / "conveyor")
    device.plug()
    link = ConveyorLink(str(device.path), ack_timeout_s=0.1).start()
    try:
        wait_for(lambda: link.link.port is not None)
        device.write(protocol.frame("A,1"))  # stale: verdict 1 is not sent yet
        wait_for(lambda: link.acks_received == 1)
        assert link.late_acks == 1
        seq = link.send_verdict(True)
        assert seq == 1
        seen = b""
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            seen += device.read(0.02)
        assert protocol.verdict_frame(1, True, link.session) in seen  # sent, and resent: no answer yet
        assert link.delivered == 0 and link.pending() == 1
        device.write(protocol.frame("A,1"))
        assert link.wait_delivered(1.0)
        assert link.delivered == 1
    finally:
        link.close()
        device.unplug()


class DeafModel(ConveyorModel):
    """A conveyor that understands every frame but verdicts (a wrong firmware, a broken parser)."""

    def _line(self, line: bytes, now: float) -> None:
        if not line.startswith(b"$V"):
            super()._line(line, now)


class OldConveyorModel(ConveyorModel):
    """A version 2 conveyor: CRC-8 frames (`*CC`) both ways, so it never understands this PC."""

    def _send(self, body: str) -> None:
        self.out += old_frame(body)

    def _line(self, line: bytes, now: float) -> None:
        body = protocol.old_frame_body(line)
        super()._line(protocol.frame(body)[:-1] if body else b"", now)


class FirstConveyorModel(OldConveyorModel):
    """A version 1 conveyor: CRC-8 frames and no version field in its status."""

    def _status(self) -> None:
        self._send(f"S,{self.state},{self.steps_per_s},{self.last_seq},{self.errors}")


@pytest.mark.parametrize("model", [DeafModel, OldConveyorModel, FirstConveyorModel])
def test_conveyor_that_does_not_take_verdicts_is_stopped(tmp_path, model):
    """Any doubt that verdicts reach the conveyor stops the belt: an unacknowledged verdict, or a
    conveyor on an older protocol version."""
    sim = ConveyorSimulator(PtyDevice(tmp_path / "conveyor"))
    sim.model = model()
    sim.start()
    link = ConveyorLink(sim.url).start()
    try:
        wait_for(lambda: link.link.port is not None)
        link.resume()
        wait_for(lambda: sim.model.state in ("R", "C", "W"))  # an old conveyor's status may come first: held
        link.send_verdict(True)
        wait_for(lambda: sim.model.state in ("C", "T", "D", "W") and link.holding, 3.0)
        time.sleep(1.2)  # past the conveyor's watchdog: whatever happened, the belt is not running
        assert sim.model.state != "R" and link.holding
        if model is not DeafModel:
            assert not link.resume()  # it would run without heartbeats until the watchdog stopped it
            assert "flash the current firmware" in link.holding
        print(f"\n{model.__name__}: belt {sim.model.state}, link holding: {link.holding}")
    finally:
        link.close()
        sim.close()


class LossySimulator(ConveyorSimulator):
    """A conveyor behind a bad cable: bytes dropped, duplicated and delayed both ways."""

    def __init__(self, path, seed: int, p_drop: float, p_dup: float, p_delay: float):
        super().__init__(path)
        self.rng = random.Random(seed)
        self.p = (p_drop, p_dup, p_delay)
        self.held = bytearray()
        self.damaged = 0

    def _mangle(self, data: bytes) -> bytes:
        out = bytearray()
        for byte in data:
            r = self.rng.random()
            if r < self.p[0]:
                self.damaged += 1
                continue
            if r < self.p[0] + self.p[1]:
                self.damaged += 1
                out += bytes([byte, byte])
                continue
            if r < sum(self.p):
                self.held.append(byte)  # delayed: comes out with the next chunk
                continue
            out += self.held + bytes([byte])
            self.held.clear()
        return bytes(out)

    def _run(self):
        device_read, device_write = self.device.read, self.device.write
        self.device.read = lambda t: self._mangle(device_read(t))
        self.device.write = lambda d: device_write(self._mangle(d))
        super()._run()


def test_5000_verdicts_over_a_lossy_line_none_lost_none_twice(tmp_path):
    # the time goes into recovering from damage: 5000 verdicts at 0.2 % damage a byte are some 800 bad bytes
    sim = LossySimulator(PtyDevice(tmp_path / "lossy"), seed=1, p_drop=0.002, p_dup=0.002, p_delay=0.002).start()
    link = ConveyorLink(sim.url, ack_timeout_s=0.03, retries=20, heartbeat_s=0.2).start()
    truth = [random.Random(2).random() < 0.2 for _ in range(5_000)]
    try:
        wait_for(lambda: link.link.port is not None)
        link.resume()
        start = time.monotonic()
        for defect in truth:
            link.send_verdict(defect)
        assert link.wait_delivered(240.0), f"{link.pending()} verdicts still pending"
        wait_for(lambda: len(sim.model.acted) == len(truth), 2.0)
        assert sim.model.acted == truth  # every verdict acted on once, in order
        assert link.delivered == 5_000
        assert sim.damaged > 100 and link.resends > 0  # the line really was bad
        lat = sorted(link.latencies_s)
        print(f"\nlossy link: 5000 verdicts in {time.monotonic() - start:.1f} s, {sim.damaged} bytes damaged, "
              f"{link.resends} resends, {sim.model.errors} garbage lines at the conveyor; send-to-ack "
              f"p50 {lat[len(lat) // 2] * 1000:.1f} ms, p99 {lat[int(0.99 * len(lat))] * 1000:.1f} ms")
    finally:
        link.close()
        sim.close()
