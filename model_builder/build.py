"""`gutcheck build`: good images -> trained autoencoder + latent density + thresholds -> bundle + report."""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from capture.errors import GutcheckError
from model_builder.augment import Augmentation
from model_builder.bundle import Bundle, save_bundle
from model_builder.calibrate import (PixelSample, evaluate_scores, knob_ranges, thresholds_at_frr,
                                     thresholds_at_recall, validation_outliers)
from model_builder.dataset import ImageSet, fingerprint, load_good, load_masks, load_test
from model_builder.metadata import (TARGET_FRR, Calibration, ModelInfo, OutlierNote, Provenance, Training,
                                    check_target_frr)
from model_builder.density import Density, PatchKDE, density_class
from model_builder.losses import LOSSES, make_loss
from model_builder.preprocess import ModelInputs, Preprocessing
from model_builder.scoring import (DETECTORS, RECONSTRUCTION_SCORES, RULES, WHOLE_IMAGE_SHARE, BorderCorrection,
                                   FeatureAutoencoder, GoodStatistics, PixelAutoencoder, ReconstructionScore, Scorer,
                                   Scores, Thresholds, is_anomaly, robust_spread, worst_mean)


DEFAULT_SIZES = {"features-whole": 384, "features": 384, "mobilenet": 384, "residual": 128, "prototype": 128}
"""The architectures the builder knows, and the input size of each: the prototype's 128; the pretrained encoder's patch density needs
more to see small defects (screw patch-density AUROC 0.64-0.77 at 128, 0.85-0.88 at 256, 0.90-0.92
at 384; pill 0.94 at 256, 0.96 at 384: bench notes)."""
FEATURE_ARCHITECTURES = ("features-whole", "features")  # detector v3 (v2 and the whole image's Gaussian), v2
DEFAULT_SCORES = {name: "feature" for name in FEATURE_ARCHITECTURES}  # the error each needs; others: ssim
DEFAULT_EPOCHS = {name: 15 for name in FEATURE_ARCHITECTURES}  # the feature decoder converges in ~15 epochs;
# pixel CAEs: 60 with early stop
FEATURE_MEMORY = 5_000  # patches the feature model's density keeps (screw 0.92-0.94 vs 0.89-0.93 with 2 500)
FEATURE_COARSE = 0.1  # its first pass ranks every position against the first 10 % of them (PatchKDE.patch_maps)


@dataclass
class BuildOptions:
    """Everything that decides what `build` makes; stored in the bundle's provenance."""

    size: int = 0  # 0: the architecture's size (DEFAULT_SIZES)
    color: str = "rgb"
    crop: int = 0
    architecture: str = "features-whole"  # detector v3: v2 and the whole image's Gaussian (bench/results/detection.txt)
    pretrained: str = "imagenet"  # mobilenet only: "imagenet", a path to the no-top .h5, or "none"
    loss: str = "hybrid"
    alpha: float = 0.5  # weight of SSIM in the hybrid loss
    density_preset: str = "patch"  # measured best (bench/results/detection-*.txt)
    density_components: int = 64  # whitened preset: principal components kept
    density_coreset: float = 0.01  # patch preset: share of training patches kept
    reconstruction_score: str = ""  # "": the architecture's (DEFAULT_SCORES, else ssim: screw 0.919 vs 0.889 topk)
    rule: str = "or"
    epochs: int = 0  # 0: the architecture's (DEFAULT_EPOCHS, else 60)
    latent_dim: int = 64  # features: principal components kept as the latent
    ring: int = 2  # features: the decoder guesses each latent from the 8 latents this far away
    decoder_width: int = 128  # features: the context decoder's hidden 1x1 layers (256 measured no better)
    batch_size: int = 16
    learning_rate: float = 2e-3
    patience: int = 8
    val_fraction: float = 0.2
    target_frr: float = TARGET_FRR
    target_recall: float = 0.95
    outlier_limit: float = 10.0  # held-out good images this many robust spreads out are left out of calibration (0: none)
    seed: int = 0
    augmentation: Augmentation = field(default_factory=Augmentation)
    time_limit_s: float = 330.0  # training ends before an epoch that would end past this (0: no limit)

    def __post_init__(self) -> None:
        choices = (("--architecture", self.architecture, tuple(DEFAULT_SIZES)), ("--loss", self.loss, LOSSES),
                   ("--rule", self.rule, RULES), ("--score", self.reconstruction_score, ("", *RECONSTRUCTION_SCORES)))
        for name, value, allowed in choices:
            if value not in allowed:
                raise GutcheckError(f"{name} must be one of {', '.join(a for a in allowed if a)}, not {value!r}")
        if not self.size:
            self.size = DEFAULT_SIZES.get(self.architecture, 128)
        if not self.reconstruction_score:
            self.reconstruction_score = DEFAULT_SCORES.get(self.architecture, "ssim")
        if not self.epochs:
            self.epochs = DEFAULT_EPOCHS.get(self.architecture, 60)
        if self.feature_model != (self.reconstruction_score == "feature"):
            raise GutcheckError("the feature reconstruction error goes with --architecture features or "
                                "features-whole, and only with them")
        density_class(self.density_preset)  # an unknown preset: one line naming the known ones
        if self.feature_model and self.density_preset != PatchKDE.preset:
            raise GutcheckError(f"--architecture {self.architecture} takes --density patch (its heatmap is the "
                                "density per position)")
        checks = (("seed", self.seed >= 0, "0 or more"), ("epochs", self.epochs >= 1, "1 or more"),
                  ("batch size", self.batch_size >= 1, "1 or more"),
                  ("learning rate", 0 < self.learning_rate < 1, "between 0 and 1"),
                  ("latent_dim", 1 <= self.latent_dim <= 288, "between 1 and 288"),
                  ("ring", self.ring >= 1, "1 or more"), ("decoder width", self.decoder_width >= 1, "1 or more"),
                  ("validation share", 0 < self.val_fraction < 1, "between 0 and 1"),
                  ("--coreset", 0 < self.density_coreset <= 1, "above 0 and at most 1"),
                  ("--target-recall", 0 < self.target_recall <= 1, "above 0 and at most 1"),
                  ("--alpha", 0 <= self.alpha <= 1, "between 0 and 1"),
                  ("--train-minutes", self.time_limit_s >= 0, "0 (no limit) or more"),
                  ("--outlier-limit", self.outlier_limit >= 0, "0 (keep all) or more"))
        for name, ok, allowed in checks:
            if not ok:
                raise GutcheckError(f"{name} must be {allowed}")
        check_target_frr(self.target_frr)

    @property
    def feature_model(self) -> bool:
        return self.architecture in FEATURE_ARCHITECTURES

    @property
    def whole_image(self) -> bool:
        """The detector adds the whole image's Gaussian to the patch density (detector v3)."""
        return self.architecture == "features-whole"

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing(self.size, self.color, self.crop)


@dataclass
class BuildResult:
    bundle: Bundle
    history: dict[str, list[float]]
    evaluation: dict | None
    seconds: float


def split_held_out(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the images to train on and of those held out for calibration (the same for the same
    n, share and seed)."""
    n_val = max(2, int(round(n * val_fraction)))
    if n - n_val < 3:
        raise GutcheckError(f"only {n} good images: need at least {n_val + 3} to train and hold out a validation share")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def make_datasets(x_train: np.ndarray, x_val: np.ndarray, options: BuildOptions):
    """tf.data pipelines: cached decoded images, shuffled, augmented (training only), batched, prefetched."""
    import tensorflow as tf

    auto = tf.data.AUTOTUNE
    train = (tf.data.Dataset.from_tensor_slices(x_train).cache()
             .shuffle(len(x_train), seed=options.seed, reshuffle_each_iteration=True)
             .batch(options.batch_size))
    if options.augmentation.enabled:  # sequential: its random draws must come in the same order every run
        train = train.map(options.augmentation.tf_function(options.seed))
    train = train.map(lambda b: (b, b), num_parallel_calls=auto).prefetch(auto)
    val = (tf.data.Dataset.from_tensor_slices(x_val).cache().batch(options.batch_size)
           .map(lambda b: (b, b)).prefetch(auto))
    return train, val


def train_autoencoder(model, x_train: np.ndarray, x_val: np.ndarray, options: BuildOptions,
                      show_progress: bool = True) -> dict[str, list[float]]:
    """Fit the reconstruction; early stopping on validation loss with the best weights kept,
    learning rate halved on plateaus; Ctrl-C stops training and keeps the best weights so far."""
    import keras

    from model_builder.progress import EpochProgress, fit_keeping_best

    autoencoder = keras.Model(model.input, model.output[0])
    autoencoder.compile(optimizer=keras.optimizers.Adam(options.learning_rate),
                        loss=make_loss(options.loss, options.alpha))
    train_ds, val_ds = make_datasets(x_train, x_val, options)
    progress = EpochProgress(options.epochs, options.patience, enabled=show_progress,
                             time_limit_s=options.time_limit_s)
    plateau = keras.callbacks.ReduceLROnPlateau(patience=max(2, options.patience // 3), factor=0.5, verbose=0)
    return fit_keeping_best(autoencoder, train_ds, val_ds, options.epochs, progress, [plateau])


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("gutcheck", "tensorflow-cpu", "keras", "numpy", "scikit-learn", "opencv-python-headless"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def make_model(options: BuildOptions, channels: int):
    """The architecture with its pretrained weights when it has any; a clear error when they cannot be had.
    For the feature autoencoder this is its frozen feature extractor (the rest is fitted on its output)."""
    import keras

    from model_builder.architectures import ARCHITECTURES

    weights = None if options.pretrained in ("none", "") else options.pretrained
    if weights not in (None, "imagenet") and not Path(weights).is_file():
        raise GutcheckError(f"--pretrained {weights}: no such weights file")
    keras.utils.set_random_seed(options.seed)
    try:
        return ARCHITECTURES[options.architecture](options.size, channels, weights=weights)
    except (OSError, ValueError, Exception) as exc:  # a failed download surfaces as several types
        if options.architecture == "mobilenet" or options.feature_model:
            name, url = imagenet_weights(options.size)
            where = "download" if weights == "imagenet" else "load"
            raise GutcheckError(
                f"cannot {where} the ImageNet weights of the mobilenet encoder ({str(exc).splitlines()[0][:120]}); "
                f"fetch them on any machine with internet: curl -L -o {name} {url} , then give --pretrained PATH "
                f"to that file (or put it in {Path('~') / '.keras' / 'models'}), or use --architecture residual "
                "(no pretrained weights)") from None
        raise


# Keras' own names for the no-top MobileNetV2 weights: it has them for these input sizes and falls
# back to the 224 px file for any other (keras.applications.MobileNetV2).
_KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
_KERAS_WEIGHT_SIZES = (96, 128, 160, 192, 224)


def imagenet_weights(size: int, alpha: float = 0.5) -> tuple[str, str]:
    """The file Keras downloads for the encoder at `size` px (name, URL): what to fetch by hand
    when the station's network blocks the download."""
    rows = size if size in _KERAS_WEIGHT_SIZES else 224
    name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"
    return name, _KERAS_WEIGHTS_URL + name


def stage_bar(stage: str, total: int, unit: str, show: bool):
    """A progress bar (with ETA) for one stage of a build."""
    from tqdm import tqdm

    return tqdm(total=total, desc=stage, unit=unit, disable=not show, file=sys.stderr, dynamic_ncols=True,
                mininterval=0.5 if sys.stderr.isatty() else 20)


def score_in_batches(scorer: Scorer, x, batch: int = 32, keep_position_maps: bool = False,
                     each_batch: Callable[[int, Scores], None] | None = None, stage: str = "",
                     show_progress: bool = False) -> tuple[Scores, tuple[np.ndarray, np.ndarray] | None]:
    """Scores of many preprocessed images (an array or `ModelInputs`), batch by batch, without their
    pictures: `each_batch(start, scores)` sees each batch's heatmaps before they are dropped. Optionally
    (feature model) with the (density, error) maps per latent position. With `stage` a bar shows progress."""
    parts = []
    with stage_bar(stage, len(x), "image", show_progress and bool(stage)) as bar:
        for i in range(0, len(x), batch):
            got = scorer.score_inputs(x[i:i + batch], with_heatmaps=each_batch is not None,
                                      keep_maps=keep_position_maps)
            if each_batch is not None:
                each_batch(i, got)
            got.reconstruction, got.heatmaps = None, None
            parts.append(got)
            bar.update(len(got.error))
    whole = None if parts[0].whole_image is None else np.concatenate([p.whole_image for p in parts])
    merged = Scores(None, np.concatenate([p.error for p in parts]), np.concatenate([p.density for p in parts]),
                    np.concatenate([p.anomaly for p in parts]), whole_image=whole)
    if keep_position_maps:
        return merged, (np.concatenate([p.position_maps[0] for p in parts]),
                        np.concatenate([p.position_maps[1] for p in parts]))
    return merged, None


def map_statistics(maps: tuple[np.ndarray, np.ndarray], kept: np.ndarray) -> GoodStatistics:
    """Medians and spreads of the held-out good images' positions (the kept ones), for the heatmap."""
    density_maps, error_maps = maps
    return GoodStatistics.from_scores(density_maps[kept].ravel(), error_maps[kept].ravel())


@dataclass
class Pictures:
    """A few test images as the report shows them."""

    inputs: np.ndarray  # (n, h, w, c) model inputs
    reconstructions: np.ndarray | None  # the pixel autoencoder's; None: the model redraws features
    heatmaps: np.ndarray  # (n, h, w)
    heat_scale: float  # where the heatmaps' colours saturate


@dataclass
class Evaluation:
    """Everything measured on a labelled test set, for bundle.json and the report: every test image's
    scores, none of its maps (`pictures` draws them again for the few the report shows)."""

    summary: dict
    test: ImageSet
    inputs: ModelInputs
    scores: Scores
    scorer: Scorer

    def pictures(self, idx: list[int]) -> Pictures:
        got = self.scorer.score_inputs(self.inputs[np.asarray(idx, np.int64)], with_heatmaps=True)
        return Pictures(self.inputs[np.asarray(idx, np.int64)], got.reconstruction, got.heatmaps,
                        self.scorer.detector.heat_scale(self.scorer.thresholds))


def evaluate_test(bundle: Bundle, test: ImageSet, data_root: Path | None, target_recall: float,
                  val_scores: Scores | None = None, target_frr: float = TARGET_FRR, show_progress: bool = False
                  ) -> Evaluation:
    """Score a labelled test set; metrics at the bundle's thresholds, for both rules, at the target
    recall, and pixel AUROC where masks exist."""
    scorer, size = bundle.scorer, bundle.preprocessing.size
    x = ModelInputs(test.images, bundle.preprocessing)
    pixels = PixelSample(len(test), size * size) if data_root and bundle.preprocessing.crop <= 0 else None

    def add_pixels(start: int, batch: Scores) -> None:
        nonlocal pixels
        part = ImageSet(test.images[start:start + len(batch.error)], test.paths[start:start + len(batch.error)],
                        test.labels[start:start + len(batch.error)])
        masks = load_masks(data_root, part, size) if pixels is not None else None
        if masks is None:  # a defect without its mask: no pixel-level truth for this set
            pixels = None
        else:
            pixels.add(masks, batch.heatmaps)

    scores, _ = score_in_batches(scorer, x, each_batch=add_pixels if pixels is not None else None,
                                 stage="test images", show_progress=show_progress)
    truth = test.is_anomaly
    summary = evaluate_scores(truth, scores.density, scores.error, bundle.thresholds, bundle.good_statistics,
                              bundle.combination)
    summary["images"] = {lab: int(sum(1 for x_ in test.labels if x_ == lab)) for lab in sorted(set(test.labels))}
    rules = {}
    for rule in ("and", "or"):
        if val_scores is not None:
            t = thresholds_at_frr(val_scores.density, val_scores.error, target_frr, rule)
        else:
            t = Thresholds(bundle.thresholds.density, bundle.thresholds.reconstruction, rule)
        rules[rule] = evaluate_scores(truth, scores.density, scores.error, t, bundle.good_statistics,
                                      bundle.combination)
        rules[rule]["thresholds"] = t.to_dict()
    summary["rules"] = rules
    at_recall = thresholds_at_recall(truth, scores.density, scores.error, bundle.good_statistics,
                                     bundle.thresholds.rule, target_recall)
    if at_recall is not None:
        summary["at_target_recall"] = evaluate_scores(truth, scores.density, scores.error, at_recall,
                                                      bundle.good_statistics, bundle.combination)
        summary["at_target_recall"].update(target_recall=target_recall, thresholds=at_recall.to_dict())
    by_label = {}
    for lab in sorted(set(test.labels) - {"good"}):
        keep = np.array([lb in ("good", lab) for lb in test.labels])
        by_label[lab] = evaluate_scores(truth[keep], scores.density[keep], scores.error[keep], bundle.thresholds,
                                        bundle.good_statistics, bundle.combination)["auroc_combined"]
    summary["auroc_combined_by_defect"] = by_label
    summary["pixel_auroc"] = pixels.auroc() if pixels is not None and truth.any() else None
    return Evaluation(summary, test, x, scores, scorer)


def make_density(options: BuildOptions) -> Density:
    """The (unfitted) density model the options ask for: its class from the preset table, with the
    options that class takes."""
    params = {
        "whitened": {"n_components": options.density_components},
        "patch": {"coreset": options.density_coreset, "seed": options.seed,
                  # detector v2's live path: a bounded memory ranked in two passes
                  **({"max_memory": FEATURE_MEMORY, "coarse": FEATURE_COARSE} if options.feature_model else {})},
    }
    return density_class(options.density_preset)(**params.get(options.density_preset, {}))


def train_feature_model(options: BuildOptions, x_train: ModelInputs, x_val: ModelInputs, channels: int,
                        show_progress: bool, log) -> tuple[object, dict[str, list[float]], np.ndarray]:
    """Detector v2 and v3: the principal-component latent fitted on a draw of the features, the
    images' latents (features streamed, never all held), the context decoder on those; returns the
    assembled model, the decoder's history and the training latents."""
    from model_builder.architectures import context_decoder, feature_cae
    from model_builder.feature_model import fit_projection, fit_whole_image, latents_of, sample_patches, train_decoder

    extractor = make_model(options, channels)
    with stage_bar("features", 2 * len(x_train) + len(x_val), "image", show_progress) as bar:
        sample, image_train = sample_patches(extractor, x_train, seed=options.seed, progress=bar.update)
        mean, projection, scale = fit_projection(sample, options.latent_dim, options.seed)
        del sample
        latent_train = latents_of(extractor, x_train, mean, projection, bar.update)
        latent_val = latents_of(extractor, x_val, mean, projection, bar.update)
    # v3: the whole-image Gaussian is fitted on the training images
    whole_image = fit_whole_image(image_train) if options.whole_image else None
    decoder = context_decoder(options.latent_dim, options.ring, options.decoder_width)
    history = train_decoder(decoder, latent_train / scale, latent_val / scale, options.epochs, options.batch_size,
                            options.learning_rate, options.seed, options.time_limit_s, show_progress)
    if len(history.get("loss", [])) < options.epochs:
        log(f"note: the decoder trained {len(history.get('loss', []))} of {options.epochs} epochs: the time limit "
            f"(--train-minutes) stopped it, so this model depends on this machine's speed")
    return feature_cae(extractor, mean, projection, scale, decoder, whole_image), history, latent_train


def train_pixel_model(options: BuildOptions, x_train: ModelInputs, x_val: ModelInputs, channels: int,
                      show_progress: bool, log) -> tuple[object, dict[str, list[float]], np.ndarray]:
    """The pixel autoencoders (v1, residual, prototype): trained on the pictures themselves, all held;
    returns the model, its history and the training images' latents."""
    model = make_model(options, channels)
    make_density(options).check_dim(int(np.prod(model.output[1].shape[1:])))
    train_pictures = x_train[np.arange(len(x_train))]
    history = train_autoencoder(model, train_pictures, x_val[np.arange(len(x_val))], options, show_progress)
    latent_train = np.concatenate([np.asarray(model(train_pictures[i:i + 32], training=False)[1])
                                   for i in range(0, len(train_pictures), 32)])
    return model, history, latent_train


# How each detector kind (scoring.DETECTORS) is trained.
TRAINERS = {PixelAutoencoder: train_pixel_model, FeatureAutoencoder: train_feature_model}


def build(data: Path, out: Path | None, options: BuildOptions | None = None, force: bool = False,
          show_progress: bool = True, log=print, report: bool = True) -> BuildResult:
    """Train, fit the density, calibrate, evaluate on test/ when present, and save to `out`."""
    options = options or BuildOptions()
    start = time.monotonic()
    data = Path(data)
    check_out(out, force)
    preprocessing = options.preprocessing
    recon_score = ReconstructionScore(options.reconstruction_score)
    good = load_good(data)
    for path, why in good.skipped:
        log(f"skipped {why}")
    sizes = {im.shape[:2] for im in good.images}
    if len(sizes) > 1:
        log(f"note: the good images come in {len(sizes)} sizes; all are resized to {options.size}x{options.size}")
    from capture.session import captured_camera

    camera, camera_note = captured_camera(data, good.paths)
    if camera_note:
        log(f"note: {camera_note}")
    idx_train, idx_val = split_held_out(len(good), options.val_fraction, options.seed)
    x = ModelInputs(good.images, preprocessing)
    log(f"{len(idx_train)} training and {len(idx_val)} validation images of {data} at "
        f"{options.size}x{options.size} {options.color}, {options.architecture} autoencoder"
        + ("" if options.feature_model else f", {options.loss} loss"))

    train = TRAINERS[DETECTORS[recon_score.kind]]
    model, history, latent_train = train(options, x.subset(idx_train), x.subset(idx_val), preprocessing.channels,
                                         show_progress, log)
    train_seconds = time.monotonic() - start

    scorer = Scorer(model, make_density(options), preprocessing, Thresholds(0, 0, options.rule), recon_score)
    n_patches = int(np.prod(latent_train.shape[:-1])) if isinstance(scorer.density, PatchKDE) else 0
    with stage_bar("density", scorer.density.memory_size(n_patches) if n_patches else 1, "patch",
                   show_progress) as bar:
        scorer.density.fit(latent_train, progress=bar.update)
    del latent_train
    info = ModelInfo(
        architecture=options.architecture,
        density_preset=options.density_preset,
        training=Training(epochs_run=len(history.get("loss", [])), seconds=round(train_seconds, 1),
                          best_val_loss=float(min(history.get("val_loss", [float("nan")])))),
        provenance=Provenance(
            dataset=str(data.resolve()),
            dataset_fingerprint=fingerprint(good.paths),
            train_images=len(good),
            skipped_files=[str(p) for p, _ in good.skipped],
            built=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            options=asdict(options),
            versions=package_versions(),
            camera=camera,
        ),
    )
    calibrated = calibrate(scorer, options, x.subset(idx_val), [good.paths[i] for i in idx_val], info,
                           show_progress, log)
    return finish(calibrated, data, out, options, history, force, report, show_progress, log, start)


def fit_v3_corrections(scorer: Scorer, val: Scores, val_maps: tuple[np.ndarray, np.ndarray]
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Detector v3 on the held-out goods' raw maps: the border correction, then the whole image's
    weight; `val`'s scores become what the finished scorer gives, and its corrected maps are returned."""
    scorer.border = BorderCorrection.fit(*val_maps)
    density_maps, error_maps = scorer.border.apply(*val_maps)
    val.density = worst_mean(density_maps, scorer.density.worst, highest=False)
    val.error = worst_mean(error_maps, scorer.reconstruction_score.top_count)
    scorer.whole_image_weight = whole_image_weight(val.density, val.whole_image)
    val.density = val.density - scorer.whole_image_weight * val.whole_image
    return density_maps, error_maps


def whole_image_weight(patch_density: np.ndarray, whole_image: np.ndarray) -> float:
    """The weight at which the whole image's distance spreads WHOLE_IMAGE_SHARE as far as the patch
    density over the held-out good images."""
    return WHOLE_IMAGE_SHARE * robust_spread(patch_density) / robust_spread(whole_image)


@dataclass
class Calibrated:
    """A bundle calibrated on held-out good images, with what the report shows of them."""

    bundle: Bundle
    val: Scores  # every held-out good image's scores
    val_kept: Scores  # without the outliers
    outlier_inputs: np.ndarray  # the outliers' model inputs, for the report


def calibrate(scorer: Scorer, options: BuildOptions, x_val: np.ndarray, val_paths: list[Path], info: ModelInfo,
              show_progress: bool, log) -> Calibrated:
    """Score the held-out good images with the finished model and density; leave out the outliers
    (listed to check); thresholds for the target false-reject rate, the good statistics, knob ranges."""
    scorer.whole_image_weight, scorer.border = 0.0, None  # the raw maps first: v3's corrections are fitted on them
    val, val_maps = score_in_batches(scorer, x_val, keep_position_maps=scorer.detector.position_maps,
                                     stage="calibration", show_progress=show_progress)
    if options.whole_image:
        val_maps = fit_v3_corrections(scorer, val, val_maps)
    outliers = validation_outliers(val.density, val.error, options.outlier_limit)
    kept = np.setdiff1d(np.arange(len(x_val)), outliers)
    outlier_notes = [OutlierNote(str(val_paths[i]), float(val.density[i]), float(val.error[i])) for i in outliers]
    for note in outlier_notes:
        log(f"check this good image: it scores far outside the other held-out good images (density "
            f"{note.density:.4g}, reconstruction error {note.reconstruction:.4g}; medians "
            f"{np.median(val.density):.4g}, {np.median(val.error):.4g}) and is left out of the calibration; "
            f"if the part is flawed, move it out of train/good and rebuild: {note.path}")
    val_kept = Scores(None, val.error[kept], val.density[kept], val.anomaly[kept])
    thresholds = thresholds_at_frr(val_kept.density, val_kept.error, options.target_frr, options.rule)
    info.density_bandwidth = float(scorer.density.bandwidth)
    info.calibration = Calibration(
        target_false_reject_rate=options.target_frr,
        validation_images=int(len(x_val)),
        validation_false_reject_rate=float(is_anomaly(val.density, val.error, thresholds).mean()),
        validation_scores={"density": val.density.tolist(), "reconstruction": val.error.tolist()},
        outlier_limit=options.outlier_limit,
        outliers=outlier_notes,
    )
    bundle = Bundle(
        model=scorer.model,
        density=scorer.density,
        preprocessing=scorer.preprocessing,
        thresholds=thresholds,
        good_statistics=GoodStatistics.from_scores(val_kept.density, val_kept.error),
        knob_ranges=knob_ranges(val_kept.density, val_kept.error),
        reconstruction_score=scorer.reconstruction_score,
        map_statistics=map_statistics(val_maps, kept) if val_maps is not None else None,
        combination=scorer.detector.combination,
        info=info,
        whole_image_weight=scorer.whole_image_weight,
        border=scorer.border,
    )
    return Calibrated(bundle, val, val_kept, x_val[outliers])


def finish(calibrated: Calibrated, data: Path, out: Path | None, options: BuildOptions, history: dict, force: bool,
           report: bool, show_progress: bool, log, start: float) -> BuildResult:
    """Evaluate on data/test when there is one, write the report, save the bundle."""
    bundle = calibrated.bundle
    test = load_test(data)
    evaluation = None
    if len(test):
        evaluation = evaluate_test(bundle, test, data, options.target_recall, calibrated.val_kept, options.target_frr,
                                   show_progress)
        bundle.info.evaluation = evaluation.summary
    extra = {"history.json": json.dumps(history, indent=1).encode()}
    if report:
        from model_builder.report import render_report

        log("writing the report ...")
        extra["report.html"] = render_report(bundle, history, evaluation, calibrated.val,
                                             calibrated.outlier_inputs).encode()
    if out is not None:
        save_bundle(bundle, Path(out), force=force, extra_files=extra)
    return BuildResult(bundle, history, evaluation.summary if evaluation else None, time.monotonic() - start)


def check_out(out: Path | None, force: bool) -> None:
    """Before any long work: `out` is free (or a bundle that --force may replace) and writable."""
    if out is None:
        return
    if Path(out).exists() and not force:
        raise GutcheckError(f"{out} already exists; use --force to replace it (the old one goes to the trash)")
    if Path(out).exists() and not (Path(out) / "bundle.json").is_file():
        raise GutcheckError(f"{out} exists and is not a model bundle: --force only replaces bundles; choose a new "
                            "folder for --out")
    _check_writable(Path(out))


def _check_writable(out: Path) -> None:
    """Fail before training, not after, when the bundle cannot be written where asked."""
    import os

    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise GutcheckError(f"{out}: cannot write there ({parent} is a file, not a folder)")
    if not os.access(parent, os.W_OK):
        raise GutcheckError(f"{out}: cannot write there ({parent} is not writable)")
