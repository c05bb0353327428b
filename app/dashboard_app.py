"""Starting the dashboard: links, model and window, with every problem shown in the window."""

from __future__ import annotations

from pathlib import Path

import ttkbootstrap as ttk

from app.dashboard import Dashboard
from capture.errors import GutcheckError
from model_builder.bundle import load_bundle


def run_dashboard(model: str | None, source: str | None, knobs: str | None, conveyor: str | None, mode: str,
                  settings: Path, log_dir: Path, simulate_devices: bool = False, publish: list[str] | None = None,
                  station: str = "", runtime: str = "auto") -> int:
    """Open the window; with `simulate_devices` a simulated knob box and conveyor are started on
    loopback sockets (any system)."""
    from app.links.conveyor_link import ConveyorLink
    from app.links.knob_link import KnobLink

    sims = []
    if simulate_devices:
        from app.links.simulators import ConveyorSimulator, KnobBoxSimulator

        sims = [KnobBoxSimulator().start(), ConveyorSimulator().start()]
        knobs, conveyor = sims[0].url, sims[1].url
    # Links named on the command line or in the settings must open now: a station whose verdicts
    # would reach no belt does not start (one line, exit 2), before any window opens.
    knob_link = KnobLink(knobs).start(require_open=True) if knobs else None
    try:
        conveyor_link = ConveyorLink(conveyor).start(require_open=True) if conveyor else None
    except GutcheckError:
        if knob_link is not None:
            knob_link.close()
        raise
    from app.publish import open_publishers

    try:  # publishers named on the command line or in the settings must connect now, like the links
        publishers = open_publishers(publish, station, settings if Path(settings).exists() else None)
    except GutcheckError:
        for link in (knob_link, conveyor_link):
            if link is not None:
                link.close()
        raise
    root = ttk.Window(themename="flatly")
    bundle, problem = None, None
    if model:
        try:
            bundle = load_bundle(Path(model))
        except GutcheckError as exc:
            problem = f"cannot open the model: {exc}"
    if conveyor_link is not None and simulate_devices:  # the simulated belt starts running, as a demo should
        import time

        deadline = time.monotonic() + 3
        while conveyor_link.link.port is None and time.monotonic() < deadline:
            time.sleep(0.02)
        conveyor_link.resume()
    dash = Dashboard(root, settings, log_dir, bundle, source, knob_link, conveyor_link, mode, publishers, runtime)
    if problem:
        dash.message(problem, error=True)
    try:
        root.mainloop()
    finally:
        for sim in sims:
            sim.close()
    return 0
