"""Detection benchmark on real MVTec AD categories and the synthetic parts: the prototype reproduced,
Gutcheck's v1 default and the current default (detector v2), built the same way in one run.

    .venv/bin/python bench/detection.py [--categories bottle,pill,nut] [--out bench/results/detection.json]

Reads ../shared/datasets/mvtec_ad_256/ (never copied into the repository; skipped when absent) and
generates the synthetic categories (`nut`: the demo's machined part; `plate`: a textured metal plate)
into a temporary folder. Per category it builds:
- prototype: its CAE at 128 px, MSE loss, no augmentation, KDE on the raw flattened latent with
  bandwidth 0.2, whole-image MSE, AND rule;
- v1: pretrained MobileNetV2 encoder at 384 px with a pixel decoder (SSIM error), patch density on
  288-value descriptors (the default until detector v2);
- default: `gutcheck build` as it is now (detector v2: feature autoencoder, KDE on its latents).
All get the same calibration (1 % false-reject rate on held-out good images). `image AUROC` is the
combined score each method reports (`score` in `gutcheck inspect`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED = REPO.parent / "shared"
MVTEC = SHARED / "datasets" / "mvtec_ad_256"
MOBILENET_WEIGHTS = SHARED / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5"


def methods():
    from model_builder.augment import Augmentation
    from model_builder.build import BuildOptions

    pretrained = str(MOBILENET_WEIGHTS) if MOBILENET_WEIGHTS.is_file() else "imagenet"
    limit = BuildOptions().time_limit_s  # the builder's default: a whole build stays within 10 minutes
    return {
        "prototype": BuildOptions(architecture="prototype", size=128, loss="mse", density_preset="prototype",
                                  reconstruction_score="mse", rule="and", epochs=200, patience=10,
                                  augmentation=Augmentation(enabled=False), time_limit_s=limit),
        "v1": BuildOptions(architecture="mobilenet", pretrained=pretrained, reconstruction_score="ssim",
                           time_limit_s=limit),
        "default": BuildOptions(pretrained=pretrained),
    }


def methods_names() -> list[str]:
    return ["prototype", "v1", "default"]


SYNTHETIC = ("nut", "plate")


def category_folder(name: str, scratch: Path) -> Path:
    """The MVTec category in ../shared, or a synthetic category generated into `scratch`."""
    if name not in SYNTHETIC:
        return MVTEC / name
    from capture.synthetic import write_dataset

    folder = scratch / name
    if not folder.exists():
        write_dataset(folder, seed=0, n_train=200, n_test_good=40, n_test_defect=10, size=256, part=name)
    return folder


def run(categories: list[str], out: Path | None, only: list[str] | None = None) -> list[dict]:
    import tempfile

    from model_builder.build import build

    rows = []
    scratch = Path(tempfile.mkdtemp(prefix="gutcheck-bench-"))
    for cat in categories:
        for name, options in methods().items():
            if only and name not in only:
                continue
            t0 = time.monotonic()
            result = build(category_folder(cat, scratch), None, options, show_progress=sys.stderr.isatty(),
                           log=lambda s: None, report=False)
            seconds = time.monotonic() - t0
            e = result.evaluation
            row = {
                "category": cat, "method": name, "image_auroc": e["auroc_combined"],
                "auroc_density": e["auroc_density"], "auroc_reconstruction": e["auroc_reconstruction"],
                "f1": e["operating_point"]["f1"], "recall_at_1pct_frr": e["recall_at_1pct_frr"],
                "pixel_auroc": e["pixel_auroc"], "build_s": seconds,
                "epochs": result.bundle.info.training.epochs_run,
                "f1_and": e["rules"]["and"]["operating_point"]["f1"], "f1_or": e["rules"]["or"]["operating_point"]["f1"],
            }
            rows.append(row)
            print(_line(row), flush=True)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=1))
    return rows


HEADER = (f"{'category':<10} {'method':<12} {'img AUROC':>9} {'(dens':>6} {'recon)':>6} {'F1':>6} "
          f"{'rec@1%FRR':>9} {'pix AUROC':>9} {'build s':>8} {'epochs':>6} {'F1 AND':>6} {'F1 OR':>6}")


def _f(v, w=6):
    return f"{'–':>{w}}" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:>{w}.3f}"


def _line(r: dict) -> str:
    return (f"{r['category']:<10} {r['method']:<12} {_f(r['image_auroc'], 9)} {_f(r['auroc_density'])} "
            f"{_f(r['auroc_reconstruction'])} {_f(r['f1'])} {_f(r['recall_at_1pct_frr'], 9)} "
            f"{_f(r['pixel_auroc'], 9)} {r['build_s']:>8.0f} {r['epochs']:>6d} {_f(r['f1_and'])} {_f(r['f1_or'])}")


def _mean(values: list) -> float:
    """Mean of the measured values (None or NaN: not measured); NaN when none was."""
    got = [float(v) for v in values if v is not None and not np.isnan(v)]
    return float(np.mean(got)) if got else float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--categories", help="comma-separated (default: every category present)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "detection.json")
    p.add_argument("--methods", help="comma-separated subset of: " + ", ".join(methods_names()))
    args = p.parse_args()
    real = sorted(p.name for p in MVTEC.iterdir() if p.is_dir()) if MVTEC.is_dir() else []
    if not real:
        print(f"note: {MVTEC} is absent (the MVTec images are read from ../shared only): synthetic parts only")
    cats = args.categories.split(",") if args.categories else real + list(SYNTHETIC)
    print(HEADER, flush=True)
    rows = run(cats, args.out, args.methods.split(",") if args.methods else None)
    print("-" * len(HEADER))
    for method in dict.fromkeys(r["method"] for r in rows):
        sel = [r for r in rows if r["method"] == method and r["category"] not in SYNTHETIC]  # real parts only
        mean = {k: _mean([r[k] for r in sel])
                for k in ("image_auroc", "auroc_density", "auroc_reconstruction", "f1", "recall_at_1pct_frr",
                          "pixel_auroc", "build_s", "f1_and", "f1_or")}
        print(_line({"category": "mean real", "method": method, "epochs": 0, **mean}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
