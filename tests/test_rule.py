"""The two-threshold rule and the calibration that places its thresholds."""

from __future__ import annotations

import numpy as np
import pytest

from capture.errors import GutcheckError
from model_builder.calibrate import OperatingPoint, knob_ranges, thresholds_at_frr, validation_outliers
from model_builder.scoring import Thresholds, is_anomaly

# density, error -> (low density?, high error?)
CASES = [(5.0, 0.1), (5.0, 0.9), (15.0, 0.1), (15.0, 0.9)]  # threshold density 10, error 0.5


@pytest.mark.parametrize("rule, expected", [("and", [False, True, False, False]),
                                            ("or", [True, True, False, True])])
def test_truth_table(rule, expected):
    t = Thresholds(density=10.0, reconstruction=0.5, rule=rule)
    density = np.array([c[0] for c in CASES])
    error = np.array([c[1] for c in CASES])
    assert is_anomaly(density, error, t).tolist() == expected


def test_thresholds_are_strict_inequalities():
    t = Thresholds(density=10.0, reconstruction=0.5, rule="or")
    assert not is_anomaly(np.array([10.0]), np.array([0.5]), t)[0]


def test_unknown_rule_is_refused():
    with pytest.raises(GutcheckError, match="rule"):
        Thresholds(1.0, 1.0, "xor")


def test_status_line_reads_like_the_prototype():
    t = Thresholds(density=2730.0, reconstruction=0.004, rule="and")
    line = t.describe(2712.0, 0.0041)
    assert line.startswith("if 2712 < 2730 and 0.0041 > 0.004: anomaly")
    assert line.endswith("anomaly")
    assert t.describe(2740.0, 0.0041).endswith("ok")


@pytest.mark.parametrize("rule", ["and", "or"])
def test_calibration_hits_false_reject_target_on_fresh_good_scores(rule):
    rng = np.random.default_rng(4)
    density, error = rng.normal(0, 1, 2000), rng.lognormal(0, 0.3, 2000)
    t = thresholds_at_frr(density, error, 0.05, rule)
    assert is_anomaly(density, error, t).mean() <= 0.05
    fresh_d, fresh_e = rng.normal(0, 1, 20000), rng.lognormal(0, 0.3, 20000)
    assert 0.03 <= is_anomaly(fresh_d, fresh_e, t).mean() <= 0.07


def test_knob_ranges_span_the_good_scores():
    rng = np.random.default_rng(1)
    d, e = rng.normal(0, 1, 200), rng.lognormal(0, 0.3, 200)
    r = knob_ranges(d, e)
    assert r["density"][0] < d.min() and r["density"][1] >= d.max()
    assert r["reconstruction"][0] <= e.min() and r["reconstruction"][1] > e.max()


def test_operating_point_figures():
    op = OperatingPoint.from_predictions(np.array([1, 1, 0, 0, 1], bool), np.array([1, 0, 0, 1, 1], bool))
    assert (op.tp, op.fn, op.tn, op.fp) == (2, 1, 1, 1)
    assert op.accuracy == pytest.approx(0.6)
    assert op.recall == pytest.approx(2 / 3)
    assert op.precision == pytest.approx(2 / 3)


def test_one_far_outlier_among_good_scores_is_found_and_would_have_set_the_threshold():
    rng = np.random.default_rng(7)
    density, error = rng.normal(-55, 20, 53), rng.lognormal(0, 0.3, 53)
    assert len(validation_outliers(density, error, 10.0)) == 0  # ordinary spread: nothing flagged
    density[17] = -392.0  # the pill bench's held-out good image
    error[30] = 40.0
    assert list(validation_outliers(density, error, 10.0)) == [17, 30]
    assert len(validation_outliers(density, error, 0.0)) == 0  # switched off
    kept = np.setdiff1d(np.arange(53), [17, 30])
    assert thresholds_at_frr(density, error, 0.01, "or").density == pytest.approx(-392.0)
    assert thresholds_at_frr(density[kept], error[kept], 0.01, "or").density > -200
