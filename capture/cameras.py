"""The cameras this computer has, by name and by an id that survives replugging.

Camera numbers (cam:0, cam:1) follow the order the system found the devices in and change when one is
replugged; a station's recipe names its camera instead (cam:NAME). On Linux the names come from
/sys/class/video4linux and the stable ids from /dev/v4l/by-id (the USB vendor, product and serial); on
other systems OpenCV is asked for the numbers that open, and the name is the number.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from capture.errors import GutcheckError

BY_ID = Path("/dev/v4l/by-id")
SYSFS = Path("/sys/class/video4linux")
PROBED_INDEXES = 8  # numbers tried where the system has no listing of its own


@dataclass(frozen=True)
class Camera:
    index: int  # what cam:N opens today
    name: str  # what the device calls itself ("HD USB Microscope")
    stable_id: str  # the same after replugging ("usb-Vendor_HD_USB_Microscope_0001-video-index0"), or ""
    device: int | str  # what OpenCV opens: the number, or on Linux the device path


def list_cameras(by_id: Path = BY_ID, sysfs: Path = SYSFS) -> list[Camera]:
    """Every camera found, by number. Linux: capture nodes only (a webcam's metadata node is left out)."""
    if sys.platform.startswith("linux"):
        return _linux_cameras(by_id, sysfs)
    return _probed_cameras()


def _linux_cameras(by_id: Path, sysfs: Path) -> list[Camera]:
    ids: dict[str, str] = {}
    if by_id.is_dir():
        for link in sorted(by_id.iterdir()):
            ids.setdefault(os.path.basename(os.path.realpath(link)), link.name)
    found = []
    if sysfs.is_dir():
        for node in sysfs.iterdir():
            m = re.fullmatch(r"video(\d+)", node.name)
            if not m:
                continue
            stable = ids.get(node.name, "")
            if stable.endswith("index1"):
                continue  # a UVC camera's second node holds metadata, not pictures
            index_file = node / "index"
            if index_file.is_file() and index_file.read_text().strip() not in ("", "0"):
                continue  # not the device's first node: metadata, not pictures
            name = (node / "name").read_text(errors="replace").strip() if (node / "name").is_file() else node.name
            found.append(Camera(int(m.group(1)), name, stable, int(m.group(1))))
    return sorted(found, key=lambda c: c.index)


def _probed_cameras() -> list[Camera]:
    import cv2

    found = []
    for i in range(PROBED_INDEXES):
        cap = cv2.VideoCapture(i)
        if cap.isOpened():
            found.append(Camera(i, f"camera {i}", "", i))
        cap.release()
    return found


def find_camera(name: str, cameras: list[Camera] | None = None) -> Camera:
    """The one camera whose stable id or name is `name`, or holds it (case-insensitive); a name that
    fits none or several is a one-line GutcheckError that lists what there is."""
    cameras = list_cameras() if cameras is None else cameras
    wanted = name.strip().lower()
    exact = [c for c in cameras if wanted in (c.stable_id.lower(), c.name.lower())]
    matches = exact or [c for c in cameras if wanted in c.stable_id.lower() or wanted in c.name.lower()]
    if len(matches) == 1:
        return matches[0]
    listing = "; ".join(f"cam:{c.index} {c.name}" + (f" ({c.stable_id})" if c.stable_id else "") for c in cameras)
    if not matches:
        raise GutcheckError(f"no camera named {name!r}" + (f"; there are: {listing}" if cameras else
                                                          ": this computer has no camera connected"))
    raise GutcheckError(f"{len(matches)} cameras fit {name!r}: give more of the name or the id ({listing})")
