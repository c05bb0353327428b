"""The `gutcheck` command: capture, build, inspect, dashboard, demo."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from capture.errors import GutcheckError


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def cmd_build(args: argparse.Namespace) -> int:
    from model_builder.build import BuildOptions, build

    from model_builder.augment import Augmentation

    if not 0 < args.target_frr < 1 or not 0 < args.target_recall <= 1:
        raise GutcheckError("--target-frr must be in (0, 1) and --target-recall in (0, 1]")
    options = BuildOptions(size=args.size, color=args.color, crop=args.crop, architecture=args.architecture,
                           pretrained=args.pretrained, loss=args.loss, alpha=args.alpha, density_preset=args.density,
                           reconstruction_score=args.score, rule=args.rule, epochs=args.epochs,
                           target_frr=args.target_frr, target_recall=args.target_recall, seed=args.seed,
                           augmentation=Augmentation(enabled=not args.no_augment, flip_horizontal=args.flips,
                                                     flip_vertical=args.flips))
    result = build(Path(args.data), Path(args.out), options, force=args.force, show_progress=not args.quiet)
    b = result.bundle
    print(f"wrote {args.out} in {result.seconds:.0f} s; report: {Path(args.out) / 'report.html'}")
    print(f"thresholds: density {b.thresholds.density:.3f}, reconstruction error "
          f"{b.thresholds.reconstruction:.6f}, rule {b.thresholds.rule}")
    if result.evaluation:
        e, op = result.evaluation, result.evaluation["operating_point"]
        print(f"test set: image AUROC {e['auroc_combined']:.3f} (density {e['auroc_density']:.3f}, "
              f"reconstruction {e['auroc_reconstruction']:.3f}); at the thresholds accuracy {op['accuracy']:.3f}, "
              f"recall {op['recall']:.3f}, precision {op['precision']:.3f}")
    return 0


def _image_paths(items: list[str]) -> list[Path]:
    from capture.imageio import list_images

    paths: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            paths.extend(list_images(p))
        elif p.exists():
            paths.append(p)
        else:
            raise GutcheckError(f"{p}: no such file or folder")
    if not paths:
        raise GutcheckError("no images to inspect")
    return paths


def cmd_inspect(args: argparse.Namespace) -> int:
    """Headless inspection: one JSON line per image."""
    from capture.imageio import read_image
    from model_builder.bundle import load_bundle

    bundle = load_bundle(Path(args.model))
    scorer = bundle.scorer
    failures = 0
    for path in _image_paths(args.images):
        try:
            image = read_image(path)
        except GutcheckError as exc:
            print(f"gutcheck: error: {exc}", file=sys.stderr)
            failures += 1
            continue
        s = scorer.score_images([image])
        print(json.dumps({"file": str(path), "verdict": "anomaly" if s.anomaly[0] else "ok",
                          "density": round(float(s.density[0]), 4), "reconstruction_error": float(s.error[0]),
                          "rule": bundle.thresholds.rule, "model_id": bundle.model_id()}), flush=True)
    return 1 if failures else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from app.demo import run_demo

    run_demo(Path(args.datasets), Path(args.models), rebuild=args.rebuild, n_parts=args.parts, seed=args.seed)
    return 0


def cmd_not_yet(name: str):
    def run(args: argparse.Namespace) -> int:
        raise GutcheckError(f"'gutcheck {name}' is not available in this version yet; see README.md for status")
    return run


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gutcheck", description="Visual inspection that learns from good parts only.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("capture", help="film good parts and build a good-only image set",
                       description="Capture images of good parts into datasets/<part>/train/good. "
                                   "(Not available yet in this version.)")
    c.add_argument("--source", default="cam:0", help="cam:N, file:VIDEO, folder:PATH, synthetic:, or a URL")
    c.add_argument("--part", help="part name: images go to datasets/<part>/")
    c.set_defaults(func=cmd_not_yet("capture"))

    b = sub.add_parser("build", help="train a model bundle from good images",
                       description="Train the autoencoder and latent density on DATA/train/good, calibrate both "
                                   "thresholds on held-out good images, evaluate on DATA/test when present.")
    b.add_argument("--data", required=True, help="dataset folder (MVTec layout: train/good, test/<label>)")
    b.add_argument("--out", required=True, help="bundle folder to write (refused if it exists, unless --force)")
    b.add_argument("--size", type=int, default=128, help="model input size in pixels (default 128; 256 available)")
    b.add_argument("--color", choices=["rgb", "gray"], default="rgb")
    b.add_argument("--crop", type=int, default=0, metavar="PX",
                   help="centre a PX-pixel square on the part before resizing (the capture tool's framing)")
    b.add_argument("--architecture", choices=["mobilenet", "residual", "prototype"], default="mobilenet",
                   help="mobilenet: pretrained encoder (default); residual: deeper CAE; prototype: the old CAE")
    b.add_argument("--pretrained", default="imagenet", metavar="WEIGHTS",
                   help="mobilenet weights: imagenet (Keras downloads once), a no-top .h5 path, or none")
    b.add_argument("--loss", choices=["hybrid", "mse", "ssim"], default="hybrid")
    b.add_argument("--alpha", type=float, default=0.5, help="weight of SSIM in the hybrid loss (default 0.5)")
    b.add_argument("--density", choices=["whitened", "prototype"], default="whitened",
                   help="latent density: whitened KDE with cross-validated bandwidth (default) or the prototype's")
    b.add_argument("--score", choices=["topk", "ssim", "mse"], default="topk",
                   help="reconstruction error: topk (mean of the worst pixels, default), ssim, or mse (prototype)")
    b.add_argument("--rule", choices=["and", "or"], default="or", help="two-threshold rule (default or)")
    b.add_argument("--epochs", type=int, default=60)
    b.add_argument("--no-augment", action="store_true", help="train without augmentation")
    b.add_argument("--flips", action="store_true", help="augment with flips (only for mirror-symmetric parts)")
    b.add_argument("--target-frr", type=float, default=0.01, help="false-reject rate on good images (default 0.01)")
    b.add_argument("--target-recall", type=float, default=0.95,
                   help="also report thresholds at this recall when test/ has defects (default 0.95)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--force", action="store_true", help="replace an existing bundle (the old one goes to .trash)")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=cmd_build)

    i = sub.add_parser("inspect", help="headless inspection: JSON lines out",
                       description="Score images with a model bundle; prints one JSON line per image.")
    i.add_argument("--model", required=True, help="model bundle folder")
    i.add_argument("images", nargs="+", help="image files or folders")
    i.set_defaults(func=cmd_inspect)

    d = sub.add_parser("dashboard", help="the live inspection dashboard",
                       description="Live inspection window with knob box and conveyor. (Not available yet.)")
    d.add_argument("--model", help="model bundle folder")
    d.add_argument("--source", default="cam:0")
    d.add_argument("--knobs", help="knob box serial port (COM7, /dev/rfcomm0, socket://host:port)")
    d.add_argument("--conveyor", help="conveyor Arduino serial port")
    d.set_defaults(func=cmd_not_yet("dashboard"))

    m = sub.add_parser("demo", help="the whole chain on synthetic parts",
                       description="Generate a synthetic part dataset (once), build a small model, and inspect a "
                                   "synthetic conveyor stream with a known good/defect mix.")
    m.add_argument("--datasets", default="datasets", help="where the demo dataset lives (default datasets/)")
    m.add_argument("--models", default="models", help="where the demo model lives (default models/)")
    m.add_argument("--parts", type=int, default=40, help="parts on the conveyor (default 40)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--rebuild", action="store_true", help="build the model again (old one goes to .trash)")
    m.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    _quiet_tensorflow()
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except GutcheckError as exc:
        print(f"gutcheck: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gutcheck: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
