"""How long a changeover takes in the dashboard, from the click to the next recipe in force (model loaded,
thresholds, belt speed and source applied), between two real model bundles, under a private Xvfb.

    .venv/bin/python bench/changeover.py MODEL_A MODEL_B [--rounds 3]

Each round changes A -> B -> A; the first load of each model is reported apart (a cold start reads the
files and builds the network; later ones may come from the disk cache). Nothing here is a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs=2, type=Path)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    display = ":" + str(next(n for n in range(161, 200) if not Path(f"/tmp/.X11-unix/X{n}").exists()))
    xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", "1400x1000x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.environ["DISPLAY"] = display
    time.sleep(1.0)
    try:
        import ttkbootstrap as ttk

        from app.dashboard import Dashboard
        from app.links.conveyor_link import ConveyorLink
        from app.links.simulators import ConveyorSimulator
        from app.recipes import Recipe, RecipeBook
        from model_builder.bundle import read_meta

        folder = Path(tempfile.mkdtemp())
        book = RecipeBook(folder / "recipes")
        names = []
        for i, model in enumerate(args.models):
            name = f"part-{i}"
            book.save(Recipe(name, model=str(model.resolve()), model_id=read_meta(model)["model_id"],
                             belt_speed=800 + 400 * i, source=f"synthetic:seed={i},parts=100000,fps=20"))
            names.append(name)
        belt = ConveyorSimulator().start()
        conveyor = ConveyorLink(belt.url).start()
        root = ttk.Window(themename="flatly")
        dash = Dashboard(root, folder / "settings.toml", folder / "log", None, None, None, conveyor, recipes=book)
        times: dict[str, list[float]] = {n: [] for n in names}
        order = [names[0], names[1]] + [names[0], names[1]] * args.rounds
        for name in order:
            dash.change_over(name)
            end = time.monotonic() + 120
            while not (dash.recipe is not None and dash.recipe.name == name and dash.inspector is not None) \
                    and time.monotonic() < end:
                root.update()
                time.sleep(0.005)
            times[name].append(dash.changeover_s)
            first = time.monotonic()
            while dash.inspector.inspected == 0 and time.monotonic() < end:  # the first part judged
                root.update()
                time.sleep(0.005)
            print(f"{name} ({Path(book.load(name).model).name}): in force after {dash.changeover_s:.2f} s, "
                  f"first part judged {time.monotonic() - first:.2f} s later")
        dash.close()
        belt.close()
        for name in names:
            cold, warm = times[name][0], times[name][1:]
            print(f"{name}: first load {cold:.2f} s; then median {statistics.median(warm):.2f} s, "
                  f"max {max(warm):.2f} s over {len(warm)}")
    finally:
        xvfb.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
