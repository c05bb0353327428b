"""Scoring core, GUI-free: images -> reconstruction, reconstruction error, latent log-density,
and a verdict under the two-threshold rule."""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from capture.errors import GutcheckError
from model_builder.density import Density
from model_builder.preprocess import Preprocessing
from model_builder.runtime import check_runtime, open_runtime

RULES = ("and", "or")


def finite_number(value: object, what: str) -> float:
    """`value` as a float if it is a finite real number, else a one-line GutcheckError.

    Every threshold passes here: a NaN threshold makes every comparison false, so the rule would
    pass every part, defects included."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value):
        raise GutcheckError(f"{what} must be a finite number, not {value!r}")
    return float(value)


@dataclass(frozen=True)
class Thresholds:
    """Anomaly when density < `density` AND/OR reconstruction error > `reconstruction`.

    `and` is the prototype's rule (both scores must object); `or` flags a part when either does.
    """

    density: float
    reconstruction: float
    rule: str = "or"

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise GutcheckError(f"rule must be 'and' or 'or', not {self.rule!r}")
        object.__setattr__(self, "density", finite_number(self.density, "the density threshold"))
        object.__setattr__(self, "reconstruction", finite_number(self.reconstruction,
                                                                 "the reconstruction error threshold"))

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self, density: float, error: float) -> str:
        """The rule with the current numbers, as the prototype's status line showed it."""
        verdict = "anomaly" if bool(is_anomaly(np.array([density]), np.array([error]), self)[0]) else "ok"
        return (f"if {density:.4g} < {self.density:.4g} {self.rule} {error:.4g} > "
                f"{self.reconstruction:.4g}: anomaly  -> {verdict}")


def is_anomaly(density: np.ndarray, error: np.ndarray, thresholds: Thresholds) -> np.ndarray:
    """The two-threshold rule, elementwise. A score that is not a finite number (NaN from a broken
    frame or model) is an anomaly whatever the rule: doubt never lets a part through."""
    density, error = np.asarray(density), np.asarray(error)
    low_density = density < thresholds.density
    high_error = error > thresholds.reconstruction
    unknown = ~np.isfinite(density) | ~np.isfinite(error)
    if thresholds.rule == "and":
        return (low_density & high_error) | unknown
    return low_density | high_error | unknown


def robust_spread(x: np.ndarray) -> float:
    """The spread of good scores: their median absolute deviation scaled to a standard deviation, at
    least a tenth of the standard deviation (a score with many equal values) and never 0."""
    x = np.asarray(x, float)
    mad = float(np.median(np.abs(x - np.median(x)))) * 1.4826
    return max(mad, float(np.std(x)) * 0.1, 1e-12)


@dataclass(frozen=True)
class GoodStatistics:
    """Centre and spread of both scores on held-out good images, to put them on one scale."""

    density_median: float
    density_spread: float
    error_median: float
    error_spread: float

    @classmethod
    def from_scores(cls, density: np.ndarray, error: np.ndarray) -> "GoodStatistics":
        return cls(float(np.median(density)), robust_spread(density), float(np.median(error)), robust_spread(error))

    def to_dict(self) -> dict:
        return asdict(self)


# Detector v3's density is the patch density less the whole image's squared Mahalanobis distance,
# weighted so that on the held-out goods it spreads WHOLE_IMAGE_SHARE as far as the patch density
# does: it counts as half the evidence. Added at half weight to patch nearest-neighbour scores at 384 px
# (research script over the test images' cached features): juice bottle 0.927 -> 0.960, solar cells
# 0.823 -> 0.854, pill 0.955 -> 0.968, plate 0.966 -> 0.971, pcb 0.539 -> 0.542, screw 0.932 -> 0.928,
# bottle and nut 1.000. At quarter weight screw keeps 0.931 but juice gets 0.948 and poly 0.844; taking
# the larger of the two z-scores instead gives juice 0.984 but pill 0.959, poly 0.858, screw 0.916.
WHOLE_IMAGE_SHARE = 0.5

# How the two standardised scores become one. `sum` (detector v2) adds the evidence of both halves,
# the reconstruction error's weighted by SUM_ERROR_WEIGHT: each half's z-score counts as evidence
# in proportion to how far defects move it. Measured per category at 384 px (image AUROC, the same
# maps, weights 0 / 0.5 / 1 for the error): pill 0.948 / 0.958 / 0.955, screw 0.927 / 0.941 / 0.946,
# synthetic textured plate 0.989 / 0.985 / 0.977 (its error moves little on a random texture). The
# OR rule's max measured 0.938 / 0.925 / 0.988. Half weight holds within 0.005 of the best
# everywhere; full weight loses 0.012 on the texture.
SUM_ERROR_WEIGHT = 0.5
COMBINATIONS = {"sum": lambda z_density, z_error: z_density + SUM_ERROR_WEIGHT * z_error,
                "max": np.maximum, "min": np.minimum}


def rule_combination(rule: str) -> str:
    """The combination that ranks images as the rule judges them (v1 bundles): max for or, min for and."""
    return "max" if rule == "or" else "min"


def combined_score(density: np.ndarray, error: np.ndarray, stats: GoodStatistics, combination: str) -> np.ndarray:
    """One anomaly score per image (higher = worse): each score's distance from the good median in
    good spreads, combined by `combination` (COMBINATIONS)."""
    z_density = (stats.density_median - np.asarray(density)) / stats.density_spread
    z_error = (np.asarray(error) - stats.error_median) / stats.error_spread
    return COMBINATIONS[combination](z_density, z_error)


@dataclass
class Scores:
    """Per-image results of one batch."""

    reconstruction: np.ndarray | None  # (n, h, w, c) in 0..1; None: the model redraws features, not pixels
    error: np.ndarray  # (n,) reconstruction error
    density: np.ndarray  # (n,) latent log-density
    anomaly: np.ndarray  # (n,) bool
    heatmaps: np.ndarray | None = None  # (n, h, w) maps that explain the verdict, when asked for
    position_maps: tuple[np.ndarray, np.ndarray] | None = None  # feature model: (density, error) per position
    whole_image: np.ndarray | None = None  # (n,) detector v3: squared Mahalanobis distance of the image's features


RECONSTRUCTION_SCORES = ("mse", "topk", "ssim", "feature")


def ssim_map(a: np.ndarray, b: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """Structural similarity per pixel of two float images in 0..1 (H, W), Gaussian window."""
    c1, c2 = 0.01**2, 0.03**2

    def g(x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(x, (0, 0), sigma)

    mu_a, mu_b = g(a), g(b)
    var_a, var_b = g(a * a) - mu_a**2, g(b * b) - mu_b**2
    cov = g(a * b) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))


@dataclass(frozen=True)
class ReconstructionScore:
    """How a reconstruction becomes one error number per image.

    - ``mse``: whole-image mean squared error, as the prototype's evaluate() computed it.
    - ``topk``: the squared residual averaged over channels, blurred by `blur_sigma` pixels, and the
      mean of its largest `top_fraction` of pixels: a small defect is not averaged away.
    - ``ssim``: 1 - SSIM per pixel (structure and contrast, not just brightness), averaged over
      channels, and the mean of its largest `top_fraction` of pixels.
    - ``feature`` (detector v2): the model itself gives the error per latent position (its guess of
      each latent from the neighbours against the latent); the image's error is the mean of its
      `top_count` worst positions, as the density takes its least likely patches.
    """

    kind: str = "topk"
    blur_sigma: float = 1.0
    top_fraction: float = 0.001
    top_count: int = 10

    def __post_init__(self) -> None:
        if self.kind not in RECONSTRUCTION_SCORES:
            raise GutcheckError(f"unknown reconstruction score {self.kind!r}; known: {', '.join(RECONSTRUCTION_SCORES)}")

    def heatmaps(self, inputs: np.ndarray, reconstruction: np.ndarray) -> np.ndarray:
        """Per-pixel error map (n, h, w): squared residual (blurred for topk) or 1 - SSIM."""
        if self.kind == "ssim":
            return np.stack([
                np.mean([1.0 - ssim_map(x[..., c], r[..., c]) for c in range(x.shape[-1])], axis=0)
                for x, r in zip(inputs.astype(np.float32), reconstruction.astype(np.float32))])
        res = ((inputs - reconstruction) ** 2).mean(-1).astype(np.float32)
        if self.kind == "topk" and self.blur_sigma > 0:
            res = np.stack([cv2.GaussianBlur(r, (0, 0), self.blur_sigma) for r in res])
        return res

    def __call__(self, inputs: np.ndarray, reconstruction: np.ndarray) -> np.ndarray:
        return self.with_heatmaps(inputs, reconstruction, False)[0]

    def with_heatmaps(self, inputs: np.ndarray, reconstruction: np.ndarray, keep: bool = True
                      ) -> tuple[np.ndarray, np.ndarray | None]:
        """The error of each image and, when `keep`, the error maps it came from (made once)."""
        if self.kind == "feature":
            raise ValueError("the feature error comes from the model's error map: use Scorer")
        if self.kind == "mse":
            error = ((inputs - reconstruction) ** 2).reshape(len(inputs), -1).mean(1)
            return error, (self.heatmaps(inputs, reconstruction) if keep else None)
        maps = self.heatmaps(inputs, reconstruction)
        flat = maps.reshape(len(inputs), -1)
        k = max(1, int(round(flat.shape[1] * self.top_fraction)))
        error = np.partition(flat, flat.shape[1] - k, axis=1)[:, -k:].mean(1).astype(np.float64)
        return error, (maps if keep else None)

    def to_dict(self) -> dict:
        return asdict(self)


def worst_mean(maps: np.ndarray, k: int, highest: bool = True) -> np.ndarray:
    """Per image, the mean of its k highest (or lowest) map values."""
    flat = maps.reshape(len(maps), -1)
    k = min(max(1, int(k)), flat.shape[1])
    if highest:
        return np.partition(flat, flat.shape[1] - k, axis=1)[:, -k:].mean(1).astype(np.float64)
    return np.partition(flat, k - 1, axis=1)[:, :k].mean(1).astype(np.float64)


def anomaly_maps(density_maps: np.ndarray, error_maps: np.ndarray, stats: GoodStatistics, size: int,
                 blur_sigma: float = 4.0) -> np.ndarray:
    """The heatmap that explains the verdict (detector v2): per latent position, how far its density
    and its reconstruction error each lie from the held-out good positions (in good spreads), added as
    the single score adds them, floored at 0, scaled up to the image and smoothed (sigma in image
    pixels, as PatchCore does)."""
    z = COMBINATIONS["sum"]((stats.density_median - density_maps) / stats.density_spread,
                            (error_maps - stats.error_median) / stats.error_spread)
    z = np.maximum(z, 0.0).astype(np.float32)
    return np.stack([cv2.GaussianBlur(cv2.resize(m, (size, size), interpolation=cv2.INTER_LINEAR), (0, 0),
                                      blur_sigma) for m in z])


BORDER_RINGS = 3  # rings of positions next to the image's edge (0, 1, 2 away) that get their own statistics


@functools.lru_cache(maxsize=8)
def ring_index(shape: tuple[int, int]) -> np.ndarray:
    """Per position of an (h, w) map, its distance from the nearest edge, capped at BORDER_RINGS (the interior).
    Cached (and read-only): the per-frame path asks for the same shape on every frame."""
    h, w = shape
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    rings = np.minimum(np.minimum.reduce([rows, cols, h - 1 - rows, w - 1 - cols]), BORDER_RINGS)
    rings.flags.writeable = False
    return rings


@dataclass(frozen=True)
class BorderCorrection:
    """The positions next to the image's edge put on the interior's scale (detector v3).

    The encoder pads its input with zeros, so the features of the outer positions differ from those of
    the interior on every image, good or not, and the density and the decoder see the edge of a textured
    surface as its worst place: v2's heatmaps glowed along the borders and corners. Per ring (BORDER_RINGS
    rings, then the interior) the held-out goods give a median and a spread of each map; each ring is
    moved onto the interior's median and shrunk to its spread where it varies more. Measured on patch
    nearest-neighbour maps at 384 px (half the test goods for the statistics, the other half and the
    defects scored, 10 splits), image AUROC without -> with: synthetic plate 0.967 -> 0.999, solar cells
    0.824 -> 0.853, pill 0.953 -> 0.957, screw 0.929 -> 0.929, bottle 1.000 -> 1.000, juice bottle 0.925
    -> 0.922. Stretching the quiet rings too lost 0.009 on the juice bottle (0.916) and the bottle's
    reconstruction error 0.025 in a build; a statistic per position instead of per ring lost up to 0.21
    (bottle 0.789): a few dozen goods cannot say what each position looks like."""

    density: tuple[tuple[float, float], ...]  # (median, spread) per ring, the interior last
    error: tuple[tuple[float, float], ...]

    @classmethod
    def fit(cls, density_maps: np.ndarray, error_maps: np.ndarray) -> "BorderCorrection":
        rings = ring_index(tuple(density_maps.shape[1:3]))

        def per_ring(maps: np.ndarray) -> tuple[tuple[float, float], ...]:
            return tuple((float(np.median(maps[:, rings == r])), robust_spread(maps[:, rings == r]))
                         for r in range(BORDER_RINGS + 1))

        return cls(per_ring(density_maps), per_ring(error_maps))

    def apply(self, density_maps: np.ndarray, error_maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Both maps (n, h, w) with every ring on the interior's scale."""
        rings = ring_index(tuple(density_maps.shape[1:3]))
        return (self._onto_interior(density_maps, self.density, rings),
                self._onto_interior(error_maps, self.error, rings))

    @staticmethod
    def _onto_interior(maps: np.ndarray, stats: tuple[tuple[float, float], ...], rings: np.ndarray) -> np.ndarray:
        """Each ring moved onto the interior's median and, where it varies more, shrunk to its spread; never
        stretched: a ring that hardly varies (the plain background around a bottle) would have its noise
        amplified into defects."""
        centre, spread = stats[-1]
        medians = np.array([m for m, _ in stats])[rings]
        factors = np.minimum(1.0, spread / np.array([sp for _, sp in stats]))[rings]
        return ((maps - medians) * factors + centre).astype(maps.dtype, copy=False)

    def to_dict(self) -> dict:
        return {"density": [list(x) for x in self.density], "error": [list(x) for x in self.error]}

    @classmethod
    def from_dict(cls, d: dict) -> "BorderCorrection":
        def rings(values) -> tuple[tuple[float, float], ...]:
            out = tuple((finite_number(m, "a border median"), finite_number(sp, "a border spread")) for m, sp in values)
            if len(out) != BORDER_RINGS + 1 or any(sp <= 0 for _, sp in out):
                raise GutcheckError(f"border_correction needs {BORDER_RINGS + 1} rings with positive spreads")
            return out

        return cls(rings(d["density"]), rings(d["error"]))


# Feature-model heatmaps are in held-out-good spreads (both halves added): good parts stay below
# about 5, the defects seen on the bench reach 20 and more.
FEATURE_HEAT_SCALE = 20.0


class PixelAutoencoder:
    """Detector v1 and the prototype: the model redraws the picture, (reconstruction, latent). The error
    is the reconstruction score of the residual, the density one log-density per image latent."""

    view_titles = ("model input", "reconstruction", "error heatmap")
    combination = ""  # the single score ranks images as the rule judges them (rule_combination)
    position_maps = False  # one density per image: no maps over positions to calibrate on

    @staticmethod
    def scores(scorer: "Scorer", inputs: np.ndarray, outputs: tuple[np.ndarray, ...], thresholds: Thresholds,
               with_heatmaps: bool, keep_maps: bool) -> "Scores":
        recon, latent = outputs[:2]
        error, maps = scorer.reconstruction_score.with_heatmaps(inputs, recon, with_heatmaps)
        density = scorer.density.score_samples(latent)
        return Scores(recon, error, density, is_anomaly(density, error, thresholds), maps)

    @staticmethod
    def heat_scale(thresholds: Thresholds) -> float:
        """Where a heatmap's colours saturate: twice the error threshold (the error map is the residual)."""
        return max(thresholds.reconstruction, 1e-9) * 2


class FeatureAutoencoder:
    """Detectors v2 and v3: the model redraws the encoder's features, (error per latent position, latent
    and, v3, the whole image's distance). Both scores come from maps over the positions: the patch density
    and the decoder's error, v3's border correction on both, the worst positions of each; v3's density
    also loses its weighted whole-image distance. The heatmap adds both maps in held-out-good spreads."""

    view_titles = ("model input", "heatmap on the part", "anomaly heatmap")
    combination = "sum"  # both halves' evidence added (SUM_ERROR_WEIGHT)
    position_maps = True  # the heatmap's statistics and v3's border correction come from these

    @staticmethod
    def scores(scorer: "Scorer", inputs: np.ndarray, outputs: tuple[np.ndarray, ...], thresholds: Thresholds,
               with_heatmaps: bool, keep_maps: bool) -> "Scores":
        error_maps, latent, *whole_image = outputs
        density_maps = scorer.density.patch_maps(latent)
        if scorer.border is not None:
            density_maps, error_maps = scorer.border.apply(density_maps, error_maps)
        error = worst_mean(error_maps, scorer.reconstruction_score.top_count)
        density = worst_mean(density_maps, scorer.density.worst, highest=False)
        whole = whole_image[0].astype(np.float64) if whole_image else None
        if whole is not None:
            density = density - scorer.whole_image_weight * whole
        maps = None
        if with_heatmaps and scorer.map_statistics is not None:
            maps = anomaly_maps(density_maps, error_maps, scorer.map_statistics, inputs.shape[1])
        return Scores(None, error, density, is_anomaly(density, error, thresholds), maps,
                      (density_maps, error_maps) if keep_maps else None, whole)

    @staticmethod
    def heat_scale(thresholds: Thresholds) -> float:
        """A fixed number of good spreads (FEATURE_HEAT_SCALE)."""
        return FEATURE_HEAT_SCALE


# The detector kind of a bundle follows from how its error is made: the feature error only exists
# where the model redraws features.
DETECTORS: dict[str, type[PixelAutoencoder] | type[FeatureAutoencoder]] = {
    "mse": PixelAutoencoder, "topk": PixelAutoencoder, "ssim": PixelAutoencoder, "feature": FeatureAutoencoder}


@dataclass
class Judgement:
    """One picture's finished result, all a verdict needs: both scores, the single score, the rule's
    answer, the framing's box, the model input, and what explains it."""

    anomaly: bool
    score: float  # the single combined score (higher = worse)
    density: float
    error: float
    box: tuple[int, int, int, int]  # (x, y, w, h) the framing cut from the picture
    inputs: np.ndarray  # (h, w, c) model input in 0..1
    reconstruction: np.ndarray | None  # the pixel autoencoder's redrawn picture; None: it redraws features
    heatmap: np.ndarray  # (h, w) at the model input's size
    heat_scale: float  # where the heatmap's colours saturate


class Scorer:
    """Model + density + thresholds: one forward pass per batch gives every score; what the model's
    outputs mean is its detector kind's (DETECTORS, chosen from the reconstruction score).

    A pixel autoencoder's model returns (reconstruction, latent); the feature autoencoder's returns
    (error per latent position, latent[, whole-image distance]), and `map_statistics` (the held-out good
    positions' medians and spreads) turns both halves' maps into one heatmap. With `good_statistics`
    and `combination` (a calibrated bundle's) `judge` also gives the single score."""

    def __init__(self, model, density: Density, preprocessing: Preprocessing, thresholds: Thresholds,
                 reconstruction_score: ReconstructionScore | None = None,
                 map_statistics: GoodStatistics | None = None, runtime: str = "tensorflow",
                 whole_image_weight: float = 0.0, border: BorderCorrection | None = None,
                 good_statistics: GoodStatistics | None = None, combination: str = ""):
        self.model = model
        self.border = border  # detector v3: the edge positions on the interior's scale
        # detector v3: how much of the whole image's squared Mahalanobis distance the density loses
        self.whole_image_weight = float(whole_image_weight)
        self.reconstruction_score = reconstruction_score or ReconstructionScore()
        self.detector = DETECTORS[self.reconstruction_score.kind]
        self.runtime = check_runtime(runtime)  # where the network runs (model_builder/runtime.py): chosen by prepare()
        self.runtime_note = ""  # which runtime scores, and why
        self._network = None
        self.density = density
        self.preprocessing = preprocessing
        self.thresholds = thresholds
        self.map_statistics = map_statistics
        self.good_statistics, self.combination = good_statistics, combination

    @property
    def view_titles(self) -> tuple[str, str, str]:
        """The names of the three pictures a verdict is shown with: input, beside it, heatmap."""
        return self.detector.view_titles

    def prepare(self) -> None:
        """Choose the runtime and run one pass, so that the first part is scored as fast as the rest:
        converting and checking takes ~1.5 s, TensorFlow's first call traces the graph."""
        if self._network is None:
            self._network, self.runtime_note = open_runtime(self.model, tuple(self.model.input_shape[1:]),
                                                             self.runtime)
            self._network(np.zeros((1, *self.model.input_shape[1:]), np.float32))

    def forward(self, inputs: np.ndarray) -> tuple[np.ndarray, ...]:
        """Reconstruction (or error map), latent and (detector v3) the whole image's distance of
        preprocessed inputs (n, h, w, c) in one pass."""
        if len(inputs) == 0:
            raise GutcheckError("no images to score")
        self.prepare()
        return self._network(inputs)

    def score_inputs(self, inputs: np.ndarray, thresholds: Thresholds | None = None,
                     with_heatmaps: bool = False, keep_maps: bool = False) -> Scores:
        return self.detector.scores(self, inputs, self.forward(inputs), thresholds or self.thresholds,
                                    with_heatmaps, keep_maps)

    def score_images(self, images: list[np.ndarray], thresholds: Thresholds | None = None) -> Scores:
        """Score 8-bit BGR pictures (camera frames or decoded files)."""
        return self.score_inputs(self.preprocessing.apply_batch(images), thresholds)

    def judge(self, image: np.ndarray, thresholds: Thresholds | None = None) -> Judgement:
        """One 8-bit BGR picture, framed, scored and judged: the finished record."""
        if self.good_statistics is None:
            raise GutcheckError("this scorer is not calibrated yet: judge() needs a bundle's good statistics")
        thresholds = thresholds or self.thresholds
        inputs, box = self.preprocessing.apply_framed(image)
        s = self.score_inputs(inputs[None], thresholds, with_heatmaps=True)
        score = combined_score(s.density, s.error, self.good_statistics, self.combination)
        return Judgement(bool(s.anomaly[0]), float(score[0]), float(s.density[0]), float(s.error[0]), box, inputs,
                         None if s.reconstruction is None else s.reconstruction[0], s.heatmaps[0],
                         self.detector.heat_scale(thresholds))
