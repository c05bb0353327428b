"""The `gutcheck` command as a user meets it: help for every subcommand, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from capture.synthetic import write_dataset

SUBCOMMANDS = ["capture", "build", "inspect", "dashboard", "demo", "dataset", "hardware"]


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


@pytest.mark.parametrize("replug", [True, False])
def test_a_conveyor_link_that_drops_during_inspection_is_in_the_output(tiny_bundle, tmp_path, replug):
    """Issue 14: a link that drops later is shown and counted. Every JSON line says the conveyor link's
    state; the end says how many verdicts were delivered and how often the link dropped; verdicts that
    never reached the belt make the run fail (one line, exit 2)."""
    import time

    from app.links.simulators import ConveyorSimulator
    from tests.ptydevice import PtyDevice

    sim = ConveyorSimulator(PtyDevice(tmp_path / "conveyor")).start()
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "inspect", "--model", str(tiny_bundle), "--source",
                             "synthetic:seed=4,parts=12,fps=40", "--mode", "continuous", "--conveyor", sim.url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    out = []
    try:
        for line in proc.stdout:  # inspection is under way: pull the cable (and put it back)
            out.append(line)
            if len(out) == 20:
                sim.unplug()
                unplugged = time.monotonic()
            if replug and len(out) > 20 and sim.device.master is None and time.monotonic() - unplugged > 1.5:
                sim.plug()
        proc.wait(60)
        stderr = proc.stderr.read()
    finally:
        proc.kill()
        sim.close()
    proc = subprocess.CompletedProcess(proc.args, proc.returncode, "".join(out), stderr)
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    states = [line["conveyor_link"] for line in lines]
    print(f"\nreplug={replug}: exit {proc.returncode}; link states seen: {sorted(set(states))}; "
          f"{proc.stderr.strip()}")
    assert "connected" in states and "lost" in states
    summary = [ln for ln in proc.stderr.splitlines() if ln.startswith("gutcheck: conveyor:")]
    assert len(summary) == 1 and "link dropped 1 times" in summary[0]
    if replug:
        assert proc.returncode == 0 and " 0 not delivered" in summary[0]
    else:
        assert_one_line_error(proc, "did not reach the conveyor", "watchdog has stopped the belt")
        assert proc.returncode == 2


def test_dataset_summary_trash_and_restore_keep_each_split_apart(tmp_path):
    """Issue 15: with train/good and test/good both trashed, `restore --split train` put test images
    into train/good (test images leaking into training). Each split comes back to itself only."""
    data = tmp_path / "datasets"
    write_dataset(data / "part", n_train=6, n_test_good=3, n_test_defect=2, size=32)
    train = sorted(p.name for p in (data / "part" / "train" / "good").iterdir())
    test = sorted(p.name for p in (data / "part" / "test" / "good").iterdir())
    proc = gutcheck("dataset", "summary", "part", "--datasets", data)
    assert proc.returncode == 0 and "train" in proc.stdout and "test" in proc.stdout, proc.stderr
    for split in ("train", "test"):  # trash train first, then test: test is the newest in the trash
        proc = gutcheck("dataset", "trash", "part", "--split", split, "--label", "good", "--datasets", data)
        assert proc.returncode == 0, proc.stderr
        assert not (data / "part" / split / "good").exists()
    proc = gutcheck("dataset", "restore", "part", "--split", "train", "--label", "good", "--datasets", data)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (data / "part" / "train" / "good").iterdir()) == train
    assert not (data / "part" / "test" / "good").exists()
    proc = gutcheck("dataset", "restore", "part", "--split", "test", "--label", "good", "--datasets", data)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (data / "part" / "test" / "good").iterdir()) == test
    assert_one_line_error(gutcheck("dataset", "restore", "part", "--split", "test", "--label", "good",
                                   "--datasets", data), "nothing of test/good")


def test_a_folder_source_of_still_images_scores_every_image(tiny_bundle, small_dataset):
    """Issue 15: `--source folder:STILLS` printed nothing (the part trigger waits for motion that
    still images never have); each image is now a part, as when the folder is given as files."""
    folder = small_dataset / "test" / "good"
    n = len(list(folder.iterdir()))
    proc = gutcheck("inspect", "--model", tiny_bundle, "--source", f"folder:{folder}")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(lines) == n and {line["file"] for line in lines} == {str(p) for p in folder.iterdir()}
    as_files = [json.loads(line) for line in gutcheck("inspect", "--model", tiny_bundle, folder).stdout.splitlines()]
    assert [line["score"] for line in as_files] == [line["score"] for line in lines]  # one pipeline, one answer
