"""Detection benchmark on the real categories in ../shared and the synthetic parts: the prototype
reproduced, Gutcheck's v1, detector v2 and the current default, built the same way in one run.

    .venv/bin/python bench/detection.py [--categories bottle,pcb,nut] [--methods v2,default]
                                        [--out bench/results/detection.json]

Reads ../shared/datasets/ (SHARED_CATEGORIES; never copied into the repository; a category that is
absent is skipped) and generates the synthetic categories (`nut`: the demo's machined part; `plate`: a
textured metal plate) into a temporary folder. Per category it builds:
- prototype: its CAE at 128 px, MSE loss, no augmentation, KDE on the raw flattened latent with
  bandwidth 0.2, whole-image MSE, AND rule;
- v1: pretrained MobileNetV2 encoder at 384 px with a pixel decoder (SSIM error), patch density on
  288-value descriptors;
- v2: detector v2 (feature autoencoder at 384 px, KDE on its latents) with its own options spelled out;
- default: `gutcheck build` as it is now.
All get the same calibration (the default false-reject target on held-out good images). `image AUROC` is
the combined score each method reports (`score` in `gutcheck inspect`); `FRR` is the share of the test
set's good images the built thresholds reject, `recall` the share of its defects they catch. Each build
runs in its own process, so that `peak GB` is that build's peak resident memory.
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
SHARED_CATEGORIES = {  # name -> folder in MVTec layout: objects, a structure, a surface, logical anomalies
    "bottle": MVTEC / "bottle", "pill": MVTEC / "pill", "screw": MVTEC / "screw",
    "pcb": SHARED / "datasets" / "deeppcb_256" / "pcb", "poly": SHARED / "datasets" / "elpv_256" / "poly",
    "juice_bottle": SHARED / "datasets" / "mvtec_loco_256" / "juice_bottle",
}
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
        "v2": BuildOptions(architecture="features", pretrained=pretrained, time_limit_s=limit),
        "default": BuildOptions(pretrained=pretrained),
    }


def methods_names() -> list[str]:
    return ["prototype", "v1", "v2", "default"]


SYNTHETIC = ("nut", "plate")


def category_folder(name: str, scratch: Path) -> Path:
    """The real category in ../shared (SHARED_CATEGORIES), or a synthetic one generated into `scratch`."""
    if name not in SYNTHETIC:
        return SHARED_CATEGORIES.get(name, MVTEC / name)
    from capture.synthetic import write_dataset

    folder = scratch / name
    if not folder.exists():
        write_dataset(folder, seed=0, n_train=200, n_test_good=40, n_test_defect=10, size=256, part=name)
    return folder


def build_row(category: str, method: str, scratch: Path) -> dict:
    """Build one method on one category (in this process) and measure it."""
    from model_builder.build import build

    t0 = time.monotonic()
    result = build(category_folder(category, scratch), None, methods()[method], show_progress=sys.stderr.isatty(),
                   log=lambda s: None, report=False)
    seconds = time.monotonic() - t0
    e = result.evaluation
    point = e["operating_point"]
    return {
        "category": category, "method": method, "image_auroc": e["auroc_combined"],
        "auroc_density": e["auroc_density"], "auroc_reconstruction": e["auroc_reconstruction"],
        "f1": point["f1"], "recall_at_1pct_frr": e["recall_at_1pct_frr"],
        "false_rejects": point["fp"], "test_goods": point["fp"] + point["tn"], "recall": point["recall"],
        "pixel_auroc": e["pixel_auroc"], "build_s": seconds, "train_images": result.bundle.info.provenance.train_images,
        "epochs": result.bundle.info.training.epochs_run,
        "f1_and": e["rules"]["and"]["operating_point"]["f1"], "f1_or": e["rules"]["or"]["operating_point"]["f1"],
    }


def run(categories: list[str], out: Path | None, only: list[str] | None = None) -> list[dict]:
    """Every method on every category, each build in a child process whose peak memory is measured."""
    import subprocess
    import tempfile

    rows = []
    scratch = Path(tempfile.mkdtemp(prefix="gutcheck-bench-"))
    for cat in categories:
        if cat not in SYNTHETIC and not category_folder(cat, scratch).is_dir():
            print(f"{cat}: skipped, {category_folder(cat, scratch)} is not there", flush=True)
            continue
        for name in methods():
            if only and name not in only:
                continue
            child = subprocess.Popen([sys.executable, __file__, "--one", cat, name, "--scratch", str(scratch)],
                                     stdout=subprocess.PIPE, text=True)
            output = child.stdout.read()
            _, status, usage = os.wait4(child.pid, 0)
            child.returncode = os.waitstatus_to_exitcode(status)
            if child.returncode != 0:
                print(f"{cat} {name}: the build failed (exit {child.returncode})", flush=True)
                continue
            row = json.loads(output.strip().splitlines()[-1])
            row["peak_gb"] = usage.ru_maxrss / 1024**2  # kilobytes on Linux
            rows.append(row)
            print(_line(row), flush=True)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=1))
    return rows


HEADER = (f"{'category':<12} {'method':<9} {'img AUROC':>9} {'(dens':>6} {'recon)':>6} {'F1':>6} "
          f"{'rec@1%FRR':>9} {'FRR':>9} {'recall':>6} {'pix AUROC':>9} {'build s':>7} {'peak GB':>7} {'epochs':>6}")


def _f(v, w=6):
    return f"{'–':>{w}}" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:>{w}.3f}"


def _line(r: dict) -> str:
    frr = f"{r['false_rejects']}/{r['test_goods']}" if "false_rejects" in r else r.get("frr_text", "")
    return (f"{r['category']:<12} {r['method']:<9} {_f(r['image_auroc'], 9)} {_f(r['auroc_density'])} "
            f"{_f(r['auroc_reconstruction'])} {_f(r['f1'])} {_f(r['recall_at_1pct_frr'], 9)} {frr:>9} "
            f"{_f(r['recall'])} {_f(r['pixel_auroc'], 9)} {r['build_s']:>7.0f} {r['peak_gb']:>7.2f} {r['epochs']:>6d}")


def _mean(values: list) -> float:
    """Mean of the measured values (None or NaN: not measured); NaN when none was."""
    got = [float(v) for v in values if v is not None and not np.isnan(v)]
    return float(np.mean(got)) if got else float("nan")


def summary_line(method: str, rows: list[dict]) -> str:
    """Mean and lowest image AUROC over the real categories, and false rejects pooled over them."""
    sel = [r for r in rows if r["method"] == method and r["category"] not in SYNTHETIC]
    if not sel:
        return f"{method}: no real category"
    aurocs = [r["image_auroc"] for r in sel]
    rejected, goods = sum(r["false_rejects"] for r in sel), sum(r["test_goods"] for r in sel)
    from model_builder.calibrate import false_reject_interval

    low, high = false_reject_interval(rejected, goods)
    return (f"{method:<9} over {len(sel)} real categories: image AUROC mean {_mean(aurocs):.3f}, lowest "
            f"{min(aurocs):.3f} ({sel[int(np.argmin(aurocs))]['category']}); false rejects pooled {rejected}/{goods} "
            f"= {rejected / max(goods, 1):.2%} (95 % interval {low:.2%}-{high:.2%}); mean recall "
            f"{_mean([r['recall'] for r in sel]):.3f}; build {max(r['build_s'] for r in sel):.0f} s at most, peak "
            f"{max(r['peak_gb'] for r in sel):.2f} GB at most")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--categories", help="comma-separated (default: every shared category present, then "
                                        + ", ".join(SYNTHETIC) + ")")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "detection.json")
    p.add_argument("--methods", help="comma-separated subset of: " + ", ".join(methods_names()))
    p.add_argument("--one", nargs=2, metavar=("CATEGORY", "METHOD"), help=argparse.SUPPRESS)  # a child's build
    p.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(build_row(*args.one, args.scratch)))
        return 0
    real = [name for name, folder in SHARED_CATEGORIES.items() if folder.is_dir()]
    if not real:
        print(f"note: {SHARED / 'datasets'} is absent (the real images are read from ../shared only): synthetic "
              "parts only")
    cats = args.categories.split(",") if args.categories else real + list(SYNTHETIC)
    print(HEADER, flush=True)
    rows = run(cats, args.out, args.methods.split(",") if args.methods else None)
    print("-" * len(HEADER))
    for method in dict.fromkeys(r["method"] for r in rows):
        print(summary_line(method, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
