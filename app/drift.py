"""Drift watch, GUI-free: are today's good parts scoring like the ones the thresholds were calibrated on?

New lighting, a new batch of material or a dirty lens moves the scores of good parts; at fixed
thresholds the false rejects then climb (users of such tools report 6 % rising to 30 % the day after
calibration). The watch keeps the scores of the last `window` parts judged good and compares them
with the held-out good images of the calibration (bundle.json): the shift of each median in robust
spreads, and the false-reject rate the calibration's goods would have if they moved by that shift
(an estimate: the recent goods are those that passed, so the true shift is, if anything, larger).
Past `shift_limit` spreads, or when the estimate passes the same goods' unmoved rate by `frr_limit`,
it reports drift; and when the share of the last `reject_window` parts rejected rises well above the
line's own share over the parts before them (a drift that makes nearly every good part fail leaves
few goods to compare; a line whose defect rate is simply high is not drifting, so the comparison is
with the line, not with a fixed share). The dashboard shows a banner and the shift over time,
publishers send a `drift` message. Defect parts are left out of the medians: they are not drift.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
from scipy.special import ndtr
from scipy.stats import binom

from app.outputs import Output
from app.verdict import Verdict
from model_builder.scoring import GoodStatistics, Thresholds

DRIFT_WINDOW = 100  # recent good parts compared with the calibration (a shift shows within about half of it)
DRIFT_MIN_PARTS = 30  # no judgement on fewer
SHIFT_LIMIT = 2.0  # robust spreads a median may move
FRR_LIMIT = 0.05  # rise of the estimated false-reject rate at today's thresholds
REJECT_WINDOW = 50  # the last parts whose reject share is compared with the line's own
LINE_HISTORY = 500  # the parts before them: the line's own reject share (not fed while drift is reported)
REJECT_RISE = 0.2  # a rise of the reject share over the line's own that is drift, if also beyond chance
REJECT_CHANCE = 1e-5  # tested at every part: thousands of tests a shift, so a small chance per test
CLEAR_PARTS = 20  # parts in a row without drift before an alarm ends
FLOOD_SHARE = 0.9  # before the line has a history: the reject share that is drift whatever its defect rate


def calibration_goods(bundle) -> tuple[np.ndarray, np.ndarray]:
    """Density and error of the calibration's held-out good images, without the outliers it left out."""
    cal = bundle.info.calibration
    density = np.array(cal.validation_scores.get("density", []), float)
    error = np.array(cal.validation_scores.get("reconstruction", []), float)
    left_out = {(o.density, o.reconstruction) for o in cal.outliers}
    keep = np.array([(d, e) not in left_out for d, e in zip(density, error)], bool)
    return (density[keep], error[keep]) if len(keep) else (density, error)


@dataclass(frozen=True)
class DriftState:
    parts: int  # recent good parts compared
    density_shift: float  # (recent median - calibration median) / spread; negative: less like the goods
    error_shift: float  # positive: reconstructed worse
    estimated_frr: float  # of the calibration's goods, moved by these shifts, at the thresholds in force
    drifting: bool
    reject_rate: float = 0.0  # of the last REJECT_WINDOW parts
    line_reject_rate: float = float("nan")  # of the LINE_HISTORY parts before them (nan: too few yet)

    def describe(self) -> str:
        moved = (f"good parts' density moved {self.density_shift:+.1f} spreads, error {self.error_shift:+.1f}; "
                 f"estimated false rejects {self.estimated_frr:.1%} (last {self.parts} good parts)"
                 if np.isfinite(self.density_shift) else f"too few good parts to compare ({self.parts})")
        line = f" (the line's own: {self.line_reject_rate:.0%})" if np.isfinite(self.line_reject_rate) else ""
        return f"{'DRIFT: ' if self.drifting else ''}{moved}; {self.reject_rate:.0%} of recent parts rejected{line}"

    def to_json(self) -> dict:
        def number(x: float, digits: int) -> float | None:
            return round(x, digits) if np.isfinite(x) else None

        return {"format": "gutcheck-drift/1", "parts": self.parts, "density_shift": number(self.density_shift, 3),
                "error_shift": number(self.error_shift, 3),
                "estimated_false_reject_rate": number(self.estimated_frr, 4),
                "reject_rate": round(self.reject_rate, 4), "line_reject_rate": number(self.line_reject_rate, 4),
                "drifting": self.drifting}


class DriftWatch(Output):
    """An output: fed every verdict by the pipeline; `state()` says whether the good parts drift.
    `on_change(state)` is called (in the pipeline's thread) when drift starts or ends."""

    name = "drift watch"

    def __init__(self, reference_density: np.ndarray, reference_error: np.ndarray, stats: GoodStatistics,
                 window: int = DRIFT_WINDOW, min_parts: int = DRIFT_MIN_PARTS, shift_limit: float = SHIFT_LIMIT,
                 frr_limit: float = FRR_LIMIT, reject_window: int = REJECT_WINDOW, reject_rise: float = REJECT_RISE,
                 line_history: int = LINE_HISTORY, on_change: Callable[[DriftState], None] | None = None):
        super().__init__()
        self.reference = (np.asarray(reference_density, float), np.asarray(reference_error, float))
        self.stats = stats
        self.min_parts, self.shift_limit, self.frr_limit, self.reject_rise = min_parts, shift_limit, frr_limit, \
            reject_rise
        self._rejects: collections.deque[bool] = collections.deque(maxlen=max(reject_window, min_parts))
        self._line: collections.deque[bool] = collections.deque(maxlen=line_history)  # the parts before those
        self._clear_parts = 0  # parts in a row assessed without drift
        self.on_change = on_change
        self._recent: collections.deque[tuple[float, float]] = collections.deque(maxlen=window)
        self.history: collections.deque[tuple[float, float, float]] = collections.deque(maxlen=2000)  # time, shifts
        self.latest: DriftState | None = None
        self._lock = threading.Lock()
        self.model_id = ""  # the model whose logged parts `prime` reads back (for_bundle sets it)

    @classmethod
    def for_bundle(cls, bundle, **options) -> "DriftWatch":
        watch = cls(*calibration_goods(bundle), bundle.good_statistics, **options)
        watch.model_id = bundle.info.model_id
        return watch

    def put(self, verdict: Verdict) -> None:
        self.sent += 1
        self._observe(verdict.anomaly, verdict.density, verdict.error, verdict.thresholds, verdict.time)

    def prime(self, log) -> int:
        """Read back the last parts this model judged from the inspection log (a restarted station
        watches its line from where it stopped, not from zero); says a drift they show through
        `on_change`. Returns how many parts were read."""
        parts = log.recent_inspections(self.model_id, self._recent.maxlen + self._line.maxlen
                                       + self._rejects.maxlen) if self.model_id else []
        on_change, self.on_change = self.on_change, None  # one message for the whole read-back, below
        try:
            for part in parts:
                self._observe(part.anomaly, part.density, part.error,
                              Thresholds(part.density_threshold, part.reconstruction_threshold, part.rule), part.time)
        finally:
            self.on_change = on_change
        if self.latest is not None and self.latest.drifting and on_change is not None:
            on_change(self.latest)
        return len(parts)

    def _observe(self, anomaly: bool, density: float, error: float, thresholds: Thresholds, when: float) -> None:
        finite = bool(np.isfinite(density) and np.isfinite(error))
        with self._lock:
            if len(self._rejects) == self._rejects.maxlen and not (self.latest and self.latest.drifting):
                self._line.append(self._rejects[0])  # a drifting stretch is not the line's own rate
            self._rejects.append(anomaly)
            if not anomaly and finite:
                self._recent.append((density, error))
            if len(self._rejects) < self.min_parts or not len(self.reference[0]):
                return
            state = self.assess(np.array(self._recent).reshape(-1, 2), thresholds,
                                float(np.mean(self._rejects)), self._line_rate())
            previous = self.latest
            # drift ends only after CLEAR_PARTS parts in a row without it: a state at the edge of a
            # limit would otherwise raise and clear an alarm every few parts
            self._clear_parts = 0 if state.drifting else self._clear_parts + 1
            if previous is not None and previous.drifting and not state.drifting and self._clear_parts < CLEAR_PARTS:
                state = replace(state, drifting=True)
            self.latest = state
            self.history.append((when, state.density_shift, state.error_shift))
        started_or_ended = (previous is None and state.drifting) or \
            (previous is not None and previous.drifting != state.drifting)
        if started_or_ended and self.on_change is not None:
            self.on_change(state)

    def _line_rate(self) -> float:
        """The line's own reject share before the recent parts; nan while it has too few."""
        return float(np.mean(self._line)) if len(self._line) >= self.min_parts else float("nan")

    def rejects_rose(self, reject_rate: float, line_rate: float) -> bool:
        """The last parts' reject share is well above the line's own: by `reject_rise`, and so far
        that a line rejecting at its own share (taken two standard errors high: it is an estimate)
        would do so by chance less than REJECT_CHANCE of the time. An exact binomial tail, not a
        normal one: 30 rejects of 30 on a line at 60 % is a one-in-five-million event, which the
        normal approximation cannot tell from chance."""
        if not np.isfinite(line_rate):
            return reject_rate > FLOOD_SHARE
        n, m = self._rejects.maxlen, max(len(self._line), 1)
        own = min(line_rate + 2 * np.sqrt(max(line_rate * (1 - line_rate), 1 / m) / m), 1.0)
        rejected = round(reject_rate * n)
        return reject_rate - line_rate > self.reject_rise and binom.sf(rejected - 1, n, own) < REJECT_CHANCE

    def assess(self, recent: np.ndarray, thresholds: Thresholds, reject_rate: float = 0.0,
               line_rate: float = float("nan")) -> DriftState:
        """Compare the recent good parts' scores (n, 2) with the calibration's goods, and the last
        parts' reject share with the line's own."""
        too_many_rejects = self.rejects_rose(reject_rate, line_rate)
        if len(recent) < self.min_parts // 2:  # the drift may have made nearly every part fail
            return DriftState(len(recent), float("nan"), float("nan"), float("nan"), too_many_rejects, reject_rate,
                              line_rate)
        s = self.stats
        density_shift = (float(np.median(recent[:, 0])) - s.density_median) / s.density_spread
        error_shift = (float(np.median(recent[:, 1])) - s.error_median) / s.error_spread
        frr = self.estimated_frr(density_shift, error_shift, thresholds)
        # Against the same goods unmoved: calibration images at or beyond today's thresholds (a small
        # calibration set, thresholds turned by the knobs) are not drift.
        baseline = self.estimated_frr(0.0, 0.0, thresholds)
        # A median of n scores wanders by about 1.25 / sqrt(n) spreads by chance, and so did the
        # calibration's, of its few held-out goods: a rise of the estimate counts only when the shift
        # behind it is three times their difference's (100 parts against 60 goods: 0.61 spreads).
        worse = max(-density_shift, error_shift)
        significant = worse > 3 * 1.2533 * np.sqrt(1 / len(recent) + 1 / max(len(self.reference[0]), 1))
        drifting = worse > self.shift_limit or (significant and frr - baseline > self.frr_limit) or too_many_rejects
        return DriftState(len(recent), density_shift, error_shift, frr, drifting, reject_rate, line_rate)

    def estimated_frr(self, density_shift: float, error_shift: float, thresholds: Thresholds) -> float:
        """The share of the calibration's goods the thresholds would reject if they moved by these
        shifts, each good blurred by a quarter spread (a kernel estimate: a handful of held-out images
        does not make the estimate jump by one image's share at a time)."""
        s = self.stats
        density = self.reference[0] + density_shift * s.density_spread
        error = self.reference[1] + error_shift * s.error_spread
        low_density = ndtr((thresholds.density - density) / (0.25 * s.density_spread))
        high_error = ndtr((error - thresholds.reconstruction) / (0.25 * s.error_spread))
        rejected = low_density * high_error if thresholds.rule == "and" else \
            1.0 - (1.0 - low_density) * (1.0 - high_error)
        return float(rejected.mean())

    def state(self) -> str:
        if self.latest is None:
            return f"collecting ({len(self._recent)} of {self.min_parts} good parts)"
        return self.latest.describe() if self.latest.drifting else "ok"


def drift_watch(bundle, publishers: list, say: Callable[[str], None] | None = None, **options) -> DriftWatch:
    """A drift watch for `bundle` that tells `say` and sends a `drift` message to each publisher
    when drift starts or ends."""
    def changed(state: DriftState) -> None:
        if say is not None:
            say(state.describe() if state.drifting else "drift over: " + state.describe())
        for publisher in publishers:
            publisher.put_event(state.to_json())

    return DriftWatch.for_bundle(bundle, on_change=changed, **options)
