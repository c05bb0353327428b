"""The one preprocessing step every tool shares: BGR uint8 picture -> model input."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from capture.errors import GutcheckError
from capture.framing import Framing

COLOURS = ("rgb", "gray")


@dataclass(frozen=True)
class Preprocessing:
    """Frame the part (optional ROI and centring crop, as the capture tool frames it), resize to a
    square `size`, convert to `color`, scale to 0..1 float32."""

    size: int = 128
    color: str = "rgb"
    crop: int = 0
    roi: tuple[int, int, int, int] | None = None

    def __post_init__(self) -> None:
        if self.color not in COLOURS:
            raise GutcheckError(f"colour mode must be one of {', '.join(COLOURS)}, not {self.color!r}")
        if not 16 <= self.size <= 1024 or self.size % 8:
            raise GutcheckError(f"image size must be a multiple of 8 between 16 and 1024, not {self.size}")

    @property
    def framing(self) -> Framing:
        return Framing(tuple(self.roi) if self.roi else None, self.crop)

    @property
    def channels(self) -> int:
        return 3 if self.color == "rgb" else 1

    def apply(self, bgr: np.ndarray) -> np.ndarray:
        """One 8-bit BGR image -> (size, size, channels) float32 in 0..1."""
        return self.apply_framed(bgr)[0]

    def apply_framed(self, bgr: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        """`apply`, and the (x, y, w, h) box the framing cut from the image (the whole image without one)."""
        framing = self.framing
        if framing.is_identity:
            box = (0, 0, bgr.shape[1], bgr.shape[0])
        else:
            box = framing.box(bgr)
            x, y, w, h = box
            bgr = bgr[y:y + h, x:x + w]
        return self._resize_and_convert(bgr), box

    def _resize_and_convert(self, bgr: np.ndarray) -> np.ndarray:
        interp = cv2.INTER_AREA if bgr.shape[0] > self.size else cv2.INTER_LINEAR
        img = cv2.resize(bgr, (self.size, self.size), interpolation=interp)
        if self.color == "rgb":
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        else:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)[..., None]
        return img.astype(np.float32) * (1.0 / 255.0)

    def apply_batch(self, images: list[np.ndarray]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.size, self.size, self.channels), np.float32)
        return np.stack([self.apply(im) for im in images])

    def to_dict(self) -> dict:
        return asdict(self)


class ModelInputs:
    """The model inputs of a list of pictures, preprocessed only when a batch of them is asked for
    (`inputs[i:j]`, `inputs[index_array]`): a build holds the 8-bit pictures, not a float copy of all of
    them (1 000 pictures at 384 px are 1.8 GB as float32)."""

    def __init__(self, images: Sequence[np.ndarray], preprocessing: Preprocessing, index: np.ndarray | None = None):
        self.images, self.preprocessing = images, preprocessing
        self.index = np.arange(len(images)) if index is None else np.asarray(index, np.int64)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self.preprocessing.apply(self.images[self.index[key]])
        return self.preprocessing.apply_batch([self.images[i] for i in self.index[key]])

    def subset(self, index: np.ndarray) -> "ModelInputs":
        """The inputs at `index`, still unprocessed."""
        return ModelInputs(self.images, self.preprocessing, self.index[np.asarray(index, np.int64)])
