"""The synthetic part generator and conveyor stream: deterministic, masks where the defects are."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from capture.synthetic import (DEFECT_CLASSES, GOOD, PLATE_DEFECTS, conveyor_stream, random_spec, render,
                               render_plate, write_dataset)
from capture.trigger import PartTrigger


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = write_dataset(tmp_path / "a", seed=5, n_train=3, n_test_good=1, n_test_defect=1, size=64)
    b = write_dataset(tmp_path / "b", seed=5, n_train=3, n_test_good=1, n_test_defect=1, size=64)
    c = write_dataset(tmp_path / "c", seed=6, n_train=3, n_test_good=1, n_test_defect=1, size=64)
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert len(files) == 3 + 1 + 2 * len(DEFECT_CLASSES)
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert any((a / rel).read_bytes() != (c / rel).read_bytes() for rel in files)


def test_image_does_not_depend_on_how_many_are_made(tmp_path):
    small = write_dataset(tmp_path / "s", seed=1, n_train=2, n_test_good=0, n_test_defect=0, size=64)
    large = write_dataset(tmp_path / "l", seed=1, n_train=5, n_test_good=0, n_test_defect=0, size=64)
    assert (small / "train/good/001.png").read_bytes() == (large / "train/good/001.png").read_bytes()


def test_mvtec_layout_and_mask_names(tmp_path):
    root = write_dataset(tmp_path / "nut", seed=0, n_train=2, n_test_good=2, n_test_defect=2, size=64)
    assert sorted(p.name for p in (root / "test").iterdir()) == sorted((GOOD,) + DEFECT_CLASSES)
    for d in DEFECT_CLASSES:
        images = sorted(p.stem for p in (root / "test" / d).glob("*.png"))
        masks = sorted(p.stem.removesuffix("_mask") for p in (root / "ground_truth" / d).glob("*_mask.png"))
        assert images == masks
    assert not (root / "ground_truth" / GOOD).exists()


def test_a_misplaced_part_is_flawless_but_off_its_place():
    rng = np.random.default_rng(12)
    for _ in range(4):
        spec = random_spec(rng, "misplaced")
        image, mask = render(spec)
        clean, _ = render(dataclasses.replace(spec, defect=GOOD))
        assert set(np.unique(mask)) <= {0, 255} and 0.05 * mask.size < (mask > 0).sum() < 0.5 * mask.size
        diff = np.abs(image.astype(int) - clean.astype(int)).max(-1)
        assert np.median(diff[mask > 0]) > 30  # part where the belt should be, and the reverse
        # the same part, only moved: as bright as a good one
        assert abs(float(image.mean()) - float(clean.mean())) < 3


@pytest.mark.parametrize("defect", [d for d in DEFECT_CLASSES if d != "misplaced"])
def test_mask_marks_where_the_defect_changed_the_part(defect):
    rng = np.random.default_rng(11)
    for _ in range(4):
        spec = random_spec(rng, defect)
        image, mask = render(spec)
        clean, clean_mask = render(dataclasses.replace(spec, defect=GOOD))
        assert clean_mask.max() == 0
        assert set(np.unique(mask)) <= {0, 255}
        inside = mask > 0
        assert 20 < inside.sum() < 0.1 * mask.size
        diff = np.abs(image.astype(int) - clean.astype(int)).max(-1)
        # Pixels under the mask really changed; pixels far from it did not.
        assert np.median(diff[inside]) > 15
        far = cv2.dilate(mask, np.ones((9, 9), np.uint8)) == 0
        assert np.percentile(diff[far], 99.9) <= 2


def test_good_parts_vary_like_real_ones():
    rng = np.random.default_rng(0)
    a, _ = render(random_spec(rng))
    b, _ = render(random_spec(rng))
    assert 2 < np.abs(a.astype(int) - b.astype(int)).mean() < 40


def test_unknown_defect_is_refused():
    with pytest.raises(ValueError, match="unknown defect"):
        random_spec(np.random.default_rng(0), "rust")


def test_stream_phases_and_trigger_fires_once_per_part():
    frames = list(conveyor_stream(seed=2, n_parts=6, defect_rate=0.5, size=128))
    numbers = [f.part_number for f in frames if f.part_number is not None]
    assert sorted(set(numbers)) == [1, 2, 3, 4, 5, 6]
    assert sum(1 for f in frames if f.phase == "settled") == 6 * 5
    truths = {f.part_number: f.truth for f in frames if f.part_number}
    assert sum(t != GOOD for t in truths.values()) == 3
    trigger = PartTrigger()
    fired = [f for f in frames if trigger.update(f.image)]
    assert [f.part_number for f in fired] == [1, 2, 3, 4, 5, 6]
    assert all(f.phase == "settled" for f in fired)


@pytest.mark.parametrize("defect", PLATE_DEFECTS)
def test_plate_defects_are_thin_low_contrast_and_masked(defect):
    """The textured plate: the defect changes the picture only near its mask, and only a little."""
    rng = np.random.default_rng(5)
    for _ in range(3):
        spec = random_spec(rng, defect)
        image, mask = render_plate(spec)
        clean, clean_mask = render_plate(dataclasses.replace(spec, defect=GOOD))
        assert clean_mask.max() == 0 and set(np.unique(mask)) <= {0, 255}
        inside = mask > 0
        assert 3 < inside.sum() < 0.05 * mask.size
        diff = np.abs(image.astype(int) - clean.astype(int)).max(-1)
        assert 5 < np.median(diff[inside]) < 80  # visible, but not a blot
        far = cv2.dilate(mask, np.ones((15, 15), np.uint8)) == 0
        assert np.percentile(diff[far], 99.9) <= 1


def test_good_plates_differ_in_texture_and_light(tmp_path):
    root = write_dataset(tmp_path / "plate", seed=0, n_train=3, n_test_good=1, n_test_defect=1, size=64,
                         part="plate")
    assert sorted(p.name for p in (root / "test").iterdir()) == sorted((GOOD,) + PLATE_DEFECTS)
    a, b = (cv2.imread(str(root / "train" / "good" / f"00{i}.png")).astype(int) for i in (0, 1))
    assert np.abs(a - b).mean() > 5  # a new texture each piece, not one picture with noise
    with pytest.raises(ValueError, match="unknown synthetic part"):
        write_dataset(tmp_path / "x", part="gear")
