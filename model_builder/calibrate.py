"""Thresholds from good images only, knob ranges, and metrics where defect images exist."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from model_builder.scoring import GoodStatistics, Thresholds, combined_score, is_anomaly, rule_combination


EMPIRICAL_TAIL = 5  # held-out goods expected beyond a threshold for their own quantile to place it


def half_target(target_frr: float, rule: str) -> float:
    """The false-reject rate each half may spend so that the rule's stays within the target: under `or`
    either half rejects a part, so each gets half of it; under `and` both must object, so each may
    reject the whole target (a part both reject is counted once)."""
    return target_frr / 2 if rule == "or" else target_frr


def tail_threshold(worse: np.ndarray, p: float) -> float:
    """The value that unseen good parts exceed with probability `p`, for a score where higher is worse.

    With enough held-out goods (EMPIRICAL_TAIL or more expected beyond it) their own quantile says it.
    With fewer it cannot: the worst of 50 goods is exceeded by 1 in 51 new ones whatever the target,
    which is how detector v2 rejected 3.7 % of unseen goods at a 1 % target. There the tail is
    extrapolated by a Gumbel law fitted by moments (the law of a maximum: each image's score is the mean
    of its worst patches), and never placed inside the goods seen."""
    worse = np.asarray(worse, float)
    worse = worse[np.isfinite(worse)]
    if len(worse) == 0:
        raise ValueError("no finite scores to calibrate on")
    if p <= 0:
        return float(worse.max())
    if len(worse) * p >= EMPIRICAL_TAIL:
        return float(np.quantile(worse, 1 - p))
    beta = float(np.std(worse, ddof=1)) * math.sqrt(6) / math.pi if len(worse) > 1 else 0.0
    mode = float(np.mean(worse)) - 0.5772156649 * beta
    return max(mode - beta * math.log(-math.log(1 - p)), float(worse.max()))


def thresholds_at_frr(density: np.ndarray, error: np.ndarray, target_frr: float, rule: str) -> Thresholds:
    """Thresholds at which about `target_frr` of unseen good parts are rejected, from held-out good
    images: the two halves share the target (`half_target`), each half's threshold where its tail
    says (`tail_threshold`); `and` on enough goods is calibrated on both at once (`_joint_quantile`)."""
    density, error = np.asarray(density, float), np.asarray(error, float)
    if rule == "and" and len(density) * target_frr >= EMPIRICAL_TAIL:
        return _joint_quantile(density, error, target_frr, rule)
    p = half_target(target_frr, rule)
    return Thresholds(-tail_threshold(-density, p), tail_threshold(error, p), rule)


def _joint_quantile(density: np.ndarray, error: np.ndarray, target_frr: float, rule: str) -> Thresholds:
    """Both thresholds at the same tail quantile q of their score, q the largest on a fine grid whose
    rejection under the rule stays within the target: with enough goods, what `and` (which rejects only
    what both halves object to, however they correlate) can be calibrated on directly."""
    best = Thresholds(float(density.min()), float(error.max()), rule)
    for q in np.linspace(0.0, 0.5, 501):
        t = Thresholds(float(np.quantile(density, q)), float(np.quantile(error, 1 - q)), rule)
        if is_anomaly(density, error, t).mean() > target_frr + 1e-12:
            break
        best = t
    return best


def false_reject_interval(rejected: int, images: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a false-reject rate seen `rejected` times in `images` good
    images: what a calibration set of that size can say about the rate at all."""
    from scipy.stats import beta

    if images <= 0:
        return 0.0, 1.0
    a = (1 - confidence) / 2
    low = float(beta.ppf(a, rejected, images - rejected + 1)) if rejected > 0 else 0.0
    high = float(beta.ppf(1 - a, rejected + 1, images - rejected)) if rejected < images else 1.0
    return low, high


def validation_outliers(density: np.ndarray, error: np.ndarray, limit: float) -> np.ndarray:
    """Indices of held-out good images whose density or reconstruction error lies more than `limit`
    robust spreads (median absolute deviation) beyond the median of the others, on the bad side.

    One such image would otherwise set a threshold on its own (with 50 images and a 1 % target no
    good image may be rejected); it is more often a flawed or mislabelled part than a good one.
    `limit` <= 0 finds none.
    """
    density, error = np.asarray(density, float), np.asarray(error, float)
    if limit <= 0 or len(density) < 5:
        return np.array([], dtype=int)
    stats = GoodStatistics.from_scores(density, error)
    z_density = (stats.density_median - density) / stats.density_spread
    z_error = (error - stats.error_median) / stats.error_spread
    return np.flatnonzero((z_density > limit) | (z_error > limit))


def knob_ranges(density: np.ndarray, error: np.ndarray) -> dict[str, list[float]]:
    """A sensible sweep for each knob: from well inside the good scores to well beyond them."""
    stats = GoodStatistics.from_scores(density, error)
    d_lo = float(np.min(density)) - 8 * stats.density_spread
    d_hi = float(np.max(density))
    e_lo = max(0.0, float(np.min(error)))
    e_hi = float(np.max(error)) + 8 * stats.error_spread
    return {"density": [d_lo, d_hi], "reconstruction": [e_lo, e_hi]}


@dataclass
class OperatingPoint:
    """Confusion counts and the figures derived from them (positive = anomaly)."""

    tp: int
    fp: int
    tn: int
    fn: int

    @classmethod
    def from_predictions(cls, truth_anomaly: np.ndarray, predicted: np.ndarray) -> "OperatingPoint":
        t, p = np.asarray(truth_anomaly, bool), np.asarray(predicted, bool)
        return cls(int((t & p).sum()), int((~t & p).sum()), int((~t & ~p).sum()), int((t & ~p).sum()))

    @property
    def accuracy(self) -> float:
        total = self.tp + self.fp + self.tn + self.fn
        return (self.tp + self.tn) / total if total else float("nan")

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else float("nan")

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r > 0 else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(accuracy=self.accuracy, precision=self.precision, recall=self.recall, f1=self.f1)
        return d


def auroc(truth_anomaly: np.ndarray, score: np.ndarray) -> float:
    """Image AUROC of an anomaly score (higher = more anomalous); NaN when one class is missing."""
    t = np.asarray(truth_anomaly, bool)
    if t.all() or not t.any():
        return float("nan")
    return float(roc_auc_score(t, score))


def evaluate_scores(
    truth_anomaly: np.ndarray, density: np.ndarray, error: np.ndarray, thresholds: Thresholds, stats: GoodStatistics,
    combination: str | None = None,
) -> dict:
    """AUROC of each score and of the combined score (COMBINATIONS; default: the rule's), and the
    operating point at `thresholds`."""
    combined = combined_score(density, error, stats, combination or rule_combination(thresholds.rule))
    t = np.asarray(truth_anomaly, bool)
    return {
        "auroc_density": auroc(truth_anomaly, -np.asarray(density)),
        "auroc_reconstruction": auroc(truth_anomaly, error),
        "auroc_combined": auroc(truth_anomaly, combined),
        "ap_combined": float(average_precision_score(t, combined)) if t.any() and not t.all() else float("nan"),
        "recall_at_1pct_frr": recall_at_fpr(t, combined, 0.01),
        "operating_point": OperatingPoint.from_predictions(
            truth_anomaly, is_anomaly(density, error, thresholds)).to_dict(),
    }


def thresholds_at_level(z: float, stats: GoodStatistics, rule: str) -> Thresholds:
    """The thresholds at which the rule flags exactly the images whose combined score exceeds z."""
    return Thresholds(stats.density_median - z * stats.density_spread, stats.error_median + z * stats.error_spread,
                      rule)


def thresholds_at_recall(truth_anomaly: np.ndarray, density: np.ndarray, error: np.ndarray, stats: GoodStatistics,
                         rule: str, target_recall: float) -> Thresholds | None:
    """The strictest-on-good thresholds that still catch `target_recall` of the defect images."""
    truth = np.asarray(truth_anomaly, bool)
    if not truth.any():
        return None
    scores = np.sort(combined_score(density, error, stats, rule_combination(rule))[truth])
    k = int(np.ceil(target_recall * len(scores)))
    edge = float(scores[len(scores) - k])
    z = edge - 1e-6 * max(1.0, abs(edge))  # just below the k-th worst defect, safe from rounding
    return thresholds_at_level(z, stats, rule)


def pixel_auroc(masks: np.ndarray, heatmaps: np.ndarray) -> float:
    """AUROC of per-pixel error maps against ground-truth masks (same shape, any image count)."""
    return auroc(np.asarray(masks).ravel() > 0, np.asarray(heatmaps).ravel())


PIXEL_SAMPLE = 4_000_000  # pixels the pixel AUROC is measured on at most


class PixelSample:
    """The pixels of a test set's (mask, heatmap) pairs for the pixel AUROC, gathered batch by batch so
    that no heatmap is held: every pixel while the set has at most PIXEL_SAMPLE, else the same number
    drawn at random from each image (1 000 test images at 384 px are 147 M pixels, 0.6 GB of heatmaps)."""

    def __init__(self, n_images: int, pixels_per_image: int, seed: int = 0, budget: int = PIXEL_SAMPLE):
        self.per_image = min(pixels_per_image, max(1, budget // max(n_images, 1)))
        self._rng = np.random.default_rng(seed)
        self._truth: list[np.ndarray] = []
        self._heat: list[np.ndarray] = []

    def add(self, masks: np.ndarray, heatmaps: np.ndarray) -> None:
        """One batch: masks (n, h, w) and heatmaps of the same shape."""
        truth = np.asarray(masks).reshape(len(masks), -1) > 0
        heat = np.asarray(heatmaps, np.float32).reshape(len(heatmaps), -1)
        if self.per_image < truth.shape[1]:
            rows = np.arange(len(truth))[:, None]
            cols = np.stack([self._rng.choice(truth.shape[1], self.per_image, replace=False) for _ in truth])
            truth, heat = truth[rows, cols], heat[rows, cols]
        self._truth.append(truth.ravel())
        self._heat.append(heat.ravel())

    def auroc(self) -> float:
        return auroc(np.concatenate(self._truth), np.concatenate(self._heat))


def recall_at_fpr(truth_anomaly: np.ndarray, score: np.ndarray, fpr: float = 0.01) -> float:
    """Share of defects caught at the score threshold that rejects at most `fpr` of the good images."""
    t = np.asarray(truth_anomaly, bool)
    if t.all() or not t.any():
        return float("nan")
    good = np.sort(np.asarray(score)[~t])
    k = int(np.floor(fpr * len(good)))
    return float((np.asarray(score)[t] > good[len(good) - 1 - k]).mean())
