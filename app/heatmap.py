"""Heatmaps as pictures, GUI-free: the dashboard shows them, the inspection log keeps them."""

from __future__ import annotations

import cv2
import numpy as np

def heat(heatmap: np.ndarray, scale: float) -> np.ndarray:
    """An error map as a colour picture (RGB uint8), saturating at `scale`."""
    norm = np.clip(heatmap / max(scale, 1e-12), 0, 1)
    return cv2.cvtColor(cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)


def overlay(inputs: np.ndarray, heat_rgb: np.ndarray) -> np.ndarray:
    """The heatmap laid over the model input (RGB 0..1 and RGB uint8), so the operator sees where."""
    base = inputs if inputs.shape[-1] == 3 else np.repeat(inputs, 3, axis=-1)
    weight = heat_rgb.astype(np.float32).max(-1, keepdims=True) / 255.0 * 0.6
    return np.clip(base * (1 - weight) + heat_rgb.astype(np.float32) / 255.0 * weight, 0, 1)


def beside_input(inputs: np.ndarray, reconstruction: np.ndarray | None, heat_rgb: np.ndarray) -> np.ndarray:
    """The picture shown beside the model input: what the model redrew, or, where it redraws features
    and not pixels, the heatmap laid over the part."""
    return overlay(inputs, heat_rgb) if reconstruction is None else reconstruction


def heatmap_picture(inputs: np.ndarray, heatmap: np.ndarray, scale: float) -> np.ndarray:
    """The model input with its heatmap laid over it, as an 8-bit BGR picture for a file."""
    rgb = overlay(inputs, heat(heatmap, scale))
    return cv2.cvtColor((rgb * 255 + 0.5).astype(np.uint8), cv2.COLOR_RGB2BGR)
