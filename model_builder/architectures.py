"""Convolutional autoencoders: one function per architecture, each a functional Keras model
returning (reconstruction, latent) from one forward pass."""

from __future__ import annotations

from typing import Callable

import keras
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
    x = inp if channels == 3 else layers.Concatenate()([inp, inp, inp])
    x = layers.Rescaling(2.0, offset=-1.0)(x)  # MobileNetV2 expects -1..1
    base = keras.applications.MobileNetV2(input_shape=(size, size, 3), alpha=alpha, include_top=False,
                                          weights=weights)
    base.trainable = False
    features = keras.Model(base.input, [base.get_layer(n).output for n in PATCH_FEATURES],
                           name="mobilenet_features")
    f8, f16 = features(x)
    f16_up = layers.Resizing(f8.shape[1], f8.shape[2], interpolation="bilinear")(f16)  # any multiple of 8
    patches = layers.Concatenate()([f8, f16_up])
    latent = layers.AveragePooling2D(3, strides=1, padding="same", name="latent")(patches)
    y = layers.Conv2D(96, 1, activation="relu")(f8)
    for filters in (64, 32):
        y = layers.UpSampling2D(2, interpolation="bilinear")(y)
        y = layers.Conv2D(filters, 3, padding="same", activation="relu")(y)
    y = layers.Resizing(size, size, interpolation="bilinear")(y)  # drawn at half size: a quarter of the cost
    recon = layers.Conv2D(channels, 3, padding="same", activation="sigmoid", name="reconstruction")(y)
    return keras.Model(inp, [recon, latent], name="mobilenet_cae")


ARCHITECTURES: dict[str, Callable[..., keras.Model]] = {
    "prototype": prototype_cae,
    "residual": residual_cae,
    "mobilenet": mobilenet_cae,
}
