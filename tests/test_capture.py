"""Capture: every source on small real files, the part trigger, framing, atomic writes, trash and
undo, quality gates, and clear messages for bad sources."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from capture.errors import GutcheckError
from capture.framing import Framing
from capture.imageio import list_images, read_image
from capture.session import CaptureSession, CaptureSettings, DatasetWriter, QualityGates, summarize
from capture.sources import open_source
from capture.synthetic import random_spec, render


def _frames(n=12, size=96):
    rng = np.random.default_rng(0)
    return [render(random_spec(rng), size)[0] for _ in range(n)]


def test_folder_source_reads_sorted_and_counts_unreadable(tmp_path):
    for i, img in enumerate(_frames(5)):
        cv2.imwrite(str(tmp_path / f"{i:02d}.png"), img)
    (tmp_path / "02b.png").write_bytes(b"junk")
    src = open_source(f"folder:{tmp_path}")
    frames = list(src)
    assert [os.path.basename(f.meta["file"]) for f in frames] == [f"{i:02d}.png" for i in range(5)]
    assert src.failed_reads == 1


def test_video_file_source_reads_every_frame(tmp_path):
    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (96, 96))
    assert writer.isOpened()
    for img in _frames(12):
        writer.write(img)
    writer.release()
    frames = list(open_source(f"file:{path}"))
    assert len(frames) == 12
    assert frames[0].image.shape == (96, 96, 3)


def test_synthetic_source_carries_the_truth():
    frames = list(open_source("synthetic:seed=1,parts=3,defects=0.34,size=96"))
    assert {f.meta["part_number"] for f in frames} == {None, 1, 2, 3}
    assert sum(1 for t in {f.meta["part_number"]: f.meta["truth"] for f in frames if f.meta["part_number"]}.values()
               if t != "good") == 1


@pytest.mark.parametrize("spec, words", [
    ("bogus", "unknown source"), ("cam:x", "no camera named 'x'"), ("cam:7", "cannot open"),
    ("file:/nowhere.mp4", "no such video file"), ("folder:/nowhere", "no such folder"),
    ("synthetic:parts", "expected name=value"), ("synthetic:parts=many", "parts=.many.: not an integer"),
])
def test_bad_sources_are_clear_errors(spec, words):
    with pytest.raises(GutcheckError, match=words):
        open_source(spec)


def test_missing_camera_from_the_command_line_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "app.cli", "capture", "--source", "cam:9", "--part", "p",
                           "--datasets", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["gutcheck: error: cam:9: cannot open it (no such camera, file or "
                                                "stream, or it is busy)"]


def test_trigger_captures_exactly_one_image_per_part(tmp_path):
    src = open_source("synthetic:seed=4,parts=12,defects=0")
    session = CaptureSession(src, DatasetWriter(tmp_path, "nut"), CaptureSettings(mode="trigger"))
    parts_seen = []
    while (event := session.step()) is not None:
        if event.saved:
            parts_seen.append(event.frame.meta["part_number"])
    assert parts_seen == list(range(1, 13))
    assert len(list_images(tmp_path / "nut" / "train" / "good")) == 12
    manifest = [json.loads(line) for line in (tmp_path / "nut" / "manifest.jsonl").read_text().splitlines()]
    assert len(manifest) == 12 and all("sharpness" in m["quality"] and m["source"] for m in manifest)


def test_interval_mode_and_duplicate_gate(tmp_path):
    still = _frames(1)[0]
    for i in range(6):
        cv2.imwrite(str(tmp_path / f"{i}.png"), still)
    session = CaptureSession(open_source(f"folder:{tmp_path}"), DatasetWriter(tmp_path / "ds", "p"),
                             CaptureSettings(mode="interval", interval_ms=0))
    events = [e for e in iter(session.step, None) if e.saved or e.rejected]
    assert session.captured == 1
    assert session.rejected == {"near-duplicate of the previous image": 5}
    assert all("duplicate" in e.rejected for e in events[1:])


def test_blur_and_exposure_gates():
    img = _frames(1, 256)[0]
    gates = QualityGates()
    assert gates.check(img, None)[0] is None
    assert "blurred" in gates.check(cv2.GaussianBlur(img, (0, 0), 6), None)[0]
    assert "exposed" in gates.check(np.clip(img.astype(int) * 4, 0, 255).astype(np.uint8), None)[0]


@pytest.mark.parametrize("dx, dy", [(-30, 0), (25, -20), (0, 40), (-45, -45)])
def test_framing_centres_a_shifted_part_within_2_px(dx, dy):
    size = 320
    image, _ = render(random_spec(np.random.default_rng(0)), size)
    shifted = cv2.warpAffine(image, np.float32([[1, 0, dx], [0, 1, dy]]), (size, size),
                             borderMode=cv2.BORDER_REPLICATE)
    framing = Framing(crop=240)
    cx, cy = framing.part_centre(shifted)
    ref_x, ref_y = framing.part_centre(image)
    assert abs(cx - (ref_x + dx)) <= 2 and abs(cy - (ref_y + dy)) <= 2
    x, y, w, h = framing.box(shifted)
    assert (w, h) == (240, 240)
    assert abs(x + w / 2 - cx) <= 1 or x in (0, size - w)  # centred unless clamped at the border
    assert abs(y + h / 2 - cy) <= 1 or y in (0, size - h)


def test_framing_is_bounds_safe_and_roi_is_checked():
    image = _frames(1, 96)[0]
    assert Framing(crop=500).apply(image).shape[:2] == (96, 96)
    assert Framing(roi=(10, 10, 50, 40)).apply(image).shape[:2] == (40, 50)
    with pytest.raises(GutcheckError, match="does not fit"):
        Framing(roi=(50, 50, 80, 80)).apply(image)


WRITER = """
import sys, numpy as np
from pathlib import Path
from capture.imageio import write_image_atomic
rng = np.random.default_rng(0)
big = rng.integers(0, 255, (1500, 1500, 3), dtype=np.uint8)
i = 0
print("started", flush=True)
while True:
    write_image_atomic(Path(sys.argv[1]) / f"{i:05d}.png", big)
    i += 1
"""


def test_a_write_killed_half_way_leaves_no_partial_file(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "started"
    time.sleep(1.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = list_images(tmp_path)
    assert finished, "the writer did not get to write anything"
    for path in finished:
        assert read_image(path).shape == (1500, 1500, 3)  # every visible file is complete
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert all(name.endswith(".tmp") for name in leftovers)  # at most the hidden temp file in flight


def test_trash_and_undo_round_trip(tmp_path):
    writer = DatasetWriter(tmp_path, "nut")
    for img in _frames(3):
        writer.write(img, {})
    before = sorted(p.name for p in list_images(writer.folder))
    handle = writer.trash_images()
    assert not writer.folder.exists()
    assert sorted(p.name for p in list_images(handle[0])) == before
    DatasetWriter.undo_trash(handle)
    assert sorted(p.name for p in list_images(writer.folder)) == before


def test_training_split_takes_good_images_only(tmp_path):
    with pytest.raises(GutcheckError, match="good images only"):
        DatasetWriter(tmp_path, "nut", "train", "scratch")


def test_dataset_summary_counts_and_warns(tmp_path):
    from capture.synthetic import write_dataset

    root = write_dataset(tmp_path / "nut", n_train=5, n_test_good=2, n_test_defect=1, size=64)
    (root / "train" / "good" / "bad.png").write_bytes(b"nope")
    (root / "train" / "good" / "copy.png").write_bytes((root / "train" / "good" / "000.png").read_bytes())
    s = summarize(root)
    assert s["counts"]["train/good"] == 6 and s["counts"]["test/scratch"] == 1
    assert s["unreadable"] == ["train/good/bad.png"]
    assert len(s["duplicates"]) == 1
    proc = subprocess.run([sys.executable, "-m", "app.cli", "dataset", "summary", "nut", "--datasets",
                           str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "warning: only 6 good training images" in proc.stdout
