"""The inspection pipeline, GUI-free and the only one: source -> framing -> scoring -> verdict ->
outputs. The dashboard, `gutcheck inspect` (image files and live sources), the demo and
bench/live.py all drive it. One forward pass per frame gives every score; nothing goes through
the disk; each verdict is one `Verdict` record handed to every output (app/outputs.py).
"""

from __future__ import annotations

import queue
import threading
import time

from threadpoolctl import ThreadpoolController

from app.outputs import ConveyorOutput, Output, QueueOutput
from app.verdict import Verdict
from capture.sources import Frame, Source
from capture.trigger import PartTrigger
from model_builder.bundle import Bundle
from model_builder.scoring import Thresholds

MODES = ("part", "continuous")
_ONE_BLAS_THREAD = ThreadpoolController()


class Inspector:
    """Reads `source` in its own thread (`start`) or the caller's (`run`), scores each part (part
    mode: when the part trigger fires; continuous: every frame; a source of still images: every
    image) and hands the verdict to each of `outputs`. `verdicts` is the view's queue, `frames` the
    newest frames for a live picture; thresholds can change at any time (`set_thresholds`). The network
    runs on `runtime` (model_builder/runtime.py; `auto`: OpenVINO when it matches TensorFlow, else
    TensorFlow), chosen as `run` starts, before the first frame; `scorer.runtime_note` says which."""

    def __init__(self, bundle: Bundle, source: Source, mode: str = "part", outputs: list[Output] | None = None,
                 runtime: str = "auto"):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.bundle = bundle
        self.scorer = bundle.scorer_on(runtime)
        self.source = source
        self.mode = "continuous" if source.stills else mode  # still images never trip a motion trigger
        self.view = QueueOutput()
        self.outputs: list[Output] = [*(outputs or []), self.view]
        self.conveyor = next((o.link for o in self.outputs if isinstance(o, ConveyorOutput)), None)
        self.trigger = PartTrigger()
        self._thresholds = bundle.thresholds
        self._lock = threading.Lock()
        self.frames: queue.Queue[Frame] = queue.Queue(maxsize=2)
        self.errors: queue.Queue[str] = queue.Queue()
        self.inspected = self.anomalies = 0
        self.finished = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.run, name="inspector", daemon=True)

    @property
    def verdicts(self) -> queue.Queue[Verdict]:
        return self.view.queue

    @property
    def thresholds(self) -> Thresholds:
        with self._lock:
            return self._thresholds

    def set_thresholds(self, thresholds: Thresholds) -> None:
        with self._lock:
            self._thresholds = thresholds

    def start(self) -> "Inspector":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop reading; the outputs stay open (`close_outputs` finishes them)."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)
        self.source.close()

    def close_outputs(self, timeout_s: float = 5.0) -> None:
        for output in self.outputs:
            output.close(timeout_s)

    def inspect(self, frame: Frame) -> Verdict:
        """Score one frame and hand the verdict to every output."""
        t0 = time.perf_counter()
        thresholds = self.thresholds
        # One frame's KDE is small: NumPy's BLAS on one thread. On two, its worker threads keep
        # spinning after each product and slow TensorFlow's next forward pass (measured at 384 px:
        # 29 ms a frame instead of 34).
        with _ONE_BLAS_THREAD.limit(limits=1, user_api="blas"):
            j = self.scorer.judge(frame.image, thresholds)
        self.inspected += 1
        v = Verdict(part=int(frame.meta.get("part_number") or self.inspected), anomaly=j.anomaly, score=j.score,
                    density=j.density, error=j.error, thresholds=thresholds, model_id=self.bundle.info.model_id,
                    source=self.source.name, frame=frame, box=j.box, inputs=j.inputs,
                    reconstruction=j.reconstruction, heatmap=j.heatmap, heat_scale=j.heat_scale,
                    seconds=time.perf_counter() - t0,
                    conveyor_link=self.conveyor.state() if self.conveyor is not None else None)
        self.anomalies += v.anomaly
        for output in self.outputs:
            output.put(v)
        return v

    def run(self) -> None:
        """The loop: until the source ends or `stop()`. Errors end it and are queued in `errors`."""
        try:
            self.scorer.prepare()  # before the first part arrives, not while it waits for its verdict
            while not self._stop.is_set():
                frame = self.source.read()
                if frame is None:
                    if self.source.finite:
                        break
                    continue
                try:
                    self.frames.put_nowait(frame)
                except queue.Full:  # the view is behind: it only needs the newest frame
                    try:
                        self.frames.get_nowait()
                    except queue.Empty:
                        pass
                    self.frames.put_nowait(frame)
                if self.mode == "continuous" or self.trigger.update(frame.image):
                    self.inspect(frame)
        except Exception as exc:  # shown in the window or printed, never a silent dead thread
            self.errors.put(f"inspection stopped: {type(exc).__name__}: {exc}")
        finally:
            self.finished.set()
