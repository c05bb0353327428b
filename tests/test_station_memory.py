"""Saved thresholds belong to a model, not to the spelling of its path, and every front end uses them."""

from __future__ import annotations

import json
import os
import shutil

from app.settings import Settings, load_settings, save_settings, saved_thresholds, with_thresholds
from model_builder.bundle import load_bundle
from model_builder.dataset import load_test
from model_builder.scoring import Thresholds
from tests.test_cli import gutcheck


def test_thresholds_saved_from_a_relative_path_apply_when_opened_by_its_absolute_path(tiny_bundle, tmp_path,
                                                                                      monkeypatch):
    # the dashboard started with a relative --model saves; File > Open later gives the absolute path
    monkeypatch.chdir(tiny_bundle.parent)
    relative = load_bundle(tiny_bundle.name)
    mine = Thresholds(-123.0, 0.5, "and")
    save_settings(tmp_path / "s.toml", with_thresholds(Settings(), relative, mine))
    absolute = load_bundle(tiny_bundle.resolve())
    assert str(absolute.path) != str(relative.path)  # what the dashboard used to compare
    assert saved_thresholds(load_settings(tmp_path / "s.toml"), absolute) == (mine, "")
    # a copy of the same model elsewhere is the same model
    copy = tmp_path / "copy"
    shutil.copytree(tiny_bundle, copy)
    assert saved_thresholds(load_settings(tmp_path / "s.toml"), load_bundle(copy))[0] == mine


def test_thresholds_of_another_model_are_not_used_and_it_is_said(tiny_bundle, tmp_path):
    bundle = load_bundle(tiny_bundle)
    other = Settings(model="/somewhere/else", model_id="other-20260101-000000", density_threshold=-1.0,
                     reconstruction_threshold=0.1, rule="or")
    saved, note = saved_thresholds(other, bundle)
    assert saved is None and "other-20260101-000000" in note and bundle.info.model_id in note
    assert saved_thresholds(Settings(), bundle) == (None, "")  # nothing saved: nothing to say
    # a settings file from before model_id was written: matched by the resolved folder
    old = Settings(model=os.path.relpath(tiny_bundle), density_threshold=-2.0, reconstruction_threshold=0.2)
    assert saved_thresholds(old, bundle)[0] == Thresholds(-2.0, 0.2, bundle.thresholds.rule)


def test_inspect_with_settings_uses_the_thresholds_saved_for_its_model(tiny_bundle, tmp_path):
    bundle = load_bundle(tiny_bundle)
    image = load_test(bundle.info.provenance.dataset).paths[0]  # a good part: OK at the built thresholds
    strict = Thresholds(1e9, 1e9, "or")  # every part's density is below 1e9: every part an anomaly
    save_settings(tmp_path / "s.toml", with_thresholds(Settings(), bundle, strict))
    used = gutcheck("inspect", "--model", tiny_bundle, "--settings", tmp_path / "s.toml", image)
    assert used.returncode == 0, used.stderr
    verdict = json.loads(used.stdout)
    assert verdict["density_threshold"] == 1e9 and verdict["verdict"] == "anomaly"
    assert f"thresholds from {tmp_path / 's.toml'}" in used.stderr
    # saved for another model: the bundle's own, and a line that says so
    save_settings(tmp_path / "o.toml", Settings(model_id="other", density_threshold=1e9, reconstruction_threshold=1e9))
    other = gutcheck("inspect", "--model", tiny_bundle, "--settings", tmp_path / "o.toml", image)
    assert json.loads(other.stdout)["density_threshold"] == bundle.thresholds.density
    assert "are for model other" in other.stderr
