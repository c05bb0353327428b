"""Drift run: the synthetic conveyor with the light changed part-way, inspected by a detector v2 model
through the pipeline with the inspection log and the drift watch; then the thresholds
`gutcheck recalibrate` proposes from the log.

    .venv/bin/python bench/drift.py [--parts 300] [--light-from 120] [--light 1.25] [--model DIR]

The model defaults to the one `make screenshots` builds (build/screenshot-model: the synthetic nut);
it is built first when missing. Prints when the watch raised drift (and ended it, if it did), the
false rejects before and after the change (the stream knows which parts are good), and the proposal.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", type=int, default=300)
    p.add_argument("--light-from", type=int, default=120)
    p.add_argument("--light", type=float, default=1.25)
    p.add_argument("--model", default=str(REPO / "build" / "screenshot-model"))
    args = p.parse_args()
    if not (Path(args.model) / "bundle.json").is_file():
        sys.path.insert(0, str(REPO / "docs"))
        from refresh_images import build_model

        build_model(rebuild=False)
    from app.drift import drift_watch
    from app.inspection_log import InspectionLog
    from app.inspector import Inspector
    from app.outputs import CallbackOutput, LogOutput
    from app.recalibrate import propose
    from capture.sources import SyntheticSource
    from model_builder.bundle import load_bundle

    bundle = load_bundle(Path(args.model))
    events: list[tuple[int, str]] = []
    verdicts = []
    watch = drift_watch(bundle, [], say=lambda line: events.append((len(verdicts), line)))
    log = InspectionLog(Path(tempfile.mkdtemp()) / "log")
    source = SyntheticSource(seed=31, parts=args.parts, defects=0.1, light_from=args.light_from, light=args.light)
    inspector = Inspector(bundle, source, "part", [LogOutput(log), watch, CallbackOutput(verdicts.append)])
    inspector.run()
    inspector.close_outputs()
    print(f"model {bundle.info.model_id}; {len(verdicts)} parts inspected; light x{args.light} from part "
          f"{args.light_from}")
    for part, line in events:
        print(f"after part {part}: {line}")
    if not events:
        print("no drift raised")
    for name, chosen in (("before the change", [v for v in verdicts if v.part < args.light_from]),
                         ("after the change", [v for v in verdicts if v.part >= args.light_from])):
        goods = [v for v in chosen if (v.truth or "good") == "good"]
        rejected = sum(v.anomaly for v in goods)
        print(f"{name}: {rejected} of {len(goods)} good parts rejected ({rejected / max(len(goods), 1):.1%})")
    from capture.errors import GutcheckError

    try:
        proposal = propose(bundle, log)
    except GutcheckError as exc:
        print(f"recalibrate: {exc}")
        log.close()
        return 0
    for line in proposal.lines():
        print(line)
    import numpy as np

    from model_builder.scoring import is_anomaly

    for name, wanted in (("good", True), ("defective", False)):
        after = [v for v in verdicts if v.part >= args.light_from and ((v.truth or "good") == "good") == wanted]
        d, e = np.array([v.density for v in after]), np.array([v.error for v in after])
        print(f"with the proposal, the {name} parts after the change would be rejected at "
              f"{is_anomaly(d, e, proposal.proposed).mean():.1%} (now {is_anomaly(d, e, proposal.current).mean():.1%})")
    log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
