"""Where verdicts go: objects the inspection pipeline hands every verdict to.

Each output takes a verdict with `put()`, which never blocks: a queued output has a bounded queue
and its own thread, and counts what it had to drop when the queue was full (a slow disk, a dead
broker) instead of slowing inspection. The conveyor is the exception by design: its link keeps its
own unbounded, acknowledged queue, because a verdict for the belt is never dropped.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from typing import Callable, TextIO

from app.verdict import Verdict


class Output:
    """Base: a name, counters and a state for the dashboard's outputs panel."""

    name = "output"

    def __init__(self) -> None:
        self.sent = 0  # verdicts handed on successfully
        self.dropped = 0  # verdicts not handed on: queue full
        self.failed = 0  # verdicts whose sending raised, or still unsent when the output closed
        self.last_error = ""

    @property
    def lost(self) -> int:
        """Verdicts that never got where this output takes them."""
        return self.dropped + self.failed

    def put(self, verdict: Verdict) -> None:
        raise NotImplementedError

    def state(self) -> str:
        return "ok" if not self.last_error else f"error: {self.last_error}"

    def close(self, timeout_s: float = 5.0) -> None:
        """Finish what is queued (up to `timeout_s`) and stop."""

    def summary(self) -> str:
        return f"{self.name}: {self.sent} sent, {self.dropped} dropped, {self.failed} failed"


class QueuedOutput(Output):
    """An output with a bounded queue drained by its own thread; subclasses implement `send()`.

    Every verdict put() ends in exactly one counter: sent, dropped (queue full) or failed (sending
    raised, or it was still queued or in flight when close() gave up waiting)."""

    def __init__(self, maxsize: int = 1000) -> None:
        super().__init__()
        self._queue: queue.Queue[Verdict | dict | None] = queue.Queue(maxsize=maxsize)
        self._counting = threading.Lock()
        self.received = 0  # verdicts put(); each ends as exactly one of sent, dropped, failed
        self._closed = False  # once set, the thread counts nothing more: close() has settled the books
        self.events_lost = 0  # drift messages not sent (they are not verdicts)
        self._thread = threading.Thread(target=self._run, name=f"output-{self.name}", daemon=True)
        self._thread.start()

    def send(self, verdict: Verdict) -> None:
        raise NotImplementedError

    def send_event(self, event: dict) -> None:
        """An event that is not a verdict (drift); outputs that publish to the line send it."""

    def put(self, verdict: Verdict) -> None:
        with self._counting:
            self.received += 1
            try:
                self._queue.put_nowait(verdict)
            except queue.Full:
                self.dropped += 1

    def put_event(self, event: dict) -> None:
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.events_lost += 1

    def pending(self) -> int:
        return self._queue.qsize()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None or self._closed:
                return
            if isinstance(item, dict):
                try:
                    self.send_event(item)
                except Exception:  # a drift message that fails is counted, never raised into the line
                    self.events_lost += 1
                continue
            try:
                self.send(item)
                error = ""
            except Exception as exc:  # an output that fails never stops inspection; it says so
                error = f"{type(exc).__name__}: {str(exc)[:200]}"
            with self._counting:
                if self._closed:
                    return  # close() already counted this one as failed
                if error:
                    self.failed += 1
                else:
                    self.sent += 1
                self.last_error = error

    def close(self, timeout_s: float = 5.0) -> None:
        """Send what is queued for up to `timeout_s`; what is still unsent then counts as failed."""
        deadline = time.monotonic() + timeout_s
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            pass
        self._thread.join(max(0.0, deadline - time.monotonic()))
        with self._counting:
            if self._closed:
                return
            self._closed = True
            unsent = self.received - self.sent - self.dropped - self.failed
            if unsent:
                self.failed += unsent
                before = f"; before: {self.last_error}" if self.last_error else ""
                self.last_error = f"{unsent} unsent after {timeout_s:g} s at close{before}"

    def summary(self) -> str:
        events = f", {self.events_lost} drift messages lost" if self.events_lost else ""
        return (f"{self.name}: {self.received} verdicts: {self.sent} sent, {self.dropped} dropped, "
                f"{self.failed} failed{events}")


class JsonLinesOutput(QueuedOutput):
    """One JSON line per verdict (docs/outputs.md) on a text stream: `gutcheck inspect`'s stdout."""

    name = "json"

    def __init__(self, stream: TextIO | None = None, extra: Callable[[Verdict], dict] | None = None,
                 maxsize: int = 100_000):
        self.stream = stream or sys.stdout
        self.extra = extra
        super().__init__(maxsize)

    def send(self, verdict: Verdict) -> None:
        record = verdict.to_json()
        if self.extra is not None:
            record.update(self.extra(verdict))
        self.stream.write(json.dumps(record, allow_nan=False) + "\n")
        self.stream.flush()


class LogOutput(QueuedOutput):
    """The inspection log (SQLite, and the framed image with its heatmap for every anomaly). The log
    stays open: its owner (the dashboard, the CLI) closes it."""

    name = "log"

    def __init__(self, log, maxsize: int = 1000):
        self.log = log
        super().__init__(maxsize)

    def send(self, verdict: Verdict) -> None:
        from app.heatmap import heatmap_picture
        from app.inspection_log import Inspection

        t = verdict.thresholds
        picture = None
        if verdict.anomaly:
            picture = heatmap_picture(verdict.inputs, verdict.heatmap, verdict.heat_scale)
        self.log.add(Inspection(verdict.part, verdict.anomaly, verdict.density, verdict.error, t.density,
                                t.reconstruction, t.rule, verdict.model_id, verdict.source, verdict.truth),
                     verdict.framed_image(), picture)


class ConveyorOutput(Output):
    """Each verdict to the conveyor link's acknowledged queue (never dropped; the link holds the belt
    stopped when it cannot deliver)."""

    name = "conveyor"

    def __init__(self, link) -> None:
        super().__init__()
        self.link = link

    def put(self, verdict: Verdict) -> None:
        self.link.send_verdict(verdict.anomaly)
        self.sent += 1

    def state(self) -> str:
        return self.link.state()

    def close(self, timeout_s: float = 2.0) -> None:
        self.link.wait_delivered(timeout_s)

    def summary(self) -> str:
        link = self.link
        return (f"conveyor: {link.delivered} verdicts delivered, {link.pending()} not delivered, {link.resends} "
                f"resent, link dropped {link.link.drops} times")


class QueueOutput(Output):
    """A queue another thread polls: the dashboard's view (bounded; it only falls behind when the
    window is frozen, and then the newest verdicts matter)."""

    name = "view"

    def __init__(self, maxsize: int = 2000) -> None:
        super().__init__()
        self.queue: queue.Queue[Verdict] = queue.Queue(maxsize=maxsize)

    def put(self, verdict: Verdict) -> None:
        try:
            self.queue.put_nowait(verdict)
            self.sent += 1
        except queue.Full:
            self.dropped += 1


class CallbackOutput(Output):
    """Calls a function in the pipeline's thread (the demo's printout, tests); it must be quick."""

    name = "callback"

    def __init__(self, function: Callable[[Verdict], None]) -> None:
        super().__init__()
        self.function = function

    def put(self, verdict: Verdict) -> None:
        self.function(verdict)
        self.sent += 1
