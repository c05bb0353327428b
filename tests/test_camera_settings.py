"""Camera settings that hold (issue 22 item 2): set when a source opens, read back, recorded with the good
parts and compared at inspection; cameras found by name. The synthetic camera honours the settings."""

from __future__ import annotations

import json
import sys

import cv2
import numpy as np
import pytest

from capture.cameras import Camera, find_camera, list_cameras
from capture.errors import GutcheckError
from capture.session import captured_camera
from capture.sources import SyntheticSource, camera_lines, open_source
from tests.test_cli import assert_one_line_error, gutcheck


def frames(spec: str, n: int) -> list[np.ndarray]:
    source = open_source(spec)
    return [source.read().image for _ in range(n)]


def test_the_synthetic_camera_takes_exposure_gain_and_focus():
    plain = np.stack(frames("synthetic:seed=5,parts=2", 6)).astype(np.float64)
    darker = np.stack(frames("synthetic:seed=5,parts=2,exposure=-1", 6)).astype(np.float64)
    ratio = darker.mean() / plain.mean()
    print(f"\nexposure -1 stop: mean brightness x{ratio:.3f}")
    assert 0.45 < ratio < 0.55
    gained = np.stack(frames("synthetic:seed=5,parts=2,exposure=-1,gain=100", 6)).astype(np.float64)
    assert abs(gained.mean() / plain.mean() - 1.0) < 0.05
    sharp = cv2.Laplacian(frames("synthetic:seed=5,parts=2", 1)[0], cv2.CV_64F).var()
    blurred = cv2.Laplacian(frames("synthetic:seed=5,parts=2,focus=80", 1)[0], cv2.CV_64F).var()
    assert blurred < sharp / 3
    source = open_source("synthetic:exposure=-1,auto_exposure=0")
    assert source.camera_readback == {"exposure": -1.0, "auto_exposure": 0.0} and source.camera_problems == []


def test_auto_exposure_follows_the_light_and_locked_exposure_does_not():
    """New lamps from part 10 on (30 % brighter): a locked camera passes the change on to the model, an
    automatic one pulls the picture back toward the brightness it started with, as a webcam does."""
    def brightness(spec: str) -> tuple[float, float]:
        source = open_source(spec)
        means = [(f.meta["part_number"], f.image.mean()) for f in iter(source.read, None)]
        before = np.mean([m for p, m in means if p is not None and p < 10])
        after = np.mean([m for p, m in means if p is not None and p >= 14])
        return before, after

    locked = brightness("synthetic:seed=1,parts=24,light_from=10,light=1.3,auto_exposure=0")
    auto = brightness("synthetic:seed=1,parts=24,light_from=10,light=1.3,auto_exposure=1")
    print(f"\nlight x1.3: locked {locked[1] / locked[0]:.3f}, auto {auto[1] / auto[0]:.3f}")
    assert locked[1] / locked[0] > 1.2
    assert auto[1] / auto[0] < 1.1


def test_settings_that_differ_from_the_good_parts_are_named(tmp_path):
    source = SyntheticSource(camera={"exposure": -1.0})
    assert camera_lines(source, {"exposure": -1.0}) == []
    lines = camera_lines(source, {"exposure": 0.0, "focus": 40.0})
    assert len(lines) == 1
    assert "exposure -1 (the good parts: 0)" in lines[0] and "focus not set (the good parts: 40)" in lines[0]
    cv2.imwrite(str(tmp_path / "part.png"), np.zeros((8, 8, 3), np.uint8))
    assert camera_lines(open_source(f"folder:{tmp_path}"), {"exposure": 0.0}) == []  # pictures, no camera


def test_a_camera_value_out_of_range_is_one_line():
    with pytest.raises(GutcheckError, match="option exposure=1000000: must be between -20 and 100000"):
        open_source("cam:0,exposure=1000000")
    with pytest.raises(GutcheckError, match="unknown cam source option 'exposur'"):
        open_source("cam:0,exposur=1")


def fake_linux_cameras(tmp_path):
    """A /sys/class/video4linux and /dev/v4l/by-id as Linux lays them out for a microscope (two nodes:
    pictures and metadata) and a webcam."""
    sysfs, by_id, dev = tmp_path / "sys", tmp_path / "by-id", tmp_path / "dev"
    for d in (sysfs, by_id, dev):
        d.mkdir()
    for n, name, index in ((0, "Integrated Webcam", 0), (1, "Integrated Webcam", 1), (2, "HD USB Microscope", 0),
                           (3, "HD USB Microscope", 1)):
        (sysfs / f"video{n}").mkdir()
        (sysfs / f"video{n}" / "name").write_text(name + "\n")
        (sysfs / f"video{n}" / "index").write_text(f"{index}\n")
        (dev / f"video{n}").write_text("")
    for link, n in (("usb-Vendor_HD_USB_Microscope_0001-video-index0", 2),
                    ("usb-Vendor_HD_USB_Microscope_0001-video-index1", 3),
                    ("usb-CN0XYZ_Integrated_Webcam-video-index0", 0)):
        (by_id / link).symlink_to(dev / f"video{n}")
    return sysfs, by_id


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the listing read here is Linux's")
def test_cameras_are_listed_by_name_and_stable_id_and_found_by_either(tmp_path):
    sysfs, by_id = fake_linux_cameras(tmp_path)
    cameras = list_cameras(by_id, sysfs)
    assert [(c.index, c.name, c.stable_id) for c in cameras] == [
        (0, "Integrated Webcam", "usb-CN0XYZ_Integrated_Webcam-video-index0"),
        (2, "HD USB Microscope", "usb-Vendor_HD_USB_Microscope_0001-video-index0")]
    assert find_camera("microscope", cameras).index == 2
    assert find_camera("usb-CN0XYZ_Integrated_Webcam-video-index0", cameras).index == 0
    with pytest.raises(GutcheckError, match="no camera named 'endoscope'; there are: cam:0 Integrated Webcam"):
        find_camera("endoscope", cameras)
    with pytest.raises(GutcheckError, match="2 cameras fit 'usb'"):
        find_camera("usb", cameras)
    with pytest.raises(GutcheckError, match="this computer has no camera connected"):
        find_camera("microscope", [])
    assert Camera(0, "x", "", 0).device == 0


def test_cameras_command_and_cam_name_on_a_machine_without_cameras(tmp_path):
    listed = gutcheck("cameras")
    assert listed.returncode == 0 and listed.stdout.strip()
    if list_cameras():
        pytest.skip("this machine has cameras")
    assert listed.stdout.strip() == "no cameras found"
    refused = gutcheck("capture", "--source", "cam:microscope", "--part", "p", "--datasets", tmp_path, "--count", "1")
    assert_one_line_error(refused, "no camera named 'microscope': this computer has no camera connected")
    assert not (tmp_path / "p").exists()


def test_capture_records_the_camera_settings_and_the_build_keeps_them(tmp_path):
    run = gutcheck("capture", "--source", "synthetic:seed=3,parts=6,exposure=-0.5,auto_exposure=0", "--part",
                   "bracket", "--datasets", tmp_path, "--count", "3")
    assert run.returncode == 0, run.stderr
    root = tmp_path / "bracket"
    records = [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(r["camera"] == {"exposure": -0.5, "auto_exposure": 0.0} for r in records)
    files = sorted((root / "train" / "good").iterdir())
    assert captured_camera(root, files) == ({"exposure": -0.5, "auto_exposure": 0.0}, "")
    # one more image, another exposure: the most common is recorded, and the build says so
    again = gutcheck("capture", "--source", "synthetic:seed=4,parts=3,exposure=0", "--part", "bracket",
                     "--datasets", tmp_path, "--count", "1")
    assert again.returncode == 0, again.stderr
    camera, note = captured_camera(root, sorted((root / "train" / "good").iterdir()))
    assert camera == {"exposure": -0.5, "auto_exposure": 0.0} and "2 different camera settings" in note


def test_a_driver_that_refuses_a_setting_is_named(tmp_path):
    """A real VideoCapture that has no exposure control (a video file's decoder) refuses the value."""
    from capture.sources import apply_camera_settings

    path = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 32))
    for _ in range(3):
        writer.write(np.zeros((32, 32, 3), np.uint8))
    writer.release()
    cap = cv2.VideoCapture(path)
    try:
        assert cap.isOpened()
        readback, problems = apply_camera_settings(cap, {"exposure": -6.0, "auto_exposure": 0.0})
    finally:
        cap.release()
    print(f"\n{problems}")
    assert set(readback) == {"exposure", "auto_exposure"}
    assert any(p.startswith("exposure=-6 ") for p in problems)


def test_inspect_says_when_the_camera_differs_from_the_good_parts_and_strict_refuses(tiny_bundle, tmp_path):
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(tiny_bundle, copy)
    meta = json.loads((copy / "bundle.json").read_text())
    meta["provenance"]["camera"] = {"exposure": 0.0, "auto_exposure": 0.0}  # as captured
    (copy / "bundle.json").write_text(json.dumps(meta))
    source = "synthetic:seed=2,parts=2,exposure=-1,auto_exposure=0"
    warned = gutcheck("inspect", "--model", copy, "--source", source, "--mode", "continuous")
    assert warned.returncode == 0, warned.stderr
    assert "gutcheck: warning: synthetic:" in warned.stderr and "exposure -1 (the good parts: 0)" in warned.stderr
    refused = gutcheck("inspect", "--model", copy, "--source", source, "--mode", "continuous", "--strict")
    assert_one_line_error(refused, "exposure -1 (the good parts: 0)", "--strict refuses")
    assert refused.stdout == ""
    same = gutcheck("inspect", "--model", copy, "--source", "synthetic:seed=2,parts=2,exposure=0,auto_exposure=0",
                    "--mode", "continuous", "--strict")
    assert same.returncode == 0 and "warning" not in same.stderr
