"""Convolutional autoencoders: one function per architecture, each a functional Keras model
returning (reconstruction, latent) from one forward pass."""

from __future__ import annotations

from typing import Callable

import keras
from keras import layers


def prototype_cae(size: int, channels: int) -> keras.Model:
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


ARCHITECTURES: dict[str, Callable[[int, int], keras.Model]] = {
    "prototype": prototype_cae,
}
