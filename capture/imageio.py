"""Reading and writing image files: any common format in, uint8 out, atomic writes."""

from __future__ import annotations

import os
import stat
import tempfile
import zlib
from pathlib import Path

import cv2
import numpy as np

from capture.errors import GutcheckError
from capture.platforms import set_mode

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

# Every file or camera that fails gets our own one-line message; OpenCV's log lines ("[ WARN:0@..]
# PNG input buffer is incomplete") would be a second, different one. OPENCV_LOG_LEVEL, when set,
# still wins: a technician debugging a camera turns them back on.
if "OPENCV_LOG_LEVEL" not in os.environ:
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def list_images(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name."""
    if not folder.is_dir():
        raise GutcheckError(f"{folder}: no such folder")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def to_bgr8(image: np.ndarray) -> np.ndarray:
    """Any decoded image (gray, BGR, BGRA; 8 or 16 bit; float 0..1) as 8-bit BGR."""
    if image.dtype == np.uint16:
        image = (image / 257.0 + 0.5).astype(np.uint8)
    elif image.dtype.kind == "f":
        image = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise GutcheckError(f"unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 1:
        return cv2.cvtColor(image[..., 0], cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise GutcheckError(f"unsupported image shape {image.shape}")


MAX_IMAGE_BYTES = 512 * 1024 * 1024  # a file larger than this is not a camera picture


def png_problem(data: np.ndarray) -> str | None:
    """What is wrong with a PNG file's chunks (truncated, a checksum that does not match), or None;
    None for data that is not PNG. Checked before decoding because libpng prints its own error
    line straight to stderr, which no log level silences."""
    raw = data.tobytes()
    if not raw.startswith(PNG_SIGNATURE):
        return None
    at = len(PNG_SIGNATURE)
    while at + 12 <= len(raw):
        length = int.from_bytes(raw[at:at + 4], "big")
        kind, end = raw[at + 4:at + 8], at + 12 + length
        if end > len(raw):
            return f"truncated in its {kind.decode('latin-1')!r} chunk"
        if zlib.crc32(raw[at + 4:at + 8 + length]) != int.from_bytes(raw[end - 4:end], "big"):
            return f"damaged: the checksum of its {kind.decode('latin-1')!r} chunk does not match"
        if kind == b"IEND":
            return None
        at = end
    return "truncated: it ends before its last chunk"


def read_image(path: Path) -> np.ndarray:
    """Read an image file as 8-bit BGR; a missing, unreadable or oversized file, or one that is not
    a regular file (a folder, a FIFO that would block), raises GutcheckError."""
    path = Path(path)
    try:
        info = path.stat()
    except OSError as exc:
        raise GutcheckError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not path.is_file():
        raise GutcheckError(f"{path}: not an image file (a folder, a pipe or a device)")
    if info.st_size > MAX_IMAGE_BYTES:
        raise GutcheckError(f"{path}: {info.st_size / 2**20:.0f} MB is too large for an image")
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise GutcheckError(f"{path}: cannot read ({exc.strerror or exc})") from None
    problem = png_problem(data)
    if problem:
        raise GutcheckError(f"{path}: not a readable image ({problem})")
    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except cv2.error:  # e.g. more pixels than OpenCV allows (a "decompression bomb")
        raise GutcheckError(f"{path}: not a readable image (too many pixels or a damaged file)") from None
    if image is None:
        raise GutcheckError(f"{path}: not a readable image (corrupt or unknown format)")
    return to_bgr8(image)


def folder_problem(folder: Path) -> str | None:
    """Why files could not be written into `folder` (created when first needed), or None. Creates
    nothing: a command checks its targets before it makes anything."""
    folder = Path(folder)
    for existing in (folder, *folder.parents):
        if existing.exists():
            if not existing.is_dir():
                return f"{existing} is a file, not a folder"
            if not os.access(existing, os.W_OK | os.X_OK):
                return f"{existing} is not writable"
            return None
    return None


def write_image_atomic(path: Path, image: np.ndarray) -> None:
    """Encode by the file's suffix into a temp file beside it, then rename into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise GutcheckError(f"{path}: cannot encode image")
    write_bytes_atomic(path, buf.tobytes())


FILE_MODE = 0o644  # what a file saved by an ordinary program gets under the usual umask 022
FOLDER_MODE = 0o755


def write_bytes_atomic(path: Path, data: bytes, new_mode: int = FILE_MODE) -> None:
    """Write bytes to a temp file in the same folder, fsync, and rename over `path`. A file that is
    replaced keeps its permissions (a settings file made private stays private); a new one gets
    `new_mode` (0600 for a file holding secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = new_mode
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        set_mode(fd, mode)  # mkstemp makes it private (0600); a new saved file is an ordinary one
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
