"""Augmentation for good-only training: the variation good parts really show, nothing that
could look like a defect. Runs inside tf.data, training only."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Augmentation:
    """Small rotations and shifts, optional flips, brightness/contrast/gamma jitter, sensor noise."""

    enabled: bool = True
    rotation_deg: float = 3.0
    shift: float = 0.02  # fraction of the image size
    flip_horizontal: bool = False  # only for parts that are mirror-symmetric
    flip_vertical: bool = False
    brightness: float = 0.05
    contrast: float = 0.08
    gamma: float = 0.08
    noise: float = 0.01

    def to_dict(self) -> dict:
        return asdict(self)

    def tf_function(self, seed: int):
        """A function image -> image for `tf.data.Dataset.map` (images float32 0..1, NHWC batch)."""
        import keras
        import tensorflow as tf

        geometric = keras.Sequential([
            keras.layers.RandomRotation(self.rotation_deg / 360.0, fill_mode="reflect", seed=seed),
            keras.layers.RandomTranslation(self.shift, self.shift, fill_mode="reflect", seed=seed + 1),
        ]) if (self.rotation_deg > 0 or self.shift > 0) else None
        gen = tf.random.Generator.from_seed(seed)

        def augment(x):
            if geometric is not None:
                x = geometric(x, training=True)
            if self.flip_horizontal:
                x = tf.where(gen.uniform([tf.shape(x)[0], 1, 1, 1]) < 0.5, tf.reverse(x, [2]), x)
            if self.flip_vertical:
                x = tf.where(gen.uniform([tf.shape(x)[0], 1, 1, 1]) < 0.5, tf.reverse(x, [1]), x)
            n = tf.shape(x)[0]
            if self.gamma > 0:
                g = tf.exp(gen.uniform([n, 1, 1, 1], -self.gamma, self.gamma))
                x = tf.pow(tf.clip_by_value(x, 1e-6, 1.0), g)
            if self.contrast > 0:
                mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
                x = (x - mean) * gen.uniform([n, 1, 1, 1], 1 - self.contrast, 1 + self.contrast) + mean
            if self.brightness > 0:
                x = x + gen.uniform([n, 1, 1, 1], -self.brightness, self.brightness)
            if self.noise > 0:
                x = x + gen.normal(tf.shape(x), stddev=self.noise)
            return tf.clip_by_value(x, 0.0, 1.0)

        return augment


def describe(aug: Augmentation) -> str:
    if not aug.enabled:
        return "off"
    flips = [n for n, on in (("h-flip", aug.flip_horizontal), ("v-flip", aug.flip_vertical)) if on]
    return (f"rotation ±{aug.rotation_deg:g}°, shift ±{aug.shift * 100:g}%, " + ", ".join(flips + [
        f"brightness ±{aug.brightness:g}", f"contrast ±{aug.contrast * 100:g}%",
        f"gamma ×{math.exp(aug.gamma):.2f}", f"noise σ {aug.noise:g}"]))
