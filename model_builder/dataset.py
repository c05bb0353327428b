"""Reading MVTec-layout image sets: <part>/train/good, <part>/test/<good|defect>."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from capture.errors import GutcheckError
from capture.imageio import list_images, read_image
from capture.synthetic import GOOD


@dataclass
class ImageSet:
    """Decoded 8-bit BGR images, their files and labels, and the files that could not be read."""

    images: list[np.ndarray] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def is_anomaly(self) -> np.ndarray:
        return np.array([lab != GOOD for lab in self.labels], bool)

    def add_folder(self, folder: Path, label: str) -> None:
        """Decode every image of `folder` (in parallel threads); unreadable files go to `skipped`."""
        def decode(path: Path) -> np.ndarray | str:
            try:
                return read_image(path)
            except GutcheckError as exc:
                return str(exc)

        paths = list_images(folder)
        with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as pool:
            for path, result in zip(paths, pool.map(decode, paths)):
                if isinstance(result, str):
                    self.skipped.append((path, result))
                    continue
                self.images.append(result)
                self.paths.append(path)
                self.labels.append(label)


def load_good(root: Path) -> ImageSet:
    """train/good of a dataset; an absent or empty folder is a clear error."""
    root = Path(root)
    folder = root / "train" / GOOD
    if not root.is_dir():
        raise GutcheckError(f"{root}: no such dataset folder")
    if not folder.is_dir():
        raise GutcheckError(f"{root}: no train/good folder (expected {folder})")
    images = ImageSet()
    images.add_folder(folder, GOOD)
    if not images:
        why = f" ({len(images.skipped)} unreadable files)" if images.skipped else ""
        raise GutcheckError(f"{folder}: no readable good images{why}")
    return images


def load_test(root: Path) -> ImageSet:
    """test/<label>/ of a dataset, good first; empty when there is no test folder."""
    images = ImageSet()
    test = Path(root) / "test"
    if test.is_dir():
        labels = sorted(p.name for p in test.iterdir() if p.is_dir() and not p.name.startswith("."))
        for label in sorted(labels, key=lambda s: (s != GOOD, s)):
            images.add_folder(test / label, label)
    return images


def fingerprint(paths: list[Path]) -> str:
    """SHA-256 over file names and contents: the same images give the same fingerprint."""
    h = hashlib.sha256()
    for p in sorted(paths, key=lambda p: p.name):
        h.update(p.name.encode() + b"\0" + hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def load_masks(root: Path, test: ImageSet, size: int) -> np.ndarray | None:
    """Ground-truth masks of a test set at `size` (good images: empty); None when a defect image
    has no mask (then there is no pixel-level truth to measure against)."""
    import cv2

    masks = []
    for path, label in zip(test.paths, test.labels):
        if label == GOOD:
            masks.append(np.zeros((size, size), bool))
            continue
        mask_path = Path(root) / "ground_truth" / label / f"{path.stem}_mask.png"
        if not mask_path.is_file():
            return None
        mask = cv2.imdecode(np.fromfile(str(mask_path), np.uint8), cv2.IMREAD_GRAYSCALE)
        if mask is None:
            return None
        masks.append(cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST) > 127)
    return np.stack(masks) if masks else None
