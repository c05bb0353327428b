"""Bad input, as a careless user or technician gives it: every case ends in exit code 2 and one
line `gutcheck: error: ...`, never a traceback, never a defect passed, and nothing on disk changed.

One case per line: (name, how to damage the files, command line, words the message must hold).
The command runs in this process (TensorFlow loads once); test_cli.py runs the real executable.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from capture.errors import GutcheckError
from capture.synthetic import write_dataset


def run(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def edit_meta(change):
    def damage(model: Path, work: Path) -> None:
        meta = json.loads((model / "bundle.json").read_text())
        meta = change(meta)
        (model / "bundle.json").write_text(json.dumps(meta))  # json.dumps writes NaN as a bare NaN
    return damage


def set_key(section: str, key: str, value):
    def change(meta):
        meta[section][key] = value
        return meta
    return change


def text_file(model: Path, work: Path) -> None:
    (work / "notes.txt").write_text("not a video\n")


def nothing(model: Path, work: Path) -> None:
    pass


def density_not_a_zip(model: Path, work: Path) -> None:
    (model / "density.npz").write_bytes(b"not a zip file at all")


def density_of_other_width(model: Path, work: Path) -> None:
    with np.load(model / "density.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["projection"] = arrays["projection"][:-3]  # expects latents 3 values shorter than the model's
    with open(model / "density.npz", "wb") as f:
        np.savez(f, **arrays)


def fifo(model: Path, work: Path) -> None:
    os.mkfifo(work / "pipe.png")


def bomb(model: Path, work: Path) -> None:
    """A PNG whose header claims 60 000 x 60 000 pixels: more than OpenCV decodes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    (work / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0))
                                    + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))


def dataset(model: Path, work: Path) -> None:
    write_dataset(work / "part", n_train=6, n_test_good=0, n_test_defect=0, size=32)


IMAGE = "{image}"
INSPECT = ["inspect", "--model", "{model}"]
CASES = [
    # issue 14 item 1: a defect must never pass
    ("NaN density threshold", edit_meta(set_key("thresholds", "density", float("nan"))), [*INSPECT, IMAGE], ["finite"]),
    ("NaN error threshold", edit_meta(set_key("thresholds", "reconstruction", float("nan"))), [*INSPECT, IMAGE], ["finite"]),
    ("infinite threshold", edit_meta(set_key("thresholds", "density", float("-inf"))), [*INSPECT, IMAGE], ["finite"]),
    ("threshold as a string", edit_meta(set_key("thresholds", "density", "-40")), [*INSPECT, IMAGE], ["finite"]),
    ("threshold null", edit_meta(set_key("thresholds", "reconstruction", None)), [*INSPECT, IMAGE], ["finite"]),
    ("NaN knob range", edit_meta(set_key("knob_ranges", "density", [float("nan"), 1.0])), [*INSPECT, IMAGE], ["knob_ranges"]),
    ("NaN good statistics", edit_meta(set_key("good_statistics", "density_spread", float("nan"))), [*INSPECT, IMAGE],
     ["good_statistics"]),
    ("bundle.json is a list", edit_meta(lambda meta: [meta]), [*INSPECT, IMAGE], ["not a Gutcheck model bundle"]),
    ("format version as a string", edit_meta(lambda meta: {**meta, "format_version": "2"}), [*INSPECT, IMAGE],
     ["format_version must be a whole number, not '2'"]),
    ("thresholds is a list", edit_meta(lambda meta: {**meta, "thresholds": [1, 2]}), [*INSPECT, IMAGE], ["thresholds"]),
    # issue 14 item 2: verdicts must not vanish
    ("conveyor port missing", nothing, [*INSPECT, "--source", "synthetic:parts=2", "--conveyor", "/dev/gutcheck-no-such-port"],
     ["conveyor port", "cannot be opened"]),
    ("conveyor with image files", nothing, [*INSPECT, IMAGE, "--conveyor", "loop://"], ["--conveyor", "--source"]),
    ("unknown source option", nothing, [*INSPECT, "--source", "synthetic:garbage=1"], ["unknown synthetic source option",
                                                                           "allowed"]),
    ("negative part count", nothing, [*INSPECT, "--source", "synthetic:parts=-5"], ["parts=-5", "between"]),
    ("NaN defect share", nothing, [*INSPECT, "--source", "synthetic:defects=nan"], ["defects=nan"]),
    ("not a number", nothing, [*INSPECT, "--source", "synthetic:seed=x"], ["seed", "integer"]),
    ("light without light_from", nothing, [*INSPECT, "--source", "synthetic:light=3"], ["light_from=PART go together"]),
    ("light_from without light", nothing, [*INSPECT, "--source", "synthetic:light_from=5"], ["go together"]),
    ("camera option typo", nothing, [*INSPECT, "--source", "cam:0,widht=640"], ["unknown cam source option 'widht'"]),
    ("video that is a text file", text_file, [*INSPECT, "--source", "file:{work}/notes.txt"], ["not a readable video"]),
    ("unknown source kind", nothing, [*INSPECT, "--source", "webcam:0"], ["unknown source"]),
    # issue 14 item 4: the system's errors are one line too
    ("log folder is a file", text_file, [*INSPECT, "--source", "synthetic:parts=2", "--log-dir", "{work}/notes.txt"],
     ["notes.txt"]),
    ("unreadable image", text_file, [*INSPECT, "{work}/notes.txt"], ["notes.txt", "not a readable image"]),
    ("density.npz not a zip", density_not_a_zip, [*INSPECT, IMAGE], ["not an .npz archive", "rebuild"]),
    ("density of another width", density_of_other_width, [*INSPECT, IMAGE], ["latents of", "rebuild"]),
    ("preprocessing not the model's", edit_meta(set_key("preprocessing", "size", 48)), [*INSPECT, IMAGE],
     ["the model takes images of"]),
    ("image is a FIFO", fifo, [*INSPECT, "{work}/pipe.png"], ["not an image file"]),
    ("decompression bomb", bomb, [*INSPECT, "{work}/bomb.png"], ["too many pixels"]),
    ("build seed -1", dataset, ["build", "--data", "{work}/part", "--out", "{work}/m", "--seed", "-1"],
     ["seed must be 0 or more"]),
    ("build epochs -1", dataset, ["build", "--data", "{work}/part", "--out", "{work}/m", "--epochs", "-1"],
     ["epochs must be 1 or more"]),
    ("build over a folder that is not a bundle", dataset, ["build", "--data", "{work}/part", "--out", "{work}",
                                                           "--force"], ["is not a model bundle"]),
    # issue 14 item 3: nothing written outside the dataset folder
    ("capture label climbs out", nothing, ["capture", "--source", "synthetic:parts=1", "--part", "p", "--split", "test",
                                            "--label", "../../..", "--datasets", "{work}/datasets", "--count", "1"],
     ["bad label"]),
    ("capture part climbs out", nothing, ["capture", "--source", "synthetic:parts=1", "--part", "..",
                                           "--datasets", "{work}/datasets", "--count", "1"], ["bad part name"]),
    ("hardware check on a port that is not there", nothing, ["hardware", "check", "--conveyor", "{work}/ttyACM9",
                                                             "--no-knobs"], ["cannot open the port"]),
    ("hardware check with no time to turn a knob", nothing, ["hardware", "check", "--sweep-seconds", "0"],
     ["--sweep-seconds"]),
    ("trash label climbs out", nothing, ["dataset", "trash", "p", "--split", "test", "--label", "..",
                                         "--datasets", "{work}/datasets"], ["bad label"]),
]


@pytest.mark.parametrize("name,damage,args,fragments", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(name, damage, args, fragments, tiny_bundle, small_dataset,
                                                          tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_bundle, model)
    work = tmp_path / "work"
    work.mkdir()
    damage(model, work)
    image = small_dataset / "test" / "good" / "000.png"
    args = [a.format(image=image, work=work, model=model) for a in args]
    before = snapshot(tmp_path)
    code, out, err = run(args)
    lines = err.strip().splitlines()
    print(f"\n{name}: exit {code}: {err.strip()}")
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("gutcheck: error: "), err
    for fragment in fragments:
        assert fragment in lines[0]
    assert out == ""  # no verdict printed under a doubtful model or link
    assert "oneDNN" not in err and "absl" not in err
    assert snapshot(tmp_path) == before


def test_a_score_that_is_not_a_number_is_an_anomaly_under_either_rule():
    from model_builder.scoring import Thresholds, is_anomaly

    density = np.array([np.nan, -10.0, -10.0, np.inf])
    error = np.array([0.01, np.nan, 0.01, 0.01])
    for rule in ("or", "and"):
        assert is_anomaly(density, error, Thresholds(-50.0, 0.1, rule)).tolist() == [True, True, False, True]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", '"-40"'])
def test_settings_with_a_threshold_that_is_not_a_finite_number_are_refused(tmp_path, value):
    from app.settings import load_settings

    path = tmp_path / "gutcheck-settings.toml"
    path.write_text(f"density_threshold = {value}\n")
    with pytest.raises(GutcheckError, match="finite"):
        load_settings(path)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "1", None, True])
def test_thresholds_refuse_what_is_not_a_finite_number(value):
    from model_builder.scoring import Thresholds

    with pytest.raises(GutcheckError, match="finite"):
        Thresholds(value, 0.1)
    with pytest.raises(GutcheckError, match="finite"):
        Thresholds(-10.0, value)


def test_saving_settings_over_a_damaged_file_keeps_it_as_a_dated_backup(tmp_path):
    """Issue 14 item 3: the dashboard said the file was damaged, then Save wrote over it."""
    from app.settings import Settings, load_settings, save_settings

    path = tmp_path / "gutcheck-settings.toml"
    damaged = b"density_threshold = [not toml\n"
    path.write_bytes(damaged)
    backup = save_settings(path, Settings(density_threshold=-40.0))
    assert backup is not None and backup.read_bytes() == damaged and backup.parent == tmp_path
    assert load_settings(path).density_threshold == -40.0
    assert save_settings(path, Settings(density_threshold=-41.0)) is None  # a good file is simply replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, backup.name])


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

OPTION_TEXT = st.text(alphabet="seedpartsdefectsizefpbackendwhigt=,.:-+0123456789xe ", max_size=40)


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(["synthetic", "cam", "folder", "file", "nope", ""]), rest=OPTION_TEXT)
def test_any_source_string_opens_or_is_a_one_line_error(kind, rest, tmp_path_factory):
    """The source-string parser: whatever a user types, a source or a GutcheckError, never a traceback."""
    from capture.sources import open_source

    spec = f"{kind}:{rest}" if kind else rest
    if kind == "cam":
        spec = f"cam:{rest}" if not rest[:1].isdigit() else "cam:x" + rest  # never touch a real camera
    try:
        source = open_source(spec)
    except GutcheckError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    assert kind in ("synthetic", "folder") or spec.startswith(("rtsp", "http"))
    getattr(source, "close", lambda: None)()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200) | st.sampled_from([
    "density_threshold = nan", "rule = 3", "[thresholds]\ndensity = 1", "density_threshold = 1e400",
    "reconstruction_threshold = -0.0\nrule = 'xor'", "knobs = 7", "conveyor = ''"]))
def test_any_settings_file_loads_or_is_a_one_line_error(text, tmp_path):
    """The settings parser: any file content gives Settings with finite thresholds or a GutcheckError."""
    import math

    from app.settings import load_settings

    path = tmp_path / "gutcheck-settings.toml"
    path.write_text(text, encoding="utf-8")
    try:
        loaded = load_settings(path)
    except GutcheckError as exc:
        assert "\n" not in str(exc)
        return
    for value in (loaded.density_threshold, loaded.reconstruction_threshold):
        assert value is None or math.isfinite(value)
