"""Detector v2 (architecture `features`): the autoencoder works on the frozen encoder's features,
not on pixels, so it trains on features computed once and an epoch costs seconds.

The story, top to bottom:
1. `sample_patches`: every good image through the frozen MobileNetV2, keeping a random draw of
   patch descriptors (and the whole image's features): what the projection is fitted on.
2. `fit_projection`: the latent is a linear layer fitted as the principal components of the good
   parts' patch descriptors (64 of 288 values keep 97-99 % of their variance; the density on them
   measured as good as on all 288: screw 0.93 vs 0.93, pill 0.96 vs 0.96 at 384 px with 5 000 patches),
   and a KDE over 64 values costs a fifth of one over 288.
   `latents_of` then runs the images through again, keeping only their 64-value latents: features
   are streamed, never held for all images (1 000 board patches at 384 px: 2.6 GB of features, 0.6 GB
   of latents; a second pass over them costs about 20 s).
3. `train_decoder`: the context decoder learns to redraw each latent from its neighbours, for a
   fixed budget of epochs (the same data gives the same model on any machine); a time limit only
   guards, and says so when it fires.
4. `feature_cae` (architectures.py) puts the pieces into one Keras model for the bundle.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from capture.errors import GutcheckError

PROJECTION_SAMPLE = 100_000  # patch descriptors the principal components are computed on


def feature_batches(extractor, x, batch: int = 16, progress=None) -> Iterator[list[np.ndarray]]:
    """The extractor's outputs (one array per output) for preprocessed images (an array or
    `ModelInputs`), one batch at a time."""
    import tensorflow as tf

    run = tf.function(lambda t: extractor(t, training=False), reduce_retracing=True)
    for i in range(0, len(x), batch):
        got = run(np.ascontiguousarray(x[i:i + batch], dtype=np.float32))
        yield [t.numpy() for t in got] if isinstance(got, (list, tuple)) else [got.numpy()]
        if progress is not None:
            progress(min(batch, len(x) - i))


def extract_features(extractor, x, batch: int = 16, progress=None) -> np.ndarray | tuple[np.ndarray, ...]:
    """Patch descriptors (n, g, g, c) of preprocessed images, all held at once (for a few images); for an
    extractor with several outputs (patches and the whole image's features) one array per output."""
    arrays = tuple(np.concatenate(parts) for parts in zip(*feature_batches(extractor, x, batch, progress)))
    return arrays if len(arrays) > 1 else arrays[0]


def sample_patches(extractor, x, size: int = PROJECTION_SAMPLE, seed: int = 0, progress=None
                   ) -> tuple[np.ndarray, np.ndarray | None]:
    """`size` patch descriptors (size, c) drawn at random without replacement over every position of every
    image (all of them, in order, when there are fewer), and the images' whole-image features (n, c')
    when the extractor gives them. The draw is the one `fit_projection` would make over all features held
    at once, so streaming them changes nothing in the model."""
    grid = int(np.prod(extractor.outputs[0].shape[1:-1]))
    total = len(x) * grid
    chosen = np.random.default_rng(seed).choice(total, size, replace=False) if total > size else np.arange(total)
    order = np.argsort(chosen, kind="stable")
    wanted = chosen[order]
    picked, whole = [], []
    start = 0
    for outputs in feature_batches(extractor, x, progress=progress):
        patches = outputs[0].reshape(-1, outputs[0].shape[-1])
        lo, hi = np.searchsorted(wanted, [start, start + len(patches)])
        picked.append(patches[wanted[lo:hi] - start])
        start += len(patches)
        if len(outputs) > 1:
            whole.append(outputs[1])
    sample = np.empty((len(chosen), picked[0].shape[-1]), np.float32)
    sample[order] = np.concatenate(picked)  # back in the draw's order
    return sample, (np.concatenate(whole) if whole else None)


def latents_of(extractor, x, mean: np.ndarray, projection: np.ndarray, progress=None) -> np.ndarray:
    """The latent maps (n, g, g, dim) of preprocessed images, their features projected batch by batch."""
    return np.concatenate([project(outputs[0], mean, projection)
                           for outputs in feature_batches(extractor, x, progress=progress)])


def fit_whole_image(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The good images' whole-image features as one Gaussian: their mean (c,) and the Cholesky factor L
    (c, c) of the Ledoit-Wolf precision P = L L^T, so that the squared Mahalanobis distance of f is
    ||(f - mean) L||^2. Ledoit-Wolf because a few hundred images cannot fill a 288 x 288 covariance
    (added to patch scores at 384 px, juice bottle: 0.960; a Gaussian on the 16 leading principal
    components 0.930 (they hold what varies among good parts, not what a wrong one changes), the
    nearest good image's cosine distance 0.946)."""
    from sklearn.covariance import LedoitWolf

    if len(features) < 3:
        raise GutcheckError("need at least 3 good images to fit the whole-image Gaussian")
    fitted = LedoitWolf().fit(np.asarray(features, np.float64))
    return fitted.location_.astype(np.float32), np.linalg.cholesky(fitted.precision_).astype(np.float32)


def fit_projection(features: np.ndarray, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean (c,), projection (c, dim) onto the leading principal components of the patches, and each
    component's standard deviation (dim,), with which the decoder works on whitened latents: every
    direction counts the same in its error, so a defect that shows in a weak direction is not drowned by
    the strong ones (same-run comparison at 384 px, image AUROC of the combined score: pill 0.955 vs
    0.959, screw 0.946 vs 0.913 for the unwhitened latent)."""
    patches = features.reshape(-1, features.shape[-1])
    if dim > patches.shape[1]:
        raise GutcheckError(f"latent_dim {dim} is more than the encoder's {patches.shape[1]} feature values")
    if len(patches) > PROJECTION_SAMPLE:  # drawn before the float64 copy: all of them would not fit
        patches = patches[np.random.default_rng(seed).choice(len(patches), PROJECTION_SAMPLE, replace=False)]
    patches = patches.astype(np.float64)
    mean = patches.mean(0)
    _, sv, vt = np.linalg.svd(patches - mean, full_matrices=False)
    scale = np.maximum(sv[:dim] / np.sqrt(len(patches)), 1e-6 * max(float(sv[0]), 1e-12))
    return mean.astype(np.float32), vt[:dim].T.astype(np.float32), scale.astype(np.float32)


def project(features: np.ndarray, mean: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """The latent map of features, exactly as the bundle's `latent` layer computes it."""
    shape = features.shape[:-1]
    flat = features.reshape(-1, features.shape[-1]).astype(np.float32)
    return ((flat - mean) @ projection).reshape(*shape, projection.shape[1])


def train_decoder(decoder, latent_train: np.ndarray, latent_val: np.ndarray, epochs: int, batch_size: int,
                  learning_rate: float, seed: int, time_limit_s: float, show_progress: bool = True
                  ) -> dict[str, list[float]]:
    """Fit the context decoder (MSE between its guess and the latent) for `epochs` epochs, keeping the
    weights of the best validation epoch; Ctrl-C keeps the best so far."""
    import keras
    import tensorflow as tf

    from model_builder.progress import EpochProgress, fit_keeping_best

    keras.utils.set_random_seed(seed)
    decoder.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
    train = (tf.data.Dataset.from_tensor_slices(latent_train).shuffle(len(latent_train), seed=seed)
             .batch(batch_size).map(lambda b: (b, b)).prefetch(2))
    val = tf.data.Dataset.from_tensor_slices(latent_val).batch(batch_size).map(lambda b: (b, b))
    # patience = epochs: the budget decides, not the machine; the best validation epoch is kept
    progress = EpochProgress(epochs, epochs, enabled=show_progress, time_limit_s=time_limit_s)
    return fit_keeping_best(decoder, train, val, epochs, progress)
