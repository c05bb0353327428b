"""Part framing shared by capture, build and inspection: a fixed ROI and/or a centring crop
around the largest contour, so training and live images are framed the same way."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from capture.errors import GutcheckError


@dataclass(frozen=True)
class Framing:
    """`roi` (x, y, w, h) is cut first; then, when `crop` > 0, a `crop`-pixel square centred on the
    minimum enclosing circle of the largest contour (bounds-safe: shifted to stay inside)."""

    roi: tuple[int, int, int, int] | None = None
    crop: int = 0

    @property
    def is_identity(self) -> bool:
        return self.roi is None and self.crop <= 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "Framing":
        d = d or {}
        roi = d.get("roi")
        return cls(tuple(int(v) for v in roi) if roi else None, int(d.get("crop", 0)))

    def part_centre(self, image: np.ndarray) -> tuple[float, float] | None:
        """Centre of the minimum enclosing circle of the largest contour (Otsu threshold), or None."""
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        blur = cv2.GaussianBlur(gray, (5, 5), 0)
        _, mask = cv2.threshold(blur, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        # The part is whichever side of the threshold does not touch the border most.
        border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
        if border.mean() > 127:
            mask = 255 - mask
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        if not contours:
            return None
        (x, y), _ = cv2.minEnclosingCircle(max(contours, key=cv2.contourArea))
        return float(x), float(y)

    def box(self, image: np.ndarray) -> tuple[int, int, int, int]:
        """The (x, y, w, h) this framing cuts from `image`, in the image's coordinates."""
        h, w = image.shape[:2]
        x0, y0, bw, bh = self.roi if self.roi else (0, 0, w, h)
        if x0 < 0 or y0 < 0 or bw <= 0 or bh <= 0 or x0 + bw > w or y0 + bh > h:
            raise GutcheckError(f"ROI {self.roi} does not fit in a {w}x{h} image")
        if self.crop <= 0:
            return x0, y0, bw, bh
        size = min(self.crop, bw, bh)
        centre = self.part_centre(image[y0:y0 + bh, x0:x0 + bw])
        cx, cy = centre if centre else (bw / 2, bh / 2)
        left = int(round(min(max(cx - size / 2, 0), bw - size)))
        top = int(round(min(max(cy - size / 2, 0), bh - size)))
        return x0 + left, y0 + top, size, size

    def apply(self, image: np.ndarray) -> np.ndarray:
        if self.is_identity:
            return image
        x, y, w, h = self.box(image)
        return image[y:y + h, x:x + w]
