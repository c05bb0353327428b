"""The board patches (DeepPCB) split by board: test images of boards whose regions are in train/good
(the file name's first five digits are the board group) against boards the build never saw.

    .venv/bin/python bench/pcb_boards.py

Builds the default detector on ../shared/datasets/deeppcb_256/pcb (skipped when absent) and prints, per
split, the test goods rejected at the built thresholds, the defects caught and the image AUROC: whether
the board patches' false rejects come from the calibration or from boards unlike any it was built on.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> int:
    import detection
    from model_builder.build import build
    from model_builder.calibrate import auroc
    from model_builder.dataset import load_test

    data = detection.SHARED_CATEGORIES["pcb"]
    if not data.is_dir():
        print(f"skipped: {data} is not there")
        return 0
    bundle = build(data, None, detection.methods()["default"], show_progress=sys.stderr.isatty(),
                   log=lambda s: None, report=False).bundle
    test = load_test(data)
    trained = {p.name[:5] for p in (data / "train" / "good").iterdir()}
    anomaly, score = [], []
    for i in range(0, len(test), 32):
        s = bundle.scorer.score_images(test.images[i:i + 32])
        anomaly.append(s.anomaly)
        score.append(bundle.combined(s.density, s.error))
    anomaly, score = np.concatenate(anomaly), np.concatenate(score)
    seen = np.array([p.name[:5] in trained for p in test.paths])
    good = ~test.is_anomaly
    for name, sel in (("boards in train/good", seen), ("boards never seen", ~seen), ("all", np.ones_like(seen))):
        g = good & sel
        print(f"{name:<21} test goods rejected {int(anomaly[g].sum())}/{int(g.sum())} ({anomaly[g].mean():.1%}), "
              f"defects caught {anomaly[~good & sel].mean():.3f}, image AUROC {auroc(test.is_anomaly[sel], score[sel]):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
