"""Densities on encoder latents, one estimator class per kind (the bundle's "preset"), each fitted
with ``fit(latents)`` (returns self) and scored with ``score_samples(latents)`` (log-density, higher =
more like the good parts), their fitted state plain arrays with a trailing underscore. The class is
picked from DENSITIES by the preset stored in the bundle (``density_from_arrays``).

Presets:
- ``prototype``: the prototype's KDE, raw flattened latent, bandwidth 0.2 (sklearn's
  ``KernelDensity(kernel="gaussian", bandwidth=0.2)`` normalisation).
- ``whitened``: centre, project on the leading principal components, whiten to unit variance,
  then pick the bandwidth by leave-one-out log-likelihood on the training latents.
- ``gaussian``: one Gaussian with a Ledoit-Wolf shrunk covariance over the whole latent (the
  limit of a KDE with one wide kernel; the Mahalanobis distance of pretrained-feature detectors).
  Alone it separates real defects better than ``whitened`` (mean density AUROC 0.811 vs 0.787 on
  bench/detection.py), but combined with the reconstruction error it measured no better (0.821 vs
  0.834), so ``whitened`` stays the builder's default.
- ``patch``: a KDE over the latent's spatial positions (patches) instead of whole images. Every
  position of every training latent (h, w, c) is a c-dimensional sample; a greedy k-centre
  coreset keeps a `coreset` share of them that still covers all of them (PatchCore, Roth et al.
  2022); the bandwidth is chosen by leave-one-out likelihood on the kept patches. An image's
  density is the mean log-density of its `worst` least likely patches (default PATCH_WORST): one
  scratch lowers it even though the rest of the part is normal, and one noisy patch alone does not
  decide. ``patch_maps`` gives the per-patch densities for localisation.
"""

from __future__ import annotations

import math
from typing import Callable, ClassVar

import numpy as np
from scipy.special import logsumexp

from capture.errors import GutcheckError

GAUSSIAN_MAX_DIM = 2048  # its precision matrix is stored in the bundle: 2048² float32 = 16 MB
PATCH_MAX_MEMORY = 12_000  # patches kept by the patch preset: 12 000 x 480 float32 = 23 MB
PATCH_WORST = 10  # patches averaged into an image's density (screw at 384 px: AUROC 0.914 vs 0.899 for 1)
CORESET_POOL = 200_000  # patches the greedy coreset search runs over (a random draw when there are more)
BANDWIDTH_SAMPLE = 2_000  # patches the bandwidth is chosen on (the LOO matrix is its square)


def _sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between rows of a and rows of b, never negative; computed in
    float32 when b is float32 (the patch memory: the live path), else float64."""
    dtype = np.float32 if b.dtype == np.float32 else np.float64
    a = a.astype(dtype, copy=False)
    b = b.astype(dtype, copy=False)
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def _gaussian_log_density(sq: np.ndarray, bandwidth: float, dim: int, n: int) -> np.ndarray:
    """Log of the mean Gaussian kernel over each row of squared distances, as float64."""
    log_norm = math.log(n) + 0.5 * dim * math.log(2 * math.pi * bandwidth**2)
    if sq.dtype == np.float32:  # a plain log-sum-exp: scipy's costs 10x more on the live path
        a = sq * np.float32(-0.5 / bandwidth**2)
        top = a.max(1, keepdims=True)
        np.exp(a - top, out=a)
        return (top[:, 0].astype(np.float64) + np.log(a.sum(1, dtype=np.float64))) - log_norm
    return logsumexp(-0.5 * sq / bandwidth**2, axis=1) - log_norm


def greedy_coreset(points: np.ndarray, size: int, seed: int = 0, projection_dim: int = 64,
                   progress: Callable[[int], object] | None = None) -> np.ndarray:
    """Indices of `size` rows of `points` chosen greedily so that every row is close to one of
    them (k-centre; distances in a random projection, which keeps them to a few per cent).
    `progress(n)` hears of every n rows chosen."""
    n = len(points)
    if size >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    proj = rng.standard_normal((points.shape[1], projection_dim)).astype(np.float32) / math.sqrt(projection_dim)
    z = points.astype(np.float32) @ proj
    zz = (z * z).sum(1)
    chosen = np.empty(size, dtype=np.int64)
    chosen[0] = int(rng.integers(n))
    dist = zz + zz[chosen[0]] - 2.0 * (z @ z[chosen[0]])
    for i in range(1, size):
        j = int(dist.argmax())
        chosen[i] = j
        np.minimum(dist, zz + zz[j] - 2.0 * (z @ z[j]), out=dist)
        if progress is not None and i % 100 == 0:
            progress(100)
    if progress is not None:
        progress(size % 100 or 100)
    return chosen


def as_patches(latents: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """(n, ..., c) latents as (n * positions, c) patch vectors, and the (n, ...) map shape;
    a flat (n, d) latent is one patch per image."""
    latents = np.asarray(latents)
    if latents.ndim <= 2:
        return latents.reshape(len(latents), -1), (len(latents), 1)
    return latents.reshape(-1, latents.shape[-1]), latents.shape[:-1]


def loo_bandwidth(points: np.ndarray, grid: np.ndarray | None = None) -> float:
    """Bandwidth maximising the leave-one-out log-likelihood of `points` under a Gaussian KDE."""
    n, dim = points.shape
    if n < 3:
        raise GutcheckError("need at least 3 latent vectors to choose a bandwidth")
    if grid is None:
        scale = math.sqrt(max(float(points.var(0).mean()), 1e-12))
        grid = scale * np.logspace(-1.5, 0.7, 45)
    sq = _sq_distances(points, points)
    np.fill_diagonal(sq, np.inf)
    scores = [float(_gaussian_log_density(sq, float(h), dim, n - 1).mean()) for h in grid]
    best = float(grid[int(np.nanargmax(scores))])
    if not math.isfinite(best) or best <= 0:
        raise GutcheckError("bandwidth selection failed: latent vectors are degenerate")
    return best


def kde_log_density(x: np.ndarray, points: np.ndarray, bandwidth: float) -> np.ndarray:
    """Log-density of rows of x under a Gaussian KDE on the rows of `points`, in chunks that bound
    the distance matrix to ~32 MB."""
    n, dim = points.shape
    step = max(1, 4_000_000 // n)
    return np.concatenate([
        _gaussian_log_density(_sq_distances(x[i:i + step], points), bandwidth, dim, n)
        for i in range(0, len(x), step)]) if len(x) else np.zeros(0)


class Density:
    """What every density kind shares: the fitted-state checks and the plain-array round trip."""

    preset: ClassVar[str]
    points_: np.ndarray | None = None

    def fit(self, latents: np.ndarray, progress: Callable[[int], object] | None = None) -> "Density":
        raise NotImplementedError

    def score_samples(self, latents: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def check_dim(self, dim: int) -> None:
        """Refuse, before any training, a latent this kind cannot take (only the Gaussian has a limit)."""

    def latent_dim(self) -> int:
        """Values in each latent vector the fitted state expects (per position for the patch kind)."""
        return int(self.points_.shape[1])

    def has_usable_state(self) -> bool:
        """The fitted arrays are finite and hold at least one memory point."""
        points = self.points_
        return points is not None and points.ndim == 2 and len(points) >= 1 and bool(np.isfinite(points).all())

    def _require_fit(self) -> None:
        if self.points_ is None:
            raise RuntimeError(f"{type(self).__name__}.score_samples called before fit")

    @staticmethod
    def _check_enough(latents: np.ndarray) -> None:
        if len(latents) < 3:
            raise GutcheckError("need at least 3 good images to fit the density model")

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The fitted state as plain arrays for an .npz file (no pickle)."""
        raise NotImplementedError


class PrototypeKDE(Density):
    """The prototype's KDE: raw flattened latent, fixed bandwidth 0.2 (sklearn's normalisation)."""

    preset = "prototype"

    def __init__(self, bandwidth: float = 0.2):
        self.bandwidth = float(bandwidth)
        self.points_: np.ndarray | None = None

    def fit(self, latents, progress=None) -> "PrototypeKDE":
        self._check_enough(latents)
        self.points_ = latents.reshape(len(latents), -1).astype(np.float64)
        return self

    def score_samples(self, latents: np.ndarray) -> np.ndarray:
        self._require_fit()
        return kde_log_density(latents.reshape(len(latents), -1).astype(np.float64), self.points_, self.bandwidth)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"preset": np.array(self.preset), "bandwidth": np.array(self.bandwidth), "points": self.points_}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "PrototypeKDE":
        obj = cls(float(arrays["bandwidth"]))
        obj.points_ = np.asarray(arrays["points"], dtype=np.float64)
        return obj


class WhitenedKDE(Density):
    """Centre, project on the leading `n_components` principal components, whiten; bandwidth by
    leave-one-out likelihood unless given."""

    preset = "whitened"

    def __init__(self, n_components: int = 32, bandwidth: float | None = None):
        self.n_components = int(n_components)
        self.bandwidth = bandwidth
        self.mean_: np.ndarray | None = None
        self.projection_: np.ndarray | None = None  # (dim, k): centred latent -> whitened coordinates
        self.points_: np.ndarray | None = None

    def _transform(self, latents: np.ndarray) -> np.ndarray:
        return (latents.reshape(len(latents), -1).astype(np.float64) - self.mean_) @ self.projection_

    def fit(self, latents, progress=None) -> "WhitenedKDE":
        self._check_enough(latents)
        flat = latents.reshape(len(latents), -1).astype(np.float64)
        self.mean_ = flat.mean(0)
        _, s, vt = np.linalg.svd(flat - self.mean_, full_matrices=False)
        k = int(min(self.n_components, len(flat) - 1, int((s > s[0] * 1e-6).sum())))
        sd = s[:k] / math.sqrt(len(flat) - 1)
        self.projection_ = vt[:k].T / sd
        self.points_ = self._transform(flat)
        if self.bandwidth is None:
            self.bandwidth = loo_bandwidth(self.points_)
        return self

    def latent_dim(self) -> int:
        return int(self.projection_.shape[0])

    def score_samples(self, latents: np.ndarray) -> np.ndarray:
        self._require_fit()
        return kde_log_density(self._transform(latents), self.points_, float(self.bandwidth))

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"preset": np.array(self.preset), "bandwidth": np.array(self.bandwidth, dtype=np.float64),
                "n_components": np.array(self.n_components), "points": self.points_, "mean": self.mean_,
                "projection": self.projection_}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "WhitenedKDE":
        obj = cls(int(arrays["n_components"]), float(arrays["bandwidth"]))
        obj.points_ = np.asarray(arrays["points"], dtype=np.float64)
        obj.mean_ = np.asarray(arrays["mean"], dtype=np.float64)
        obj.projection_ = np.asarray(arrays["projection"], dtype=np.float64)
        return obj


class GaussianDensity(Density):
    """One Gaussian with a Ledoit-Wolf shrunk covariance over the whole latent; `bandwidth` reports
    the shrinkage in force (the regularisation)."""

    preset = "gaussian"

    def __init__(self):
        self.bandwidth: float | None = None
        self.mean_: np.ndarray | None = None
        self.precision_: np.ndarray | None = None
        self.log_norm_: float = 0.0
        self.points_: np.ndarray | None = None  # none kept: (0, dim), so that the state says its dimension

    def check_dim(self, dim: int) -> None:
        if dim > GAUSSIAN_MAX_DIM:
            raise GutcheckError(f"the gaussian density takes latents of at most {GAUSSIAN_MAX_DIM} values; this "
                                f"architecture's has {dim}: use --density whitened")

    def fit(self, latents, progress=None) -> "GaussianDensity":
        from sklearn.covariance import LedoitWolf

        self._check_enough(latents)
        flat = latents.reshape(len(latents), -1).astype(np.float64)
        self.check_dim(flat.shape[1])
        lw = LedoitWolf().fit(flat)
        # float32 halves the bundle (a 1760-dim latent: 12 MB) and changes scores by < 1e-5
        self.mean_, self.precision_ = lw.location_, lw.precision_.astype(np.float32)
        _, logdet = np.linalg.slogdet(lw.covariance_)
        self.log_norm_ = -0.5 * (flat.shape[1] * math.log(2 * math.pi) + logdet)
        self.bandwidth = float(lw.shrinkage_)
        self.points_ = np.zeros((0, flat.shape[1]))
        return self

    def latent_dim(self) -> int:
        return int(self.precision_.shape[0])

    def has_usable_state(self) -> bool:
        return self.precision_ is not None and self.mean_ is not None and \
            bool(np.isfinite(self.precision_).all() and np.isfinite(self.mean_).all())

    def score_samples(self, latents: np.ndarray) -> np.ndarray:
        self._require_fit()
        d = latents.reshape(len(latents), -1).astype(np.float64) - self.mean_
        return self.log_norm_ - 0.5 * np.einsum("ij,jk,ik->i", d, self.precision_.astype(np.float64), d)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"preset": np.array(self.preset), "bandwidth": np.array(self.bandwidth, dtype=np.float64),
                "points": self.points_, "mean": self.mean_, "precision": self.precision_,
                "log_norm": np.array(self.log_norm_)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "GaussianDensity":
        obj = cls()
        obj.bandwidth = float(arrays["bandwidth"])
        obj.points_ = np.asarray(arrays["points"], dtype=np.float64)
        obj.mean_ = np.asarray(arrays["mean"], dtype=np.float64)
        obj.precision_ = np.asarray(arrays["precision"], dtype=np.float32)
        obj.log_norm_ = float(arrays["log_norm"])
        return obj


class PatchKDE(Density):
    """A KDE over the latent's spatial positions (patches) instead of whole images. Every position
    of every training latent (h, w, c) is a c-dimensional sample; a greedy k-centre coreset keeps a
    `coreset` share of them (at most `max_memory`); the bandwidth is chosen by leave-one-out
    likelihood on the kept patches unless given. An image's density is the mean of its `worst` least
    likely patches; `coarse` > 0 makes the per-frame pass two-pass (``patch_maps``)."""

    preset = "patch"

    def __init__(self, coreset: float = 0.1, max_memory: int = PATCH_MAX_MEMORY, worst: int = PATCH_WORST,
                 coarse: float = 0.0, refine: float = 0.1, bandwidth: float | None = None, seed: int = 0):
        self.coreset = float(coreset)
        self.max_memory = int(max_memory)
        self.worst = max(1, int(worst))
        self.coarse = float(coarse)  # share of the memory for the first pass (0: one exact pass)
        self.refine = float(refine)  # share of positions computed exactly in the second pass
        self.bandwidth = bandwidth
        self.seed = seed
        self.points_: np.ndarray | None = None

    def memory_size(self, n_patches: int) -> int:
        """Patches kept of `n_patches`."""
        return int(min(self.max_memory, max(min(n_patches, 3), round(n_patches * self.coreset))))

    def fit(self, latents, progress=None) -> "PatchKDE":
        """`progress(n)` hears of the coreset search's progress."""
        self._check_enough(latents)
        patches, _ = as_patches(latents)
        size = self.memory_size(len(patches))
        if len(patches) > CORESET_POOL:  # at 384 px a screw set has 590 000 patches: a third of the search time
            patches = patches[np.random.default_rng(self.seed).choice(len(patches), CORESET_POOL, replace=False)]
        self.points_ = patches[greedy_coreset(patches, size, self.seed, progress=progress)].astype(np.float32)
        if self.bandwidth is None:
            rng = np.random.default_rng(self.seed)
            sample = self.points_[rng.permutation(len(self.points_))[:BANDWIDTH_SAMPLE]]
            self.bandwidth = loo_bandwidth(sample)
        return self

    def extend(self, latents: np.ndarray, progress: Callable[[int], object] | None = None) -> "PatchKDE":
        """Add the patches of new good images to the fitted memory (`gutcheck build --update`): the
        coreset is chosen again over the kept patches and the new ones, so that the new looks the
        memory does not cover yet are kept, in greedy order (the two-pass KDE's first pass uses the
        first picks). The bandwidth stays: the latent space is the same."""
        self._require_fit()
        patches, _ = as_patches(latents)
        if len(patches) > CORESET_POOL:
            patches = patches[np.random.default_rng(self.seed).choice(len(patches), CORESET_POOL, replace=False)]
        pool = np.concatenate([self.points_, patches.astype(np.float32)])
        size = min(self.max_memory, len(self.points_) + self.memory_size(len(patches)))
        self.points_ = pool[greedy_coreset(pool, size, self.seed, progress=progress)]
        return self

    def _kde(self, x: np.ndarray, points: np.ndarray | None = None) -> np.ndarray:
        return kde_log_density(x, self.points_ if points is None else points, float(self.bandwidth))

    def patch_maps(self, latents: np.ndarray) -> np.ndarray:
        """The log-density of every spatial position, shape (n, h, w).

        With `coarse` > 0 (detector v2) it is computed in two passes, the cost of the live path being
        this KDE: every position against the first `coarse` share of the memory (the greedy coreset's
        first picks cover all patches, only more coarsely), then the `refine` share of each image's
        least likely positions again against the whole memory. The other positions keep their coarse
        value, lowered by the median gap between the two passes on the refined ones so that both
        kinds sit on one scale. The image density (its least likely patches) comes from the refined
        positions: exact whenever they hold them, as they do when coarse and exact rank alike."""
        self._require_fit()
        patches, shape = as_patches(latents)
        n_memory = len(self.points_)
        n_coarse = int(round(n_memory * self.coarse))
        positions = int(np.prod(shape[1:]))
        n_refine = max(4 * self.worst, int(round(positions * self.refine)))
        if not self.coarse or n_coarse < 50 or n_refine >= positions:
            return self._kde(patches).reshape(shape)
        coarse = self._kde(patches, self.points_[:n_coarse]).reshape(len(latents), positions)
        worst = np.argpartition(coarse, n_refine - 1, axis=1)[:, :n_refine]
        rows = np.repeat(np.arange(len(latents)), n_refine)
        exact = self._kde(patches.reshape(len(latents), positions, -1)[rows, worst.ravel()])
        gap = float(np.median(exact - coarse[rows, worst.ravel()]))
        maps = coarse + gap
        maps[rows, worst.ravel()] = exact
        return maps.reshape(shape)

    def score_maps(self, latents: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each image's density (the mean of its `worst` least likely patches) and the per-patch map
        it came from, computed once."""
        maps = self.patch_maps(latents)
        flat = maps.reshape(len(latents), -1)
        k = min(self.worst, flat.shape[1])
        return np.partition(flat, k - 1, axis=1)[:, :k].mean(1), maps

    def score_samples(self, latents: np.ndarray) -> np.ndarray:
        return self.score_maps(latents)[0]

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"preset": np.array(self.preset), "bandwidth": np.array(self.bandwidth, dtype=np.float64),
                "coreset": np.array(self.coreset, dtype=np.float64), "worst": np.array(self.worst),
                "coarse": np.array(self.coarse, dtype=np.float64), "refine": np.array(self.refine, dtype=np.float64),
                "points": self.points_}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "PatchKDE":
        # bundles from before `worst` scored the least likely patch alone; before `coarse`, one exact pass
        obj = cls(coreset=float(arrays["coreset"]) if "coreset" in arrays else 0.1,
                  worst=int(arrays["worst"]) if "worst" in arrays else 1,
                  coarse=float(arrays["coarse"]) if "coarse" in arrays else 0.0,
                  refine=float(arrays["refine"]) if "refine" in arrays else 0.1,
                  bandwidth=float(arrays["bandwidth"]))
        obj.points_ = np.asarray(arrays["points"], dtype=np.float32)
        return obj


DENSITIES: dict[str, type[Density]] = {cls.preset: cls for cls in (PrototypeKDE, WhitenedKDE, GaussianDensity,
                                                                    PatchKDE)}
PRESETS = tuple(DENSITIES)


def density_class(preset: str) -> type[Density]:
    """The estimator class of a density preset, or a one-line error naming the known ones."""
    try:
        return DENSITIES[str(preset)]
    except KeyError:
        raise GutcheckError(f"unknown density preset {preset!r}; known: {', '.join(PRESETS)}") from None


def density_from_arrays(arrays: dict[str, np.ndarray]) -> Density:
    """A fitted density from its plain arrays (density.npz), the class picked by the stored preset."""
    return density_class(str(arrays["preset"])).from_arrays(arrays)
