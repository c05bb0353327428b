"""The inspection dashboard (ttkbootstrap): a thin view over the inspector, the knob link and the
conveyor link. It polls their queues and states with after(); the Tk thread never waits on a
camera, a model or a port."""

from __future__ import annotations

import collections
import gc
import queue
import sqlite3
import threading
import time
import tkinter as tk
from dataclasses import replace
from pathlib import Path
from tkinter import filedialog, simpledialog

import cv2
import numpy as np
import ttkbootstrap as ttk
from PIL import Image, ImageTk

from app.inspection_log import AUDIT_COALESCE_S, InspectionLog
from app.drift import DriftWatch, drift_watch
from app.inspector import Inspector
from app.outputs import ConveyorOutput, LogOutput
from app.verdict import Verdict
from app.links.protocol import BELT_STATES
from app.heatmap import beside_input, heat
from app.recipes import Recipe, RecipeBook, changed_names, recipe_bundle
from app.settings import Settings, load_settings, save_settings, saved_thresholds, with_thresholds
from capture.errors import GutcheckError
from capture.sources import open_source
from model_builder.bundle import Bundle, load_bundle
from model_builder.calibrate import thresholds_at_frr
from model_builder.metadata import TARGET_FRR
from model_builder.scoring import PixelAutoencoder, Thresholds

POLL_MS = 33  # ~30 redraws a second
CHART_POINTS = 120
CHART_HEIGHT = 130  # both score charts, one above the other: the window fits 1000 px in height
GREEN, RED, GREY = "#2b8a3e", "#c92a2a", "#868e96"


def photo(image: np.ndarray, width: int, rgb: bool = False) -> ImageTk.PhotoImage:
    h, w = image.shape[:2]
    if image.dtype != np.uint8:
        image = np.clip(image * 255, 0, 255).astype(np.uint8)
    if image.ndim == 2 or image.shape[-1] == 1:
        image = cv2.cvtColor(image.reshape(h, w), cv2.COLOR_GRAY2RGB)
    elif not rgb:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    small = cv2.resize(image, (width, max(1, int(h * width / w))), interpolation=cv2.INTER_AREA)
    return ImageTk.PhotoImage(Image.fromarray(small))


def knob_value(permille: int, value_range: list[float]) -> float:
    lo, hi = value_range
    return lo + (hi - lo) * permille / 1000.0


class Dashboard:
    """Everything an operator and a technician see. Built from parts that may be missing: a model
    that failed to load, no knob box, no conveyor: each shows its state instead of crashing."""

    def __init__(self, root: tk.Tk, settings_path: Path, log_folder: Path, bundle: Bundle | None = None,
                 source_spec: str | None = None, knob_link=None, conveyor_link=None, mode: str = "part",
                 publishers: list | None = None, runtime: str = "auto", recipes: RecipeBook | None = None,
                 recipe: str | None = None, station: str = ""):
        self.root = root
        self.recipes = recipes or RecipeBook()
        self.recipe: Recipe | None = None  # the part's recipe in force (None: a model opened on its own)
        self.recipe_publishers: list = []  # the recipe's own outputs, beside the station's
        self.station = station
        self.changeover_s: float | None = None  # how long the last changeover took, click to inspecting
        self.station_source = source_spec  # the station's source; a recipe's camera settings go on top of it
        self._remember: dict[str, str] = {}  # ports to remember when the window closes
        self._settings_unreadable = False  # a damaged settings file is shown, and never replaced on closing
        self._showing_thresholds = False  # thresholds put on screen by the program, not turned by a person
        self._shown_thresholds: Thresholds | None = None  # the exact values behind the rounded ones on screen
        self._threshold_edit: tuple[Thresholds, float] | None = None  # where a run of edits started, and when
        self.runtime = runtime  # where the inspector's network runs (model_builder/runtime.py)
        self._runtime_shown: Inspector | None = None  # the inspector whose runtime the status line named
        self.publishers = list(publishers or [])  # outlive each inspection run; closed with the window
        self.settings_path = Path(settings_path)
        self.log = InspectionLog(log_folder)
        self.knobs, self.conveyor = knob_link, conveyor_link
        self.mode = mode
        self.bundle: Bundle | None = bundle
        self.inspector: Inspector | None = None
        self.source_spec = source_spec
        self._photos: dict[str, ImageTk.PhotoImage] = {}
        self._history_photos: collections.deque = collections.deque(maxlen=30)
        self.chart = collections.deque(maxlen=CHART_POINTS)
        self.counts = {"ok": 0, "anomaly": 0}
        self.redraws = collections.deque(maxlen=60)
        self.last_verdict: Verdict | None = None
        self.calibration: dict | None = None
        self.hardware: dict | None = None  # the hardware check window, while it is open
        self.drift: DriftWatch | None = None  # of the running inspection
        self._plots_stale = True  # bars and chart are redrawn only when a verdict or a threshold changed
        self.settings = Settings()
        self._jobs: queue.Queue[tuple[str, object]] = queue.Queue()  # results of background work
        root.title("Gutcheck inspection")
        self._build()
        try:
            self.settings = load_settings(self.settings_path)
        except GutcheckError as exc:
            self._settings_unreadable = True
            self.message(str(exc), error=True)
        if recipe:
            self.change_over(recipe)
        else:
            if self.bundle is not None:
                self._use_bundle(self.bundle)
            if self.bundle is not None and source_spec:
                self.open_source(source_spec)
        self._restore_from_log()
        root.protocol("WM_DELETE_WINDOW", self.close)
        root.after(POLL_MS, self.poll)

    def _restore_from_log(self) -> None:
        """Today's counters and the last parts of the history, as the inspection log holds them: a restarted
        station carries on where it was (the log is local SQLite, read once at start)."""
        today = time.mktime(time.localtime()[:3] + (0, 0, 0, 0, 0, -1))
        try:
            self.counts = self.log.counts(since=today)
            rows = self.log.recent(20)
        except sqlite3.Error as exc:  # shown, and the counters start from zero
            self.message(f"cannot read the inspection log back: {exc}", error=True)
            return
        for row in reversed(rows):
            bad = row["verdict"] == "anomaly"
            self.history.insert("", 0, text=f" {row['part_number'] or row['id']}",
                                values=("ANOMALY" if bad else "OK", f"{row['density']:.2f}",
                                        f"{row['reconstruction_error']:.5f}"), tags=("bad",) if bad else ())
        self.history.tag_configure("bad", foreground=RED)

    # -- layout -------------------------------------------------------------------------------
    def _build(self) -> None:
        r = self.root
        menu = tk.Menu(r)
        file_menu = tk.Menu(menu, tearoff=False)
        file_menu.add_command(label="Open model bundle…", command=self._ask_model)
        file_menu.add_command(label="Open source…", command=self._ask_source)
        file_menu.add_command(label="Export log as CSV…", command=self._ask_export)
        file_menu.add_separator()
        file_menu.add_command(label="Quit", command=self.close)
        tools = tk.Menu(menu, tearoff=False)
        tools.add_command(label="Calibration helper…", command=self.open_calibration)
        tools.add_command(label="Hardware check…", command=self.open_hardware_check)
        tools.add_command(label="Audit trail…", command=self.open_audit)
        menu.add_cascade(label="File", menu=file_menu)
        menu.add_cascade(label="Tools", menu=tools)
        r.configure(menu=menu)

        # The status line (where errors are shown) on top: a window shorter than the content cuts
        # the bottom, and must never cut the message that says what went wrong.
        self.status = ttk.Label(r, text="", padding=(8, 4), wraplength=640)
        self.status.grid(row=0, column=0, sticky="ew")
        bar = ttk.Frame(r, padding=(6, 4))
        bar.grid(row=0, column=1, sticky="e")
        ttk.Label(bar, text="recipe").grid(row=0, column=0, padx=(0, 4))
        self.recipe_var = tk.StringVar(value="")
        self.recipe_picker = ttk.Combobox(bar, textvariable=self.recipe_var, width=22, state="readonly",
                                          postcommand=self._list_recipes)
        self.recipe_picker.grid(row=0, column=1)
        ttk.Button(bar, text="Change over", bootstyle="primary",
                   command=lambda: self.change_over(self.recipe_var.get())).grid(row=0, column=2, padx=4)
        left = ttk.Frame(r, padding=6)
        left.grid(row=1, column=0, sticky="nsew")
        right = ttk.Frame(r, padding=6)
        right.grid(row=1, column=1, sticky="nsew")
        r.columnconfigure(0, weight=1)

        self.live = ttk.Label(left, text="no source", anchor="center")
        self.live.grid(row=0, column=0, columnspan=3)
        self.views = {}
        titles = self.bundle.scorer.view_titles if self.bundle is not None else PixelAutoencoder.view_titles
        for i, name in enumerate(("model input", "reconstruction", "error heatmap")):
            ttk.Label(left, text=titles[i]).grid(row=1, column=i)
            self.views[name] = ttk.Label(left, text="–")
            self.views[name].grid(row=2, column=i, padx=2)
        self.chart_canvas = tk.Canvas(left, width=480, height=CHART_HEIGHT, background="white", highlightthickness=0)
        self.chart_canvas.grid(row=3, column=0, columnspan=3, pady=(6, 0))
        self.drift_banner = tk.Label(left, text="drift watch: waiting for good parts", anchor="w", fg=GREY,
                                     font=("TkDefaultFont", 9, "bold"), wraplength=470, justify="left")
        self.drift_banner.grid(row=4, column=0, columnspan=3, sticky="ew", pady=(6, 0))
        self.drift_canvas = tk.Canvas(left, width=480, height=80, background="white", highlightthickness=0)
        self.drift_canvas.grid(row=5, column=0, columnspan=3)

        self.banner = tk.Label(right, text="—", font=("TkDefaultFont", 30, "bold"), fg="white", bg=GREY, width=11)
        self.banner.grid(row=0, column=0, columnspan=3, sticky="ew")
        self.rule_line = ttk.Label(right, text="", font=("TkFixedFont", 10), wraplength=420)
        self.rule_line.grid(row=1, column=0, columnspan=3, sticky="w", pady=(4, 4))
        self.bars = tk.Canvas(right, width=420, height=58, background="white", highlightthickness=0)
        self.bars.grid(row=2, column=0, columnspan=3)

        th = ttk.Labelframe(right, text="Thresholds", padding=6)
        th.grid(row=3, column=0, columnspan=3, sticky="ew", pady=4)
        self.density_var = tk.DoubleVar()
        self.recon_var = tk.DoubleVar()
        ttk.Label(th, text="density <").grid(row=0, column=0, sticky="w")
        self.density_spin = ttk.Spinbox(th, textvariable=self.density_var, width=12, from_=-1e9, to=1e9,
                                        increment=1.0, command=self.apply_spinboxes)
        self.density_spin.grid(row=0, column=1)
        ttk.Label(th, text="reconstruction error >").grid(row=1, column=0, sticky="w")
        self.recon_spin = ttk.Spinbox(th, textvariable=self.recon_var, width=12, from_=0, to=1e9, increment=0.0005,
                                      command=self.apply_spinboxes)
        self.recon_spin.grid(row=1, column=1)
        for spin in (self.density_spin, self.recon_spin):
            spin.bind("<Return>", lambda e: self.apply_spinboxes())
        self.rule_var = tk.StringVar(value="or")
        ttk.Combobox(th, textvariable=self.rule_var, values=("or", "and"), width=5, state="readonly").grid(
            row=0, column=2, padx=4)
        self.rule_var.trace_add("write", lambda *a: self.apply_spinboxes())
        ttk.Button(th, text="Save", command=self.save_thresholds, bootstyle="secondary").grid(row=1, column=2, padx=4)
        # what the build's calibration promises, for as long as the model is in use (not a passing message)
        self.expectation = ttk.Label(th, text="", wraplength=400, justify="left", font=("TkDefaultFont", 8),
                                     foreground=GREY)
        self.expectation.grid(row=2, column=0, columnspan=3, sticky="w", pady=(4, 0))

        kp = ttk.Labelframe(right, text="Knob box", padding=6)
        kp.grid(row=4, column=0, columnspan=3, sticky="ew", pady=4)
        self.knob_state = ttk.Label(kp, text="not connected", width=28)
        self.knob_state.grid(row=0, column=0, sticky="w")
        self.follow_var = tk.BooleanVar(value=False)
        ttk.Checkbutton(kp, text="follow knobs", variable=self.follow_var, bootstyle="round-toggle").grid(
            row=0, column=1, columnspan=2, sticky="e")
        self.knob_density = ttk.Label(kp, text="density knob –", width=22)
        self.knob_density.grid(row=1, column=0, sticky="w")
        ttk.Button(kp, text="Take knob value", command=lambda: self.take_knob("density"),
                   bootstyle="info-outline").grid(row=1, column=1, padx=2, pady=2)
        self.knob_recon = ttk.Label(kp, text="error knob –", width=22)
        self.knob_recon.grid(row=2, column=0, sticky="w")
        ttk.Button(kp, text="Take knob value", command=lambda: self.take_knob("reconstruction"),
                   bootstyle="info-outline").grid(row=2, column=1, padx=2, pady=2)

        cp = ttk.Labelframe(right, text="Conveyor", padding=6)
        cp.grid(row=5, column=0, columnspan=3, sticky="ew", pady=4)
        self.belt_state = ttk.Label(cp, text="not connected", width=30)
        self.belt_state.grid(row=0, column=0, sticky="w")
        ttk.Button(cp, text="Resume", command=self.resume_belt, bootstyle="success").grid(row=0, column=1, padx=2)
        ttk.Button(cp, text="Stop", command=self.stop_belt, bootstyle="danger").grid(row=0, column=2, padx=2)

        self.counter = ttk.Label(right, text="", font=("TkDefaultFont", 12, "bold"))
        self.counter.grid(row=6, column=0, columnspan=3, sticky="w", pady=4)
        self.history = ttk.Treeview(right, columns=("verdict", "density", "error"), height=6)
        for col, text, width in (("#0", "part", 90), ("verdict", "verdict", 80), ("density", "density", 90),
                                 ("error", "rec. error", 90)):
            self.history.heading(col, text=text)
            self.history.column(col, width=width, anchor="w")
        ttk.Style().configure("Treeview", rowheight=34)
        self.history.grid(row=7, column=0, columnspan=3, sticky="ew")
        op = ttk.Labelframe(right, text="Outputs", padding=6)
        op.grid(row=8, column=0, columnspan=3, sticky="ew", pady=4)
        self.outputs_state = ttk.Label(op, text="no inspection running", justify="left", font=("TkDefaultFont", 9))
        self.outputs_state.grid(row=0, column=0, sticky="w")

    # -- actions --------------------------------------------------------------------------------
    def message(self, text: str, error: bool = False) -> None:
        self.status.configure(text=text, foreground=RED if error else "")

    def _use_bundle(self, bundle: Bundle, thresholds: Thresholds | None = None) -> None:
        """Inspect with `bundle`, at `thresholds` (a recipe's) or those saved for it, else its own."""
        self.bundle = bundle
        self.expectation.configure(text=f"At the built thresholds: {bundle.info.calibration.expectation()}.")
        if thresholds is None:
            saved, note = saved_thresholds(self.settings, bundle)
            if note:
                self.message(note, error=True)
            thresholds = saved or bundle.thresholds
        self._show_thresholds(thresholds)

    def audit(self, action: str, detail: str, coalesce: bool = False, who: str = "") -> None:
        """One row of the audit trail in the inspection log (a trail that cannot be written is said)."""
        try:
            self.log.audit(action, detail, who=who, coalesce=coalesce)
        except sqlite3.Error as exc:
            self.message(f"cannot write the audit trail: {exc}", error=True)

    def _audit_thresholds(self, old: Thresholds, new: Thresholds, how: str) -> None:
        """A person changed the thresholds: one row per run of edits (spinbox clicks, a knob turned)."""
        now = time.monotonic()
        edit = self._threshold_edit
        start = edit[0] if edit is not None and now - edit[1] <= AUDIT_COALESCE_S else old
        self._threshold_edit = (start, now)
        self.audit("thresholds", f"{how}: density < {start.density:.6g} -> {new.density:.6g}, error > "
                                 f"{start.reconstruction:.6g} -> {new.reconstruction:.6g}, rule {start.rule} -> "
                                 f"{new.rule}", coalesce=True)

    def _operator_thresholds(self, new: Thresholds, how: str) -> None:
        old = self.current_thresholds()
        self._show_thresholds(new)
        if old is not None and old != new:
            self._audit_thresholds(old, new, how)

    def _show_thresholds(self, t: Thresholds) -> None:
        self._shown_thresholds = t  # the exact values behind the rounded ones on screen
        self._showing_thresholds = True
        try:
            self.density_var.set(round(t.density, 4))
            self.recon_var.set(round(t.reconstruction, 6))
            if self.rule_var.get() != t.rule:
                self.rule_var.set(t.rule)
        finally:
            self._showing_thresholds = False
        if self.inspector is not None:
            self.inspector.set_thresholds(t)
        self._plots_stale = True

    def current_thresholds(self) -> Thresholds | None:
        if self.inspector is not None:
            return self.inspector.thresholds
        return self.bundle.thresholds if self.bundle else None

    def apply_spinboxes(self, by_person: bool = True) -> None:
        """The thresholds on screen into force; `by_person` (a spinbox, the rule, Return) also audits them."""
        if self._showing_thresholds:
            return  # the program is putting thresholds on screen; it puts them into force itself
        try:
            density, error = float(self.density_var.get()), float(self.recon_var.get())
            shown = self._shown_thresholds
            # untouched spinboxes keep the exact thresholds (a recipe's, the bundle's), not their rounding
            if shown is not None and (density, error) == (round(shown.density, 4), round(shown.reconstruction, 6)):
                density, error = shown.density, shown.reconstruction
            t = Thresholds(density, error, self.rule_var.get())
        except (tk.TclError, ValueError, GutcheckError):
            self.message("thresholds must be numbers", error=True)
            return
        if self.inspector is not None:
            old = self.inspector.thresholds
            self.inspector.set_thresholds(t)
            if by_person and old != t:
                self._audit_thresholds(old, t, "set on screen")
        self._plots_stale = True

    def save_thresholds(self) -> None:
        t = self.current_thresholds()
        if t is None:
            return
        if self.recipe is not None:  # the thresholds belong to the part: a new version of its recipe
            try:
                self.recipe = self.recipes.save(replace(self.recipe, density_threshold=t.density,
                                                        reconstruction_threshold=t.reconstruction, rule=t.rule),
                                                note="thresholds saved in the dashboard")
            except (GutcheckError, OSError) as exc:
                self.message(f"cannot save recipe {self.recipe.name}: {exc}", error=True)
                return
            self.message(f"thresholds saved as recipe {self.recipe.name} version {self.recipe.version}")
            self.audit("recipe saved", f"{self.recipe.name} version {self.recipe.version}: {t.density:.6g} {t.rule} "
                                       f"{t.reconstruction:.6g}")
            return
        self.settings = replace(with_thresholds(self.settings, self.bundle, t),
                                source=self.source_spec or self.settings.source)
        try:
            backup = save_settings(self.settings_path, self.settings)
        except OSError as exc:
            self.message(f"cannot save the settings to {self.settings_path}: {exc.strerror or exc}", error=True)
            return
        kept = f"; the damaged file before it is kept as {backup}" if backup else ""
        self.message(f"thresholds saved to {self.settings_path}{kept}", error=bool(backup))
        self.audit("thresholds saved", f"{self.settings_path} for model {self.bundle.info.model_id}: density < "
                                       f"{t.density:.6g} {t.rule} error > {t.reconstruction:.6g}")

    def knob_proposal(self) -> tuple[float, float] | None:
        """Both knob positions mapped into the knob ranges (density, reconstruction error)."""
        if self.knobs is None or self.knobs.latest is None or self.bundle is None:
            return None
        return (knob_value(self.knobs.latest.a, self.knob_range("density")),
                knob_value(self.knobs.latest.b, self.knob_range("reconstruction")))

    def knob_range(self, key: str) -> list[float]:
        """What the knob (and the bars and chart) span for `key`: the recipe's range, else the bundle's."""
        return self.recipe.knob_range(self.bundle, key) if self.recipe is not None else self.bundle.knob_ranges[key]

    def take_knob(self, which: str) -> None:
        """The prototype's grab hand: the knob's value becomes the threshold."""
        proposal = self.knob_proposal()
        t = self.current_thresholds()
        if proposal is None or t is None:
            self.message("no knob value to take (knob box not connected)", error=True)
            return
        t = replace(t, density=proposal[0]) if which == "density" else replace(t, reconstruction=proposal[1])
        self._operator_thresholds(t, f"{which} knob taken")
        self.message(f"{which} threshold set from the knob")

    def resume_belt(self) -> None:
        if self.conveyor is None or not self.conveyor.resume():
            why = self.conveyor.holding if self.conveyor is not None and self.conveyor.holding else "not connected"
            self.message(f"cannot resume the belt: {why}", error=True)
            return
        self.audit("belt", "resumed")

    def stop_belt(self) -> None:
        if self.conveyor is None or not self.conveyor.stop_belt():
            self.message("conveyor not connected: stop the belt by hand", error=True)
            return
        self.audit("belt", "stopped")

    def _serve_line_commands(self) -> None:
        """Changeovers and stops the line asked for over MQTT (app/publish.py: LineCommand); each answered
        and audited. Nothing else is taken from outside."""
        from app.publish import LineCommand

        for publisher in [*self.publishers, *self.recipe_publishers]:
            commands = getattr(publisher, "commands", None)
            while commands is not None and not commands.empty():
                command = commands.get_nowait()
                who = publisher.name
                if not isinstance(command, LineCommand):
                    publisher.answer(command, False, command)
                    self.audit("line command", f"refused: {command}", who=who)
                    self.message(f"a line command was refused: {command}", error=True)
                elif command.command == "stop":
                    stopped = self.conveyor is not None and self.conveyor.stop_belt()
                    publisher.answer(command, stopped, "belt stopped" if stopped else "no conveyor connected")
                    self.audit("line command", "stop: " + ("belt stopped" if stopped else "no conveyor"), who=who)
                    self.message("the line stopped the belt" if stopped else "the line asked for a stop: "
                                 "no conveyor connected", error=not stopped)
                elif command.recipe not in self.recipes.names():
                    publisher.answer(command, False, f"no recipe {command.recipe!r} at this station")
                    self.audit("line command", f"refused: no recipe {command.recipe!r}", who=who)
                else:
                    publisher.answer(command, True, f"changing over to {command.recipe}")
                    self.audit("line command", f"changeover to {command.recipe}", who=who)
                    self.recipe_var.set(command.recipe)
                    self.change_over(command.recipe)

    def _list_recipes(self) -> None:
        try:
            self.recipe_picker.configure(values=self.recipes.names())
        except OSError as exc:
            self.message(f"cannot read the recipes in {self.recipes.folder}: {exc}", error=True)

    def change_over(self, name: str) -> None:
        """Switch the station to recipe `name`: the belt stops and no part is judged until everything the
        recipe holds is in force; the recipe and its model load in a worker (poll() finishes the change)."""
        if not name:
            self.message("pick a recipe first", error=True)
            return
        started = time.monotonic()
        if self.conveyor is not None:
            self.conveyor.stop_belt()
        self._retire_inspector()
        # nothing on screen may look like a verdict of the new recipe before it is in force
        self.banner.configure(text="—", bg=GREY)
        self.rule_line.configure(text="")
        self.message(f"changing over to recipe {name} … (belt stopped)")
        book, station, settings = self.recipes, self.station, self.settings_path

        def load() -> None:
            try:
                recipe = book.load(name)
                bundle = recipe_bundle(recipe)
                publishers = []
                if recipe.publish:
                    from app.publish import open_publishers

                    publishers = open_publishers(recipe.publish, station, settings if settings.exists() else None)
                self._jobs.put(("recipe", (recipe, bundle, publishers, started)))
            except GutcheckError as exc:
                self._jobs.put(("error", f"cannot change over to recipe {name}: {exc}; the belt stays stopped"))

        threading.Thread(target=load, daemon=True, name="changeover").start()

    def _recipe_loaded(self, recipe: Recipe, bundle: Bundle, publishers: list, started: float) -> None:
        what = changed_names(self.recipe, recipe)
        old, self.recipe_publishers = self.recipe_publishers, publishers
        threading.Thread(target=lambda: [p.close(2.0) for p in old], daemon=True, name="outputs-close").start()
        self.recipe = recipe
        self.recipe_var.set(recipe.name)
        self._use_bundle(bundle, recipe.thresholds(bundle))
        if recipe.belt_speed and self.conveyor is not None:
            self.conveyor.set_speed(recipe.belt_speed)
        spec = recipe.source_spec(recipe.source or self.station_source or "")
        if spec and not self.open_source(spec):
            return  # open_source said why; nothing inspects and the belt stays stopped
        self.changeover_s = time.monotonic() - started
        self.settings = replace(self.settings, recipe=recipe.name)
        try:
            save_settings(self.settings_path, self.settings)  # the station comes back in this recipe
        except (GutcheckError, OSError) as exc:
            self.message(f"cannot remember the recipe in {self.settings_path}: {exc}", error=True)
            return
        self.audit("changeover", f"to recipe {recipe.name} version {recipe.version} (model {bundle.info.model_id}) "
                                 f"in {self.changeover_s:.1f} s; changed: {what}")
        self.message(f"recipe {recipe.name} version {recipe.version} in force after {self.changeover_s:.1f} s "
                     f"(changed: {what}); belt stopped: Resume when the next part is in place")

    def open_model(self, path: str) -> None:
        """Load a bundle in a worker thread (it takes seconds); poll() picks up the result."""
        self.message(f"loading model {path} …")

        def load() -> None:
            try:
                self._jobs.put(("model", load_bundle(Path(path))))
            except GutcheckError as exc:
                self._jobs.put(("error", f"cannot open the model: {exc}"))

        threading.Thread(target=load, daemon=True, name="model-loader").start()

    def _model_loaded(self, bundle: Bundle) -> None:
        if self.recipe is not None:  # a model opened on its own: no recipe is in force any more
            old, self.recipe_publishers, self.recipe = self.recipe_publishers, [], None
            threading.Thread(target=lambda: [p.close(2.0) for p in old], daemon=True, name="outputs-close").start()
            self.recipe_var.set("")
        self._use_bundle(bundle)
        self.audit("model", f"opened {bundle.info.model_id} from {bundle.path}")
        if self.source_spec:
            self.open_source(self.source_spec)
        self.message(f"model {bundle.info.model_id} loaded: {bundle.info.calibration.expectation()}")

    def open_source(self, spec: str) -> bool:
        if self.bundle is None:
            self.message("open a model bundle first", error=True)
            return False
        try:
            source = open_source(spec)
        except GutcheckError as exc:
            self.message(f"cannot open the source: {exc}", error=True)
            return False
        if self.recipe is not None:  # each frame cut as the recipe's good parts were captured
            source.framing = self.recipe.framing
        self._retire_inspector()
        self.source_spec = spec
        self.drift = drift_watch(self.bundle, self.publishers, say=lambda m: self._jobs.put(("drift", m)))
        try:  # the watch goes on from the log's last parts of this model, not from zero
            self.drift.prime(self.log)
        except sqlite3.Error as exc:
            self.message(f"cannot read the drift watch's recent parts from the log: {exc}", error=True)
        outputs = [LogOutput(self.log), *([ConveyorOutput(self.conveyor)] if self.conveyor is not None else []),
                   *self.publishers, *self.recipe_publishers, self.drift]
        self.inspector = Inspector(self.bundle, source, self.mode, outputs, runtime=self.runtime)
        self.apply_spinboxes(by_person=False)  # the thresholds on screen are the ones in force
        self.inspector.start()
        self.message(f"inspecting {source.name}")
        return True

    def _retire_inspector(self) -> None:
        """Stop the running inspection; its outputs finish in a worker thread (the Tk thread never
        waits on a disk or a port)."""
        old, self.inspector = self.inspector, None
        if old is not None:
            old.stop()
            # the publishers serve the next run too (a recipe's are closed when another recipe comes in)
            own = [o for o in old.outputs if o not in self.publishers and o not in self.recipe_publishers]

            def close() -> None:
                for output in own:
                    output.close(2.0)

            threading.Thread(target=close, daemon=True, name="outputs-close").start()

    def _ask_model(self) -> None:
        path = filedialog.askdirectory(title="Model bundle folder")
        if path:
            self.open_model(path)

    def _ask_source(self) -> None:
        spec = simpledialog.askstring("Source", "cam:N, file:VIDEO, folder:PATH, synthetic: or a URL",
                                      initialvalue=self.source_spec or "cam:0")
        if spec:
            self.open_source(spec)

    def _ask_export(self) -> None:
        path = filedialog.asksaveasfilename(defaultextension=".csv", filetypes=[("CSV", "*.csv")])
        if path:
            n = self.log.export_csv(Path(path))
            self.message(f"exported {n} inspections to {path}")

    # -- calibration helper ---------------------------------------------------------------------
    def _drop_calibration(self) -> None:
        """Close the helper window; its Tk objects are collected here, in the Tk thread (a worker
        thread's garbage collector must never be the one to free them: Tcl aborts)."""
        if self.calibration is not None:
            try:
                self.calibration["window"].destroy()
            except tk.TclError:
                pass
            self.calibration = None
            gc.collect()

    def open_calibration(self, n: int = 30, target_frr: float | None = None) -> None:
        """Inspect the next n good parts and propose thresholds at a false-reject target (the bundle's)."""
        self._drop_calibration()
        if target_frr is None:
            target_frr = self.bundle.info.calibration.target_false_reject_rate if self.bundle else TARGET_FRR
        self.calibration = {"n": n, "target": target_frr, "density": [], "error": [], "proposal": None}
        win = ttk.Toplevel(self.root)
        win.title("Calibration helper")
        self.calibration["window"] = win
        ttk.Label(win, text=f"Run {n} good parts past the camera.\nThresholds are proposed for a "
                            f"{target_frr:.0%} false-reject rate.", padding=8).pack()
        self.calibration["label"] = ttk.Label(win, text="0 parts", padding=8)
        self.calibration["label"].pack()
        self.calibration["apply"] = ttk.Button(win, text="Apply", state="disabled", command=self.apply_calibration,
                                               bootstyle="success")
        self.calibration["apply"].pack(pady=8)

    def _calibration_add(self, v: Verdict) -> None:
        c = self.calibration
        if c is None or c["proposal"] is not None:
            return
        c["density"].append(v.density)
        c["error"].append(v.error)
        c["label"].configure(text=f"{len(c['density'])} of {c['n']} parts")
        if len(c["density"]) >= c["n"]:
            rule = self.rule_var.get()
            c["proposal"] = thresholds_at_frr(np.array(c["density"]), np.array(c["error"]), c["target"], rule)
            p = c["proposal"]
            c["label"].configure(text=f"proposal: density < {p.density:.4g}, error > {p.reconstruction:.4g}")
            c["apply"].configure(state="normal")

    def apply_calibration(self) -> None:
        if self.calibration and self.calibration["proposal"] is not None:
            self._operator_thresholds(self.calibration["proposal"], "calibration helper")
            self._drop_calibration()
            self.message("calibrated thresholds applied (Save keeps them)")

    def open_audit(self, limit: int = 500) -> tk.Toplevel | None:
        """Who changed what on this station, newest first (the inspection log's audit trail)."""
        try:
            rows = self.log.audit_rows(limit=limit)
        except sqlite3.Error as exc:
            self.message(f"cannot read the audit trail: {exc}", error=True)
            return None
        window = tk.Toplevel(self.root)
        window.title("Audit trail")
        tree = ttk.Treeview(window, columns=("who", "action", "detail"), height=18)
        for col, text, width in (("#0", "time", 175), ("who", "who", 90), ("action", "action", 140),
                                 ("detail", "what", 620)):
            tree.heading(col, text=text)
            tree.column(col, width=width, anchor="w")
        for row in reversed(rows):
            tree.insert("", "end", text=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["time"])),
                        values=(row["who"], row["action"], row["detail"]))
        tree.grid(row=0, column=0, sticky="nsew", padx=6, pady=6)
        window.columnconfigure(0, weight=1)
        window.rowconfigure(0, weight=1)
        self.audit_tree = tree
        return window

    # -- hardware check ---------------------------------------------------------------------------
    def open_hardware_check(self) -> None:
        """The technician's checklist (app/hardware_check.py) in a window. Start pauses inspection and
        lends the check the knob box and conveyor ports; both links reopen when it ends."""
        if self.hardware is not None:
            self.hardware["window"].lift()
            return
        win = ttk.Toplevel(self.root)
        win.title("Hardware check")
        text = tk.Text(win, width=100, height=28, font=("TkFixedFont", 9), wrap="word")
        text.pack(fill="both", expand=True, padx=6, pady=6)
        text.tag_configure("pass", foreground=GREEN)
        text.tag_configure("fail", foreground=RED)
        text.insert("end", "Checks the knob box and the conveyor: finds their ports, measures the knobs at rest and "
                           "turned end to end, starts the belt, sends an OK and a defect verdict and checks the "
                           "conveyor's watchdog.\nStart pauses inspection; the belt moves during the check: keep "
                           "hands clear.\n\n")
        start = ttk.Button(win, text="Start", command=self._start_hardware_check, bootstyle="primary")
        start.pack(side="left", padx=6, pady=6)
        ttk.Button(win, text="Close", command=self._close_hardware_check).pack(side="right", padx=6, pady=6)
        win.protocol("WM_DELETE_WINDOW", self._close_hardware_check)
        self.hardware = {"window": win, "text": text, "start": start, "stop": threading.Event(), "running": False}

    def _start_hardware_check(self) -> None:
        from app.hardware_check import HardwareCheck

        hw = self.hardware
        if hw is None or hw["running"]:
            return
        self._retire_inspector()
        urls = {"knobs": self.knobs.link.url if self.knobs is not None else "",
                "conveyor": self.conveyor.link.url if self.conveyor is not None else ""}
        for link in (self.knobs, self.conveyor):
            if link is not None:
                link.close()
        self.knobs = self.conveyor = None
        hw.update(running=True, urls=urls)
        hw["start"].configure(state="disabled")
        check = HardwareCheck(lambda line: self._jobs.put(("hardware", line)), conveyor_url=urls["conveyor"],
                              knobs_url=urls["knobs"], stop=hw["stop"])

        def run() -> None:
            try:
                report = check.run()
                self._jobs.put(("hardware-done", report))
            except GutcheckError as exc:
                self._jobs.put(("hardware", f"  FAIL  {exc}"))
                self._jobs.put(("hardware-done", None))

        threading.Thread(target=run, daemon=True, name="hardware-check").start()

    def _hardware_done(self, report) -> None:
        """Reopen the links the check borrowed; inspection stays paused until a source is opened again
        (the check leaves the belt stopped: Resume restarts it)."""
        from app.links.conveyor_link import ConveyorLink
        from app.links.knob_link import KnobLink

        hw = self.hardware
        urls = hw["urls"] if hw is not None else {}
        if urls.get("knobs"):
            self.knobs = KnobLink(urls["knobs"]).start()
        if urls.get("conveyor"):
            self.conveyor = ConveyorLink(urls["conveyor"]).start()
        if hw is not None:
            hw["running"] = False
            hw["start"].configure(state="normal")
        ok = report is not None and report.ok
        self.message("hardware check: every check passed" if ok else "hardware check: a check failed (see its "
                     "window)", error=not ok)
        if self.source_spec and self.bundle is not None:
            self.open_source(self.source_spec)

    def _close_hardware_check(self) -> None:
        hw = self.hardware
        if hw is None:
            return
        hw["stop"].set()  # a running check ends at its next step and still hands the ports back
        hw["window"].destroy()
        if not hw["running"]:
            self.hardware = None

    # -- the view -------------------------------------------------------------------------------
    def poll(self) -> None:
        now = time.monotonic()
        self.redraws.append(now)
        while not self._jobs.empty():
            kind, value = self._jobs.get_nowait()
            if kind == "model":
                self._model_loaded(value)
            elif kind == "recipe":
                self._recipe_loaded(*value)
            elif kind == "hardware":
                if self.hardware is not None and self.hardware["window"].winfo_exists():
                    tag = "pass" if "PASS " in value[:8] else "fail" if "FAIL " in value[:8] else ""
                    self.hardware["text"].insert("end", f"{value}\n", tag)
                    self.hardware["text"].see("end")
            elif kind == "drift":
                self.message(str(value), error=str(value).startswith("DRIFT"))
            elif kind == "hardware-done":
                self._hardware_done(value)
                if self.hardware is not None and not self.hardware["window"].winfo_exists():
                    self.hardware = None
            else:
                self.message(str(value), error=True)
        self._serve_line_commands()
        insp = self.inspector
        if insp is not None:
            while True:
                try:
                    self.message(insp.errors.get_nowait(), error=True)
                except queue.Empty:
                    break
            newest = None
            for _ in range(200):
                try:
                    v = insp.verdicts.get_nowait()
                except queue.Empty:
                    break
                self._add_verdict(v)
                newest = v
            if newest is not None:
                self._show_verdict(newest)
            if self._runtime_shown is not insp and insp.scorer.runtime_note:  # chosen as inspection starts
                self._runtime_shown = insp
                if str(self.status.cget("foreground")) != RED:  # an error on show stays
                    self.message(f"inspecting {insp.source.name}; network on {insp.scorer.runtime_note}")
            try:
                frame = insp.frames.get_nowait()
                self._photos["live"] = photo(self._overlay(frame.image), 480)
                self.live.configure(image=self._photos["live"], text="")
            except queue.Empty:
                pass
        self._show_links()
        self._show_outputs()
        self._show_drift()
        if self._plots_stale:
            self._draw_bars()
            self._draw_chart()
            self._plots_stale = False
        ok, nok = self.counts["ok"], self.counts["anomaly"]
        total = ok + nok
        fps = (len(self.redraws) - 1) / (self.redraws[-1] - self.redraws[0]) if len(self.redraws) > 1 else 0.0
        self.counter.configure(text=f"inspected {total}   OK {ok}   NOK {nok}   yield "
                                    f"{(ok / total if total else 0):.1%}   view {fps:.0f} fps")
        self.root.after(POLL_MS, self.poll)

    def _overlay(self, image: np.ndarray) -> np.ndarray:
        """The live frame with the box the model saw: the last verdict's framing (ROI / centring crop),
        computed by the pipeline, not here."""
        out = image.copy()
        v = self.last_verdict
        if v is not None and v.frame.image.shape == image.shape:
            x, y, w, h = v.box
        else:
            h, w = image.shape[:2]
            x = y = 0
        colour = (43, 42, 201) if v is not None and v.anomaly else (62, 138, 43)
        cv2.rectangle(out, (x + 1, y + 1), (x + w - 2, y + h - 2), colour, 2)
        return out

    def _add_verdict(self, v: Verdict) -> None:
        self.counts["anomaly" if v.anomaly else "ok"] += 1
        self.chart.append((v.density, v.error, v.thresholds))
        self._plots_stale = True
        self._calibration_add(v)
        thumb = photo(v.inputs, 32, rgb=True)
        self._history_photos.append(thumb)
        self.history.insert("", 0, text=f" {v.part}", image=thumb,
                            values=("ANOMALY" if v.anomaly else "OK", f"{v.density:.2f}", f"{v.error:.5f}"),
                            tags=("bad",) if v.anomaly else ())
        self.history.tag_configure("bad", foreground=RED)
        for item in self.history.get_children()[20:]:
            self.history.delete(item)

    def _show_verdict(self, v: Verdict) -> None:
        self.last_verdict = v
        self.banner.configure(text="ANOMALY" if v.anomaly else "OK", bg=RED if v.anomaly else GREEN)
        self.rule_line.configure(text=v.thresholds.describe(v.density, v.error))
        hot = heat(v.heatmap, v.heat_scale)
        middle = beside_input(v.inputs, v.reconstruction, hot)
        for name, img in (("model input", v.inputs), ("reconstruction", middle), ("error heatmap", hot)):
            self._photos[name] = photo(img, 150, rgb=True)
            self.views[name].configure(image=self._photos[name], text="")

    def _show_links(self) -> None:
        if self.knobs is not None:
            state = self.knobs.state()
            drops = self.knobs.link.drops
            dropped = f" · {drops} drop{'s' if drops > 1 else ''}" if drops else ""
            self.knob_state.configure(text=f"knobs: {state}{dropped}",
                                      foreground=GREEN if state == "connected" else RED)
            proposal = self.knob_proposal()
            if proposal is not None:
                self.knob_density.configure(text=f"density knob {proposal[0]:.4g}")
                self.knob_recon.configure(text=f"error knob {proposal[1]:.4g}")
                t = self.current_thresholds()
                if self.follow_var.get() and t is not None and state == "connected":
                    new = replace(t, density=proposal[0], reconstruction=proposal[1])
                    if new != t:
                        self._operator_thresholds(new, "knobs followed")
        if self.conveyor is not None:
            state = self.conveyor.state()
            belt = BELT_STATES.get(self.conveyor.belt_state, "unknown")
            held = f" · held stopped: {self.conveyor.holding}" if self.conveyor.holding else ""
            drops = self.conveyor.link.drops
            dropped = f" · {drops} drop{'s' if drops > 1 else ''}, {self.conveyor.pending()} verdicts waiting" \
                if drops else ""
            self.belt_state.configure(text=f"belt {belt} · link {state}{dropped}{held}",
                                      foreground=GREEN if self.conveyor.belt_state == "R" else RED)

    def _show_drift(self) -> None:
        """The drift banner and the good parts' shift over the shift (both medians, in robust spreads)."""
        drift = self.drift
        if drift is None:
            return
        latest = drift.latest
        text = drift.state() if latest is None else latest.describe()
        colour = "white" if latest is not None and latest.drifting else GREY
        background = "#e8590c" if latest is not None and latest.drifting else self.root.cget("background")
        if text != self.drift_banner.cget("text"):
            self.drift_banner.configure(text=text, fg=colour, bg=background)
            c = self.drift_canvas
            c.delete("all")
            points = list(drift.history)
            limit = drift.shift_limit
            span = max(limit * 1.5, max((max(abs(d), abs(e)) for _, d, e in points), default=0) * 1.1)
            w, h = 480, 80

            def y(value: float) -> float:
                return h / 2 - value / span * (h / 2 - 4)

            for level in (limit, -limit):
                c.create_line(0, y(level), w, y(level), fill="#e8590c", dash=(4, 3))
            c.create_line(0, y(0), w, y(0), fill="#ced4da")
            if len(points) >= 2:
                t0, t1 = points[0][0], max(points[-1][0], points[0][0] + 1e-6)
                for index, colour_line in ((1, "#1971c2"), (2, "#e8590c")):
                    xy = [v for t, *shifts in points
                          for v in (4 + (w - 8) * (t - t0) / (t1 - t0), y(-shifts[0] if index == 1 else shifts[1]))]
                    c.create_line(*xy, fill=colour_line, width=2)
            c.create_text(4, 8, text="good parts' drift in robust spreads, up = worse: density (blue), error (orange)",
                          anchor="w", fill=GREY, font=("TkDefaultFont", 8))

    def _show_outputs(self) -> None:
        """Each output's state and counts: what reached the log, the belt and the line, and what not."""
        outputs = self.inspector.outputs if self.inspector is not None else self.publishers
        shown = [o for o in outputs if o.name not in ("view", "drift watch")]  # those two have panels of their own
        lines = [f"{o.name}: {o.state()} · {o.sent} sent" + (f", {o.dropped} dropped" if o.dropped else "")
                 + (f", {o.failed} failed" if o.failed else "") for o in shown]
        text = "\n".join(lines) or "no inspection running"
        if text != self.outputs_state.cget("text"):
            self.outputs_state.configure(text=text, foreground=RED if any(o.failed or o.dropped for o in shown) else "")

    def _draw_bars(self) -> None:
        c = self.bars
        c.delete("all")
        v, t = self.last_verdict, self.current_thresholds()
        if v is None or t is None or self.bundle is None:
            return
        for row, (name, value, threshold, bad_low, key) in enumerate((
                ("density", v.density, t.density, True, "density"),
                ("rec. error", v.error, t.reconstruction, False, "reconstruction"))):
            lo, hi = self.knob_range(key)
            y = 6 + row * 26

            def x(val):
                return 90 + 320 * min(max((val - lo) / (hi - lo or 1), 0), 1)

            bad = value < threshold if bad_low else value > threshold
            c.create_text(4, y + 8, text=name, anchor="w")
            c.create_rectangle(90, y, 410, y + 16, outline="#ced4da")
            c.create_rectangle(90, y, x(value), y + 16, fill=RED if bad else GREEN, width=0)
            c.create_line(x(threshold), y - 3, x(threshold), y + 19, width=3)

    def _draw_chart(self) -> None:
        c = self.chart_canvas
        c.delete("all")
        if len(self.chart) < 2 or self.bundle is None:
            c.create_text(240, CHART_HEIGHT // 2, text="scores appear here", fill=GREY)
            return
        w, half = 480, CHART_HEIGHT // 2
        for row, (key, index, colour) in enumerate((("density", 0, "#1971c2"), ("reconstruction", 1, "#e8590c"))):
            lo, hi = self.knob_range(key)
            top = row * half

            def y(val):
                return top + half - 6 - (half - 12) * min(max((val - lo) / (hi - lo or 1), 0), 1)

            pts = []
            for i, item in enumerate(self.chart):
                pts += [w * i / (CHART_POINTS - 1), y(item[index])]
            c.create_line(*pts, fill=colour, width=2)
            t = self.chart[-1][2]
            ty = y(t.density if index == 0 else t.reconstruction)
            c.create_line(0, ty, w, ty, fill=colour, dash=(4, 3))
            c.create_text(4, top + 8, text="density" if index == 0 else "reconstruction error", anchor="w",
                          fill=colour)

    def remember(self, **ports: str) -> None:
        """What the station should come back with next time (saved when the window closes)."""
        self._remember.update(ports)

    def _save_memory(self) -> None:
        """The station's last source, ports, mode and recipe into the settings file; a damaged file is
        kept aside by save_settings, never overwritten."""
        if self._settings_unreadable:
            return
        memory = dict(self._remember, mode=self.mode)
        if self.station_source:
            memory["source"] = self.station_source
        remembered = replace(self.settings, **memory)
        if remembered == self.settings and self.settings_path.exists():
            return
        try:
            save_settings(self.settings_path, remembered)
        except (GutcheckError, OSError):
            pass  # closing: nowhere to show it; the next start says what it cannot read

    def close(self) -> None:
        self._save_memory()
        if self.inspector is not None:
            self.inspector.stop()
            self.inspector.close_outputs(2.0)  # the log's last verdicts are written before it closes
        else:
            for publisher in [*self.publishers, *self.recipe_publishers]:
                publisher.close(2.0)
        for link in (self.knobs, self.conveyor):
            if link is not None:
                link.close()
        self.log.close()
        self.root.destroy()
