"""Trash instead of delete: whatever a user made is moved aside, never erased."""

from __future__ import annotations

import os
import time
from pathlib import Path

TRASH_DIR = ".trash"


def move_to_trash(path: Path, trash_root: Path | None = None, relative: Path | None = None) -> Path:
    """Move `path` (file or folder) to `<trash_root>/<timestamp>/<relative>` and return the new place.

    `trash_root` defaults to a `.trash` folder beside `path`; it is on the same file system,
    so the move is a rename and cannot leave half a copy behind. `relative` (default: the name)
    keeps where it came from when the name alone does not say (a dataset's `train/good`).
    """
    path = Path(path)
    root = Path(trash_root) if trash_root else path.parent / TRASH_DIR
    relative = Path(relative) if relative else Path(path.name)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target_dir = root / stamp
    n = 1
    while (target_dir / relative).exists():
        n += 1
        target_dir = root / f"{stamp}-{n}"
    target = target_dir / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, target)
    return target


def restore_from_trash(trashed: Path, original: Path) -> Path:
    """Undo: put a trashed file or folder back, refusing to overwrite anything."""
    if original.exists():
        raise FileExistsError(f"{original} exists again; not overwriting it")
    original.parent.mkdir(parents=True, exist_ok=True)
    os.replace(trashed, original)
    return original
