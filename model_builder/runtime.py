"""Where a bundle's network runs on the per-frame path.

TensorFlow is the reference: builds, calibration and reports run there, and it is always present.
OpenVINO runs the same traced graph (converted in memory from the Keras model that `load_bundle`
loaded with safe_mode; nothing else is read from disk) faster: on this 2-core CPU the default
model's whole per-frame path runs at 41.5-49.8 frames/s against 35.0-37.8 on TensorFlow (three runs
of bench/live.py); its scores match TensorFlow's (bench/runtime.py). Export drift is a known
failure of such runtimes, so OpenVINO is used only after it reproduced TensorFlow's outputs on probe
inputs to within PARITY_TOLERANCE; otherwise the scorer stays on TensorFlow and says why.

    runtime, note = open_runtime(model, (384, 384, 3), "auto")
    error_map, latent, *rest = runtime(inputs)
"""

from __future__ import annotations

import sys
from typing import Callable, Protocol

import numpy as np

from capture.errors import GutcheckError

RUNTIME_CHOICES = ("auto", "tensorflow", "openvino")
# Largest difference allowed between a runtime's outputs and TensorFlow's, relative to the largest
# TensorFlow output. OpenVINO measured 1e-6 to 8e-6, and its scores then stayed within 4e-4 of the
# good parts' spread on every test image of five categories (bench/runtime.py); 1e-4 leaves a margin
# for other CPUs without letting a real export fault (1e-3 and more) through.
PARITY_TOLERANCE = 1e-4
PROBE_COUNT = 2  # probe inputs the parity check runs (uniform noise and a mid-grey picture)


class Runtime(Protocol):
    name: str

    def __call__(self, inputs: np.ndarray) -> tuple[np.ndarray, ...]: ...


class TensorFlowRuntime:
    """The Keras model as one traced graph: no per-call Python overhead on the live path."""

    name = "tensorflow"

    def __init__(self, model, input_shape: tuple[int, int, int]):
        import tensorflow as tf

        self._run = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def __call__(self, inputs: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(out.numpy() for out in self._run(np.ascontiguousarray(inputs, dtype=np.float32)))


class OpenVinoRuntime:
    """The same graph compiled by OpenVINO for the CPU (any batch size, full float32 precision)."""

    name = "openvino"

    def __init__(self, model, input_shape: tuple[int, int, int]):
        # OpenVINO's converter reports usage to Intel unless told not to; a station sends nothing anywhere
        # it was not asked to: without its telemetry module the converter uses its own no-op stub
        sys.modules.setdefault("openvino_telemetry", None)
        import openvino as ov
        import tensorflow as tf

        graph = tf.function(lambda x: model(x, training=False))
        traced = graph.get_concrete_function(tf.TensorSpec((None, *input_shape), tf.float32))
        # f32 precision: the CPU plug-in would otherwise pick bf16 where the CPU has it, and scores drift
        self._compiled = ov.Core().compile_model(ov.convert_model(traced), "CPU", {
            "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})
        self._request = self._compiled.create_infer_request()
        # the converted graph may expose inner shape tensors as extra outputs: take the model's own by name
        by_name = {name: out for out in self._compiled.outputs for name in out.get_names()}
        self._outputs = [by_name[t.name] for t in traced.outputs]

    def __call__(self, inputs: np.ndarray) -> tuple[np.ndarray, ...]:
        result = self._request.infer({0: np.ascontiguousarray(inputs, dtype=np.float32)})
        return tuple(np.array(result[o]) for o in self._outputs)  # copies: the request reuses its buffers


RUNTIMES: dict[str, Callable[..., Runtime]] = {"tensorflow": TensorFlowRuntime, "openvino": OpenVinoRuntime}


def probe_inputs(input_shape: tuple[int, int, int]) -> np.ndarray:
    """Inputs the parity check runs: uniform noise (every value in range) and a mid-grey picture."""
    noise = np.random.default_rng(0).random(input_shape, dtype=np.float32)
    return np.stack([noise, np.full(input_shape, 0.5, np.float32)])[:PROBE_COUNT]


def parity(reference: Runtime, candidate: Runtime, inputs: np.ndarray) -> float:
    """The largest difference between the two runtimes' outputs on `inputs`, relative to the largest
    reference output (per output; the worse of the two)."""
    worst = 0.0
    for ref, got in zip(reference(inputs), candidate(inputs)):
        if ref.shape != got.shape:
            return float("inf")
        worst = max(worst, float(np.abs(got - ref).max() / max(float(np.abs(ref).max()), 1e-12)))
    return worst


def check_runtime(choice: str) -> str:
    """`choice` if it names a runtime choice, else a one-line GutcheckError listing them."""
    if choice not in RUNTIME_CHOICES:
        raise GutcheckError(f"runtime must be one of {', '.join(RUNTIME_CHOICES)}, not {choice!r}")
    return choice


def open_runtime(model, input_shape: tuple[int, int, int], choice: str = "auto") -> tuple[Runtime, str]:
    """The runtime to score with and one line saying which and why (Scorer.prepare calls it).

    `tensorflow`: the reference. `openvino`: OpenVINO or a GutcheckError (not installed, or its
    outputs differ from TensorFlow's). `auto`: OpenVINO when it is installed and passes the parity
    check, else TensorFlow."""
    check_runtime(choice)
    reference = RUNTIMES["tensorflow"](model, input_shape)
    if choice == "tensorflow":
        return reference, "tensorflow (chosen)"
    try:
        candidate = RUNTIMES["openvino"](model, input_shape)
        drift = parity(reference, candidate, probe_inputs(input_shape))
    except Exception as exc:  # not installed, or the graph does not convert: TensorFlow scores the same
        why = f"openvino unavailable ({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})"
        if choice == "openvino":
            raise GutcheckError(why) from None
        return reference, f"tensorflow: {why}"
    if not drift <= PARITY_TOLERANCE:
        why = f"openvino's outputs differ from tensorflow's by {drift:.1e} (more than {PARITY_TOLERANCE:.0e})"
        if choice == "openvino":
            raise GutcheckError(why)
        return reference, f"tensorflow: {why}"
    return candidate, f"openvino (outputs within {drift:.0e} of tensorflow's)"
