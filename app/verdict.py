"""The one record of an inspected part (or frame, or image file), made by the inspection pipeline and
handed to every output: JSON lines, the inspection log, the conveyor, the dashboard, publishers.

`to_json()` is the published form, documented and versioned in docs/outputs.md.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from capture.sources import Frame
from model_builder.scoring import Thresholds

VERDICT_FORMAT = "gutcheck-verdict/1"  # docs/outputs.md: fields are only ever added


def json_number(x: float, digits: int | None = None) -> float | None:
    """A score for JSON: null when it is not a finite number (a bare NaN is not valid JSON)."""
    if not math.isfinite(x):
        return None
    return round(x, digits) if digits is not None else x


@dataclass
class Verdict:
    part: int  # the part's number (the source's own, e.g. the synthetic conveyor's; else counted from 1)
    anomaly: bool
    score: float  # the single combined anomaly score (higher = worse) the build report's ROC uses
    density: float
    error: float  # reconstruction error
    thresholds: Thresholds
    model_id: str
    source: str
    frame: Frame
    box: tuple[int, int, int, int]  # (x, y, w, h) of the frame the model saw: the framing's cut
    inputs: np.ndarray  # model input (h, w, c) 0..1
    reconstruction: np.ndarray | None  # None: the model redraws features, not pixels
    heatmap: np.ndarray  # what explains the verdict, at the model input's size
    heat_scale: float  # where the heatmap's colours saturate (the detector kind's)
    seconds: float  # scoring time
    time: float = field(default_factory=time.time)
    conveyor_link: str | None = None  # the conveyor link's state when the verdict was made, if there is one

    @property
    def truth(self) -> str | None:
        return self.frame.meta.get("truth")

    @property
    def file(self) -> str | None:
        return self.frame.meta.get("file")

    def framed_image(self) -> np.ndarray:
        """The part as the model saw it, before resizing (8-bit BGR)."""
        x, y, w, h = self.box
        return self.frame.image[y:y + h, x:x + w]

    def to_json(self) -> dict:
        t = self.thresholds
        record = {
            "format": VERDICT_FORMAT,
            "part": self.part,
            "frame": self.frame.index,
            "time": round(self.time, 3),
            "source": self.source,
            "verdict": "anomaly" if self.anomaly else "ok",
            "score": json_number(self.score, 4),
            "density": json_number(self.density, 4),
            "reconstruction_error": json_number(self.error),
            "density_threshold": t.density,
            "reconstruction_threshold": t.reconstruction,
            "rule": t.rule,
            "model_id": self.model_id,
            "box": list(self.box),
        }
        for key, value in (("file", self.file), ("truth", self.truth), ("conveyor_link", self.conveyor_link)):
            if value is not None:
                record[key] = value
        return record
