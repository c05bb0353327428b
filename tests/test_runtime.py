"""Where the network runs: OpenVINO when it reproduces TensorFlow's outputs, TensorFlow otherwise; a
bundle's scores and verdicts are the same on both; nothing is sent to Intel."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from capture.errors import GutcheckError
from capture.synthetic import random_spec, render
from model_builder import runtime
from model_builder.bundle import load_bundle
from model_builder.runtime import PARITY_TOLERANCE, TensorFlowRuntime, open_runtime, parity, probe_inputs
from tests.test_cli import gutcheck


@pytest.fixture(scope="module")
def bundle(small_feature_bundle):
    return load_bundle(small_feature_bundle)


def pictures(n: int, seed: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [render(random_spec(rng, "scratch" if i % 3 == 0 else "good"), 96)[0] for i in range(n)]


def test_auto_runs_on_openvino_and_scores_as_tensorflow_does(bundle):
    images = pictures(12)
    on_tf = bundle.scorer_on("tensorflow").score_images(images)
    scorer = bundle.scorer_on("auto")
    on_auto = scorer.score_images(images)
    assert scorer.runtime_note.startswith("openvino (outputs within")
    stats = bundle.good_statistics
    assert np.abs(on_auto.density - on_tf.density).max() < 1e-3 * stats.density_spread
    assert np.abs(on_auto.error - on_tf.error).max() < 1e-3 * stats.error_spread
    assert (on_auto.anomaly == on_tf.anomaly).all()
    assert "openvino_telemetry" not in sys.modules or sys.modules["openvino_telemetry"] is None  # nothing reported


def test_parity_measures_the_worst_output_difference(bundle):
    shape = tuple(bundle.model.input_shape[1:])
    reference = TensorFlowRuntime(bundle.model, shape)

    def off_by(scale: float):
        return lambda x: tuple(o * (1 + scale) for o in reference(x))

    inputs = probe_inputs(shape)
    assert parity(reference, reference, inputs) == 0.0
    assert parity(reference, off_by(1e-3), inputs) == pytest.approx(1e-3, rel=1e-2)


class DriftingRuntime(runtime.OpenVinoRuntime):
    """OpenVINO with its outputs moved by 1 %: what export drift looks like."""

    def __call__(self, inputs):
        return tuple(o * 1.01 for o in super().__call__(inputs))


def test_a_runtime_that_drifts_is_not_used(bundle, monkeypatch):
    monkeypatch.setitem(runtime.RUNTIMES, "openvino", DriftingRuntime)
    shape = tuple(bundle.model.input_shape[1:])
    chosen, note = open_runtime(bundle.model, shape, "auto")
    assert chosen.name == "tensorflow" and "differ from tensorflow's by 1.0e-02" in note
    with pytest.raises(GutcheckError, match="differ"):
        open_runtime(bundle.model, shape, "openvino")
    assert PARITY_TOLERANCE < 1e-2


def test_a_missing_openvino_leaves_tensorflow(bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # as on a machine without it: import fails
    shape = tuple(bundle.model.input_shape[1:])
    chosen, note = open_runtime(bundle.model, shape, "auto")
    assert chosen.name == "tensorflow" and note.startswith("tensorflow: openvino unavailable")
    with pytest.raises(GutcheckError, match="openvino unavailable"):
        open_runtime(bundle.model, shape, "openvino")
    with pytest.raises(GutcheckError, match="runtime must be one of auto, tensorflow, openvino"):
        open_runtime(bundle.model, shape, "onnx")
    with pytest.raises(GutcheckError, match="runtime must be one of"):
        bundle.scorer_on("onnx")  # refused up front, not at the first frame in the inspection thread


def test_the_runtime_is_ready_before_the_first_part_is_read(bundle, small_dataset):
    """Converting and checking takes ~1.5 s: it happens as inspection starts, not while the first
    part waits for its verdict (on a conveyor it would travel on meanwhile)."""
    from app.inspector import Inspector
    from capture.sources import FilesSource

    class WatchedFiles(FilesSource):
        def read(self):
            self.ready_at_read.append(inspector.scorer._network is not None)
            return super().read()

    source = WatchedFiles(sorted((small_dataset / "test" / "good").iterdir())[:2])
    source.ready_at_read = []
    inspector = Inspector(bundle, source, runtime="auto")
    inspector.run()
    assert source.ready_at_read and all(source.ready_at_read) and inspector.inspected == 2
    assert inspector.scorer.runtime_note.startswith("openvino")


def test_inspect_says_where_the_network_ran_and_refuses_an_unknown_runtime(small_feature_bundle, small_dataset):
    image = next((small_dataset / "test" / "good").iterdir())
    lines = {}
    for choice in ("auto", "tensorflow"):
        proc = gutcheck("inspect", "--model", small_feature_bundle, "--runtime", choice, image)
        assert proc.returncode == 0, proc.stderr
        lines[choice] = proc.stdout
        assert f"network on {'openvino' if choice == 'auto' else 'tensorflow'}" in proc.stderr
    import json

    auto, tf = (json.loads(lines[c]) for c in ("auto", "tensorflow"))
    assert auto["verdict"] == tf["verdict"] and auto["density"] == pytest.approx(tf["density"], rel=1e-4)
    bad = gutcheck("inspect", "--model", small_feature_bundle, "--runtime", "onnx", image)
    assert bad.returncode == 2 and "invalid choice: 'onnx'" in bad.stderr
