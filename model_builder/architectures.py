"""Convolutional autoencoders: one function per architecture, each a functional Keras model
returning (reconstruction, latent) from one forward pass. The feature autoencoder (`feature_cae`,
detector v2) returns (per-position reconstruction error, latent) instead: it redraws features, not
pixels."""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np
from keras import layers


def prototype_cae(size: int, channels: int, **_: object) -> keras.Model:
    """The prototype's CAE: 64-32-16 conv + max-pool encoder, mirrored up-sampling decoder,
    sigmoid output. At 128x128 the latent is 16x16x16 = 4096 values."""
    inp = keras.Input((size, size, channels), name="image")
    x = inp
    for filters in (64, 32, 16):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D(2, padding="same")(x)
    latent = layers.Identity(name="latent")(x)
    for filters in (16, 32, 64):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.UpSampling2D(2)(x)
    recon = layers.Conv2D(channels, 3, padding="same", activation="sigmoid", name="reconstruction")(x)
    return keras.Model(inp, [recon, latent], name="prototype_cae")


def _res_block(x, filters: int):
    y = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
    y = layers.Conv2D(filters, 3, padding="same")(y)
    return layers.Activation("relu")(layers.Add()([x, y]))


def residual_cae(size: int, channels: int, **_: object) -> keras.Model:
    """A deeper CAE: strided convolutions with residual blocks down to size/16, a narrow 1x1
    bottleneck (the latent: 8x8x32 at 128), transposed convolutions back up."""
    inp = keras.Input((size, size, channels), name="image")
    x = inp
    for filters in (32, 64, 96, 128):
        x = layers.Conv2D(filters, 4, strides=2, padding="same", activation="relu")(x)
        x = _res_block(x, filters)
    latent = layers.Conv2D(32, 1, padding="same", name="latent")(x)
    x = layers.Conv2D(128, 1, activation="relu")(latent)
    for filters in (128, 96, 64, 32):
        x = layers.Conv2DTranspose(filters, 4, strides=2, padding="same", activation="relu")(x)
        x = _res_block(x, filters)
    recon = layers.Conv2D(channels, 3, padding="same", activation="sigmoid", name="reconstruction")(x)
    return keras.Model(inp, [recon, latent], name="residual_cae")


PATCH_FEATURES = ("block_6_expand_relu", "block_10_expand_relu")  # strides 8 and 16
# Stride 16, 288 values at alpha 0.5, averaged over the image: what the whole part looks like. Under a
# Gaussian (Ledoit-Wolf) it sees what no patch does: a label that is the wrong one, a part that is not
# where it belongs. Against the deeper out_relu (1280 values), added to patch nearest-neighbour scores
# at half weight (384 px): juice bottle 0.960 vs 0.951, solar cells 0.854 vs 0.868; at 256 px pill 0.969
# vs 0.944. block_13 holds on the objects; out_relu would win only on the surface.
WHOLE_IMAGE_FEATURES = "block_13_expand_relu"


def _as_mobilenet_input(inp, channels: int):
    """Images in 0..1 (RGB or grey) as MobileNetV2 expects them: RGB in -1..1."""
    x = inp if channels == 3 else layers.Concatenate()([inp, inp, inp])
    return layers.Rescaling(2.0, offset=-1.0)(x)


def _mobilenet_patch_features(x, size: int, weights: str | None, alpha: float = 0.5, name: str = "patch_features",
                              whole_image: bool = False):
    """The frozen MobileNetV2's stride-8 features of x, and its patch descriptors: the stride-8 and the
    up-sampled stride-16 features, each position averaged with its 3x3 neighbours (288 values at
    alpha 0.5), so every descriptor says what one small neighbourhood of the part looks like; with
    `whole_image`, also the image's average of WHOLE_IMAGE_FEATURES."""
    base = keras.applications.MobileNetV2(input_shape=(size, size, 3), alpha=alpha, include_top=False,
                                          weights=weights)
    base.trainable = False
    names = PATCH_FEATURES + ((WHOLE_IMAGE_FEATURES,) if whole_image else ())
    features = keras.Model(base.input, [base.get_layer(n).output for n in names], name="mobilenet_features")
    f8, f16, *deep = features(x)
    f16_up = layers.Resizing(f8.shape[1], f8.shape[2], interpolation="bilinear")(f16)  # any multiple of 8
    patches = layers.Concatenate()([f8, f16_up])
    patches = layers.AveragePooling2D(3, strides=1, padding="same", name=name)(patches)
    if whole_image:
        return f8, patches, layers.GlobalAveragePooling2D(name="whole_image")(deep[0])
    return f8, patches


def mobilenet_cae(size: int, channels: int, weights: str | None = "imagenet", alpha: float = 0.5,
                  **_: object) -> keras.Model:
    """An ImageNet-pretrained MobileNetV2 encoder (frozen) and a trained decoder.

    The latent is a map of patch descriptors at stride 8 (32x32x288 at 256 px): the stride-8 and
    the up-sampled stride-16 features, each position averaged with its 3x3 neighbours, so every
    descriptor says what one small neighbourhood of the part looks like in features that know
    edges, texture and shape. The decoder redraws the image from the stride-8 features at half
    size (training at full size cost four times as much) and scales it up.
    `weights` is "imagenet" (Keras downloads it once into ~/.keras/models), a path to the no-top
    .h5 file, or None (random: tests only).
    """
    inp = keras.Input((size, size, channels), name="image")
    f8, latent = _mobilenet_patch_features(_as_mobilenet_input(inp, channels), size, weights, alpha, name="latent")
    y = layers.Conv2D(96, 1, activation="relu")(f8)
    for filters in (64, 32):
        y = layers.UpSampling2D(2, interpolation="bilinear")(y)
        y = layers.Conv2D(filters, 3, padding="same", activation="relu")(y)
    y = layers.Resizing(size, size, interpolation="bilinear")(y)  # drawn at half size: a quarter of the cost
    recon = layers.Conv2D(channels, 3, padding="same", activation="sigmoid", name="reconstruction")(y)
    return keras.Model(inp, [recon, latent], name="mobilenet_cae")


def feature_extractor(size: int, channels: int, weights: str | None = "imagenet", whole_image: bool = False,
                      **_: object) -> keras.Model:
    """Image (size, size, channels) in 0..1 -> the frozen encoder's patch descriptors (size/8)^2 x 288 and,
    with `whole_image`, the image's average of WHOLE_IMAGE_FEATURES too."""
    inp = keras.Input((size, size, channels), name="image")
    _, *outputs = _mobilenet_patch_features(_as_mobilenet_input(inp, channels), size, weights,
                                            name="patch_features", whole_image=whole_image)
    return keras.Model(inp, outputs if whole_image else outputs[0], name="feature_extractor")


def whole_image_extractor(size: int, channels: int, weights: str | None = "imagenet", **_: object) -> keras.Model:
    """`feature_extractor` with the whole image's features: image -> (patch descriptors, image features)."""
    return feature_extractor(size, channels, weights, whole_image=True)


def ring_kernel(channels: int, ring: int) -> np.ndarray:
    """Depthwise kernel that copies, for every channel, the 8 positions at distance `ring` around the
    centre (corners and edge middles) and never the centre itself."""
    k = np.zeros((2 * ring + 1, 2 * ring + 1, channels, 8), np.float32)
    spots = [(a, b) for a in (0, ring, 2 * ring) for b in (0, ring, 2 * ring) if (a, b) != (ring, ring)]
    for j, (a, b) in enumerate(spots):
        k[a, b, :, j] = 1.0
    return k


def context_decoder(latent_dim: int, ring: int = 2, hidden: int = 128) -> keras.Model:
    """Redraws each latent from its neighbours only: the 8 latents `ring` positions away go through
    two 1x1 layers to a guess of the centre. A normal part's structure is predictable from its
    surroundings; a scratch, a chip or a stain is not, so it stands out in the error. (Redrawing a
    position from itself, as a plain 1x1 autoencoder does, also redraws most defects: measured image
    AUROC 0.60 on screw against 0.89 from the ring at 384 px.) The ring is 2 away because each latent
    already averages its 3x3 neighbourhood."""
    inp = keras.Input((None, None, latent_dim), name="latent")
    around = layers.DepthwiseConv2D(2 * ring + 1, depth_multiplier=8, padding="same", use_bias=False,
                                    trainable=False, name="ring")
    x = around(inp)
    around.set_weights([ring_kernel(latent_dim, ring)])
    x = layers.Conv2D(hidden, 1, activation="relu")(x)
    x = layers.Conv2D(hidden, 1, activation="relu")(x)
    out = layers.Conv2D(latent_dim, 1, name="expected_latent")(x)
    return keras.Model(inp, out, name="context_decoder")


def feature_cae(extractor: keras.Model, mean: np.ndarray, projection: np.ndarray, scale: np.ndarray,
                decoder: keras.Model, whole_image: tuple[np.ndarray, np.ndarray] | None = None) -> keras.Model:
    """Detector v2 in one forward pass: image -> frozen patch features -> latent (a linear layer fitted
    as the good parts' principal components) -> whitened (each component divided by its spread) -> the
    decoder's expected latent from the neighbours; returns (squared error per position averaged over
    the whitened latent's values, latent). The density works on the latent itself.

    With `whole_image` (the good images' mean image features and the Cholesky factor L of their
    precision matrix; the extractor then gives both kinds of features) a third output is each image's
    squared Mahalanobis distance from the good images, ||(f - mean) L||^2: their Gaussian, in the graph."""
    dim = projection.shape[1]
    inp = extractor.input
    feats, *image_feats = extractor(inp) if whole_image is not None else (extractor(inp),)
    encode = layers.Conv2D(dim, 1, trainable=False, name="latent")
    latent = encode(feats)
    encode.set_weights([projection[None, None].astype(np.float32), (-mean @ projection).astype(np.float32)])
    whiten = layers.Conv2D(dim, 1, use_bias=False, trainable=False, name="whitened")
    white = whiten(latent)
    whiten.set_weights([np.diag(1.0 / scale).astype(np.float32)[None, None]])
    diff = layers.Subtract()([decoder(white), white])
    mean_square = layers.Conv2D(1, 1, use_bias=False, trainable=False, name="mean_square")
    error = layers.Reshape(tuple(latent.shape[1:3]), name="error_map")(
        mean_square(layers.Multiply()([diff, diff])))
    mean_square.set_weights([np.full((1, 1, dim, 1), 1.0 / dim, np.float32)])
    if whole_image is None:
        return keras.Model(inp, [error, latent], name="feature_cae")
    image_mean, factor = whole_image
    standardise = layers.Dense(factor.shape[1], trainable=False, name="whole_image_standardised")
    z = standardise(image_feats[0])
    standardise.set_weights([factor.astype(np.float32), (-image_mean @ factor).astype(np.float32)])
    total = layers.Dense(1, use_bias=False, trainable=False, name="whole_image_sum")
    distance = layers.Reshape((), name="whole_image_distance")(total(layers.Multiply()([z, z])))
    total.set_weights([np.ones((factor.shape[1], 1), np.float32)])
    return keras.Model(inp, [error, latent, distance], name="feature_cae")


# What a build starts from, per architecture: the whole pixel autoencoder, or for the feature
# autoencoder the frozen extractor (its latent layer and decoder are fitted on the extractor's output).
ARCHITECTURES: dict[str, Callable[..., keras.Model]] = {
    "features": feature_extractor,
    "features-whole": whole_image_extractor,
    "prototype": prototype_cae,
    "residual": residual_cae,
    "mobilenet": mobilenet_cae,
}
