"""What the demo's training budget buys: `gutcheck demo`'s figures against its epoch limit.

    .venv/bin/python bench/demo_budget.py [--epochs 10,15,20,40] [--seeds 0]

For each epoch limit (early stopping as the demo sets it) and dataset seed, the demo is built from
scratch in a temporary folder and its synthetic conveyor stream inspected, exactly as `gutcheck demo`
does. Reported per run: build seconds, epochs run, the dataset's test AUROC (combined score), the
stream's image AUROC and accuracy at the operating point. Same machine, one process, one run.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from app.demo import demo_build_options, run_demo  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", default="10,15,20,40")
    parser.add_argument("--seeds", default="0")
    args = parser.parse_args(argv)
    print(f"{'epochs':>6} {'seed':>4} {'run':>4} {'build s':>8} {'test AUROC':>10} {'stream AUROC':>12} {'accuracy':>8}")
    for seed in (int(s) for s in args.seeds.split(",")):
        for epochs in (int(e) for e in args.epochs.split(",")):
            options = dataclasses.replace(demo_build_options(), epochs=epochs)
            with tempfile.TemporaryDirectory() as tmp:
                lines: list[str] = []
                start = time.monotonic()
                bundle, summary = run_demo(Path(tmp) / "d", Path(tmp) / "m", seed=seed, log=lines.append,
                                           options=options)
                seconds = time.monotonic() - start
                run = bundle.info.training.epochs_run
                print(f"{epochs:>6} {seed:>4} {run:>4} {seconds:>8.0f} {bundle.info.evaluation['auroc_combined']:>10.3f} "
                      f"{summary.auroc(bundle):>12.3f} {summary.operating_point().accuracy:>8.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
