"""Dashboard settings in a TOML file, written atomically; a damaged file is a clear message."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import tomli_w

from capture.errors import GutcheckError
from capture.imageio import write_bytes_atomic
from model_builder.scoring import finite_number


@dataclass
class Settings:
    """What the station remembers between shifts. Thresholds of 0 mean: use the bundle's."""

    model: str = ""
    source: str = "cam:0"
    knobs: str = ""
    conveyor: str = ""
    mode: str = "part"
    density_threshold: float = 0.0
    reconstruction_threshold: float = 0.0
    rule: str = ""


def load_settings(path: Path) -> Settings:
    path = Path(path)
    if not path.exists():
        return Settings()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
        raise GutcheckError(f"{path}: settings file is damaged ({exc}); fix or move it aside") from None
    known = {f.name: f.type for f in fields(Settings)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise GutcheckError(f"{path}: unknown settings {', '.join(unknown)}")
    try:
        s = Settings(**data)
        s.density_threshold = finite_number(s.density_threshold, "density_threshold")
        s.reconstruction_threshold = finite_number(s.reconstruction_threshold, "reconstruction_threshold")
    except (TypeError, ValueError, GutcheckError) as exc:
        raise GutcheckError(f"{path}: bad value in settings ({exc})") from None
    return s


def save_settings(path: Path, settings: Settings) -> None:
    write_bytes_atomic(Path(path), tomli_w.dumps(asdict(settings)).encode())
