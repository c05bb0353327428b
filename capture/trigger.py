"""Part trigger: notice a part entering by frame differencing, fire once when it has settled."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class TriggerSettings:
    """Changed-pixel ratios (0..1) and frame counts that drive the trigger."""

    pixel_level: int = 25  # grey-level difference that counts as a changed pixel
    enter_ratio: float = 0.03  # share of pixels differing from the empty belt: a part is in view
    leave_ratio: float = 0.01  # below this the belt is empty again and the trigger re-arms
    still_ratio: float = 0.002  # share of pixels changing between frames: the part is still
    settle_frames: int = 2  # consecutive still frames before firing
    scale: int = 4  # work on a frame shrunk by this factor (speed, noise)


class PartTrigger:
    """Feed frames with `update`; it returns True exactly once per part, on a settled frame.

    The empty-belt reference is learned from the frames seen while no part is present.
    """

    def __init__(self, settings: TriggerSettings | None = None):
        self.settings = settings or TriggerSettings()
        self.reference: np.ndarray | None = None
        self.previous: np.ndarray | None = None
        self.armed = True
        self.still_count = 0
        self.part_present = False
        self.last_ratios = (0.0, 0.0)

    def _small_gray(self, frame: np.ndarray) -> np.ndarray:
        s = self.settings.scale
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
        small = cv2.resize(gray, (gray.shape[1] // s, gray.shape[0] // s), interpolation=cv2.INTER_AREA)
        return small.astype(np.int16)

    def _ratio(self, a: np.ndarray, b: np.ndarray) -> float:
        return float((np.abs(a - b) > self.settings.pixel_level).mean())

    def update(self, frame: np.ndarray) -> bool:
        s = self.settings
        small = self._small_gray(frame)
        if self.reference is None or self.reference.shape != small.shape:
            self.reference, self.previous = small, small
            return False
        present = self._ratio(small, self.reference)
        motion = self._ratio(small, self.previous)
        self.previous = small
        self.last_ratios = (present, motion)
        if present < s.leave_ratio:
            self.part_present = False
            self.armed, self.still_count = True, 0
            self.reference = ((self.reference * 3 + small) // 4).astype(np.int16)  # follow slow light drift
            return False
        if present < s.enter_ratio:
            return False
        self.part_present = True
        self.still_count = self.still_count + 1 if motion < s.still_ratio else 0
        if self.armed and self.still_count >= s.settle_frames:
            self.armed = False
            return True
        return False
