"""What bundle.json says about a model besides its scoring parameters, as typed records.

Each section of bundle.json is read into its dataclass with `from_section`: known keys only (a
newer writer's extra keys are ignored, a missing key takes the field's default: version 1 bundles
and bundles from before a field load), numbers and strings checked on the way in, so that nothing
downstream reads a nested dict by string key or meets a string where it expects a number.
"""

from __future__ import annotations

import math
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, TypeVar

from capture.errors import GutcheckError

T = TypeVar("T")


@dataclass
class OutlierNote:
    """A held-out good image the calibration left out, and its two scores."""

    path: str
    density: float
    reconstruction: float


TARGET_FRR = 0.01  # the share of good parts a build's thresholds may reject, unless told otherwise


def check_target_frr(value: float, name: str = "--target-frr") -> float:
    """A false-reject target: a share strictly between 0 and 1, else one line."""
    if not (isinstance(value, (int, float)) and 0 < value < 1):
        raise GutcheckError(f"{name} must be between 0 and 1")
    return float(value)


@dataclass
class Calibration:
    """How the thresholds were chosen: on held-out good images, for a false-reject target."""

    target_false_reject_rate: float = TARGET_FRR
    validation_images: int = 0
    validation_false_reject_rate: float = 0.0
    validation_scores: dict[str, list[float]] = field(default_factory=dict)  # "density", "reconstruction"
    outlier_limit: float = 0.0
    outliers: list[OutlierNote] = field(default_factory=list)

    def expectation(self) -> str:
        """What an operator should expect, and what this calibration set can show at all: N good images
        bound a false-reject rate only to the exact binomial interval of what they saw."""
        from model_builder.calibrate import false_reject_interval

        n = self.validation_images
        rejected = int(round(self.validation_false_reject_rate * n))
        low, high = false_reject_interval(rejected, n)
        return (f"expect about {self.target_false_reject_rate:.1%} of good parts rejected; the {n} held-out good "
                f"images it was calibrated on ({rejected} rejected) show only that the rate lies between "
                f"{low:.1%} and {high:.1%} (95 %)")


@dataclass
class Training:
    epochs_run: int = 0
    seconds: float = 0.0
    best_val_loss: float = math.nan


@dataclass
class AddedImages:
    """Good images added to a bundle's density after it was built (`gutcheck build --update`)."""

    dataset: str
    dataset_fingerprint: str
    images: int  # added to the density memory
    validation_images: int  # of them held out for the new calibration
    added: str  # when
    from_model: str  # the model_id of the bundle they were added to


@dataclass
class Provenance:
    """Where the model came from: the data, the options, the software (and any images added later)."""

    dataset: str = "?"
    dataset_fingerprint: str = ""
    train_images: int = 0
    skipped_files: list[str] = field(default_factory=list)
    built: str = "?"
    options: dict[str, Any] = field(default_factory=dict)  # BuildOptions as written (read back by people)
    versions: dict[str, str] = field(default_factory=dict)
    added: list[AddedImages] = field(default_factory=list)
    # the camera settings the good parts were captured with (the capture manifest), {} when not known
    camera: dict[str, float] = field(default_factory=dict)


@dataclass
class ModelInfo:
    """The descriptive part of bundle.json: identity, architecture, calibration, training, provenance and
    the build's evaluation on test/ (a summary table written for the report and for people; the
    product never decides anything from it)."""

    model_id: str = "unsaved"
    architecture: str = "?"
    density_preset: str = "?"
    density_bandwidth: float = math.nan
    calibration: Calibration = field(default_factory=Calibration)
    training: Training = field(default_factory=Training)
    provenance: Provenance = field(default_factory=Provenance)
    evaluation: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.evaluation is None:
            out.pop("evaluation")
        return out

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> "ModelInfo":
        return from_section(cls, meta, "bundle.json")


_SCALARS = {int: int, float: float, str: str}


def _convert(value: Any, kind: Any, where: str) -> Any:
    """`value` as `kind` (a field's type), or a one-line error naming where it sits."""
    origin = typing.get_origin(kind)
    if origin is typing.Union or type(kind).__name__ == "UnionType":  # X | None
        options = [k for k in typing.get_args(kind) if k is not type(None)]
        return None if value is None else _convert(value, options[0], where)
    if kind in _SCALARS:
        ok = isinstance(value, str) if kind is str else \
            isinstance(value, (int, float)) and not isinstance(value, bool) and (kind is float or value == int(value))
        if not ok:
            raise GutcheckError(f"{where} must be {'a text' if kind is str else 'a number'}, not {value!r}"[:200])
        return kind(value)
    if origin is list:
        if not isinstance(value, list):
            raise GutcheckError(f"{where} must be a list, not {type(value).__name__}")
        (item,) = typing.get_args(kind)
        return [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise GutcheckError(f"{where} must be a table, not {type(value).__name__}")
        _, item = typing.get_args(kind)
        return value if item is Any else {str(k): _convert(v, item, f"{where}.{k}") for k, v in value.items()}
    if isinstance(kind, type) and hasattr(kind, "__dataclass_fields__"):
        return from_section(kind, value, where)
    return value


def from_section(cls: type[T], data: Any, where: str) -> T:
    """A dataclass from one JSON table: known keys converted and checked, missing keys defaulted."""
    if not isinstance(data, dict):
        raise GutcheckError(f"{where} must be a table of values, not {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    values = {}
    for f in fields(cls):
        if f.name in data:
            values[f.name] = _convert(data[f.name], hints[f.name], f"{where}.{f.name}" if where != "bundle.json"
                                      else f.name)
        elif f.default is MISSING and f.default_factory is MISSING:
            raise GutcheckError(f"{where}: {f.name} is missing")
    return cls(**values)
