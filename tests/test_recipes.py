"""Part recipes (issue 22 item 1): versioned plain files, the CLI, and inspect/capture working from one."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

from app.recipes import Recipe, RecipeBook, changes
from capture.errors import GutcheckError
from capture.imageio import read_image
from model_builder.bundle import load_bundle
from model_builder.dataset import load_test
from tests.test_cli import assert_one_line_error, gutcheck


def test_every_save_is_a_new_version_and_the_earlier_ones_stay(tmp_path):
    book = RecipeBook(tmp_path / "recipes")
    first = book.save(Recipe("bracket-A", model="/m", model_id="m-1", belt_speed=800), by="anna")
    second = book.save(Recipe("bracket-A", model="/m", model_id="m-1", belt_speed=1200, density_threshold=-80.0,
                              reconstruction_threshold=0.5), note="faster belt", by="ben")
    assert (first.version, second.version) == (1, 2)
    assert book.load("bracket-A").belt_speed == 1200
    assert book.load("bracket-A", 1).belt_speed == 800  # the first version is still there, unchanged
    assert [(r.version, r.saved_by, r.note) for r in book.history("bracket-A")] == [(1, "anna", ""),
                                                                                     (2, "ben", "faster belt")]
    assert sorted(p.name for p in (tmp_path / "recipes" / "bracket-A").iterdir()) == ["v0001.toml", "v0002.toml"]
    assert changes(first, second) == ["density_threshold: 0.0 -> -80.0", "reconstruction_threshold: 0.0 -> 0.5",
                                      "belt_speed: 800 -> 1200"]
    assert book.names() == ["bracket-A"]


@pytest.mark.parametrize("recipe, message", [
    (Recipe("../etc"), "bad recipe name"),
    (Recipe("a", density_threshold=-1.0), "both thresholds or neither"),
    (Recipe("a", rule="xor"), "rule must be one of"),
    (Recipe("a", belt_speed=10), "belt_speed must be"),
    (Recipe("a", camera={"exposur": 1}), "unknown camera setting 'exposur'"),
    (Recipe("a", camera={"auto_exposure": 0.5}), "0 (off) or 1 (on)"),
    (Recipe("a", density_threshold=float("nan"), reconstruction_threshold=1.0), "density_threshold"),
    (Recipe("a", roi=[0, 0, 0, 10]), "roi [0, 0, 0, 10] is not a box"),
    (Recipe("a", roi=[0, 0, 10]), "roi must be [x, y, w, h]"),
    (Recipe("a", roi=[0.5, 0, 10, 10]), "roi must be a whole number"),
    (Recipe("a", crop=-1), "crop must be 0"),
    (Recipe("a", knob_ranges={"density": [1.0, 0.0]}), "low 1 is not below high 0"),
    (Recipe("a", knob_ranges={"speed": [0.0, 1.0]}), "knob_ranges takes density and reconstruction"),
])
def test_a_bad_recipe_is_refused_before_anything_is_written(tmp_path, recipe, message):
    with pytest.raises(GutcheckError, match=re.escape(message)):
        RecipeBook(tmp_path).save(recipe)
    assert not any(tmp_path.rglob("*.toml"))


def test_a_damaged_or_edited_recipe_file_is_one_line_naming_it(tmp_path):
    book = RecipeBook(tmp_path)
    book.save(Recipe("a", model="/m", model_id="m"))
    book.save(Recipe("a", model="/m", model_id="m", belt_speed=900))
    (tmp_path / "a" / "v0002.toml").write_text("belt_speed = [")
    with pytest.raises(GutcheckError, match=r"v0002.toml: recipe file is damaged .*--version 1"):
        book.load("a")
    assert book.load("a", 1).version == 1
    (tmp_path / "a" / "v0002.toml").write_text('colour = "red"\n')
    with pytest.raises(GutcheckError, match="unknown recipe fields colour"):
        book.load("a")
    with pytest.raises(GutcheckError, match="no recipe 'b'.*there are: a"):
        book.load("b")


def test_camera_settings_become_source_options_and_the_source_string_wins():
    r = Recipe("a", camera={"exposure": -6.0, "auto_exposure": 0.0})
    assert r.source_spec("cam:1") == "cam:1,auto_exposure=0,exposure=-6"
    assert r.source_spec("cam:1,exposure=-5,width=640") == "cam:1,auto_exposure=0,exposure=-6,exposure=-5,width=640"
    assert r.source_spec("synthetic:seed=3") == "synthetic:auto_exposure=0,exposure=-6,seed=3"
    assert r.source_spec("folder:/x") == "folder:/x"  # no camera to set
    assert Recipe("a", source="cam:0").source_spec() == "cam:0"


def test_recipe_cli_saves_lists_shows_and_keeps_history(tiny_bundle, tmp_path):
    recipes = tmp_path / "recipes"
    new = gutcheck("recipe", "save", "bracket", "--recipes", recipes, "--source", "synthetic:")
    assert_one_line_error(new, "recipe bracket is new: give its --model")
    saved = gutcheck("recipe", "save", "bracket", "--recipes", recipes, "--model", tiny_bundle, "--belt-speed", "900",
                     "--camera", "exposure=0.5,auto_exposure=0", "--source", "synthetic:")
    assert saved.returncode == 0, saved.stderr
    assert "saved recipe bracket version 1" in saved.stdout
    again = gutcheck("recipe", "save", "bracket", "--recipes", recipes, "--density-threshold", "-50",
                     "--error-threshold", "0.3", "--rule", "and")
    assert again.returncode == 0 and "version 2" in again.stdout and "rule: '' -> 'and'" in again.stdout
    same = gutcheck("recipe", "save", "bracket", "--recipes", recipes, "--rule", "and")
    assert same.returncode == 0 and "nothing saved" in same.stdout
    shown = json.loads(gutcheck("recipe", "show", "bracket", "--recipes", recipes, "--json").stdout)
    bundle = load_bundle(tiny_bundle)
    assert shown["model_id"] == bundle.info.model_id and shown["version"] == 2
    assert shown["camera"] == {"exposure": 0.5, "auto_exposure": 0.0} and shown["belt_speed"] == 900
    assert json.loads(gutcheck("recipe", "show", "bracket", "--recipes", recipes, "--version", "1",
                               "--json").stdout)["density_threshold"] == 0.0
    history = gutcheck("recipe", "history", "bracket", "--recipes", recipes).stdout.splitlines()
    assert len(history) == 2 and history[0].startswith("version 1") and "new recipe" in history[0]
    listed = gutcheck("recipe", "list", "--recipes", recipes).stdout
    assert "bracket" in listed and bundle.info.model_id in listed
    secret = gutcheck("recipe", "save", "bracket", "--recipes", recipes, "--publish", "mqtt://u:pw@broker/x")
    assert_one_line_error(secret, "no user name or password in the URL")
    assert "pw" not in secret.stderr


def test_inspect_with_a_recipe_uses_its_model_thresholds_and_belt_speed(tiny_bundle, tmp_path):
    from app.links.simulators import ConveyorSimulator
    from tests.ptydevice import PtyDevice

    book = RecipeBook(tmp_path / "recipes")
    bundle = load_bundle(tiny_bundle)
    book.save(Recipe("strict", model=str(tiny_bundle), model_id=bundle.info.model_id, density_threshold=1e9,
                     reconstruction_threshold=1e9, rule="or", belt_speed=1500, source="synthetic:seed=2,parts=3"))
    image = load_test(bundle.info.provenance.dataset).paths[0]
    used = gutcheck("inspect", "--recipe", "strict", "--recipes", book.folder, image)
    assert used.returncode == 0, used.stderr
    verdict = json.loads(used.stdout)
    assert verdict["density_threshold"] == 1e9 and verdict["verdict"] == "anomaly"
    assert "recipe strict version 1" in used.stderr
    # live, with the recipe's source and a conveyor: the belt takes the recipe's speed
    sim = ConveyorSimulator(PtyDevice(tmp_path / "conveyor")).start()
    try:
        live = subprocess.run([sys.executable, "-m", "app.cli", "inspect", "--recipe", "strict", "--recipes",
                               str(book.folder), "--mode", "continuous", "--conveyor", sim.url],
                              capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
        assert sim.model.steps_per_s == 1500, live.stderr
    finally:
        sim.close()
    assert len(live.stdout.splitlines()) > 0
    # --model beside --recipe, or neither: one line
    assert_one_line_error(gutcheck("inspect", "--recipe", "strict", "--recipes", book.folder, "--model",
                                   tiny_bundle, image), "not both")
    assert_one_line_error(gutcheck("inspect", image), "give --model BUNDLE or --recipe NAME")


def test_a_recipe_refuses_a_model_rebuilt_at_its_folder(tiny_bundle, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(tiny_bundle, copy)
    book = RecipeBook(tmp_path / "recipes")
    book.save(Recipe("a", model=str(copy), model_id="an-earlier-build-20260101-000000"))
    image = load_test(load_bundle(copy).info.provenance.dataset).paths[0]
    refused = gutcheck("inspect", "--recipe", "a", "--recipes", book.folder, image)
    assert_one_line_error(refused, "is " + load_bundle(copy).info.model_id, "an-earlier-build-20260101-000000",
                          "save the recipe again with --model")
    assert refused.stdout == ""  # no part judged with another model's thresholds


def test_capture_with_a_recipe_records_into_its_dataset_through_its_camera(tmp_path):
    book = RecipeBook(tmp_path / "recipes")
    dataset = tmp_path / "datasets" / "bracket"
    book.save(Recipe("bracket", model="/m", model_id="m", source="synthetic:seed=3,parts=5", dataset=str(dataset),
                     camera={"exposure": -0.5, "auto_exposure": 0.0}, roi=[30, 20, 200, 180]))
    run = gutcheck("capture", "--recipe", "bracket", "--recipes", book.folder, "--count", "2")
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in (dataset / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(r["camera"] == {"auto_exposure": 0.0, "exposure": -0.5} for r in records)
    assert all(r["framing"] == {"roi": [30, 20, 200, 180], "crop": 0} for r in records)
    saved = sorted((dataset / "train" / "good").iterdir())
    assert len(saved) == 2 and all(read_image(p).shape[:2] == (180, 200) for p in saved)  # cut as the recipe says
    assert_one_line_error(gutcheck("capture", "--recipe", "bracket", "--recipes", book.folder, "--crop", "100"),
                          "recipe bracket frames the parts")
    assert_one_line_error(gutcheck("capture", "--recipe", "bracket", "--recipes", book.folder, "--part", "other"),
                          "--part other: recipe bracket records into")
    book.save(Recipe("nodata", model="/m", model_id="m"))
    assert_one_line_error(gutcheck("capture", "--recipe", "nodata", "--recipes", book.folder), "has no dataset")


def test_a_recipe_cuts_every_frame_and_spans_its_own_knob_ranges(tiny_bundle, tmp_path):
    """The recipe's ROI and crop frame what inspection reads, as capture framed the good parts; its knob
    ranges replace the model's where it has them."""
    from capture.sources import open_source

    book = RecipeBook(tmp_path)
    bundle = load_bundle(tiny_bundle)
    saved = book.save(Recipe("b", model=str(tiny_bundle), model_id=bundle.info.model_id, roi=[16, 8, 128, 96],
                             knob_ranges={"density": [-200.0, 10.0]}))
    recipe = book.load("b")
    assert (recipe.roi, recipe.crop, recipe.knob_ranges) == ([16, 8, 128, 96], 0, {"density": [-200.0, 10.0]})
    assert recipe == saved
    assert recipe.knob_range(bundle, "density") == [-200.0, 10.0]
    assert recipe.knob_range(bundle, "reconstruction") == bundle.knob_ranges["reconstruction"]
    source = open_source("synthetic:seed=1,parts=2")
    whole = source.read().image
    source.framing = recipe.framing
    cut = source.read().image
    assert whole.shape[:2] == (256, 256) and cut.shape[:2] == (96, 128)
    too_big = open_source("synthetic:seed=1,parts=2")
    too_big.framing = Recipe("c", roi=[200, 0, 100, 100]).framing
    with pytest.raises(GutcheckError, match="does not fit in a 256x256 image"):
        too_big.read()


def test_recipe_save_sets_and_clears_framing_and_knob_ranges(tiny_bundle, tmp_path):
    from app.cli import main

    args = ["recipe", "save", "p", "--recipes", str(tmp_path)]
    assert main([*args, "--model", str(tiny_bundle), "--roi", "1,2,30,40", "--crop", "24",
                 "--knob-error", "0,0.5"]) == 0
    r = RecipeBook(tmp_path).load("p")
    assert (r.roi, r.crop, r.knob_ranges) == ([1, 2, 30, 40], 24, {"reconstruction": [0.0, 0.5]})
    assert main([*args, "--roi", "none", "--knob-error", "none", "--knob-density=-90,-10"]) == 0
    r = RecipeBook(tmp_path).load("p")
    assert (r.version, r.roi, r.crop, r.knob_ranges) == (2, [], 24, {"density": [-90.0, -10.0]})
    assert "roi: [1, 2, 30, 40] -> []" in r.note and "knob_ranges" in r.note
    assert main([*args, "--roi", "1,2,3"]) == 2 and main([*args, "--knob-density", "5,1"]) == 2
    assert RecipeBook(tmp_path).load("p").version == 2  # nothing written by the refused saves
