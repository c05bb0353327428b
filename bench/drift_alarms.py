"""Drift alarms on lines with few and many defects: does the watch cry wolf, and does it still see a
light change?

    .venv/bin/python bench/drift_alarms.py [--parts 600] [--light-from 200] [--compare REV] [--model DIR]

Each stream (defect share 0 %, 30 %, 60 %; light unchanged, x1.1 and x1.25 from part `--light-from`)
goes once through the real pipeline with the model (default: build/screenshot-model, the synthetic
nut of `make screenshots`, built when missing); its verdicts are then replayed through the drift
watch of this tree and, with `--compare REV`, through app/drift.py as it was at REV, so both judge
the same parts. Prints, per stream and watch: alarms raised per 1000 parts on the unchanged stretch
(before the change; the whole stream when the light never changes) and the parts from the change to
the first alarm after it.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFECTS = (0.0, 0.3, 0.6)
LIGHTS = (1.0, 1.1, 1.25)


def scored_stream(bundle, defects: float, light: float, parts: int, light_from: int, seed: int) -> list:
    """The verdicts of one synthetic stream through the pipeline (what the watch needs of each)."""
    from app.inspector import Inspector
    from app.outputs import CallbackOutput
    from capture.sources import SyntheticSource

    kept = []
    keep = CallbackOutput(lambda v: kept.append(SimpleNamespace(part=v.part, anomaly=v.anomaly, density=v.density,
                                                                error=v.error, thresholds=v.thresholds,
                                                                time=v.time)))
    source = SyntheticSource(seed=seed, parts=parts, defects=defects, light_from=light_from if light != 1.0 else 0,
                             light=light)
    Inspector(bundle, source, "part", [keep]).run()
    return kept


def drift_module(rev: str | None):
    """app.drift of this tree, or as it was at git revision `rev`."""
    if rev is None:
        import app.drift

        return app.drift
    text = subprocess.run(["git", "show", f"{rev}:app/drift.py"], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout
    path = Path(tempfile.mkdtemp()) / "drift_at_rev.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(f"drift_{rev}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def alarms(module, bundle, verdicts: list) -> list[int]:
    """The parts at which the watch raised drift (started; not the ones where it stayed on)."""
    raised: list[int] = []
    at = [0]
    watch = module.DriftWatch.for_bundle(bundle, on_change=lambda s: raised.append(at[0]) if s.drifting else None)
    for v in verdicts:
        at[0] = v.part
        watch.put(v)
    return raised


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", type=int, default=600)
    p.add_argument("--light-from", type=int, default=200)
    p.add_argument("--compare", metavar="REV", help="also replay through app/drift.py at this git revision")
    p.add_argument("--model", default=str(REPO / "build" / "screenshot-model"))
    p.add_argument("--seed", type=int, default=41)
    args = p.parse_args()
    if not (Path(args.model) / "bundle.json").is_file():
        sys.path.insert(0, str(REPO / "docs"))
        from refresh_images import build_model

        build_model(rebuild=False)
    from tqdm import tqdm

    from model_builder.bundle import load_bundle

    bundle = load_bundle(Path(args.model))
    watches = {"this tree": drift_module(None)}
    if args.compare:
        watches[args.compare] = drift_module(args.compare)
    streams = [(d, light) for d in DEFECTS for light in LIGHTS]
    print(f"model {bundle.info.model_id}; {args.parts} parts a stream, light changed from part {args.light_from}")
    print(f"{'defects':>7} {'light':>5} {'rejected before/after':>28}  " +
          "  ".join(f"{name + ': alarms/1000 unchanged, parts to alarm':>44}" for name in watches))
    rows = []
    for defects, light in tqdm(streams, desc="streams", unit="stream"):
        verdicts = scored_stream(bundle, defects, light, args.parts, args.light_from, args.seed)
        change = args.light_from if light != 1.0 else len(verdicts) + 1
        before = [v for v in verdicts if v.part < change]
        after = [v for v in verdicts if v.part >= change]
        cells = []
        for name, module in watches.items():
            raised = alarms(module, bundle, verdicts)
            unchanged = [a for a in raised if a < change]
            per_1000 = 1000 * len(unchanged) / max(len(before), 1)
            first = next((a - change for a in raised if a >= change), None)
            to_alarm = "-" if light == 1.0 else ("none" if first is None else str(first))
            cells.append(f"{per_1000:>26.1f} {to_alarm:>17}")
        rejected = f"{sum(v.anomaly for v in before) / max(len(before), 1):.0%} / " + \
            (f"{sum(v.anomaly for v in after) / len(after):.0%}" if after else "-")
        rows.append(f"{defects:>7.0%} {light:>5} {rejected:>28}  " + "  ".join(f"{c:>44}" for c in cells))
        tqdm.write(rows[-1])
    print("\n".join(["", *rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
