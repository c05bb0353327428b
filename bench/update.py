"""Updating a bundle with new good images (`gutcheck build --update`) against building again, on the
shared MVTec AD categories.

    .venv/bin/python bench/update.py [--categories bottle,pill,screw] [--added 100]

Per category the good training images are split in two: the bundle is built on all but `--added`
of them ("before"), then updated with the `--added` others ("after"); a bundle built on all of them
at once ("full") is the reference. Same default options, same test set, same machine, one run.
Reported: test image AUROC of each, and the seconds the build and the update took. The images are
read from ../shared (never copied into the repository); the split folders are symlinks in a
temporary folder.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.detection import MOBILENET_WEIGHTS, MVTEC  # noqa: E402


def linked_dataset(root: Path, source: Path, good: list[Path], with_test: bool) -> Path:
    """A dataset folder of symlinks: `good` as train/good, and source's test/ (and masks) when asked."""
    (root / "train" / "good").mkdir(parents=True)
    for path in good:
        (root / "train" / "good" / path.name).symlink_to(path)
    if with_test:
        for sub in ("test", "ground_truth"):
            if (source / sub).is_dir():
                (root / sub).symlink_to(source / sub)
    return root


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--categories", default="bottle,pill,screw")
    p.add_argument("--added", type=int, default=100, help="good images added by the update (default 100)")
    args = p.parse_args()
    if not MVTEC.is_dir():
        print(f"skipped: {MVTEC} is not there")
        return 0
    from model_builder.build import BuildOptions, build
    from model_builder.update import update

    options = BuildOptions(pretrained=str(MOBILENET_WEIGHTS) if MOBILENET_WEIGHTS.is_file() else "imagenet")
    quiet = dict(show_progress=False, log=lambda s: None)
    rows = []
    for category in args.categories.split(","):
        source = MVTEC / category
        good = sorted((source / "train" / "good").iterdir())
        first, added = good[:-args.added], good[-args.added:]
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            before_data = linked_dataset(tmp / "before", source, first, with_test=True)
            added_data = linked_dataset(tmp / "added", source, added, with_test=True)
            full_data = linked_dataset(tmp / "full", source, good, with_test=True)
            before = build(before_data, tmp / "m-before", options, **quiet)
            start = time.perf_counter()
            after = update(tmp / "m-before", added_data, tmp / "m-after", **quiet)
            update_s = time.perf_counter() - start
            full = build(full_data, tmp / "m-full", options, **quiet)
        row = (category, len(first), len(added), before.evaluation["auroc_combined"],
               after.evaluation["auroc_combined"], full.evaluation["auroc_combined"], before.seconds, update_s,
               full.seconds, after.bundle.info.calibration.validation_images)
        rows.append(row)
        print("{:<8} built on {:3d}, added {:3d}: AUROC before {:.3f}, after update {:.3f}, full build {:.3f}; "
              "build {:.0f} s, update {:.1f} s, full build {:.0f} s; calibrated on {} held-out goods".format(*row),
              flush=True)
    print(f"mean AUROC: before {sum(r[3] for r in rows) / len(rows):.3f}, after update "
          f"{sum(r[4] for r in rows) / len(rows):.3f}, full build {sum(r[5] for r in rows) / len(rows):.3f}; "
          f"update {sum(r[7] for r in rows) / len(rows):.1f} s on average to add {args.added} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
