"""Refresh the README's pictures (`make screenshots`): a detector v2 model built on the synthetic nut,
its report's heatmap section, and the dashboard inspecting a synthetic conveyor with a simulated knob
box, a simulated conveyor, a folder publisher and the drift watch, in a real Tk window under Xvfb.

    .venv/bin/python docs/refresh_images.py [--rebuild]

Writes docs/images/dashboard.png and docs/images/report-heatmaps.png, each at most 300 KB (reduced to
a 256-colour palette, then shrunk, when larger). The model is kept in build/screenshot-model and
reused. MobileNetV2 weights come from ../shared/weights when present, else Keras downloads them.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

IMAGES = REPO / "docs" / "images"
MODEL = REPO / "build" / "screenshot-model"
WEIGHTS = REPO.parent / "shared" / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5"
MAX_BYTES = 300_000


def small_png(image, path: Path) -> Path:
    """Save a PIL image as PNG of at most MAX_BYTES: a 256-colour palette, then smaller if need be."""
    from PIL import Image

    image = image.convert("RGB")
    while True:
        buf = io.BytesIO()
        image.quantize(256, method=Image.Quantize.MEDIANCUT).save(buf, format="PNG", optimize=True)
        if buf.tell() <= MAX_BYTES:
            path.write_bytes(buf.getvalue())
            return path
        image = image.resize((int(image.width * 0.85), int(image.height * 0.85)), Image.Resampling.LANCZOS)


def build_model(rebuild: bool) -> Path:
    from capture.synthetic import write_dataset
    from model_builder.build import BuildOptions, build

    if (MODEL / "bundle.json").is_file() and not rebuild:
        return MODEL
    data = write_dataset(Path(tempfile.mkdtemp()) / "nut", seed=3, n_train=120, n_test_good=20, n_test_defect=8)
    options = BuildOptions(pretrained=str(WEIGHTS) if WEIGHTS.is_file() else "imagenet")
    build(data, MODEL, options, force=True, show_progress=True)
    return MODEL


def report_heatmaps(model: Path, out: Path = IMAGES / "report-heatmaps.png") -> Path:
    """The report's heatmap section (its first picture after the heading) as a PNG."""
    from PIL import Image

    html = (model / "report.html").read_text()
    section = html.split("<h2>Heatmaps: a typical image of each defect type</h2>", 1)[1]
    encoded = re.search(r'data:image/png;base64,([A-Za-z0-9+/=]+)', section).group(1)
    return small_png(Image.open(io.BytesIO(base64.b64decode(encoded))), out)


def dashboard(model: Path, source: str = "synthetic:seed=9,parts=400,defects=0.25,fps=20", parts: int = 40,
              out: Path = IMAGES / "dashboard.png") -> Path:
    """The dashboard after `parts` parts and then the next anomaly, under a private Xvfb."""
    display = ":" + str(next(n for n in range(121, 160) if not Path(f"/tmp/.X11-unix/X{n}").exists()))
    xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", "1400x1000x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.environ["DISPLAY"] = display
    time.sleep(1.0)
    folder = Path(tempfile.mkdtemp())
    try:
        import ttkbootstrap as ttk
        from PIL import Image, ImageGrab

        from app.dashboard import Dashboard
        from app.links.conveyor_link import ConveyorLink
        from app.links.knob_link import KnobLink
        from app.links.simulators import ConveyorSimulator, KnobBoxSimulator
        from app.publish import FolderOutput
        from model_builder.bundle import load_bundle

        knob_sim, belt_sim = KnobBoxSimulator().start(), ConveyorSimulator().start()  # loopback sockets
        knobs, conveyor = KnobLink(knob_sim.url).start(), ConveyorLink(belt_sim.url).start()
        root = ttk.Window(themename="flatly")
        root.geometry("1200x1000")
        dash = Dashboard(root, folder / "settings.toml", folder / "log", load_bundle(model), source, knobs, conveyor,
                         "part", [FolderOutput(folder / "audit")])
        end = time.monotonic() + 120
        dash.resume_belt()
        while sum(dash.counts.values()) < parts and time.monotonic() < end:
            root.update()
            time.sleep(0.01)
        while not (dash.last_verdict is not None and dash.last_verdict.anomaly) and time.monotonic() < end:
            root.update()  # stop on an anomaly: the heatmap then shows what it found
            time.sleep(0.01)
        root.update()
        x, y, w, h = root.winfo_rootx(), root.winfo_rooty(), root.winfo_width(), root.winfo_height()
        shot = ImageGrab.grab(bbox=(x, y, x + w, y + h), xdisplay=display)
        dash.close()
        knob_sim.close()
        belt_sim.close()
        return small_png(shot, out)
    finally:
        xvfb.terminate()
        shutil.rmtree(folder, ignore_errors=True)


def category_shots(model: Path, data: Path, name: str, goods: int = 6) -> list[Path]:
    """A model built on a real category (../shared, not in the repository): its report's heatmaps and the
    dashboard on a few of its test goods followed by its defects, both in build/screenshots (the images are
    the dataset's, whose licence keeps them out of the repository)."""
    from capture.imageio import list_images

    shots = REPO / "build" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    stream = Path(tempfile.mkdtemp())
    test = data / "test"
    chosen = list_images(test / "good")[:goods]
    for folder in sorted(p for p in test.iterdir() if p.is_dir() and p.name != "good"):
        chosen += list_images(folder)[:2]
    for i, path in enumerate(chosen):
        (stream / f"{i:03d}{path.suffix}").symlink_to(path.resolve())
    return [report_heatmaps(model, shots / f"report-heatmaps-{name}.png"),
            dashboard(model, f"folder:{stream}", goods, shots / f"dashboard-{name}.png")]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rebuild", action="store_true", help="build the model again")
    p.add_argument("--model", type=Path, help="with --data: a model built on a real category, shot instead")
    p.add_argument("--data", type=Path, help="that category's dataset folder (MVTec layout)")
    args = p.parse_args()
    if args.model and args.data:
        for path in category_shots(args.model, args.data, args.data.name):
            print(f"wrote {path.relative_to(REPO)} ({path.stat().st_size // 1000} KB)")
        return 0
    IMAGES.mkdir(parents=True, exist_ok=True)
    model = build_model(args.rebuild)
    for path in (report_heatmaps(model), dashboard(model)):
        print(f"wrote {path.relative_to(REPO)} ({path.stat().st_size // 1000} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
