"""Model bundle v1: save -> load gives identical scores; bad bundles are refused clearly;
nothing is overwritten without --force and nothing is lost with it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from capture.errors import GutcheckError
from model_builder.bundle import META_FILE, load_bundle, read_meta, save_bundle
from model_builder.dataset import load_test


def test_loaded_bundle_scores_identically_to_the_built_one(small_dataset, tmp_path):
    from model_builder.build import BuildOptions, build

    options = BuildOptions(size=32, epochs=1, patience=1, architecture="prototype", density_preset="whitened")
    result = build(small_dataset, tmp_path / "m", options,
                   show_progress=False, log=lambda s: None)
    images = load_test(small_dataset).images[:8]
    before = result.bundle.scorer.score_images(images)
    loaded = load_bundle(tmp_path / "m")
    after = loaded.scorer.score_images(images)
    np.testing.assert_array_equal(before.reconstruction, after.reconstruction)
    np.testing.assert_array_equal(before.density, after.density)
    np.testing.assert_array_equal(before.error, after.error)
    np.testing.assert_array_equal(before.anomaly, after.anomaly)
    assert loaded.thresholds == result.bundle.thresholds


def test_bundle_json_says_what_the_tools_need(tiny_bundle):
    meta = read_meta(tiny_bundle)
    assert meta["format_version"] == 3
    assert meta["score_combination"] == "max"  # a pixel model under the OR rule: the rule's ranking
    assert meta["image_size"] == 32 and meta["color"] == "rgb"
    assert set(meta["thresholds"]) == {"density", "reconstruction", "rule"}
    assert meta["rule"] in ("and", "or")
    assert len(meta["provenance"]["dataset_fingerprint"]) == 64
    assert "tensorflow-cpu" in meta["provenance"]["versions"]
    lo, hi = meta["knob_ranges"]["reconstruction"]
    assert lo <= meta["thresholds"]["reconstruction"] <= hi
    assert meta["evaluation"]["images"]["good"] == 6


def _copy_with_meta(src, dst, **changes):
    shutil.copytree(src, dst)
    meta = json.loads((dst / META_FILE).read_text())
    meta.update(changes)
    (dst / META_FILE).write_text(json.dumps(meta))
    return dst


def test_bundle_is_readable_by_other_users_like_any_saved_folder(tiny_bundle):
    assert tiny_bundle.stat().st_mode & 0o777 == 0o755  # not mkdtemp's private 0700
    for name in ("bundle.json", "report.html", "history.json"):
        assert (tiny_bundle / name).stat().st_mode & 0o777 == 0o644, name  # not mkstemp's 0600


def test_newer_format_is_refused_with_a_clear_message(tiny_bundle, tmp_path):
    newer = _copy_with_meta(tiny_bundle, tmp_path / "newer", format_version=4)
    with pytest.raises(GutcheckError, match="format version 4 is not supported"):
        load_bundle(newer)
    other = _copy_with_meta(tiny_bundle, tmp_path / "other", format="something-else")
    with pytest.raises(GutcheckError, match="not a Gutcheck model bundle"):
        load_bundle(other)


def test_version_1_bundle_still_loads_and_scores_as_before(tiny_bundle, small_dataset, tmp_path):
    """A bundle written before detector v2 (format 1: no score combination, no map statistics)."""
    meta = json.loads((tiny_bundle / META_FILE).read_text())
    meta.pop("score_combination")
    old = _copy_with_meta(tiny_bundle, tmp_path / "v1", format_version=1)
    (old / META_FILE).write_text(json.dumps({k: v for k, v in meta.items() if k != "format_version"}
                                            | {"format_version": 1}))
    images = load_test(small_dataset).images[:4]
    a, b = load_bundle(tiny_bundle), load_bundle(old)
    assert b.combination == "max" and b.map_statistics is None
    np.testing.assert_array_equal(a.scorer.score_images(images).density, b.scorer.score_images(images).density)


def test_missing_or_damaged_parts_are_clear_errors(tiny_bundle, tmp_path):
    with pytest.raises(GutcheckError, match="no such model bundle"):
        load_bundle(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_bundle, broken)
    (broken / "model.keras").write_bytes(b"not a zip")
    with pytest.raises(GutcheckError, match="cannot load the model"):
        load_bundle(broken)


def test_existing_bundle_kept_without_force_and_trashed_with_it(tiny_bundle, tmp_path):
    bundle = load_bundle(tiny_bundle)
    target = tmp_path / "models" / "m"
    save_bundle(bundle, target)
    first_id = read_meta(target)["model_id"]
    with pytest.raises(GutcheckError, match="already exists"):
        save_bundle(bundle, target)
    bundle.info.model_id = "unsaved"  # as a new build's
    save_bundle(bundle, target, force=True)
    trashed = list((tmp_path / "models" / ".trash").glob("*/m"))
    assert len(trashed) == 1 and read_meta(trashed[0])["model_id"] == first_id
    assert not list(target.parent.glob(".m.*partial"))


def test_build_removes_the_partial_folders_of_killed_builds_but_not_of_running_ones(tiny_bundle, tmp_path):
    """Issue 14 item 6: hidden .partial folders of killed builds stayed forever."""
    import os
    import subprocess
    import sys
    import time

    from model_builder.bundle import remove_stale_partials

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    killed = tmp_path / f".m.{dead}.abc123.partial"
    running = tmp_path / f".m.{os.getppid()}.def456.partial"
    ancient = tmp_path / ".m.1.ghi789.partial"
    other = tmp_path / f".other.{dead}.jkl.partial"
    for folder in (killed, running, ancient, other):
        (folder / "model.keras").parent.mkdir()
        (folder / "model.keras").write_bytes(b"half")
    day_ago = time.time() - 2 * 24 * 3600
    os.utime(ancient, (day_ago, day_ago))
    removed = remove_stale_partials(tmp_path / "m")
    assert sorted(removed) == sorted([killed, ancient])
    assert running.is_dir() and other.is_dir()


def test_bundle_json_is_read_into_typed_records_and_written_back_unchanged(tiny_bundle, tmp_path):
    from model_builder.metadata import OutlierNote

    bundle = load_bundle(tiny_bundle)
    info = bundle.info
    assert isinstance(info.calibration.validation_images, int) and info.calibration.validation_images > 0
    assert all(isinstance(n, OutlierNote) for n in info.calibration.outliers)
    assert isinstance(info.training.epochs_run, int) and info.provenance.train_images > 0
    assert info.model_id == read_meta(tiny_bundle)["model_id"]
    save_bundle(bundle, tmp_path / "again")
    assert read_meta(tmp_path / "again") == read_meta(tiny_bundle)  # every key survives the typed round trip


def test_descriptive_sections_of_the_wrong_type_are_one_line_errors_and_extra_keys_are_ignored(tiny_bundle, tmp_path):
    meta = json.loads((tiny_bundle / META_FILE).read_text())
    wrong = _copy_with_meta(tiny_bundle, tmp_path / "wrong",
                            calibration={**meta["calibration"], "validation_images": "ten"})
    with pytest.raises(GutcheckError, match=r"calibration.validation_images must be a number.*rebuild"):
        load_bundle(wrong)
    wrong = _copy_with_meta(tiny_bundle, tmp_path / "wrong2", training=[1, 2])
    with pytest.raises(GutcheckError, match="training must be a table"):
        load_bundle(wrong)
    newer = _copy_with_meta(tiny_bundle, tmp_path / "newer", training={**meta["training"], "gpu": "none"},
                            something_new={"a": 1})
    assert load_bundle(newer).info.training.epochs_run == meta["training"]["epochs_run"]
