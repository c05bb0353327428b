"""A capture session, GUI-free: source -> capture moment (manual, interval, part trigger) -> framing ->
quality gates -> atomic write into the dataset with a manifest line. Tk and the CLI drive it."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from capture.errors import GutcheckError
from capture.framing import Framing
from capture.imageio import write_image_atomic
from capture.sources import Frame, Source
from capture.trash import move_to_trash, restore_from_trash
from capture.trigger import PartTrigger, TriggerSettings

MODES = ("manual", "interval", "trigger")
MANIFEST = "manifest.jsonl"


@dataclass
class QualityGates:
    """Blur (variance of the Laplacian), exposure (share of clipped pixels), near-duplicates
    (mean absolute difference to the previous capture, 0..255 on a 64x64 grey thumbnail)."""

    min_sharpness: float = 30.0
    max_clipped: float = 0.05
    min_difference: float = 1.0

    def check(self, image: np.ndarray, previous: np.ndarray | None) -> tuple[str | None, dict]:
        """(reason to reject or None, the measured figures)."""
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        sharpness = float(cv2.Laplacian(gray, cv2.CV_64F).var())
        clipped = float(((gray <= 2) | (gray >= 253)).mean())
        thumb = cv2.resize(gray, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32)
        difference = float(np.abs(thumb - previous).mean()) if previous is not None else 255.0
        figures = {"sharpness": round(sharpness, 1), "clipped": round(clipped, 4), "difference": round(difference, 2)}
        if sharpness < self.min_sharpness:
            return f"blurred (sharpness {sharpness:.0f} < {self.min_sharpness:g})", figures
        if clipped > self.max_clipped:
            return f"badly exposed ({clipped:.1%} of pixels clipped)", figures
        if difference < self.min_difference:
            return f"near-duplicate of the previous image (difference {difference:.2f})", figures
        return None, figures

    @staticmethod
    def thumbnail(image: np.ndarray) -> np.ndarray:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        return cv2.resize(gray, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32)


def path_component(name: str, what: str) -> str:
    """`name` if it is one plain folder name (no separators, not . or .., not hidden), else a clear
    error: a part or label like ../../x would write outside the dataset folder."""
    if not name or name in (".", "..") or name.startswith(".") or any(c in name for c in "/\\\0") or \
            name != name.strip():
        raise GutcheckError(f"bad {what} {name!r}: use one plain folder name (letters, digits, - and _)")
    return name


class DatasetWriter:
    """Writes images into datasets/<part>/<split>/<label>/ in MVTec layout, atomically, each with a
    manifest line; trashes and restores image folders (nothing is ever hard-deleted)."""

    def __init__(self, datasets: Path, part: str, split: str = "train", label: str = "good"):
        path_component(part, "part name")
        path_component(label, "label")
        if split not in ("train", "test"):
            raise GutcheckError(f"split must be train or test, not {split!r}")
        if split == "train" and label != "good":
            raise GutcheckError("training images are good images only (use --split test for defects)")
        self.root = Path(datasets) / part
        self.split, self.label = split, label
        self.counter = 0

    @property
    def folder(self) -> Path:
        return self.root / self.split / self.label

    def write(self, image: np.ndarray, record: dict) -> Path:
        self.counter += 1
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = self.folder / f"{stamp}_{self.counter:05d}.png"
        while path.exists():
            self.counter += 1
            path = self.folder / f"{stamp}_{self.counter:05d}.png"
        write_image_atomic(path, image)
        line = dict(record, file=str(path.relative_to(self.root)), time=time.strftime("%Y-%m-%dT%H:%M:%S"))
        with open(self.root / MANIFEST, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return path

    def trash_images(self) -> tuple[Path, Path] | None:
        """Move this split/label folder to <part>/.trash/<timestamp>/<split>/<label>; returns
        (trashed, original) for undo."""
        if not self.folder.is_dir():
            return None
        original = self.folder
        trashed = move_to_trash(original, self.root / ".trash", Path(self.split) / self.label)
        return trashed, original

    def restore_latest(self) -> Path:
        """Put back the newest trashed copy of this split/label folder, and only of this split: test
        images never come back as training images."""
        trash = self.root / ".trash"
        trashed = sorted(trash.glob(f"*/{self.split}/{self.label}"), key=lambda p: p.parent.parent.name)
        if not trashed:
            unsplit = sorted(p for p in trash.glob(f"*/{self.label}") if p.is_dir())
            hint = (f"; {unsplit[-1]} was trashed before Gutcheck kept the split (train or test?): move it back "
                    "by hand") if unsplit else ""
            raise GutcheckError(f"nothing of {self.split}/{self.label} in {trash}{hint}")
        return self.undo_trash((trashed[-1], self.folder))

    @staticmethod
    def undo_trash(handle: tuple[Path, Path]) -> Path:
        trashed, original = handle
        try:
            return restore_from_trash(trashed, original)
        except FileExistsError:
            raise GutcheckError(f"{original} has new images; move them aside before undoing") from None


@dataclass
class CaptureEvent:
    frame: Frame
    saved: Path | None = None
    rejected: str | None = None
    figures: dict = field(default_factory=dict)
    image: np.ndarray | None = None  # the framed image that was judged


@dataclass
class CaptureSettings:
    mode: str = "trigger"
    interval_ms: int = 500
    storing: bool = True
    framing: Framing = field(default_factory=Framing)
    gates: QualityGates = field(default_factory=QualityGates)
    trigger: TriggerSettings = field(default_factory=TriggerSettings)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise GutcheckError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")


class CaptureSession:
    """Feed it frames with `step()`; it decides when to capture and what to keep."""

    def __init__(self, source: Source, writer: DatasetWriter, settings: CaptureSettings | None = None):
        self.source = source
        self.writer = writer
        self.settings = settings or CaptureSettings()
        self.trigger = PartTrigger(self.settings.trigger)
        self.captured = 0
        self.rejected: dict[str, int] = {}
        self.last_frame: Frame | None = None
        self._previous_thumb: np.ndarray | None = None
        self._manual_request = False
        self._last_interval = 0.0

    def request_capture(self) -> None:
        """Manual mode: capture the next frame."""
        self._manual_request = True

    def _is_capture_moment(self, frame: Frame) -> bool:
        mode = self.settings.mode
        if mode == "trigger":
            return self.trigger.update(frame.image)
        if mode == "interval":
            now = time.monotonic()
            if now - self._last_interval >= self.settings.interval_ms / 1000.0:
                self._last_interval = now
                return True
            return False
        fire, self._manual_request = self._manual_request, False
        return fire

    def step(self) -> CaptureEvent | None:
        """Read one frame; returns an event when it was a capture moment (saved or rejected)."""
        frame = self.source.read()
        if frame is None:
            return None
        self.last_frame = frame
        if not self._is_capture_moment(frame):
            return CaptureEvent(frame)
        image = self.settings.framing.apply(frame.image)
        reason, figures = self.settings.gates.check(image, self._previous_thumb)
        event = CaptureEvent(frame, figures=figures, image=image)
        if reason:
            key = reason.split(" (")[0]
            self.rejected[key] = self.rejected.get(key, 0) + 1
            event.rejected = reason
            return event
        if self.settings.storing:
            record = {"source": self.source.name, "frame": frame.index, "mode": self.settings.mode,
                      "framing": self.settings.framing.to_dict(), "quality": figures,
                      **({"camera": self.source.camera_readback} if self.source.camera_readback else {}),
                      **{k: v for k, v in frame.meta.items() if k in ("truth", "part_number", "file")}}
            event.saved = self.writer.write(image, record)
            self.captured += 1
        self._previous_thumb = QualityGates.thumbnail(image)
        return event


def captured_camera(root: Path, files: list[Path]) -> tuple[dict[str, float], str]:
    """The camera settings the manifest says `files` were captured with (the most common when they differ),
    and a note when they differ or some were captured without recorded settings ("" when they agree)."""
    from collections import Counter

    manifest = Path(root) / MANIFEST
    if not manifest.is_file():
        return {}, ""
    wanted = {str(Path(f).resolve()) for f in files}
    seen: Counter = Counter()
    for line in manifest.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash: the image it names has settings of its own line or none
        if isinstance(record, dict) and str((Path(root) / str(record.get("file", ""))).resolve()) in wanted:
            camera = record.get("camera")
            seen[json.dumps(camera, sort_keys=True) if isinstance(camera, dict) else "{}"] += 1
    if not seen:
        return {}, ""
    common, n = seen.most_common(1)[0]
    note = "" if len(seen) == 1 else (f"the good images were captured with {len(seen)} different camera settings; "
                                      f"recorded the most common ({n} of {sum(seen.values())})")
    return json.loads(common), note


def summarize(root: Path) -> dict:
    """Counts per split and label, image sizes, unreadable files and exact duplicates of a dataset."""
    import hashlib

    from capture.imageio import list_images, read_image

    root = Path(root)
    if not root.is_dir():
        raise GutcheckError(f"{root}: no such dataset folder")
    counts: dict[str, int] = {}
    sizes: dict[str, int] = {}
    unreadable: list[str] = []
    seen: dict[str, str] = {}
    duplicates: list[tuple[str, str]] = []
    for split in ("train", "test"):
        if not (root / split).is_dir():
            continue
        for folder in sorted(p for p in (root / split).iterdir() if p.is_dir() and not p.name.startswith(".")):
            paths = list_images(folder)
            counts[f"{split}/{folder.name}"] = 0
            for path in paths:
                rel = str(path.relative_to(root))
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                if digest in seen:
                    duplicates.append((rel, seen[digest]))
                seen.setdefault(digest, rel)
                try:
                    img = read_image(path)
                except GutcheckError:
                    unreadable.append(rel)
                    continue
                counts[f"{split}/{folder.name}"] += 1
                key = f"{img.shape[1]}x{img.shape[0]}"
                sizes[key] = sizes.get(key, 0) + 1
    return {"counts": counts, "sizes": sizes, "unreadable": unreadable, "duplicates": duplicates,
            "good_train": counts.get("train/good", 0)}


def summary_lines(summary: dict, minimum_good: int = 150) -> list[str]:
    lines = [f"{k:<24} {v:6d}" for k, v in summary["counts"].items()] or ["no images"]
    lines.append("sizes: " + (", ".join(f"{k} ({v})" for k, v in summary["sizes"].items()) or "–"))
    lines.append(f"unreadable files: {len(summary['unreadable'])}" +
                 "".join(f"\n  {f}" for f in summary["unreadable"][:10]))
    lines.append(f"exact duplicates: {len(summary['duplicates'])}" +
                 "".join(f"\n  {a} = {b}" for a, b in summary["duplicates"][:10]))
    if summary["good_train"] < minimum_good:
        lines.append(f"warning: only {summary['good_train']} good training images; capture at least "
                     f"{minimum_good} (500-1000 is better)")
    return lines
