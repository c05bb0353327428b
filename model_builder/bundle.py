"""Model bundle v3: one folder read by every tool (version 1 and 2 bundles still load and score as before).

    model.keras   Keras model: image -> (reconstruction, latent), or for the feature autoencoder
                  (error per latent position, latent), and for detector v3 also the whole image's
                  squared Mahalanobis distance (bundle.json's whole_image_weight weighs it); loaded
                  with safe_mode
    density.npz   the latent density's state as plain arrays (no pickle)
    bundle.json   format version, preprocessing, thresholds, rule, and the model's description
                  (ModelInfo: identity, calibration, training, provenance, evaluation)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from capture.errors import GutcheckError
from capture.imageio import FOLDER_MODE, write_bytes_atomic
from capture.platforms import process_alive
from capture.trash import move_to_trash
from model_builder.density import Density, PatchKDE, density_from_arrays
from model_builder.metadata import ModelInfo
from model_builder.preprocess import Preprocessing
from model_builder.scoring import (COMBINATIONS, BorderCorrection, GoodStatistics, ReconstructionScore, Scorer,
                                   Thresholds, combined_score, finite_number, rule_combination)

FORMAT = "gutcheck-bundle"
FORMAT_VERSION = 3  # 2: the feature autoencoder, map statistics, the score combination; 3: the whole image
MODEL_FILE, DENSITY_FILE, META_FILE = "model.keras", "density.npz", "bundle.json"


@dataclass
class Bundle:
    """A loaded (or freshly built) bundle: the scorer plus everything bundle.json says."""

    model: object
    density: Density
    preprocessing: Preprocessing
    thresholds: Thresholds
    good_statistics: GoodStatistics
    knob_ranges: dict[str, list[float]]
    reconstruction_score: ReconstructionScore = field(default_factory=ReconstructionScore)
    info: ModelInfo = field(default_factory=ModelInfo)
    path: Path | None = None
    map_statistics: GoodStatistics | None = None  # feature autoencoder: good positions, for the heatmap
    combination: str = ""  # how the two scores make the single `score` (COMBINATIONS); "": the rule's
    whole_image_weight: float = 0.0  # detector v3: the whole image's distance in the density (Scorer)
    border: BorderCorrection | None = None  # detector v3: the edge positions on the interior's scale

    def __post_init__(self) -> None:
        if not self.combination:
            self.combination = rule_combination(self.thresholds.rule)
        if self.combination not in COMBINATIONS:
            raise GutcheckError(f"score combination must be one of {', '.join(COMBINATIONS)}, not "
                                f"{self.combination!r}")

    @property
    def scorer(self) -> Scorer:
        """A scorer on TensorFlow, the reference runtime (builds, calibration, reports)."""
        return self.scorer_on("tensorflow")

    def scorer_on(self, runtime: str) -> Scorer:
        """A scorer whose network runs on `runtime` (model_builder/runtime.py: auto, tensorflow, openvino)."""
        return Scorer(self.model, self.density, self.preprocessing, self.thresholds, self.reconstruction_score,
                      self.map_statistics, runtime, self.whole_image_weight, self.border, self.good_statistics,
                      self.combination)

    def combined(self, density: np.ndarray, error: np.ndarray) -> np.ndarray:
        """The single anomaly score (higher = worse) that the report's ROC and `inspect` use."""
        return combined_score(density, error, self.good_statistics, self.combination)

    def to_meta(self) -> dict:
        """bundle.json's content."""
        meta = self.info.to_dict()
        meta.update(
            format=FORMAT,
            format_version=FORMAT_VERSION,
            image_size=self.preprocessing.size,
            color=self.preprocessing.color,
            preprocessing=self.preprocessing.to_dict(),
            thresholds=self.thresholds.to_dict(),
            rule=self.thresholds.rule,
            good_statistics=self.good_statistics.to_dict(),
            knob_ranges=self.knob_ranges,
            reconstruction_score=self.reconstruction_score.to_dict(),
            score_combination=self.combination,
        )
        if self.map_statistics is not None:
            meta["map_statistics"] = self.map_statistics.to_dict()
        if len(self.model.outputs) == 3:
            meta["whole_image_weight"] = self.whole_image_weight
        if self.border is not None:
            meta["border_correction"] = self.border.to_dict()
        return meta


def save_bundle(bundle: Bundle, out: Path, force: bool = False, extra_files: dict[str, bytes] | None = None) -> Path:
    """Write the bundle into a temp folder beside `out`, then move it into place.

    An existing `out` is kept unless `force`; with `force` it goes to the trash, not away.
    `extra_files` (name -> bytes) are written beside the model: report, loss history.
    """
    out = Path(out)
    if out.exists() and not force:
        raise GutcheckError(f"{out} already exists; use --force to replace it (the old one goes to the trash)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(out)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".partial", dir=out.parent))
    except OSError as exc:
        raise GutcheckError(f"{out}: cannot write there ({exc.strerror or exc})") from None
    try:
        if bundle.info.model_id == ModelInfo.model_id:  # a new model: named after its folder and the time
            bundle.info.model_id = f"{out.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        meta = bundle.to_meta()
        bundle.model.save(tmp / MODEL_FILE)
        with open(tmp / DENSITY_FILE, "wb") as f:
            np.savez(f, **bundle.density.to_arrays())
        for name, data in (extra_files or {}).items():
            write_bytes_atomic(tmp / name, data)
        write_bytes_atomic(tmp / META_FILE, json.dumps(meta, indent=2, sort_keys=True).encode())
        tmp.chmod(FOLDER_MODE)  # mkdtemp makes it private (0700): the dashboard may run as another user
        if out.exists():
            move_to_trash(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    bundle.path = out
    return out


STALE_PARTIAL_S = 24 * 3600


def remove_stale_partials(out: Path) -> list[Path]:
    """Remove the half-written folders (`.<name>.<pid>.<random>.partial`) that killed builds of `out`
    left beside it: those of a process that no longer runs, and any older than a day. A build in
    progress keeps its own. Returns what was removed."""
    removed = []
    for folder in Path(out).parent.glob(f".{Path(out).name}.*.partial"):
        parts = folder.name[len(Path(out).name) + 2:].split(".")
        pid = int(parts[0]) if parts and parts[0].isdigit() else None
        try:
            old = time.time() - folder.stat().st_mtime > STALE_PARTIAL_S
        except OSError:
            continue
        if folder.is_dir() and (old or (pid is not None and pid != os.getpid() and not process_alive(pid))):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def read_meta(path: Path) -> dict:
    """bundle.json of a bundle folder, checked for format and version."""
    meta_path = Path(path) / META_FILE
    if not Path(path).is_dir():
        raise GutcheckError(f"{path}: no such model bundle folder")
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise GutcheckError(f"{path}: not a Gutcheck model bundle ({META_FILE} missing)") from None
    except (OSError, ValueError) as exc:
        raise GutcheckError(f"{meta_path}: unreadable ({exc})") from None
    if not isinstance(meta, dict):
        raise GutcheckError(f"{meta_path}: not a Gutcheck model bundle (a JSON {type(meta).__name__}, not a table)")
    if meta.get("format") != FORMAT:
        raise GutcheckError(f"{path}: not a Gutcheck model bundle (format is {meta.get('format')!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise GutcheckError(f"{meta_path}: format_version must be a whole number, not {version!r}; the file was "
                            "edited or damaged: rebuild the model")
    if version > FORMAT_VERSION or version < 1:
        raise GutcheckError(
            f"{path}: bundle format version {version} is not supported by this Gutcheck "
            f"(reads version {FORMAT_VERSION}); update Gutcheck or rebuild the model"
        )
    return meta


def _section(meta: dict, key: str) -> dict:
    value = meta.get(key)
    if not isinstance(value, dict):
        raise GutcheckError(f"{key} must be a table of values, not {type(value).__name__}")
    return value


def _good_statistics(meta: dict, key: str = "good_statistics") -> GoodStatistics:
    stats = GoodStatistics(**_section(meta, key))
    for name, value in vars(stats).items():
        finite_number(value, f"{key}.{name}")
    if stats.density_spread <= 0 or stats.error_spread <= 0:
        raise GutcheckError(f"{key}: spreads must be positive")
    return stats


def _knob_ranges(meta: dict) -> dict[str, list[float]]:
    ranges = _section(meta, "knob_ranges")
    out = {}
    for key in ("density", "reconstruction"):
        pair = ranges.get(key)
        if not isinstance(pair, list) or len(pair) != 2:
            raise GutcheckError(f"knob_ranges.{key} must be [low, high]")
        lo, hi = (finite_number(v, f"knob_ranges.{key}") for v in pair)
        if not lo < hi:
            raise GutcheckError(f"knob_ranges.{key}: low {lo} is not below high {hi}")
        out[key] = [lo, hi]
    return out


def _check_model_fits(model, density: Density, preprocessing: Preprocessing) -> None:
    """The three parts of a bundle must belong together: the model takes the preprocessed image, and
    the density knows the model's latent. Anything else fails at the first frame, not here."""
    expected = (preprocessing.size, preprocessing.size, preprocessing.channels)
    got = tuple(model.input_shape[1:]) if hasattr(model, "input_shape") else None
    if got != expected:
        raise GutcheckError(f"the model takes images of {got}, the preprocessing gives {expected}")
    latent_shape = tuple(model.output_shape[1][1:]) if hasattr(model, "output_shape") else ()
    latent_dim = latent_shape[-1] if isinstance(density, PatchKDE) else int(np.prod(latent_shape))
    if not density.has_usable_state():
        raise GutcheckError("density.npz holds no usable points")
    if density.latent_dim() != latent_dim:
        raise GutcheckError(f"density.npz describes latents of {density.latent_dim()} values, the model's have "
                            f"{latent_dim}")
    if not np.isfinite(density.bandwidth) or density.bandwidth <= 0:
        raise GutcheckError(f"density.npz: bandwidth {density.bandwidth} is not a positive number")


def _whole_image_weight(model, meta: dict) -> float:
    """Detector v3's weight of the whole image's distance: a model that computes the distance needs
    one (a finite number of 0 or more); a v2 model has none."""
    if len(model.outputs) != 3:
        return 0.0
    if "whole_image_weight" not in meta:
        raise GutcheckError("bundle.json has no whole_image_weight for a model that measures the whole image")
    weight = finite_number(meta["whole_image_weight"], "whole_image_weight")
    if weight < 0:
        raise GutcheckError(f"whole_image_weight must be 0 or more, not {weight}")
    return weight


def load_bundle(path: Path) -> Bundle:
    """Load a bundle folder; any problem is a one-line GutcheckError."""
    path = Path(path)
    meta = read_meta(path)
    import keras  # late: importing TensorFlow takes seconds

    try:
        model = keras.models.load_model(path / MODEL_FILE, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a bad file
        raise GutcheckError(f"{path / MODEL_FILE}: cannot load the model ({str(exc).splitlines()[0]})") from None
    if (path / DENSITY_FILE).is_file() and not zipfile.is_zipfile(path / DENSITY_FILE):
        raise GutcheckError(f"{path / DENSITY_FILE}: not an .npz archive (damaged or replaced); rebuild the model")
    try:
        with np.load(path / DENSITY_FILE, allow_pickle=False) as npz:
            density = density_from_arrays({k: npz[k] for k in npz.files})
        preprocessing = Preprocessing(**_section(meta, "preprocessing"))
        _check_model_fits(model, density, preprocessing)
        return Bundle(
            model=model,
            density=density,
            preprocessing=preprocessing,
            thresholds=Thresholds(**_section(meta, "thresholds")),
            good_statistics=_good_statistics(meta),
            knob_ranges=_knob_ranges(meta),
            reconstruction_score=ReconstructionScore(**_section(meta, "reconstruction_score")),
            info=ModelInfo.from_meta(meta),
            path=path,
            map_statistics=_good_statistics(meta, "map_statistics") if "map_statistics" in meta else None,
            combination=str(meta.get("score_combination", "")),
            whole_image_weight=_whole_image_weight(model, meta),
            border=BorderCorrection.from_dict(meta["border_correction"]) if "border_correction" in meta else None,
        )
    except GutcheckError as exc:
        raise GutcheckError(f"{path}: {exc}; rebuild the model") from None
    except (OSError, KeyError, TypeError, ValueError, AttributeError, zipfile.BadZipFile) as exc:
        raise GutcheckError(f"{path}: damaged bundle ({type(exc).__name__}: {str(exc)[:200]}); rebuild the model") \
            from None
