"""`gutcheck build`: good images -> trained autoencoder + latent density + thresholds -> bundle."""

from __future__ import annotations

import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from capture.errors import GutcheckError
from model_builder.bundle import Bundle, save_bundle
from model_builder.calibrate import evaluate_scores, knob_ranges, thresholds_at_frr
from model_builder.dataset import ImageSet, fingerprint, load_good, load_test
from model_builder.density import LatentDensity
from model_builder.preprocess import Preprocessing
from model_builder.scoring import GoodStatistics, ReconstructionScore, Scorer, Thresholds, is_anomaly


@dataclass
class BuildOptions:
    """Everything that decides what `build` makes; stored in the bundle's provenance."""

    size: int = 128
    color: str = "rgb"
    architecture: str = "prototype"
    density_preset: str = "whitened"
    rule: str = "or"
    reconstruction_score: str = "topk"
    epochs: int = 60
    batch_size: int = 16
    learning_rate: float = 2e-3
    patience: int = 8
    val_fraction: float = 0.2
    target_frr: float = 0.01
    seed: int = 0


@dataclass
class BuildResult:
    bundle: Bundle
    history: dict[str, list[float]]
    evaluation: dict | None
    seconds: float


def _split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    n_val = max(2, int(round(n * val_fraction)))
    if n - n_val < 3:
        raise GutcheckError(f"only {n} good images: need at least {n_val + 3} to train and hold out a validation share")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def train_autoencoder(model, x_train: np.ndarray, x_val: np.ndarray, options: BuildOptions,
                      show_progress: bool = True) -> dict[str, list[float]]:
    """Fit reconstruction with MSE; early stopping on validation loss, best weights kept,
    learning rate halved on plateaus; Ctrl-C stops training and keeps the best weights so far."""
    import keras
    import tensorflow as tf

    from model_builder.progress import EpochProgress

    autoencoder = keras.Model(model.input, model.output[0])
    autoencoder.compile(optimizer=keras.optimizers.Adam(options.learning_rate), loss="mse")
    train_ds = (tf.data.Dataset.from_tensor_slices((x_train, x_train))
                .shuffle(len(x_train), seed=options.seed).batch(options.batch_size).prefetch(tf.data.AUTOTUNE))
    val_ds = tf.data.Dataset.from_tensor_slices((x_val, x_val)).batch(options.batch_size)
    progress = EpochProgress(options.epochs, options.patience, enabled=show_progress)
    callbacks = [progress, keras.callbacks.ReduceLROnPlateau(patience=max(2, options.patience // 3), factor=0.5)]
    try:
        autoencoder.fit(train_ds, validation_data=val_ds, epochs=options.epochs, callbacks=callbacks, verbose=0,
                        shuffle=False)
    except KeyboardInterrupt:
        print("\ninterrupted: keeping the best model so far", file=sys.stderr)
    finally:
        progress.close()
    if progress.best_weights is None:
        raise GutcheckError("training was stopped before the first epoch finished; nothing to keep")
    autoencoder.set_weights(progress.best_weights)
    return progress.history


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("gutcheck", "tensorflow-cpu", "keras", "numpy", "scikit-learn", "opencv-python-headless"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def build(data: Path, out: Path | None, options: BuildOptions | None = None, force: bool = False,
          show_progress: bool = True, log=print) -> BuildResult:
    """Train, fit the density, calibrate, evaluate on test/ when present, and save to `out`."""
    options = options or BuildOptions()
    start = time.monotonic()
    data = Path(data)
    if out is not None and Path(out).exists() and not force:
        raise GutcheckError(f"{out} already exists; use --force to replace it (the old one goes to the trash)")
    preprocessing = Preprocessing(options.size, options.color)
    Thresholds(0.0, 0.0, options.rule)  # validate the rule and score before the long part
    ReconstructionScore(options.reconstruction_score)
    good = load_good(data)
    for path, why in good.skipped:
        log(f"skipped {why}")
    idx_train, idx_val = _split(len(good), options.val_fraction, options.seed)
    x = preprocessing.apply_batch(good.images)
    log(f"{len(idx_train)} training and {len(idx_val)} validation images of {data} at "
        f"{options.size}x{options.size} {options.color}")

    import keras

    from model_builder.architectures import ARCHITECTURES

    if options.architecture not in ARCHITECTURES:
        raise GutcheckError(f"unknown architecture {options.architecture!r}; known: {', '.join(ARCHITECTURES)}")
    keras.utils.set_random_seed(options.seed)
    model = ARCHITECTURES[options.architecture](options.size, preprocessing.channels)
    history = train_autoencoder(model, x[idx_train], x[idx_val], options, show_progress)

    recon_score = ReconstructionScore(options.reconstruction_score)
    scorer = Scorer(model, LatentDensity(options.density_preset), preprocessing, Thresholds(0, 0, options.rule),
                    recon_score)
    _, latent_train = scorer.forward(x[idx_train])
    scorer.density.fit(latent_train)
    val = scorer.score_inputs(x[idx_val])
    thresholds = thresholds_at_frr(val.density, val.error, options.target_frr, options.rule)
    stats = GoodStatistics.from_scores(val.density, val.error)
    bundle = Bundle(
        model=model,
        density=scorer.density,
        preprocessing=preprocessing,
        thresholds=thresholds,
        good_statistics=stats,
        knob_ranges=knob_ranges(val.density, val.error),
        reconstruction_score=recon_score,
        meta={
            "architecture": options.architecture,
            "density_preset": options.density_preset,
            "density_bandwidth": float(scorer.density.bandwidth),
            "calibration": {
                "target_false_reject_rate": options.target_frr,
                "validation_images": int(len(idx_val)),
                "validation_false_reject_rate": float(is_anomaly(val.density, val.error, thresholds).mean()),
            },
            "training": {"epochs_run": len(history.get("loss", [])),
                         "best_val_loss": float(min(history.get("val_loss", [float("nan")])))},
            "provenance": {
                "dataset": str(data.resolve()),
                "dataset_fingerprint": fingerprint(good.paths),
                "train_images": len(good),
                "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "options": asdict(options),
                "versions": package_versions(),
            },
        },
    )
    test = load_test(data)
    evaluation = None
    if len(test):
        evaluation = evaluate_test(bundle, test)
        bundle.meta["evaluation"] = evaluation
    if out is not None:
        save_bundle(bundle, Path(out), force=force)
    return BuildResult(bundle, history, evaluation, time.monotonic() - start)


def evaluate_test(bundle: Bundle, test: ImageSet, batch: int = 64) -> dict:
    """Score a labelled test set and summarise it (metrics need both good and defect images)."""
    scorer = bundle.scorer
    density, error = [], []
    for i in range(0, len(test), batch):
        s = scorer.score_images(test.images[i:i + batch])
        density.append(s.density)
        error.append(s.error)
    d, e = np.concatenate(density), np.concatenate(error)
    result = evaluate_scores(test.is_anomaly, d, e, bundle.thresholds, bundle.good_statistics)
    result["images"] = {lab: int(sum(1 for x in test.labels if x == lab)) for lab in sorted(set(test.labels))}
    return result
