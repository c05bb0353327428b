"""Does a bundle score the same on OpenVINO as on TensorFlow? On real parts, image by image.

    .venv/bin/python bench/runtime.py [--categories bottle,pill,screw,nut,plate]

Per category it builds the default bundle (`gutcheck build`, detector v2), loads it as `inspect`
does, and scores every test image one at a time, as the live path does, on both runtimes. It prints
the largest difference of each score in units of the good parts' spread (the unit the knobs move
in), the verdicts that differ at the calibrated thresholds and the image AUROC on each runtime.
Speed is bench/live.py's question (the whole per-frame path, as the inspector runs it). MVTec
categories come from ../shared and are skipped when absent; `nut` and `plate` are the synthetic parts.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def test_images(folder: Path) -> list[tuple[Path, bool]]:
    """(path, is_defect) of every test image of a category."""
    return [(p, p.parent.name != "good") for p in sorted((folder / "test").glob("*/*.png"))]


def score_all(bundle, runtime: str, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Density, error and anomaly per image, scoring one image at a time."""
    scorer = bundle.scorer_on(runtime)
    scorer.prepare()
    density, error, anomaly = [], [], []
    for img in images:
        s = scorer.score_inputs(bundle.preprocessing.apply_batch([img]))
        density.append(s.density[0])
        error.append(s.error[0])
        anomaly.append(s.anomaly[0])
    print(f"  {runtime}: {scorer.runtime_note}", flush=True)
    return np.array(density), np.array(error), np.array(anomaly)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--categories", default="bottle,pill,screw,nut,plate")
    args = p.parse_args()
    import cv2
    from sklearn.metrics import roc_auc_score

    from detection import MVTEC, SYNTHETIC, category_folder, methods
    from model_builder.build import build
    from model_builder.bundle import load_bundle

    scratch = Path(tempfile.mkdtemp(prefix="gutcheck-runtime-"))
    for category in args.categories.split(","):
        if category not in SYNTHETIC and not (MVTEC / category).is_dir():
            print(f"{category}: skipped, {MVTEC / category} is not there")
            continue
        folder = category_folder(category, scratch)
        build(folder, scratch / f"m-{category}", methods()["default"], show_progress=False, log=lambda s: None,
              report=False)
        bundle = load_bundle(scratch / f"m-{category}")
        tests = test_images(folder)
        images = [cv2.imread(str(path)) for path, _ in tests]
        truth = np.array([defect for _, defect in tests])
        print(f"{category}: {len(images)} test images", flush=True)
        tf_d, tf_e, tf_a = score_all(bundle, "tensorflow", images)
        ov_d, ov_e, ov_a = score_all(bundle, "openvino", images)
        stats = bundle.good_statistics
        auroc = [roc_auc_score(truth, bundle.combined(d, e)) for d, e in ((tf_d, tf_e), (ov_d, ov_e))]
        print(f"{category:<7} max |density difference| {np.abs(ov_d - tf_d).max() / stats.density_spread:.1e} good "
              f"spreads, max |error difference| {np.abs(ov_e - tf_e).max() / stats.error_spread:.1e} good spreads; "
              f"verdicts differing {int((ov_a != tf_a).sum())} of {len(images)}; image AUROC tensorflow "
              f"{auroc[0]:.4f}, openvino {auroc[1]:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
