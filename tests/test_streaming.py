"""A build streams its features and pictures: what it keeps for all images is bounded, and what it computes
is what holding everything would have given."""

from __future__ import annotations

import numpy as np
import pytest

from capture.synthetic import write_dataset
from model_builder.calibrate import PixelSample, pixel_auroc
from model_builder.dataset import load_good, load_test
from model_builder.feature_model import extract_features, fit_projection, latents_of, project, sample_patches
from model_builder.preprocess import ModelInputs, Preprocessing


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    data = write_dataset(tmp_path_factory.mktemp("s") / "nut", seed=5, n_train=24, n_test_good=2, n_test_defect=1,
                         size=96)
    return load_good(data).images


def test_model_inputs_preprocess_only_the_batch_asked_for(pictures):
    pre = Preprocessing(64)
    inputs = ModelInputs(pictures, pre)
    whole = pre.apply_batch(pictures)
    assert len(inputs) == len(pictures)
    np.testing.assert_array_equal(inputs[3:7], whole[3:7])
    sub = inputs.subset(np.array([5, 2, 9]))
    np.testing.assert_array_equal(sub[:], whole[[5, 2, 9]])
    np.testing.assert_array_equal(sub[1], whole[2])
    np.testing.assert_array_equal(sub[np.array([2, 0])], whole[[9, 5]])
    assert sub.subset(np.array([0]))[:].shape == (1, 64, 64, 3)


@pytest.mark.parametrize("whole_image", [False, True], ids=["v2", "v3"])
def test_streamed_features_give_the_projection_and_latents_of_all_features_held(pictures, whole_image, monkeypatch):
    from model_builder import feature_model
    from model_builder.architectures import feature_extractor

    extractor = feature_extractor(64, 3, weights=None, whole_image=whole_image)
    x = ModelInputs(pictures, Preprocessing(64))
    held = extract_features(extractor, x)
    features = held[0] if whole_image else held
    # 24 images x 64 positions: a sample smaller than all of them, so the draw matters
    monkeypatch.setattr(feature_model, "PROJECTION_SAMPLE", 500)
    sample, image_features = sample_patches(extractor, x, size=500, seed=7)
    mean_all, proj_all, scale_all = fit_projection(features, 16, seed=7)
    mean_s, proj_s, scale_s = fit_projection(sample, 16, seed=7)
    np.testing.assert_allclose(mean_s, mean_all, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.abs(proj_s), np.abs(proj_all), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(scale_s, scale_all, rtol=1e-5)
    if whole_image:
        np.testing.assert_array_equal(image_features, held[1])
    else:
        assert image_features is None
    np.testing.assert_allclose(latents_of(extractor, x, mean_s, proj_s), project(features, mean_s, proj_s),
                               rtol=1e-5, atol=1e-5)


def test_pixel_sample_is_every_pixel_within_its_budget_and_close_beyond_it():
    rng = np.random.default_rng(0)
    masks = np.zeros((40, 32, 32), bool)
    masks[:20, 10:20, 10:20] = True
    heat = (rng.normal(size=masks.shape) + masks * 1.0).astype(np.float32)
    exact = pixel_auroc(masks, heat)
    every = PixelSample(40, 32 * 32)
    for i in range(0, 40, 16):
        every.add(masks[i:i + 16], heat[i:i + 16])
    assert every.auroc() == pytest.approx(exact, abs=1e-12)
    sampled = PixelSample(40, 32 * 32, budget=40 * 256)  # a quarter of each image
    for i in range(0, 40, 16):
        sampled.add(masks[i:i + 16], heat[i:i + 16])
    assert sampled.per_image == 256
    assert sampled.auroc() == pytest.approx(exact, abs=0.01) and sampled.auroc() != exact


def test_judge_is_the_finished_record_of_one_picture(small_feature_bundle, tiny_bundle):
    from model_builder.bundle import load_bundle
    from model_builder.scoring import FEATURE_HEAT_SCALE, FeatureAutoencoder, PixelAutoencoder

    for folder, kind in ((small_feature_bundle, FeatureAutoencoder), (tiny_bundle, PixelAutoencoder)):
        bundle = load_bundle(folder)
        scorer = bundle.scorer
        assert scorer.detector is kind
        image = load_test(bundle.info.provenance.dataset).images[-1]
        j = scorer.judge(image)
        s = scorer.score_images([image])
        assert (j.density, j.error, j.anomaly) == (s.density[0], s.error[0], bool(s.anomaly[0]))
        assert j.score == pytest.approx(float(bundle.combined(s.density, s.error)[0]))
        size = bundle.preprocessing.size
        assert j.heatmap.shape == (size, size) and j.inputs.shape[:2] == (size, size)
        assert j.box == (0, 0, image.shape[1], image.shape[0])
        if kind is FeatureAutoencoder:
            assert j.reconstruction is None and j.heat_scale == FEATURE_HEAT_SCALE
        else:
            assert j.reconstruction.shape == j.inputs.shape
            assert j.heat_scale == pytest.approx(2 * bundle.thresholds.reconstruction)
