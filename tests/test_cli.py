"""The `gutcheck` command as a user meets it: help for every subcommand, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from capture.synthetic import write_dataset

SUBCOMMANDS = ["capture", "build", "inspect", "dashboard", "demo"]


def gutcheck(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "app.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, stdin=subprocess.DEVNULL, timeout=600)


def assert_one_line_error(proc, *fragments):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("gutcheck: error:")]
    assert len(lines) == 1, proc.stderr
    for f in fragments:
        assert f in lines[0]


def test_top_level_help_lists_every_subcommand():
    proc = gutcheck("--help")
    assert proc.returncode == 0
    for name in SUBCOMMANDS:
        assert name in proc.stdout


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_subcommand_has_help(name):
    proc = gutcheck(name, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: gutcheck {name}")


def test_build_on_empty_dataset_folder_is_one_line_error(tmp_path):
    (tmp_path / "part" / "train" / "good").mkdir(parents=True)
    proc = gutcheck("build", "--data", tmp_path / "part", "--out", tmp_path / "m")
    assert_one_line_error(proc, "no readable good images")
    assert not (tmp_path / "m").exists()


def test_build_on_missing_folder_is_one_line_error(tmp_path):
    proc = gutcheck("build", "--data", tmp_path / "nothing", "--out", tmp_path / "m")
    assert_one_line_error(proc, "no such dataset folder")


def test_build_with_only_corrupt_images_lists_them(tmp_path):
    good = tmp_path / "part" / "train" / "good"
    good.mkdir(parents=True)
    (good / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    proc = gutcheck("build", "--data", tmp_path / "part", "--out", tmp_path / "m")
    assert_one_line_error(proc, "no readable good images", "1 unreadable")


def test_inspect_corrupt_image_is_one_line_error_and_nonzero(tiny_bundle, small_dataset, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is not an image")
    good = small_dataset / "test" / "good" / "000.png"
    proc = gutcheck("inspect", "--model", tiny_bundle, good, bad)
    assert_one_line_error(proc, "bad.png", "not a readable image")
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == 1 and rows[0]["verdict"] in ("ok", "anomaly")


def test_inspect_with_bad_model_path_is_one_line_error(tmp_path):
    data = write_dataset(tmp_path / "d", n_train=1, n_test_good=0, n_test_defect=0, size=32)
    proc = gutcheck("inspect", "--model", tmp_path / "nope", data / "train" / "good" / "000.png")
    assert_one_line_error(proc, "no such model bundle")
