"""Starting the dashboard: links, model and window, with every problem shown in the window."""

from __future__ import annotations

from pathlib import Path

import ttkbootstrap as ttk

from app.dashboard import Dashboard
from capture.errors import GutcheckError
from model_builder.bundle import load_bundle


def _remembered_port(exc: GutcheckError, which: str, given: dict, settings: Path) -> GutcheckError:
    """A port that did not open, saying so when it came from the settings rather than the command line."""
    if given[which]:
        return exc
    return GutcheckError(f"{exc} (the {which} port remembered in {settings}; give --{which} PORT for another)")


def run_dashboard(model: str | None, source: str | None, knobs: str | None, conveyor: str | None, mode: str,
                  settings: Path, log_dir: Path, simulate_devices: bool = False, publish: list[str] | None = None,
                  station: str = "", runtime: str = "auto", recipe: str | None = None,
                  recipes: Path | None = None) -> int:
    """Open the window; with `simulate_devices` a simulated knob box and conveyor are started on
    loopback sockets (any system). What the command line leaves out comes from what the station
    remembers (the settings file): its last recipe (or model), source and ports."""
    from app.links.conveyor_link import ConveyorLink
    from app.links.knob_link import KnobLink
    from app.recipes import RecipeBook
    from app.settings import load_settings

    try:
        remembered = load_settings(settings)
    except GutcheckError:
        remembered = None  # the window shows why; nothing is taken from a damaged file
    given = {"knobs": knobs, "conveyor": conveyor}
    if remembered is not None:
        if not (model or recipe):
            recipe = remembered.recipe or None
            model = None if recipe else (remembered.model or None)
        if source is None and Path(settings).exists() and not (recipe or remembered.recipe):
            source = remembered.source or None
        knobs = knobs or remembered.knobs or None
        conveyor = conveyor or remembered.conveyor or None
    sims = []
    if simulate_devices:
        from app.links.simulators import ConveyorSimulator, KnobBoxSimulator

        sims = [KnobBoxSimulator().start(), ConveyorSimulator().start()]
        knobs, conveyor = sims[0].url, sims[1].url
    # Links named on the command line or in the settings must open now: a station whose verdicts
    # would reach no belt does not start (one line, exit 2), before any window opens.
    try:
        knob_link = KnobLink(knobs).start(require_open=True) if knobs else None
    except GutcheckError as exc:
        raise _remembered_port(exc, "knobs", given, settings) from None
    try:
        conveyor_link = ConveyorLink(conveyor).start(require_open=True) if conveyor else None
    except GutcheckError as exc:
        if knob_link is not None:
            knob_link.close()
        raise _remembered_port(exc, "conveyor", given, settings) from None
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
    dash = Dashboard(root, settings, log_dir, bundle, source, knob_link, conveyor_link, mode, publishers, runtime,
                     RecipeBook(recipes), recipe, station)
    if not simulate_devices:  # remembered when the window closes (a simulator's loopback port is not the station's)
        dash.remember(knobs=knobs or "", conveyor=conveyor or "")
    if problem:
        dash.message(problem, error=True)
    try:
        root.mainloop()
    finally:
        for sim in sims:
            sim.close()
    return 0
