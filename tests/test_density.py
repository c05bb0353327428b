"""The latent KDE: the prototype preset matches scikit-learn, the whitened preset is sane, and
its state round-trips through plain arrays."""

from __future__ import annotations

import io

import numpy as np
import pytest
from sklearn.neighbors import KernelDensity

from capture.errors import GutcheckError
from model_builder.density import (DENSITIES, GaussianDensity, PatchKDE, PrototypeKDE, WhitenedKDE, density_class,
                                   density_from_arrays, greedy_coreset, loo_bandwidth)


def test_prototype_preset_is_sklearn_kde_with_bandwidth_0_2():
    rng = np.random.default_rng(0)
    train, query = rng.normal(0, 0.3, (50, 4, 4, 2)), rng.normal(0, 0.3, (7, 4, 4, 2))
    ours = PrototypeKDE().fit(train)
    assert ours.bandwidth == 0.2
    ref = KernelDensity(kernel="gaussian", bandwidth=0.2).fit(train.reshape(50, -1))
    np.testing.assert_allclose(ours.score_samples(query), ref.score_samples(query.reshape(7, -1)), rtol=1e-9)


def test_fit_returns_self_and_bandwidth_is_finite():
    rng = np.random.default_rng(1)
    kde = WhitenedKDE(n_components=8)
    assert kde.fit(rng.normal(size=(60, 30))) is kde
    assert np.isfinite(kde.bandwidth) and kde.bandwidth > 0
    assert kde.points_.shape == (60, 8)


def test_whitened_density_ranks_outliers_lowest():
    rng = np.random.default_rng(2)
    base = rng.normal(size=(5, 40))
    train = rng.normal(size=(100, 5)) @ base + 0.01 * rng.normal(size=(100, 40))
    inliers = rng.normal(size=(10, 5)) @ base
    outliers = inliers + 3 * rng.normal(size=(10, 40)) @ np.diag(np.ones(40))
    kde = WhitenedKDE().fit(train)
    assert kde.score_samples(outliers).max() < kde.score_samples(inliers).min()


def test_loo_bandwidth_tracks_the_scale_of_the_data():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 2))
    assert loo_bandwidth(10 * x) == pytest.approx(10 * loo_bandwidth(x), rel=0.15)


def test_gaussian_preset_matches_scipy_with_the_shrunk_covariance():
    from scipy.stats import multivariate_normal
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(6)
    train, query = rng.normal(size=(80, 10)), rng.normal(size=(5, 10))
    kde = GaussianDensity().fit(train)
    lw = LedoitWolf().fit(train)
    ref = multivariate_normal(lw.location_, lw.covariance_).logpdf(query)
    np.testing.assert_allclose(kde.score_samples(query), ref, rtol=1e-5)


@pytest.mark.parametrize("preset", ["prototype", "whitened", "gaussian", "patch"])
def test_arrays_round_trip_through_npz_without_pickle(preset):
    rng = np.random.default_rng(5)
    kde = density_class(preset)().fit(rng.normal(size=(30, 12)))
    buf = io.BytesIO()
    np.savez(buf, **kde.to_arrays())
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as npz:
        again = density_from_arrays({k: npz[k] for k in npz.files})
    q = rng.normal(size=(5, 12))
    np.testing.assert_array_equal(kde.score_samples(q), again.score_samples(q))


def test_too_few_latents_and_unknown_preset_are_clear_errors():
    with pytest.raises(GutcheckError, match="at least 3"):
        WhitenedKDE().fit(np.zeros((2, 4)))
    with pytest.raises(GutcheckError, match="unknown density preset"):
        density_class("magic")


def test_patch_density_finds_one_odd_patch_that_the_whole_image_density_misses():
    rng = np.random.default_rng(7)
    texture = rng.normal(size=(6, 8))  # a part is a grid of patches drawn from a few good looks
    train = texture[rng.integers(0, 6, (60, 6, 6))] + 0.05 * rng.normal(size=(60, 6, 6, 8))
    good = texture[rng.integers(0, 6, (10, 6, 6))] + 0.05 * rng.normal(size=(10, 6, 6, 8))
    scratched = good.copy()
    scratched[:, 2, 3] += 1.5 * rng.normal(size=(10, 8))  # one patch in 36 changed
    kde = PatchKDE(coreset=0.5).fit(train)
    assert kde.score_samples(scratched).max() < kde.score_samples(good).min()
    maps = kde.patch_maps(scratched)
    assert maps.shape == (10, 6, 6)
    assert (maps.reshape(10, -1).argmin(1) == 2 * 6 + 3).all()  # the map points at the scratch
    whole = WhitenedKDE().fit(train)
    assert whole.score_samples(scratched).max() > whole.score_samples(good).min()  # lost in the whole


def test_greedy_coreset_covers_the_data_better_than_a_random_subset():
    rng = np.random.default_rng(8)
    points = np.concatenate([rng.normal(size=(2000, 16)), rng.normal(8, 1, size=(20, 16))])  # a rare cluster
    chosen = greedy_coreset(points, 100)
    assert len(set(chosen.tolist())) == 100

    def worst_gap(idx):
        d = ((points[:, None, :] - points[idx][None]) ** 2).sum(-1).min(1)
        return float(np.sqrt(d.max()))

    random_idx = rng.permutation(len(points))[:100]
    assert worst_gap(chosen) < 0.8 * worst_gap(random_idx)
    assert (chosen >= 2000).any()  # the rare look is kept


def test_patch_memory_is_a_share_of_the_patches_and_bandwidth_is_finite():
    rng = np.random.default_rng(9)
    kde = PatchKDE(coreset=0.1).fit(rng.normal(size=(20, 5, 5, 4)))
    assert kde.points_.shape == (50, 4)
    assert np.isfinite(kde.bandwidth) and kde.bandwidth > 0


def test_image_density_is_the_mean_of_its_least_likely_patches_and_survives_a_round_trip():
    rng = np.random.default_rng(10)
    kde = PatchKDE(coreset=0.2, worst=3).fit(rng.normal(size=(20, 6, 6, 4)))
    probe = rng.normal(size=(4, 6, 6, 4)) * 1.5
    lowest = np.sort(kde.patch_maps(probe).reshape(4, -1), axis=1)
    assert np.allclose(kde.score_samples(probe), lowest[:, :3].mean(1))
    again = density_from_arrays(kde.to_arrays())
    assert again.worst == 3 and np.allclose(again.score_samples(probe), kde.score_samples(probe))
    old = {k: v for k, v in kde.to_arrays().items() if k != "worst"}  # a bundle from before `worst`
    assert np.allclose(density_from_arrays(old).score_samples(probe), lowest[:, 0])


def test_two_pass_patch_density_finds_the_same_odd_patches_as_one_exact_pass():
    """Detector v2's live path: a coarse pass against the coreset's first picks, then the least
    likely positions exactly. The image density (its worst patches) must come out as the exact one,
    up to the ordinary patches that the coarse pass ranks a little differently."""
    rng = np.random.default_rng(4)
    centres = rng.normal(0, 3, (40, 16))
    train = (centres[rng.integers(40, size=(30, 24, 24))] + rng.normal(0, 0.3, (30, 24, 24, 16))).astype(np.float32)
    query = (centres[rng.integers(40, size=(6, 24, 24))] + rng.normal(0, 0.3, (6, 24, 24, 16))).astype(np.float32)
    query[:3, 5:7, 9:11] += rng.normal(0, 4, (3, 2, 2, 16)).astype(np.float32)  # a small odd spot in three
    exact = PatchKDE(coreset=0.2, max_memory=3000).fit(train)
    two_pass = density_from_arrays({**exact.to_arrays(), "coarse": np.array(0.1)})
    assert two_pass.coarse == 0.1 and len(two_pass.points_) == 3000
    e, e_maps = exact.score_maps(query)
    t, t_maps = two_pass.score_maps(query)
    np.testing.assert_allclose(t, e, rtol=0.02)  # the worst patches were among the refined ones
    assert (np.argsort(t) == np.argsort(e)).all()
    assert t_maps.shape == e_maps.shape == (6, 24, 24)
    assert e[:3].max() < e[3:].min()  # and the odd spots are what makes those images unlikely
    odd = np.zeros((24, 24), bool)
    odd[5:7, 9:11] = True
    assert (t_maps[:3][:, odd].max() < np.median(t_maps[:3], axis=(1, 2))).all()


@pytest.mark.parametrize("preset", list(DENSITIES))
def test_each_preset_is_one_estimator_class_chosen_from_the_table_by_the_stored_preset(preset):
    rng = np.random.default_rng(11)
    kde = DENSITIES[preset]().fit(rng.normal(size=(30, 3, 3, 4)))
    arrays = kde.to_arrays()
    assert str(arrays["preset"]) == preset and all(isinstance(v, np.ndarray) for v in arrays.values())
    again = density_from_arrays(arrays)
    assert type(again) is DENSITIES[preset]
    assert again.latent_dim() == (4 if preset == "patch" else 36)
