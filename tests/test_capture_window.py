"""The capture window in a real Tk window under Xvfb, driven with the synthetic source."""

from __future__ import annotations

import time

import numpy as np
from PIL import Image

from capture.imageio import list_images
from capture.session import CaptureSession, CaptureSettings, DatasetWriter
from capture.sources import open_source
from tests.conftest import screenshot


def pump(root, until, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        root.update()
        if until():
            return True
        time.sleep(0.01)
    return False


def test_capture_window_captures_parts_and_deletes_with_undo(xvfb_display, tmp_path):
    import ttkbootstrap as ttk

    from app.capture_window import CaptureWindow

    session = CaptureSession(open_source("synthetic:seed=2,parts=12,defects=0,fps=60"),
                             DatasetWriter(tmp_path, "nut"), CaptureSettings(mode="trigger"))
    root = ttk.Window(themename="flatly")
    root.geometry("1150x620")
    window = CaptureWindow(root, session, count=8, confirm=lambda *a: True)
    try:
        window.toggle()
        assert pump(root, lambda: session.captured >= 8, 60), f"captured only {session.captured}"
        pump(root, lambda: False, 0.3)
        assert window.counter.cget("text") == f"{session.captured} images"
        shot = screenshot(root, "capture_window")
        pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
        assert pixels.std() > 20  # a drawn window, not a blank one
        folder = tmp_path / "nut" / "train" / "good"
        n = len(list_images(folder))
        assert n >= 8
        window.delete_images()
        assert not folder.exists()
        window.undo_delete()
        assert len(list_images(folder)) == n
        window.source_var.set("cam:9")
        window.open_source()
        assert "cannot open" in window.status.cget("text")
    finally:
        window.close()
