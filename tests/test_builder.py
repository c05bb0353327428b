"""Model builder on small synthetic data: every architecture, loss, density preset and score
trains a few steps and round-trips through the bundle; bad inputs are clear and leave nothing."""

from __future__ import annotations

import os
import stat

import cv2
import numpy as np
import pytest

from tests.conftest import REPO

from capture.errors import GutcheckError
from capture.synthetic import write_dataset
from model_builder.augment import Augmentation
from model_builder.build import BuildOptions, build
from model_builder.bundle import load_bundle
from model_builder.dataset import load_test
from model_builder.scoring import SUM_ERROR_WEIGHT

QUIET = dict(show_progress=False, log=lambda s: None)


def tiny(**kw) -> BuildOptions:
    base = dict(size=32, epochs=1, patience=1, architecture="prototype", batch_size=8, density_preset="whitened")
    base.update(kw)
    return BuildOptions(**base)


@pytest.mark.parametrize("options", [
    tiny(architecture="prototype", loss="mse", density_preset="prototype", reconstruction_score="mse", rule="and"),
    tiny(architecture="residual", loss="ssim", reconstruction_score="ssim", density_preset="gaussian"),
    tiny(architecture="mobilenet", pretrained="none", loss="hybrid", alpha=0.3, color="gray", size=40,
         density_preset="patch"),
    tiny(architecture="prototype", loss="hybrid", density_preset="whitened"),
    tiny(architecture="features", pretrained="none", size=64, density_preset="patch", epochs=2, latent_dim=16,
         decoder_width=32),
    tiny(architecture="features-whole", pretrained="none", size=64, density_preset="patch", epochs=2, latent_dim=16,
         decoder_width=32),
], ids=["prototype-mse-kde0.2", "residual-ssim-gaussian", "mobilenet-hybrid-gray-patch", "prototype-whitened",
        "features-v2", "features-whole-v3"])
def test_each_variant_trains_and_round_trips(small_dataset, tmp_path, options):
    result = build(small_dataset, tmp_path / "m", options, **QUIET)
    images = load_test(small_dataset).images[:6]
    before = result.bundle.scorer.score_images(images)
    after = load_bundle(tmp_path / "m").scorer.score_images(images)
    np.testing.assert_array_equal(before.error, after.error)
    np.testing.assert_array_equal(before.density, after.density)
    assert load_bundle(tmp_path / "m").combination == result.bundle.combination
    assert np.isfinite(result.bundle.density.bandwidth) and result.bundle.density.bandwidth > 0
    assert (tmp_path / "m" / "report.html").stat().st_size > 10_000
    assert (tmp_path / "m" / "history.json").is_file()


def test_report_holds_every_plot_inline(tiny_bundle):
    report = (tiny_bundle / "report.html").read_text()
    assert report.count("data:image/png;base64,") >= 6  # loss, 2 histograms, scatter, ROC, confusion, examples
    assert "http" not in report.replace("http-equiv", "")  # self-contained
    for words in ("Metrics on test/", "<b>Rule:</b>", "Scores: good vs each defect type", "Worst misses"):
        assert words in report


def test_calibration_meets_the_false_reject_target_on_held_out_good(tiny_bundle):
    info = load_bundle(tiny_bundle).info
    assert info.calibration.validation_false_reject_rate <= info.calibration.target_false_reject_rate
    ev = info.evaluation
    assert ev["at_target_recall"]["operating_point"]["recall"] >= 0.95
    assert set(ev["rules"]) == {"and", "or"}
    assert 0.0 <= ev["pixel_auroc"] <= 1.0


def _write(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def test_mixed_formats_sizes_and_a_corrupt_file_are_handled(tmp_path):
    rng = np.random.default_rng(0)
    good = tmp_path / "part" / "train" / "good"
    for i in range(6):
        _write(good / f"rgb{i}.png", rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    _write(good / "gray.png", rng.integers(0, 255, (50, 50), dtype=np.uint8))
    _write(good / "rgba.png", rng.integers(0, 255, (40, 40, 4), dtype=np.uint8))
    _write(good / "deep.png", rng.integers(0, 65535, (40, 40, 3), dtype=np.uint16))
    _write(good / "photo.jpg", rng.integers(0, 255, (64, 48, 3), dtype=np.uint8))
    (good / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    said: list[str] = []
    result = build(tmp_path / "part", tmp_path / "m", tiny(), show_progress=False, log=said.append)
    assert result.bundle.info.provenance.train_images == 10
    assert any("broken.png" in s for s in said)
    assert any("sizes" in s for s in said)


def test_no_good_images_leaves_nothing(tmp_path):
    (tmp_path / "part" / "train" / "good").mkdir(parents=True)
    with pytest.raises(GutcheckError, match="no readable good images"):
        build(tmp_path / "part", tmp_path / "models" / "m", tiny(), **QUIET)
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_out_fails_before_training(small_dataset, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    with pytest.raises(GutcheckError, match="cannot write"):
        build(small_dataset, locked / "m", tiny(), **QUIET)


def test_out_that_is_a_file_is_a_clear_error_and_nothing_half_written(small_dataset, tmp_path):
    blocker = tmp_path / "models"
    blocker.write_text("a file where the models folder should be")
    with pytest.raises(GutcheckError, match="cannot write"):
        build(small_dataset, blocker / "m", tiny(), **QUIET)
    assert blocker.read_text().startswith("a file")


def test_bad_options_are_refused_before_training(small_dataset, tmp_path):
    for kw, words in ((dict(loss="l7"), "--loss must be one of"), (dict(alpha=2.0), "alpha"),
                      (dict(architecture="vgg"), "--architecture must be one of"), (dict(size=30), "multiple of 8"),
                      (dict(rule="xor"), "--rule must be one of"), (dict(density_coreset=0.0), "--coreset"),
                      (dict(target_frr=1.0), "--target-frr"),
                      (dict(density_preset="x"), "density preset"),
                      (dict(size=128, density_preset="gaussian", architecture="mobilenet", pretrained="none"), "at most 2048")):
        with pytest.raises(GutcheckError, match=words):
            build(small_dataset, tmp_path / "m", tiny(**kw), **QUIET)


def test_augmentation_keeps_range_and_changes_images():
    import tensorflow as tf

    x = np.random.default_rng(1).random((4, 32, 32, 3)).astype(np.float32)
    y = Augmentation(flip_horizontal=True).tf_function(seed=3)(tf.constant(x)).numpy()
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert np.abs(y - x).mean() > 0.01
    assert np.abs(Augmentation().tf_function(seed=3)(tf.constant(x)).numpy() - x).mean() < 0.4


def test_repeatable_with_seed(small_dataset, tmp_path):
    a = build(small_dataset, None, tiny(seed=7), report=False, **QUIET).bundle
    b = build(small_dataset, None, tiny(seed=7), report=False, **QUIET).bundle
    assert a.thresholds == b.thresholds


def test_synthetic_set_with_masks_gets_pixel_auroc(tmp_path):
    data = write_dataset(tmp_path / "nut", seed=1, n_train=12, n_test_good=2, n_test_defect=1, size=64)
    ev = build(data, None, tiny(), report=False, **QUIET).evaluation
    assert ev["pixel_auroc"] is not None


def test_feature_model_heatmap_explains_the_verdict_and_has_the_image_size(small_dataset, tmp_path):
    """Detector v2: one heatmap per image at the model's input size, built from both halves'
    position maps; no pixel reconstruction; the single score adds both halves."""
    options = tiny(architecture="features", pretrained="none", size=64, density_preset="patch", epochs=1,
                   latent_dim=16, decoder_width=32)
    bundle = build(small_dataset, None, options, report=False, **QUIET).bundle
    x = bundle.preprocessing.apply_batch(load_test(small_dataset).images[:4])
    s = bundle.scorer.score_inputs(x, with_heatmaps=True, keep_maps=True)
    assert s.reconstruction is None and s.heatmaps.shape == (4, 64, 64) and (s.heatmaps >= 0).all()
    density_maps, error_maps = s.position_maps
    assert density_maps.shape == error_maps.shape == (4, 8, 8)
    assert bundle.combination == "sum" and bundle.map_statistics is not None
    z = bundle.combined(s.density, s.error)
    stats = bundle.good_statistics
    np.testing.assert_allclose(z, (stats.density_median - s.density) / stats.density_spread
                               + SUM_ERROR_WEIGHT * (s.error - stats.error_median) / stats.error_spread)


def test_pixel_and_feature_options_do_not_mix():
    with pytest.raises(GutcheckError, match="feature reconstruction error"):
        BuildOptions(architecture="mobilenet", reconstruction_score="feature")
    with pytest.raises(GutcheckError, match="feature reconstruction error"):
        BuildOptions(architecture="features", reconstruction_score="ssim")


def test_the_builder_knows_exactly_the_architectures_it_can_make():
    from model_builder.architectures import ARCHITECTURES
    from model_builder.build import DEFAULT_SIZES

    assert set(ARCHITECTURES) == set(DEFAULT_SIZES)
    with pytest.raises(GutcheckError, match="takes --density patch"):
        BuildOptions(architecture="features", density_preset="whitened")


def test_blocked_weights_download_names_the_file_and_the_one_command(small_dataset, tmp_path):
    """Issue 19: a fresh station whose network blocks the ImageNet download gets one line with the
    file to fetch and the command that fetches it; the file it names then builds with --pretrained."""
    import os
    import shutil
    import subprocess
    import sys

    from model_builder.build import BuildOptions, imagenet_weights, make_model

    env = dict(os.environ, KERAS_HOME=str(tmp_path / "keras"), HTTPS_PROXY="http://127.0.0.1:9",
               https_proxy="http://127.0.0.1:9")  # a proxy nobody listens on: the download fails
    run = subprocess.run([sys.executable, "-m", "app.cli", "build", "--data", str(small_dataset), "--out",
                          str(tmp_path / "m"), "--size", "64", "--epochs", "1"], env=env, capture_output=True,
                         text=True, timeout=300)
    name, url = imagenet_weights(64)
    assert run.returncode == 2, run.stderr[-2000:]
    lines = [line for line in run.stderr.splitlines() if line.startswith("gutcheck")]
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert f"curl -L -o {name} {url}" in lines[0] and "--pretrained PATH" in lines[0], lines[0]
    assert name == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5"  # 64 px: Keras' 224 file
    shared = REPO.parent / "shared" / "weights" / name
    if not shared.is_file():
        pytest.skip(f"{shared} absent: the second half (build from the fetched file) needs it")
    fetched = shutil.copy(shared, tmp_path / name)
    model = make_model(BuildOptions(architecture="features", pretrained=str(fetched), size=64), 3)
    assert model.predict(np.zeros((1, 64, 64, 3), np.float32), verbose=0) is not None
