"""`gutcheck build --update`: new good images join a bundle's density memory and the thresholds are
calibrated again, without retraining; a new bundle beside the old, provenance listing both sets."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from capture.errors import GutcheckError
from capture.synthetic import write_dataset
from model_builder.bundle import load_bundle, read_meta
from model_builder.dataset import load_test


def brighter(folder, factor: float):
    """The same part under new lighting: every good image of a dataset (train and test) made brighter."""
    import cv2

    for path in sorted([*(folder / "train" / "good").iterdir(), *(folder / "test" / "good").iterdir()]):
        image = cv2.imread(str(path))
        cv2.imwrite(str(path), np.clip(image.astype(np.float32) * factor, 0, 255).astype(np.uint8))
    return folder


@pytest.fixture(scope="module")
def feature_bundle(small_feature_bundle):
    return small_feature_bundle.parent  # read only: every update writes elsewhere


def test_update_adds_new_looks_and_recalibrates_without_training(feature_bundle, tmp_path):
    from model_builder.update import update

    new = brighter(write_dataset(tmp_path / "new", seed=8, n_train=20, n_test_good=6, n_test_defect=3, size=96), 1.3)
    old = load_bundle(feature_bundle / "m")
    said = []
    result = update(feature_bundle / "m", new, tmp_path / "m2", show_progress=False, log=said.append)
    updated = load_bundle(tmp_path / "m2")
    prov = updated.info.provenance
    assert prov.dataset == old.info.provenance.dataset and len(prov.added) == 1
    assert prov.added[0].images + prov.added[0].validation_images == 20
    assert prov.added[0].from_model == old.info.model_id and updated.info.model_id != old.info.model_id
    assert len(updated.density.points_) > len(old.density.points_)
    # the model is the same: no retraining
    for a, b in zip(old.model.get_weights(), updated.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # the old calibration images still there: the new one covers old and new held-out goods
    assert updated.info.calibration.validation_images == old.info.calibration.validation_images + \
        prov.added[0].validation_images
    # good parts under the new light look less strange to the updated model
    x = updated.preprocessing.apply_batch([im for im, lab in zip(load_test(new).images, load_test(new).labels)
                                           if lab == "good"])
    def rejects(bundle):  # the share of these good parts each half of the rule rejects
        s = bundle.scorer.score_inputs(x)
        return (s.density < bundle.thresholds.density).mean(), (s.error > bundle.thresholds.reconstruction).mean()

    (dens_before, err_before), (dens_after, err_after) = rejects(old), rejects(updated)
    print(f"\nnew-light good parts rejected by the density: {dens_before:.0%} before the update, {dens_after:.0%} "
          f"after; by the reconstruction error (not retrained): {err_before:.0%} before, {err_after:.0%} after; "
          f"update took {result.seconds:.1f} s")
    assert dens_before >= 2 / 3 and dens_after <= 1 / 3  # the density learned the new look
    assert err_after <= err_before  # the error threshold was calibrated again on old and new goods
    assert any("added 16 good images" in line for line in said), said


def test_update_through_the_cli_and_what_it_refuses(feature_bundle, tiny_bundle, tmp_path):
    new = write_dataset(tmp_path / "new", seed=9, n_train=10, n_test_good=0, n_test_defect=0, size=96)

    def gutcheck(*args):
        return subprocess.run([sys.executable, "-m", "app.cli", "build", *map(str, args), "--quiet"],
                              capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)

    proc = gutcheck("--update", feature_bundle / "m", "--data", new, "--out", tmp_path / "m3")
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and read_meta(tmp_path / "m3")["provenance"]["added"][0]["images"] == 8
    again = gutcheck("--update", feature_bundle / "m", "--data", new, "--out", tmp_path / "m3")
    assert again.returncode == 2 and "already exists" in again.stderr  # never overwritten without --force
    mixed = gutcheck("--update", feature_bundle / "m", "--data", new, "--out", tmp_path / "m4", "--epochs", "5")
    assert mixed.returncode == 2 and "--epochs cannot apply" in mixed.stderr
    other = gutcheck("--update", tiny_bundle, "--data", new, "--out", tmp_path / "m5")
    assert other.returncode == 2 and "adds images to a patch density" in other.stderr
    assert not (tmp_path / "m4").exists() and not (tmp_path / "m5").exists()
    assert json.loads((feature_bundle / "m" / "bundle.json").read_text())["provenance"]["added"] == []


def damaged_pngs(folder: Path, n: int = 10) -> list[Path]:
    """PNG files broken the ways a copy goes wrong: cut short, a flipped byte, not a PNG at all."""
    import cv2

    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    png = bytearray(cv2.imencode(".png", image)[1].tobytes())
    paths = []
    for i in range(n):
        data = bytearray(png)
        if i % 3 == 0:
            data = data[:60 + 10 * i]
        elif i % 3 == 1:
            data[80 + i] ^= 0xFF
        else:
            data = bytearray(b"not a png at all")
        paths.append(folder / f"zz_damaged{i}.png")
        paths[-1].write_bytes(bytes(data))
    return paths


def test_update_over_damaged_pngs_says_one_line_each_and_opencv_says_nothing(small_feature_bundle, small_dataset,
                                                                             tmp_path, capfd):
    """f6f4489: 10 damaged PNGs gave OpenCV's and libpng's own lines on stderr before ours."""
    from app.cli import main

    data = tmp_path / "more"
    shutil.copytree(small_dataset, data)
    damaged = damaged_pngs(data / "train" / "good")
    code = main(["build", "--update", str(small_feature_bundle), "--data", str(data), "--out", str(tmp_path / "m2"),
                 "--quiet"])
    out, err = capfd.readouterr()  # the file descriptors: libpng writes to fd 2 itself
    assert code == 0
    skipped = [line for line in out.splitlines() if line.startswith("skipped ")]
    assert sorted(line.split(":")[0].removeprefix("skipped ") for line in skipped) == sorted(map(str, damaged))
    assert not [line for line in err.splitlines() if "libpng" in line or "WARN" in line or "grfmt" in line], err
