"""Dashboard settings in a TOML file, written atomically; a damaged file is a clear message."""

from __future__ import annotations

import os
import time
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import tomli_w

from capture.errors import GutcheckError
from capture.imageio import FILE_MODE, folder_problem, write_bytes_atomic
from capture.platforms import user_config_dir, user_data_dir
from model_builder.scoring import Thresholds, finite_number


@dataclass
class Settings:
    """What the station remembers between shifts. Thresholds of 0 mean: use the bundle's."""

    model: str = ""  # the bundle's folder, as resolved when the thresholds were saved
    model_id: str = ""  # its model_id (bundle.json): the thresholds belong to that model wherever it lies
    recipe: str = ""  # the recipe last changed over to: the station starts in it again
    source: str = "cam:0"
    knobs: str = ""
    conveyor: str = ""
    mode: str = "part"
    density_threshold: float = 0.0
    reconstruction_threshold: float = 0.0
    rule: str = ""
    station: str = ""  # the name verdicts are published under (default: the host's name)
    publish: list[str] = field(default_factory=list)  # publisher URLs (app/publish.py)
    mqtt_username: str = ""  # secrets: here or in the environment, never on the command line
    mqtt_password: str = ""
    webhook_token: str = ""


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
    for name, value in data.items():  # the thresholds are checked below, as finite numbers
        if name == "publish" and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise GutcheckError(f"{path}: publish must be a list of URLs")
        if isinstance(getattr(Settings(), name), str) and not isinstance(value, str):
            raise GutcheckError(f"{path}: {name} must be text in quotes")
    try:
        s = Settings(**data)
        s.density_threshold = finite_number(s.density_threshold, "density_threshold")
        s.reconstruction_threshold = finite_number(s.reconstruction_threshold, "reconstruction_threshold")
    except (TypeError, ValueError, GutcheckError) as exc:
        raise GutcheckError(f"{path}: bad value in settings ({exc})") from None
    return s


# The dashboard's defaults used to be these names in the working folder; a station set up that way
# keeps finding its settings and log there (a changed default must never drop saved thresholds).
WORKING_FOLDER_SETTINGS = Path("gutcheck-settings.toml")
WORKING_FOLDER_LOG = Path("inspections")


def default_settings_path() -> Path:
    """gutcheck-settings.toml in the working folder when there is one, else the user's settings
    folder (%APPDATA%\\gutcheck\\settings.toml, ~/.config/gutcheck/settings.toml, ...): a dashboard
    started from a Windows shortcut has no working folder of its own."""
    return WORKING_FOLDER_SETTINGS if WORKING_FOLDER_SETTINGS.is_file() else user_config_dir() / "settings.toml"


def default_log_dir() -> Path:
    """inspections/ in the working folder when there is one, else the user's data folder."""
    return WORKING_FOLDER_LOG if WORKING_FOLDER_LOG.is_dir() else user_data_dir() / "inspections"


def check_settings_target(path: Path) -> None:
    """A one-line error unless a settings file can be written at `path`: not a folder, and not
    under a file or in a folder that cannot be written (capture.imageio.folder_problem)."""
    path = Path(path)
    if path.is_dir():
        raise GutcheckError(f"{path}: is a folder, not a settings file")
    problem = folder_problem(path.parent)
    if problem:
        raise GutcheckError(f"{path}: {problem}")


def save_settings(path: Path, settings: Settings) -> Path | None:
    """Write the settings atomically. A file there that does not load (damaged, or settings this
    version does not know) is first moved to a dated backup beside it, never overwritten; returns
    the backup's path, or None when there was nothing to keep."""
    path = Path(path)
    check_settings_target(path)
    backup = None
    if path.exists():
        try:
            load_settings(path)
        except GutcheckError:
            backup = path.with_name(f"{path.name}.{time.strftime('%Y%m%d-%H%M%S')}.bak")
            n = 1
            while backup.exists():
                n += 1
                backup = path.with_name(f"{path.name}.{time.strftime('%Y%m%d-%H%M%S')}-{n}.bak")
            os.replace(path, backup)
    holds_secrets = bool(settings.mqtt_password or settings.webhook_token)
    write_bytes_atomic(path, tomli_w.dumps(asdict(settings)).encode(), new_mode=0o600 if holds_secrets else FILE_MODE)
    return backup


def saved_thresholds(settings: Settings, bundle) -> tuple[Thresholds | None, str]:
    """The thresholds the settings saved for this bundle, or None and (when they hold thresholds for
    another model) one line saying so: saved thresholds are never dropped in silence. A model is known
    by its model_id, so another spelling of its path (relative, absolute, a link) finds them; a file
    from before model_id was saved matches by the resolved path."""
    if not (settings.density_threshold and settings.reconstruction_threshold):
        return None, ""
    if settings.model_id:
        same = settings.model_id == bundle.info.model_id
    else:
        same = bool(settings.model and bundle.path) and Path(settings.model).resolve() == Path(bundle.path).resolve()
    if same:
        return Thresholds(settings.density_threshold, settings.reconstruction_threshold,
                          settings.rule or bundle.thresholds.rule), ""
    return None, (f"the saved thresholds are for model {settings.model_id or settings.model}, not "
                  f"{bundle.info.model_id}: using this model's own")


def with_thresholds(settings: Settings, bundle, thresholds: Thresholds) -> Settings:
    """`settings` holding `thresholds` for `bundle` (its model_id and resolved folder)."""
    return replace(settings, model=str(Path(bundle.path).resolve()) if bundle.path else "",
                   model_id=bundle.info.model_id, density_threshold=thresholds.density,
                   reconstruction_threshold=thresholds.reconstruction, rule=thresholds.rule)
