"""`gutcheck build --update MODEL --data NEW --out OUT`: add newly captured good images (a new batch
of material, new lighting) to a bundle's density memory and calibrate again, without retraining
the autoencoder: the images pass once through the frozen model, their latent patches join the
coreset, and the thresholds are chosen again on held-out good images. Seconds, not minutes.

The result is a new bundle (the old one is never overwritten without --force, and then goes to the
trash); its provenance lists the original images and every set added since.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np

from capture.errors import GutcheckError
from model_builder.build import BuildOptions, BuildResult, calibrate, check_out, finish, split_held_out, stage_bar
from model_builder.bundle import load_bundle
from model_builder.dataset import fingerprint, load_good
from model_builder.density import PatchKDE
from model_builder.metadata import AddedImages

# What an update takes from the options the bundle was built with; the rest is the bundle's own.
CALIBRATION_OPTIONS = ("seed", "val_fraction", "target_frr", "target_recall", "outlier_limit")


def update(model: Path, data: Path, out: Path | None, force: bool = False, show_progress: bool = True, log=print,
           report: bool = True, **calibration: float) -> BuildResult:
    """Add data/train/good to the bundle at `model` and save the recalibrated bundle to `out`.
    `calibration` overrides the bundle's target_frr, target_recall or outlier_limit."""
    start = time.monotonic()
    data = Path(data)
    check_out(out, force)
    bundle = load_bundle(Path(model))
    if not isinstance(bundle.density, PatchKDE):
        raise GutcheckError(f"{model}: --update adds images to a patch density (the builder's default); this bundle's "
                            f"is {bundle.density.preset}: build it again with the new images")
    built_with = bundle.info.provenance.options
    kept = {k: built_with[k] for k in CALIBRATION_OPTIONS if k in built_with}
    options = BuildOptions(architecture=bundle.info.architecture if bundle.info.architecture != "?" else "features",
                           size=bundle.preprocessing.size, rule=bundle.thresholds.rule,
                           **{**kept, **{k: v for k, v in calibration.items() if v is not None}})
    new = load_good(data)
    for path, why in new.skipped:
        log(f"skipped {why}")
    idx_add, idx_val = split_held_out(len(new), options.val_fraction, options.seed)
    x = bundle.preprocessing.apply_batch(new.images)
    scorer = bundle.scorer
    with stage_bar("features", len(idx_add), "image", show_progress) as bar:
        latents = []
        for i in range(0, len(idx_add), 32):
            latents.append(scorer.forward(x[idx_add[i:i + 32]])[1])
            bar.update(len(idx_add[i:i + 32]))
    latent = np.concatenate(latents)
    before = len(scorer.density.points_)
    with stage_bar("density", min(scorer.density.max_memory, before + scorer.density.memory_size(
            int(np.prod(latent.shape[:-1])))), "patch", show_progress) as bar:
        scorer.density.extend(latent, progress=bar.update)
    del latent, latents
    log(f"added {len(idx_add)} good images of {data} to the density memory ({before} -> "
        f"{len(scorer.density.points_)} patches); {len(idx_val)} held out for the calibration")

    x_val, val_paths = x[idx_val], [new.paths[i] for i in idx_val]
    original = _original_validation(bundle, options, log)
    if original is not None:
        x_val = np.concatenate([original[0], x_val])
        val_paths = original[1] + val_paths

    info = copy.deepcopy(bundle.info)
    info.model_id, info.evaluation = "unsaved", None
    info.provenance.added.append(AddedImages(str(data.resolve()), fingerprint(new.paths), len(idx_add), len(idx_val),
                                             time.strftime("%Y-%m-%dT%H:%M:%S%z"), bundle.info.model_id))
    calibrated = calibrate(scorer, options, x_val, val_paths, info, show_progress, log)
    history_file = Path(model) / "history.json"
    history = json.loads(history_file.read_text()) if history_file.is_file() else {}
    return finish(calibrated, data, out, options, history, force, report, show_progress, log, start)


def _original_validation(bundle, options: BuildOptions, log) -> tuple[np.ndarray, list[Path]] | None:
    """The held-out good images of the original build, when they are still where they were and
    unchanged (same fingerprint): the new calibration then covers the old looks and the new."""
    prov = bundle.info.provenance
    try:
        old = load_good(Path(prov.dataset))
    except GutcheckError:
        old = None
    if old is None or fingerprint(old.paths) != prov.dataset_fingerprint:
        log(f"note: the original good images ({prov.dataset}) are gone or changed; the thresholds are calibrated on "
            "the new held-out images only")
        return None
    _, idx_val = split_held_out(len(old), options.val_fraction, options.seed)
    return bundle.preprocessing.apply_batch([old.images[i] for i in idx_val]), [old.paths[i] for i in idx_val]
