"""The one inspection pipeline and its outputs: a slow or failing output never slows or stops
inspection; what it could not take is counted; every output sees the same verdict record."""

from __future__ import annotations

import json
import time

from app.inspector import Inspector
from app.outputs import CallbackOutput, JsonLinesOutput, QueuedOutput
from capture.sources import SyntheticSource
from model_builder.bundle import load_bundle


class SlowOutput(QueuedOutput):
    name = "slow"

    def __init__(self, seconds: float, maxsize: int):
        self.seconds = seconds
        super().__init__(maxsize)

    def send(self, verdict) -> None:
        time.sleep(self.seconds)


class BrokenOutput(QueuedOutput):
    name = "broken"

    def send(self, verdict) -> None:
        raise ConnectionError("broker unreachable")


def run(bundle, outputs) -> tuple[Inspector, float]:
    inspector = Inspector(bundle, SyntheticSource(seed=2, parts=6, defects=0.5), "continuous", outputs)
    start = time.perf_counter()
    inspector.run()
    return inspector, time.perf_counter() - start


def test_a_slow_or_failing_output_never_slows_inspection_and_its_losses_are_counted(tiny_bundle, tmp_path):
    bundle = load_bundle(tiny_bundle)
    seen = []
    _, alone = run(bundle, [CallbackOutput(seen.append)])
    slow, broken = SlowOutput(0.5, maxsize=3), BrokenOutput()
    inspector, with_slow = run(bundle, [slow, broken])
    n = inspector.inspected
    assert n == len(seen) > 20
    print(f"\n{n} frames: {alone:.2f} s alone, {with_slow:.2f} s beside an output that takes 0.5 s a verdict")
    assert with_slow < alone * 1.5 + 0.5  # not n * 0.5 s
    assert slow.dropped > 0 and slow.sent + slow.dropped + slow.pending() + 1 >= n  # one may be in send()
    broken.close()
    assert broken.failed == n and "broker unreachable" in broken.state()
    slow.close(0.1)


def test_every_output_sees_the_same_record_and_the_json_says_its_format(tiny_bundle, tmp_path):
    bundle = load_bundle(tiny_bundle)
    path = tmp_path / "verdicts.jsonl"
    seen = []
    with open(path, "w") as stream:
        json_out = JsonLinesOutput(stream)
        inspector, _ = run(bundle, [json_out, CallbackOutput(seen.append)])
        inspector.close_outputs()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == len(seen) == inspector.inspected
    for line, verdict in zip(lines, seen):
        assert line["format"] == "gutcheck-verdict/1" and line["part"] == verdict.part
        assert line["verdict"] == ("anomaly" if verdict.anomaly else "ok")
        assert line["box"] == [0, 0, 256, 256] and line.get("truth") == verdict.truth
        assert line["score"] == round(verdict.score, 4)
