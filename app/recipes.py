"""Part recipes: everything that makes a station inspect one part, kept as plain TOML files.

A recipe names its model bundle by model_id (bundle.json), not by the spelling of its path: a bundle
rebuilt or replaced at the same folder is refused, never used with thresholds calibrated for
another model. Every save is a new version file (``recipes/NAME/v0001.toml``, ``v0002.toml``, ...)
written atomically beside the earlier ones, which stay: `history` lists them and any of them can be
loaded again.
"""

from __future__ import annotations

import os
import re
import time
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import tomli_w

from app.inspection_log import current_user
from capture.errors import GutcheckError
from capture.framing import Framing
from capture.imageio import folder_problem
from capture.platforms import user_data_dir
from model_builder.scoring import RULES, Thresholds, finite_number

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
VERSION_FILE = re.compile(r"v(\d{4,})\.toml")
BELT_SPEEDS = (50, 4000)  # steps/s the conveyor takes ($P, docs/protocols.md); 0 = leave the belt's speed
WORKING_FOLDER_RECIPES = Path("recipes")
KNOBS = ("density", "reconstruction")  # the knob box's two potentiometers, as Bundle.knob_ranges names them


@dataclass
class Recipe:
    """One version of a part's recipe. Thresholds of 0 and an empty rule mean: the bundle's own."""

    name: str
    model: str = ""  # the bundle's folder, resolved when saved
    model_id: str = ""  # the bundle's model_id: the recipe refuses any other model found at `model`
    density_threshold: float = 0.0
    reconstruction_threshold: float = 0.0
    rule: str = ""
    source: str = ""  # cam:N, cam:NAME, synthetic:, ... ("" = what the front end is given)
    camera: dict[str, float] = field(default_factory=dict)  # exposure, gain, focus, ... (capture.sources)
    belt_speed: int = 0  # steps/s sent to the conveyor at changeover; 0 = leave it as it is
    roi: list[int] = field(default_factory=list)  # [x, y, w, h] cut from each frame first ([] = the whole frame)
    crop: int = 0  # then a crop-pixel square centred on the part (0 = none): capture.framing.Framing
    knob_ranges: dict[str, list[float]] = field(default_factory=dict)  # density / reconstruction: [low, high]
    dataset: str = ""  # where `capture --recipe` records good parts
    publish: list[str] = field(default_factory=list)  # publisher URLs (app/publish.py), added to the station's
    version: int = 0  # 0: not saved yet
    saved: str = ""  # ISO 8601 time of the save
    saved_by: str = ""
    note: str = ""

    def thresholds(self, bundle) -> Thresholds:
        """The thresholds this recipe inspects with: its own, or where it has none, the bundle's."""
        own = self.density_threshold and self.reconstruction_threshold
        return Thresholds(self.density_threshold if own else bundle.thresholds.density,
                          self.reconstruction_threshold if own else bundle.thresholds.reconstruction,
                          self.rule or bundle.thresholds.rule)

    @property
    def framing(self) -> Framing:
        """How each frame is cut before the model sees it: as the recipe's good parts were captured."""
        return Framing(tuple(self.roi) if self.roi else None, self.crop)

    def knob_range(self, bundle, key: str) -> list[float]:
        """The [low, high] the knob `key` (density, reconstruction) spans: the recipe's, else the bundle's."""
        return list(self.knob_ranges.get(key) or bundle.knob_ranges[key])

    def source_spec(self, given: str = "") -> str:
        """The source to open: `given` (a command line's) or the recipe's, with the recipe's camera settings
        as source options (cam:0,exposure=-6,...); options written in the source itself win."""
        # (capture.sources parses name=value options left to right: a later one wins)
        spec = given or self.source
        if not spec or not self.camera:
            return spec
        kind, _, rest = spec.partition(":")
        settings = ",".join(f"{k}={_number_text(v)}" for k, v in sorted(self.camera.items()))
        if kind == "cam":
            head, _, own = rest.partition(",")
            return f"cam:{head},{settings}" + (f",{own}" if own else "")
        if kind == "synthetic":
            return f"synthetic:{settings}" + (f",{rest}" if rest else "")
        return spec  # files, folders, videos and streams have no camera to set

    def check(self) -> "Recipe":
        """Self, or a one-line GutcheckError naming the first bad field."""
        check_name(self.name)
        self.density_threshold = finite_number(self.density_threshold, "density_threshold")
        self.reconstruction_threshold = finite_number(self.reconstruction_threshold, "reconstruction_threshold")
        if bool(self.density_threshold) != bool(self.reconstruction_threshold):
            raise GutcheckError(f"recipe {self.name}: give both thresholds or neither (the bundle's)")
        if self.rule and self.rule not in RULES:
            raise GutcheckError(f"recipe {self.name}: rule must be one of {', '.join(RULES)}, not {self.rule!r}")
        if not isinstance(self.belt_speed, int) or isinstance(self.belt_speed, bool) or not (
                self.belt_speed == 0 or BELT_SPEEDS[0] <= self.belt_speed <= BELT_SPEEDS[1]):
            raise GutcheckError(f"recipe {self.name}: belt_speed must be 0 (leave it) or {BELT_SPEEDS[0]}-"
                                f"{BELT_SPEEDS[1]} steps/s, not {self.belt_speed!r}")
        self.roi, self.crop = check_framing(self.name, self.roi, self.crop)
        self.knob_ranges = check_knob_ranges(self.name, self.knob_ranges)
        if not isinstance(self.camera, dict):
            raise GutcheckError(f"recipe {self.name}: camera must be a table of settings")
        from capture.sources import check_camera_settings

        self.camera = check_camera_settings(self.camera)
        if not (isinstance(self.publish, list) and all(isinstance(u, str) for u in self.publish)):
            raise GutcheckError(f"recipe {self.name}: publish must be a list of URLs")
        return self


MAX_FRAME_PX = 16384  # no camera frame is wider or taller


def _whole(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise GutcheckError(f"{what} must be a whole number of pixels, not {value!r}")
    return value


def check_framing(name: str, roi, crop) -> tuple[list[int], int]:
    """A recipe's ROI ([x, y, w, h], or [] for none) and crop, checked."""
    if not isinstance(roi, (list, tuple)) or len(roi) not in (0, 4):
        raise GutcheckError(f"recipe {name}: roi must be [x, y, w, h] or empty, not {roi!r}")
    roi = [_whole(v, f"recipe {name}: roi") for v in roi]
    if roi and not (roi[0] >= 0 and roi[1] >= 0 and 0 < roi[2] <= MAX_FRAME_PX and 0 < roi[3] <= MAX_FRAME_PX
                    and roi[0] + roi[2] <= MAX_FRAME_PX and roi[1] + roi[3] <= MAX_FRAME_PX):
        raise GutcheckError(f"recipe {name}: roi {roi} is not a box in a frame (x, y >= 0; w, h > 0)")
    crop = _whole(crop, f"recipe {name}: crop")
    if not 0 <= crop <= MAX_FRAME_PX:
        raise GutcheckError(f"recipe {name}: crop must be 0 (none) to {MAX_FRAME_PX} pixels, not {crop}")
    return roi, crop


def check_knob_ranges(name: str, ranges) -> dict[str, list[float]]:
    """A recipe's knob ranges: {density: [low, high], reconstruction: [low, high]}, either or both."""
    if not isinstance(ranges, dict) or set(ranges) - set(KNOBS):
        raise GutcheckError(f"recipe {name}: knob_ranges takes {' and '.join(KNOBS)}, each [low, high]")
    out = {}
    for key, pair in ranges.items():
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise GutcheckError(f"recipe {name}: knob_ranges.{key} must be [low, high]")
        lo, hi = (finite_number(v, f"recipe {name}: knob_ranges.{key}") for v in pair)
        if not lo < hi:
            raise GutcheckError(f"recipe {name}: knob_ranges.{key}: low {lo:g} is not below high {hi:g}")
        out[key] = [lo, hi]
    return out


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise GutcheckError(f"bad recipe name {name!r}: letters, digits, '.', '_' and '-', at most 64, "
                            "starting with a letter or digit")
    return name


_SHORT_NAMES = {"model_id": "model", "roi": "framing", "crop": "framing", "density_threshold": "thresholds", "reconstruction_threshold": "thresholds"}
_BOOKKEEPING = {"name", "version", "saved", "saved_by", "note"}


def changes(old: Recipe | None, new: Recipe) -> list[str]:
    """What differs from `old` to `new`, one 'field: before -> after' line each (bookkeeping fields left out)."""
    if old is None:
        return ["new recipe"]
    return [f"{f.name}: {getattr(old, f.name)!r} -> {getattr(new, f.name)!r}" for f in fields(Recipe)
            if f.name not in _BOOKKEEPING and getattr(old, f.name) != getattr(new, f.name)]


def changed_names(old: Recipe | None, new: Recipe) -> str:
    """What a changeover changes, short enough for a status line ("model, thresholds, belt speed 900 -> 1500")."""
    if old is None:
        return "the first recipe since start"
    names: list[str] = []
    for f in fields(Recipe):
        if f.name in _BOOKKEEPING or getattr(old, f.name) == getattr(new, f.name):
            continue
        label = (f"belt speed {old.belt_speed or 'as it was'} -> {new.belt_speed or 'as it was'}"
                 if f.name == "belt_speed" else _SHORT_NAMES.get(f.name, f.name.replace("_", " ")))
        if label not in names:
            names.append(label)
    return ", ".join(names) or "nothing but the version"


def default_recipes_dir() -> Path:
    """recipes/ in the working folder when there is one, else in the user's data folder."""
    return WORKING_FOLDER_RECIPES if WORKING_FOLDER_RECIPES.is_dir() else user_data_dir() / "recipes"


class RecipeBook:
    """The recipes folder: one subfolder per recipe, one file per version."""

    def __init__(self, folder: Path | None = None):
        self.folder = Path(folder) if folder else default_recipes_dir()

    def names(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(p.name for p in self.folder.iterdir() if p.is_dir() and NAME.fullmatch(p.name)
                      and self._versions(p.name))

    def _versions(self, name: str) -> list[int]:
        folder = self.folder / name
        if not folder.is_dir():
            return []
        return sorted(int(m.group(1)) for p in folder.iterdir() if (m := VERSION_FILE.fullmatch(p.name)))

    def _path(self, name: str, version: int) -> Path:
        return self.folder / name / f"v{version:04d}.toml"

    def load(self, name: str, version: int | None = None) -> Recipe:
        """The latest version of recipe `name` (or the given one); a missing or damaged one is one line."""
        check_name(name)
        versions = self._versions(name)
        if not versions:
            known = self.names()
            raise GutcheckError(f"no recipe {name!r} in {self.folder}"
                                + (f" (there are: {', '.join(known)})" if known else " (it holds none yet)"))
        if version is None:
            version = versions[-1]
        elif version not in versions:
            raise GutcheckError(f"recipe {name} has no version {version} (it has {versions[0]}-{versions[-1]})")
        return read_recipe(self._path(name, version), name, version)

    def history(self, name: str) -> list[Recipe]:
        """Every version of `name`, oldest first."""
        check_name(name)
        if not self._versions(name):
            self.load(name)  # the message for a recipe that does not exist
        return [read_recipe(self._path(name, v), name, v) for v in self._versions(name)]

    def save(self, recipe: Recipe, note: str = "", by: str = "") -> Recipe:
        """Write `recipe` as the next version of its name (never over an earlier one); returns what was saved."""
        recipe = replace(recipe, camera=dict(recipe.camera), publish=list(recipe.publish)).check()
        folder = self.folder / recipe.name
        problem = folder_problem(folder)
        if problem:
            raise GutcheckError(f"{folder}: {problem}")
        folder.mkdir(parents=True, exist_ok=True)
        version = (self._versions(recipe.name) or [0])[-1] + 1
        while True:
            saved = replace(recipe, version=version, saved=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                            saved_by=by or current_user(), note=note)
            if _write_new(self._path(recipe.name, version), tomli_w.dumps(_to_toml(saved)).encode()):
                return saved
            version += 1  # another station saved this version a moment ago: ours comes after it


def _to_toml(recipe: Recipe) -> dict:
    data = asdict(recipe)
    data.pop("name")  # the folder names it
    return data


def _write_new(path: Path, data: bytes) -> bool:
    """Write a file that must not exist yet, atomically (a temp file linked into place); False if it does."""
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        try:
            os.link(tmp, path)  # fails if the name exists: an earlier version is never replaced
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: exclusive create, then the content
            try:
                with open(path, "xb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
            except FileExistsError:
                return False
        return True
    finally:
        Path(tmp).unlink(missing_ok=True)


def read_recipe(path: Path, name: str, version: int) -> Recipe:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise GutcheckError(f"{path}: recipe file is damaged ({exc}); load an earlier version with "
                            f"--version {version - 1}" if version > 1 else f"{path}: recipe file is damaged ({exc})") \
            from None
    known = {f.name for f in fields(Recipe)} - {"name"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise GutcheckError(f"{path}: unknown recipe fields {', '.join(unknown)}")
    for f in fields(Recipe):
        if f.name in data and isinstance(getattr(Recipe("x"), f.name), str) and not isinstance(data[f.name], str):
            raise GutcheckError(f"{path}: {f.name} must be text in quotes")
    data["version"] = version
    try:
        return Recipe(name=name, **data).check()
    except GutcheckError as exc:
        raise GutcheckError(f"{path}: {exc}") from None
    except TypeError as exc:
        raise GutcheckError(f"{path}: bad recipe ({exc})") from None


def recipe_bundle(recipe: Recipe):
    """The recipe's model bundle, loaded and checked to be the very model the recipe was saved with."""
    from model_builder.bundle import load_bundle

    if not recipe.model:
        raise GutcheckError(f"recipe {recipe.name} has no model: save it with --model")
    bundle = load_bundle(Path(recipe.model))
    if recipe.model_id and bundle.info.model_id != recipe.model_id:
        raise GutcheckError(f"recipe {recipe.name}: the model at {recipe.model} is {bundle.info.model_id}, not the "
                            f"recipe's {recipe.model_id} (rebuilt or replaced?): save the recipe again with --model "
                            "to use it")
    return bundle
