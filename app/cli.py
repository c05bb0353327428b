"""The `gutcheck` command: capture, build, inspect, dashboard, demo."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

from app.redact import redact
from capture.errors import GutcheckError
from model_builder.runtime import RUNTIME_CHOICES


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with the process's stderr closed: its C++ start-up lines (absl, oneDNN) would
    come before any one-line message of ours. An import that fails still raises, and is reported."""
    if "tensorflow" in sys.modules:
        return
    try:
        saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except OSError:
        import tensorflow  # noqa: F401
        return
    try:
        sys.stderr.flush()
        os.dup2(null, 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _crash_log(exc: BaseException) -> str:
    """Write the traceback of an unexpected error where the user can find it; returns the path."""
    import tempfile
    import time
    import traceback

    text = "".join(traceback.format_exception(exc))
    from capture.platforms import user_log_dir

    for folder in (user_log_dir(), Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"gutcheck-crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
            # owner-only (0600 where modes exist) and redacted: a command line may hold a password
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with open(handle, "w", encoding="utf-8") as log:
                log.write(redact(" ".join(sys.argv) + "\n\n" + text))
            return str(path)
        except OSError:
            continue
    return "(no writable folder for the log)"


def cmd_build(args: argparse.Namespace) -> int:
    from model_builder.build import BuildOptions, build

    from model_builder.augment import Augmentation

    if args.update:
        return _build_update(args)
    options = BuildOptions(size=args.size, color=args.color, crop=args.crop, architecture=args.architecture,
                           pretrained=args.pretrained, loss=args.loss, alpha=args.alpha, density_preset=args.density,
                           density_coreset=args.coreset, time_limit_s=max(0.0, args.train_minutes) * 60,
                           reconstruction_score=args.score, rule=args.rule, epochs=args.epochs,
                           target_frr=args.target_frr, target_recall=args.target_recall, seed=args.seed,
                           outlier_limit=args.outlier_limit,
                           augmentation=Augmentation(enabled=not args.no_augment, flip_horizontal=args.flips,
                                                     flip_vertical=args.flips))
    result = build(Path(args.data), Path(args.out), options, force=args.force, show_progress=not args.quiet)
    _print_build(args, result)
    return 0


# Options of a new build that an update cannot honour: it keeps the bundle's model, framing and density.
_NOT_WITH_UPDATE = ("size", "color", "crop", "architecture", "pretrained", "loss", "alpha", "density", "coreset",
                    "score", "rule", "epochs", "train_minutes", "no_augment", "flips", "seed")


def _build_update(args: argparse.Namespace) -> int:
    from model_builder.update import update

    defaults = parser().parse_args(["build", "--data", "d", "--out", "o"])
    changed = [name for name in _NOT_WITH_UPDATE if getattr(args, name) != getattr(defaults, name)]
    if changed:
        raise GutcheckError(f"--update keeps the bundle's model and options; "
                            f"{', '.join('--' + c.replace('_', '-') for c in changed)} cannot apply "
                            "(build anew instead)")
    result = update(Path(args.update), Path(args.data), Path(args.out), force=args.force,
                    show_progress=not args.quiet, target_frr=args.target_frr, target_recall=args.target_recall,
                    outlier_limit=args.outlier_limit)
    _print_build(args, result)
    return 0


def _print_build(args: argparse.Namespace, result) -> None:
    b = result.bundle
    print(f"wrote {args.out} in {result.seconds:.0f} s; report: {Path(args.out) / 'report.html'}")
    print(f"thresholds: density {b.thresholds.density:.3f}, reconstruction error "
          f"{b.thresholds.reconstruction:.6f}, rule {b.thresholds.rule}")
    if result.evaluation:
        e, op = result.evaluation, result.evaluation["operating_point"]
        print(f"test set: image AUROC {e['auroc_combined']:.3f} (density {e['auroc_density']:.3f}, "
              f"reconstruction {e['auroc_reconstruction']:.3f}); at the thresholds accuracy {op['accuracy']:.3f}, "
              f"recall {op['recall']:.3f}, precision {op['precision']:.3f}")


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
    """Headless inspection: one JSON line per image file, or per part (or frame) of a live source."""
    from model_builder.bundle import load_bundle

    recipe = _recipe(args)
    if recipe is not None and not args.images:
        args.source = recipe.source_spec(args.source or "")
    if bool(args.images) == bool(args.source):
        raise GutcheckError("give image files/folders or --source, not both and not neither")
    if args.images and (args.conveyor or args.log_dir):
        # Never accept an option and then not act on it: verdicts that silently reach no belt.
        raise GutcheckError("--conveyor and --log-dir work with --source (a live stream), not with image files; "
                            "use --source folder:PATH for a folder of images")
    paths = _image_paths(args.images) if args.images else []
    if recipe is not None:
        from app.recipes import recipe_bundle

        bundle = recipe_bundle(recipe)
        args.publish = [*(args.publish or []), *recipe.publish]
    else:
        bundle = load_bundle(Path(args.model))
    return _inspect(args, bundle, paths, recipe)


def _recipe(args: argparse.Namespace):
    """The recipe --recipe names (None without one); --model beside it is refused: the recipe names its model."""
    if not getattr(args, "recipe", None):
        if hasattr(args, "model") and not args.model and args.command != "dashboard":
            raise GutcheckError("give --model BUNDLE or --recipe NAME")
        return None
    from app.recipes import RecipeBook

    if getattr(args, "model", None):
        raise GutcheckError("give --model or --recipe, not both: the recipe names its model")
    return RecipeBook(Path(args.recipes) if args.recipes else None).load(args.recipe)


def _camera_check(source, captured: dict, strict: bool) -> None:
    """Say which camera settings did not hold or differ from the good parts'; with --strict refuse to go on."""
    from capture.sources import camera_lines

    lines = camera_lines(source, captured)
    if lines and strict:
        source.close()
        raise GutcheckError(lines[0] + (f" (and {len(lines) - 1} more)" if len(lines) > 1 else "")
                            + "; --strict refuses to inspect with it")
    for line in lines:
        print(f"gutcheck: warning: {line}", file=sys.stderr, flush=True)


def _inspect(args: argparse.Namespace, bundle, paths: list[Path], recipe=None) -> int:
    """Image files or a live source through the inspection pipeline, JSON lines on stdout; exit 2 when
    an image could not be read or verdicts did not reach the conveyor."""
    from app.drift import drift_watch
    from app.inspection_log import InspectionLog
    from app.inspector import Inspector
    from app.links.conveyor_link import ConveyorLink
    from app.outputs import ConveyorOutput, JsonLinesOutput, LogOutput, QueuedOutput
    from app.publish import open_publishers
    from app.settings import load_settings, saved_thresholds
    from capture.sources import FilesSource, open_source

    unreadable: list[str] = []

    def report_unreadable(path: Path, message: str) -> None:  # in order, between the verdicts
        print(f"gutcheck: error: {message}", file=sys.stderr, flush=True)
        unreadable.append(str(path))

    json_out = JsonLinesOutput(sys.stdout)
    outputs = [json_out]
    if paths:
        source = FilesSource(paths, "files", on_error=report_unreadable)
    else:
        source = open_source(args.source)
        _camera_check(source, bundle.info.provenance.camera, args.strict)
    if recipe is not None:  # each frame cut as the recipe's good parts were captured
        source.framing = recipe.framing
    if args.settings and not Path(args.settings).is_file():
        raise GutcheckError(f"--settings {args.settings}: no such file (the publishers it lists would never open)")
    # the publishers first: a refused URL leaves no log folder and no conveyor link behind
    publishers = open_publishers(args.publish, args.station, Path(args.settings) if args.settings else None)
    try:
        if args.source and args.conveyor:
            link = ConveyorLink(args.conveyor).start(require_open=True)
            outputs.append(ConveyorOutput(link))
            if recipe is not None and recipe.belt_speed:
                link.set_speed(recipe.belt_speed)
        log = InspectionLog(Path(args.log_dir)) if args.source and args.log_dir else None
    except BaseException:
        for output in [*outputs[1:], *publishers]:
            output.close(1.0)
        raise
    if log is not None:
        outputs.append(LogOutput(log))
        if recipe is not None:
            log.audit("inspect", f"started with recipe {recipe.name} version {recipe.version} "
                                 f"(model {bundle.info.model_id}) on {args.source}")
    outputs += publishers
    if args.source:  # a live line: tell when its good parts stop scoring like the calibration's
        watch = drift_watch(bundle, publishers, say=lambda m: print(f"gutcheck: {m}", file=sys.stderr, flush=True))
        if log is not None:  # from where the line stopped: the log's last parts of this model
            watch.prime(log)
        outputs.append(watch)
    inspector = Inspector(bundle, source, args.mode, outputs, runtime=args.runtime)
    if recipe is not None:  # the recipe's thresholds: the settings file's belong to the station, not a part
        inspector.set_thresholds(recipe.thresholds(bundle))
        t = inspector.thresholds
        print(f"gutcheck: recipe {recipe.name} version {recipe.version}: density < {t.density:.6g} {t.rule} "
              f"reconstruction error > {t.reconstruction:.6g}", file=sys.stderr, flush=True)
    elif args.settings:  # a recalibration written there (or the dashboard's saved thresholds) is what inspects
        saved, note = saved_thresholds(load_settings(Path(args.settings)), bundle)
        if saved is not None:
            inspector.set_thresholds(saved)
            print(f"gutcheck: thresholds from {args.settings}: density < {saved.density:.6g} {saved.rule} "
                  f"reconstruction error > {saved.reconstruction:.6g}", file=sys.stderr, flush=True)
        elif note:
            print(f"gutcheck: {args.settings}: {note}", file=sys.stderr, flush=True)
    try:
        inspector.run()
    except KeyboardInterrupt:
        pass
    finally:
        inspector.stop()
        inspector.close_outputs(5.0)
        if log is not None:
            log.close()
    conveyor = next((o for o in outputs if isinstance(o, ConveyorOutput)), None)
    if inspector.inspected:  # nothing scored (every image unreadable): the error line stands alone
        print(f"gutcheck: network on {inspector.scorer.runtime_note}", file=sys.stderr)
        print(f"gutcheck: model {bundle.info.model_id}: {bundle.info.calibration.expectation()}", file=sys.stderr)
    for output in outputs[1:]:
        if output.name != "drift watch":
            print(f"gutcheck: {output.summary()}", file=sys.stderr)
    if conveyor is not None:
        link = conveyor.link
        undelivered, link_state = link.pending(), link.state()
        link.close()
        if undelivered:
            raise GutcheckError(f"{undelivered} verdicts did not reach the conveyor (link {link_state}: "
                                f"{link.link.last_error or 'no acknowledgement'}); its watchdog has stopped the belt")
    if not inspector.errors.empty():
        raise GutcheckError(inspector.errors.get())
    if json_out.dropped:
        raise GutcheckError(f"{json_out.dropped} verdicts could not be printed: stdout was too slow to take them")
    # a publisher that failed never stopped the line, but a run that lost verdicts does not end "fine"
    losing = [o for o in outputs[1:] if isinstance(o, QueuedOutput) and o.lost]  # the log, the publishers
    if losing:
        raise GutcheckError("verdicts lost: " + "; ".join(
            f"{o.name}: {o.lost} of {o.received} ({o.last_error or 'its queue was full'})" for o in losing))
    return 2 if unreadable else 0  # the README's promise: bad input is exit code 2


def cmd_demo(args: argparse.Namespace) -> int:
    from app.demo import run_demo

    bundle, _ = run_demo(Path(args.datasets), Path(args.models), rebuild=args.rebuild, n_parts=args.parts,
                         seed=args.seed)
    from capture.platforms import has_display

    if args.headless or not has_display():
        return 0
    from app.dashboard_app import run_dashboard

    print("opening the dashboard on the synthetic conveyor with a simulated knob box and conveyor ...")
    return run_dashboard(model=str(bundle.path), source=f"synthetic:seed={args.seed + 2000},parts=500,fps=20",
                         knobs=None, conveyor=None, mode="part", settings=Path(args.models) / "demo-settings.toml",
                         log_dir=Path(args.models) / "demo-inspections", simulate_devices=True)


def cmd_capture(args: argparse.Namespace) -> int:
    from app.cli_recipes import parse_numbers
    from capture.framing import Framing
    from capture.session import CaptureSession, CaptureSettings, DatasetWriter
    from capture.sources import open_source

    recipe = _recipe(args)
    datasets, part = Path(args.datasets), args.part
    if recipe is not None:  # into the recipe's dataset, through its camera and with its settings
        if not recipe.dataset:
            raise GutcheckError(f"recipe {recipe.name} has no dataset: save it with --dataset FOLDER")
        if args.part and args.part != Path(recipe.dataset).name:
            raise GutcheckError(f"--part {args.part}: recipe {recipe.name} records into {recipe.dataset}")
        datasets, part = Path(recipe.dataset).parent, Path(recipe.dataset).name
        args.source = recipe.source_spec(args.source or "")
    if not part:
        raise GutcheckError("give --part NAME (or --recipe NAME)")
    writer = DatasetWriter(datasets, part, args.split, args.label)
    framing = Framing(tuple(roi) if (roi := parse_numbers(args.roi or "", "--roi", 4, int)) else None, args.crop)
    if recipe is not None and (args.roi or args.crop):
        raise GutcheckError(f"--roi and --crop: recipe {recipe.name} frames the parts (recipe save --roi/--crop)")
    if recipe is not None:
        framing = recipe.framing
    settings = CaptureSettings(mode=args.mode, interval_ms=args.interval, framing=framing)
    if args.mode == "manual" and not args.window:
        raise GutcheckError("manual mode needs the window (--window): there is no button to press here")
    source = open_source(args.source or "cam:0", args.width, args.height, args.fps, args.backend)
    _camera_check(source, {}, args.strict)
    session = CaptureSession(source, writer, settings)
    if args.window:
        from app.capture_window import run_capture_window

        return run_capture_window(session, args.count)
    from tqdm import tqdm

    bar = tqdm(total=args.count or None, unit="image", desc=f"capturing {args.part}", file=sys.stderr,
               mininterval=0.5 if sys.stderr.isatty() else 10)
    try:
        while not args.count or session.captured < args.count:
            event = session.step()
            if event is None:
                if source.finite:
                    break
                continue
            if event.saved:
                bar.set_postfix(rejected=sum(session.rejected.values()), failed_reads=source.failed_reads,
                                refresh=False)
                bar.update(1)
            elif event.rejected:
                bar.write(f"rejected frame {event.frame.index}: {event.rejected}")
    except KeyboardInterrupt:
        bar.write("stopped")
    finally:
        bar.close()
        source.close()
    rejected = ", ".join(f"{n} {why}" for why, n in session.rejected.items()) or "none"
    print(f"captured {session.captured} images into {writer.folder} from {source.frames} frames; "
          f"rejected: {rejected}; failed reads: {source.failed_reads}")
    return 0


def cmd_dataset(args: argparse.Namespace) -> int:
    from capture.session import DatasetWriter, summarize, summary_lines

    root = Path(args.part) if Path(args.part).is_dir() and "/" in args.part else Path(args.datasets) / args.part
    if args.action == "summary":
        print(f"dataset {root}")
        for line in summary_lines(summarize(root)):
            print(line)
        return 0
    writer = DatasetWriter(root.parent, root.name, args.split, args.label)
    if args.action == "trash":
        handle = writer.trash_images()
        if handle is None:
            raise GutcheckError(f"{writer.folder}: no such image folder")
        print(f"moved {handle[1]} to {handle[0]} (undo: gutcheck dataset restore {args.part} "
              f"--split {args.split} --label {args.label})")
        return 0
    print(f"restored {writer.restore_latest()}")
    return 0


MAX_WAIT_S = 600.0  # the longest a hardware check waits for a hand at the knobs


def cmd_hardware(args: argparse.Namespace) -> int:
    from app.hardware_check import HardwareCheck

    if not all(0 < v <= MAX_WAIT_S for v in (args.sweep_seconds, args.rest_seconds)):  # also refuses nan
        raise GutcheckError(f"--sweep-seconds and --rest-seconds must be above 0 and at most {MAX_WAIT_S:g}")
    report = HardwareCheck(lambda line: print(line, flush=True), conveyor_url=args.conveyor or "",
                           knobs_url=args.knobs or "", check_knobs=not args.no_knobs,
                           check_conveyor=not args.no_conveyor, rest_s=args.rest_seconds,
                           sweep_s=args.sweep_seconds).run()
    return 0 if report.ok else 1


MAX_LAST = 10_000_000  # parts recalibrate may read; SQLite's LIMIT is a 64-bit integer
WRITE_RECIPE = "\0recipe"  # `recalibrate --recipe NAME --write`: no file named, a new recipe version


def cmd_recalibrate(args: argparse.Namespace) -> int:
    from app.inspection_log import InspectionLog
    from app.settings import check_settings_target
    from app.recalibrate import LARGE_SHIFT, propose, save_histogram, write_proposal
    from model_builder.bundle import load_bundle
    from model_builder.metadata import check_target_frr

    recipe = _recipe(args)
    into_recipe = args.write == WRITE_RECIPE
    if into_recipe and recipe is None:
        raise GutcheckError("--write needs a SETTINGS file, or --recipe NAME to write a new version of that recipe")
    if args.write and not into_recipe and recipe is not None:
        raise GutcheckError(f"with --recipe, --write takes no file: the thresholds become a new version of recipe "
                            f"{recipe.name}")
    if not (Path(args.log_dir) / "inspections.sqlite").is_file():
        raise GutcheckError(f"{args.log_dir}: no inspection log there (inspections.sqlite)")
    if args.target_frr is not None:
        check_target_frr(args.target_frr)
    if not 1 <= args.last <= MAX_LAST:
        raise GutcheckError(f"--last must be from 1 to {MAX_LAST}")
    if args.write and not into_recipe:
        check_settings_target(Path(args.write))  # before anything is printed or written
    if recipe is not None:
        from app.recipes import recipe_bundle

        bundle = recipe_bundle(recipe)
    else:
        bundle = load_bundle(Path(args.model))
    log = InspectionLog(Path(args.log_dir))
    try:
        proposal = propose(bundle, log, current=recipe.thresholds(bundle) if recipe else None,
                           target_frr=args.target_frr, limit=args.last)
    finally:
        log.close()
    for line in proposal.lines():
        print(line)
    print(f"histogram: {save_histogram(proposal, Path(args.log_dir))}")
    if not args.write:
        print("nothing written: run again with --write SETTINGS (or --recipe NAME --write) to use these thresholds")
        return 0
    target = f"recipe {recipe.name}" if into_recipe else args.write
    if proposal.large_shift and not args.force:  # a proposal that may pass defects is not written unseen
        raise GutcheckError(f"not written to {target}: the parts moved more than {LARGE_SHIFT:g} spreads, so "
                            "the proposal may pass defects; look at the histogram and the logged images, then "
                            "--force to write it anyway")
    t = proposal.proposed
    kept = ""
    if into_recipe:
        from dataclasses import replace

        from app.recipes import RecipeBook

        saved = RecipeBook(Path(args.recipes) if args.recipes else None).save(
            replace(recipe, density_threshold=t.density, reconstruction_threshold=t.reconstruction, rule=t.rule),
            note=f"recalibrated from {proposal.parts} logged parts (version {recipe.version} before)")
        target = f"recipe {saved.name} version {saved.version}"
    else:
        backup = write_proposal(proposal, Path(args.write), bundle)
        kept = f" (the damaged file before it is kept as {backup})" if backup else ""
    log = InspectionLog(Path(args.log_dir))
    try:
        log.audit("recalibrated", f"{target} for model {bundle.info.model_id}: density < {t.density:.6g} {t.rule} "
                                  f"error > {t.reconstruction:.6g}, from {proposal.parts} logged parts")
    finally:
        log.close()
    print(f"thresholds written to {target}{kept}")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from app.dashboard_app import run_dashboard

    from capture.platforms import has_display

    if args.recipe and args.model:
        raise GutcheckError("give --model or --recipe, not both: the recipe names its model")
    if not has_display():
        raise GutcheckError("no display: the dashboard needs a screen (use 'gutcheck inspect' headless)")
    from app.settings import default_log_dir, default_settings_path

    return run_dashboard(model=args.model, source=args.source, knobs=args.knobs, conveyor=args.conveyor,
                         mode=args.mode, settings=Path(args.settings) if args.settings else default_settings_path(),
                         log_dir=Path(args.log_dir) if args.log_dir else default_log_dir(),
                         publish=args.publish or [], station=args.station, runtime=args.runtime,
                         recipe=args.recipe, recipes=Path(args.recipes) if args.recipes else None)


RUNTIME_HELP = ("where the network runs: auto (OpenVINO when its outputs match TensorFlow's, else TensorFlow; "
                "default), tensorflow, openvino")
PUBLISH_HELP = ("publish each verdict: mqtt://HOST:PORT/PREFIX, mqtts://..., http(s)://URL or folder:PATH "
                "(repeatable; docs/outputs.md); secrets from GUTCHECK_MQTT_USERNAME / GUTCHECK_MQTT_PASSWORD / "
                "GUTCHECK_WEBHOOK_TOKEN or the settings file, never from the URL")


class OneLineParser(argparse.ArgumentParser):
    """argparse with the README's promise: a usage error is one line, `gutcheck: error: ...`, exit 2."""

    def error(self, message: str):
        where = self.prog.removeprefix("gutcheck").strip()
        print(f"gutcheck: error: {where + ': ' if where else ''}{redact(message)} (see: {self.prog} --help)",
              file=sys.stderr)
        raise SystemExit(2)


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="gutcheck", description="Visual inspection that learns from good parts only.")
    from app.cli_recipes import RECIPES_HELP, add_parsers as add_recipe_parsers

    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)

    c = sub.add_parser("capture", help="film good parts and build a good-only image set",
                       description="Capture images into datasets/<part>/<split>/<label>/ (MVTec layout) with "
                                   "quality gates, atomic writes and a manifest. Without --count it runs until "
                                   "the source ends or Ctrl-C. --window opens the capture window.")
    c.add_argument("--source", help="cam:N, cam:NAME, file:VIDEO, folder:PATH, synthetic:, or an rtsp/http URL "
                                    "(default: the recipe's, else cam:0)")
    c.add_argument("--part", help="part name: images go to datasets/<part>/ (or --recipe)")
    c.add_argument("--datasets", default="datasets", help="datasets folder (default datasets/)")
    c.add_argument("--mode", choices=["trigger", "interval", "manual"], default="trigger",
                   help="trigger: once per part passing (default); interval: every --interval ms; manual: window only")
    c.add_argument("--interval", type=int, default=500, metavar="MS")
    c.add_argument("--count", type=int, default=0, help="stop after this many saved images")
    c.add_argument("--split", choices=["train", "test"], default="train")
    c.add_argument("--label", default="good", help="good, or a defect name for test images")
    c.add_argument("--roi", metavar="X,Y,W,H", help="cut this box from each frame first")
    c.add_argument("--crop", type=int, default=0, metavar="PX", help="centre a PX square on the part")
    c.add_argument("--width", type=int, default=1920)
    c.add_argument("--height", type=int, default=1080)
    c.add_argument("--fps", type=int, default=30)
    c.add_argument("--backend", default="auto", help="camera backend: auto, dshow (Windows), msmf, v4l2")
    c.add_argument("--window", action="store_true", help="open the capture window")
    c.set_defaults(func=cmd_capture)

    ds = sub.add_parser("dataset", help="look after an image set",
                        description="summary: counts per split and defect, sizes, unreadable files, duplicates. "
                                    "trash: move a split/label folder to <part>/.trash/ (undo with restore).")
    ds.add_argument("action", choices=["summary", "trash", "restore"])
    ds.add_argument("part", help="part name or dataset folder")
    ds.add_argument("--datasets", default="datasets")
    ds.add_argument("--split", choices=["train", "test"], default="train")
    ds.add_argument("--label", default="good")
    ds.set_defaults(func=cmd_dataset)

    rc = sub.add_parser("recalibrate", help="propose thresholds from the parts logged as good (after drift)",
                        description="Propose new thresholds from the last parts the inspection log holds as good for "
                                    "this model, at its false-reject target; a histogram beside the log; written to "
                                    "a settings file only with --write.")
    rc.add_argument("--model", help="model bundle folder (or --recipe)")
    rc.add_argument("--recipe", metavar="NAME", help="the recipe's model and thresholds; with --write, a new version "
                                                     "of the recipe holds the proposal")
    rc.add_argument("--recipes", help=RECIPES_HELP)
    rc.add_argument("--log-dir", required=True, help="inspection log folder (inspections.sqlite)")
    rc.add_argument("--last", type=int, default=200, help="use the last N parts of this model (default 200)")
    rc.add_argument("--target-frr", type=float, help="false-reject rate (default: the bundle's calibration target)")
    rc.add_argument("--write", metavar="SETTINGS", nargs="?", const=WRITE_RECIPE,
                    help="write the proposal into this settings file (TOML), or with --recipe (no file) into a new "
                         "version of the recipe")
    rc.add_argument("--force", action="store_true",
                    help="with --write: write a proposal even when it warns that the parts moved very far")
    rc.set_defaults(func=cmd_recalibrate)

    hw = sub.add_parser("hardware", help="check the knob box and the conveyor (for wiring a new station)",
                        description="check: list the serial ports, find which is the knob box and which the "
                                    "conveyor, show their protocol versions, measure the knobs at rest and turned "
                                    "end to end, start the belt, send an OK and a defect verdict and check the "
                                    "conveyor's watchdog. Exit code 0 when every check passes, 1 when one fails. "
                                    "The belt moves during the check: keep hands clear.")
    hw.add_argument("action", choices=["check"])
    hw.add_argument("--conveyor", metavar="URL", help="the conveyor's port (default: search every serial port)")
    hw.add_argument("--knobs", metavar="URL", help="the knob box's port (default: search every serial port)")
    hw.add_argument("--no-knobs", action="store_true", help="skip the knob box")
    hw.add_argument("--no-conveyor", action="store_true", help="skip the conveyor")
    hw.add_argument("--rest-seconds", type=float, default=2.0, help="knobs left alone this long (default 2)")
    hw.add_argument("--sweep-seconds", type=float, default=20.0,
                    help="time to turn each knob end to end (default 20; ends early once both ends are seen)")
    hw.set_defaults(func=cmd_hardware)

    from model_builder.build import DEFAULT_SIZES, BuildOptions
    from model_builder.density import PRESETS
    from model_builder.losses import LOSSES
    from model_builder.preprocess import COLOURS
    from model_builder.scoring import RULES

    defaults = BuildOptions()
    b = sub.add_parser("build", help="train a model bundle from good images",
                       description="Train the autoencoder and latent density on DATA/train/good, calibrate both "
                                   "thresholds on held-out good images, evaluate on DATA/test when present.")
    b.add_argument("--data", required=True, help="dataset folder (MVTec layout: train/good, test/<label>)")
    b.add_argument("--out", required=True, help="bundle folder to write (refused if it exists, unless --force)")
    b.add_argument("--size", type=int, default=0,
                   help="model input size in pixels (default: " +
                        ", ".join(f"{v} for {k}" for k, v in DEFAULT_SIZES.items()) + ")")
    b.add_argument("--color", choices=COLOURS, default=defaults.color)
    b.add_argument("--crop", type=int, default=defaults.crop, metavar="PX",
                   help="centre a PX-pixel square on the part before resizing (the capture tool's framing)")
    b.add_argument("--architecture", choices=list(DEFAULT_SIZES),
                   default=defaults.architecture,
                   help="features: pretrained encoder and an autoencoder that redraws its features (detector v2, "
                        "default); mobilenet: pretrained encoder with a pixel decoder (v1); residual: deeper pixel "
                        "CAE; prototype: the old CAE")
    b.add_argument("--pretrained", default=defaults.pretrained, metavar="WEIGHTS",
                   help="mobilenet weights: imagenet (Keras downloads once), a no-top .h5 path, or none")
    b.add_argument("--loss", choices=LOSSES, default=defaults.loss)
    b.add_argument("--alpha", type=float, default=defaults.alpha,
                   help=f"weight of SSIM in the hybrid loss (default {defaults.alpha:g})")
    b.add_argument("--density", choices=PRESETS, default=defaults.density_preset,
                   help="latent density: patch (KDE over the latent's patches, an image is as likely as its 10 "
                        "least likely patches; default), whitened (PCA-whitened KDE on the whole latent), gaussian "
                        "(Ledoit-Wolf shrunk covariance) or prototype (raw KDE, bandwidth 0.2)")
    b.add_argument("--coreset", type=float, default=defaults.density_coreset, metavar="SHARE",
                   help=f"patch density: share of the training patches kept (default {defaults.density_coreset})")
    b.add_argument("--score", choices=["topk", "ssim", "mse"], default="",
                   help="pixel autoencoders' reconstruction error: ssim (mean of the worst 1 - SSIM pixels; their "
                        "default), topk (mean of the worst squared-residual pixels) or mse (prototype). The features "
                        "architecture measures its error in feature space")
    b.add_argument("--rule", choices=RULES, default=defaults.rule, help=f"two-threshold rule (default {defaults.rule})")
    b.add_argument("--epochs", type=int, default=0,
                   help="training epochs (default: 15 for features, at most 60 with early stopping for the others)")
    b.add_argument("--train-minutes", type=float, default=defaults.time_limit_s / 60,
                   help=f"a guard: training ends before an epoch that would end past this, and the build says so "
                        f"(default {defaults.time_limit_s / 60:g}; 0: no limit). The features architecture trains "
                        "its fixed epochs well within it; the pixel autoencoders often reach it")
    b.add_argument("--no-augment", action="store_true", help="train without augmentation")
    b.add_argument("--flips", action="store_true", help="augment with flips (only for mirror-symmetric parts)")
    b.add_argument("--target-frr", type=float, default=defaults.target_frr,
                   help=f"false-reject rate on good images (default {defaults.target_frr:g})")
    b.add_argument("--outlier-limit", type=float, default=defaults.outlier_limit, metavar="SPREADS",
                   help="leave held-out good images this many robust spreads out of the calibration and list "
                        f"them to check (default {defaults.outlier_limit:g}; 0 keeps all)")
    b.add_argument("--target-recall", type=float, default=defaults.target_recall,
                   help=f"also report thresholds at this recall when test/ has defects (default "
                        f"{defaults.target_recall:g})")
    b.add_argument("--seed", type=int, default=defaults.seed)
    b.add_argument("--update", metavar="MODEL",
                   help="add the good images of --data to MODEL's density memory and calibrate again, without "
                        "retraining (seconds); writes a new bundle at --out")
    b.add_argument("--force", action="store_true", help="replace an existing bundle (the old one goes to .trash)")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=cmd_build)

    i = sub.add_parser("inspect", help="headless inspection: JSON lines out",
                       description="Score image files, or a live source, with a model bundle; prints one JSON line "
                                   "per image, part or frame.")
    i.add_argument("--model", help="model bundle folder (or --recipe)")
    i.add_argument("images", nargs="*", help="image files or folders")
    i.add_argument("--source", help="a live source instead of files: cam:N, file:VIDEO, folder:PATH, synthetic:, URL")
    i.add_argument("--mode", choices=["part", "continuous"], default="part")
    i.add_argument("--conveyor", help="send each verdict to the conveyor on this serial port")
    i.add_argument("--log-dir", help="keep an inspection log (SQLite + anomaly images) in this folder")
    i.add_argument("--publish", action="append", metavar="URL", help=PUBLISH_HELP)
    i.add_argument("--station", default="", help="station name in published verdicts (default: the host's name)")
    i.add_argument("--settings", help="settings file with publish URLs, station name, secrets and the thresholds "
                                      "saved for this model (TOML)")
    i.add_argument("--runtime", choices=RUNTIME_CHOICES, default="auto", help=RUNTIME_HELP)
    i.set_defaults(func=cmd_inspect)

    d = sub.add_parser("dashboard", help="the live inspection dashboard",
                       description="Live inspection window: verdicts, both thresholds (spinboxes or the knob box), "
                                   "conveyor control, counters, chart and history. Needs a display.")
    d.add_argument("--model", help="model bundle folder (or File > Open model bundle)")
    d.add_argument("--source", default=None, help="cam:N, file:VIDEO, folder:PATH, synthetic:, or a URL")
    d.add_argument("--knobs", help="knob box serial port (COM7, /dev/rfcomm0, socket://host:port)")
    d.add_argument("--conveyor", help="conveyor Arduino serial port (COM3, /dev/ttyACM0)")
    d.add_argument("--mode", choices=["part", "continuous"], default="part",
                   help="part: one verdict per part passing (default); continuous: every frame, as the prototype")
    d.add_argument("--settings", help="settings file (TOML; default: gutcheck-settings.toml here if there is one, "
                                      "else settings.toml in the user's settings folder)")
    d.add_argument("--log-dir", help="inspection log folder (SQLite + images; default: inspections/ here if there "
                                     "is one, else in the user's data folder)")
    d.add_argument("--publish", action="append", metavar="URL", help=PUBLISH_HELP)
    d.add_argument("--station", default="", help="station name in published verdicts (default: the host's name)")
    d.add_argument("--runtime", choices=RUNTIME_CHOICES, default="auto", help=RUNTIME_HELP)
    d.set_defaults(func=cmd_dashboard)

    add_recipe_parsers(sub, PUBLISH_HELP, OneLineParser)
    for front in (c, i, d):
        front.add_argument("--recipe", metavar="NAME", help="inspect (or capture) as this part's recipe says "
                                                            "(gutcheck recipe list)")
        front.add_argument("--recipes", help=RECIPES_HELP)
    for front in (c, i):
        front.add_argument("--strict", action="store_true", help="refuse to start when the camera does not take "
                                                                 "a setting (exit 2)")

    m = sub.add_parser("demo", help="the whole chain on synthetic parts",
                       description="Generate a synthetic part dataset (once), build a small model, and inspect a "
                                   "synthetic conveyor stream with a known good/defect mix; then, when a display "
                                   "exists, open the dashboard with a simulated knob box and conveyor.")
    m.add_argument("--datasets", default="datasets", help="where the demo dataset lives (default datasets/)")
    m.add_argument("--models", default="models", help="where the demo model lives (default models/)")
    m.add_argument("--parts", type=int, default=40, help="parts on the conveyor (default 40)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--rebuild", action="store_true", help="build the model again (old one goes to .trash)")
    m.add_argument("--headless", action="store_true", help="do not open the dashboard even when a display exists")
    m.set_defaults(func=cmd_demo)
    return p


NEEDS_TENSORFLOW = {"build", "inspect", "dashboard", "demo", "recalibrate"}


def main(argv: list[str] | None = None) -> int:
    """Every problem ends in one line and exit code 2: ours as they are, the system's (a file that
    cannot be read or written) with the file and the reason, anything unexpected with the path of
    a log that holds its traceback."""
    _quiet_tensorflow()
    args = parser().parse_args(argv)
    try:
        if args.command in NEEDS_TENSORFLOW:
            _import_tensorflow_quietly()
        return args.func(args)
    except GutcheckError as exc:
        print(f"gutcheck: error: {redact(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gutcheck: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"gutcheck: error: {where}{exc.strerror or exc}; check the path and its permissions", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: one line for the user, the traceback in a file for us
        first = redact(str(exc).splitlines()[0][:200]) if str(exc) else ""
        print(f"gutcheck: error: unexpected {type(exc).__name__}: {first} (a fault in Gutcheck; the details "
              f"are in {_crash_log(exc)})", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
