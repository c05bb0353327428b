"""`gutcheck recipe ...` and `gutcheck cameras`: part recipes and the cameras they name."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace
from pathlib import Path

from capture.errors import GutcheckError

RECIPES_HELP = "recipes folder (default: recipes/ here if there is one, else in the user's data folder)"


def parse_camera(text: str) -> dict[str, float]:
    """`exposure=-6,auto_exposure=0` as checked settings; `none` clears them."""
    from capture.sources import check_camera_settings

    if text.strip().lower() in ("none", ""):
        return {}
    settings = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, eq, value = (p.strip() for p in item.partition("="))
        if not eq:
            raise GutcheckError(f"--camera {item!r}: expected name=value (exposure=-6,auto_exposure=0)")
        settings[name] = value
    return check_camera_settings(settings)


def parse_numbers(text: str, option: str, count: int, kind: type = float) -> list:
    """`10,20,300,200` as `count` numbers of `kind`; `none` (or nothing) is []."""
    if text.strip().lower() in ("none", ""):
        return []
    items = [t.strip() for t in text.split(",")]
    try:
        if len(items) != count:
            raise ValueError
        return [kind(t) for t in items]
    except ValueError:
        raise GutcheckError(f"{option} {text!r}: expected {count} {'whole ' if kind is int else ''}numbers "
                            "separated by commas, or none") from None


def cmd_recipe_save(args: argparse.Namespace) -> int:
    from app.cli import _import_tensorflow_quietly
    from app.recipes import Recipe, RecipeBook, changes, check_name
    from model_builder.bundle import load_bundle

    check_name(args.name)
    if args.model:
        _import_tensorflow_quietly()  # the model is loaded: a recipe never names one that does not load
    book = RecipeBook(args.recipes)
    previous = book.load(args.name) if args.name in book.names() else None
    recipe = previous or Recipe(args.name)
    if args.model:
        bundle = load_bundle(Path(args.model))
        moved = recipe.model_id and recipe.model_id != bundle.info.model_id
        recipe = replace(recipe, model=str(Path(args.model).resolve()), model_id=bundle.info.model_id)
        if moved and args.density_threshold is None and recipe.density_threshold:
            # thresholds calibrated for one model mean nothing for another
            recipe = replace(recipe, density_threshold=0.0, reconstruction_threshold=0.0)
            print(f"note: a new model: the recipe's thresholds are now the model's own "
                  f"({bundle.thresholds.density:.6g}, {bundle.thresholds.reconstruction:.6g})")
    elif not recipe.model:
        raise GutcheckError(f"recipe {args.name} is new: give its --model")
    if (args.density_threshold is None) != (args.error_threshold is None):
        raise GutcheckError("give --density-threshold and --error-threshold together")
    if args.density_threshold is not None:
        recipe = replace(recipe, density_threshold=args.density_threshold, reconstruction_threshold=args.error_threshold)
    for name in ("rule", "source", "belt_speed"):
        if getattr(args, name) is not None:
            recipe = replace(recipe, **{name: getattr(args, name)})
    if args.dataset:
        recipe = replace(recipe, dataset=str(Path(args.dataset).resolve()))
    if args.camera is not None:
        recipe = replace(recipe, camera=parse_camera(args.camera))
    if args.roi is not None:
        recipe = replace(recipe, roi=parse_numbers(args.roi, "--roi", 4, int))
    if args.crop is not None:
        recipe = replace(recipe, crop=args.crop)
    for key, text in (("density", args.knob_density), ("reconstruction", args.knob_error)):
        if text is not None:
            ranges = {k: v for k, v in recipe.knob_ranges.items() if k != key}
            span = parse_numbers(text, f"--knob-{'density' if key == 'density' else 'error'}", 2)
            recipe = replace(recipe, knob_ranges={**ranges, **({key: span} if span else {})})
    if args.publish is not None:
        from app.publish import checked_url

        for url in args.publish:  # a recipe is a plain file anyone may read: never a secret in it
            checked_url(url, "them in the station's settings file or the environment")
        recipe = replace(recipe, publish=list(args.publish))
    what = changes(previous, recipe.check())
    if previous is not None and not what:
        print(f"recipe {args.name} unchanged (version {previous.version}): nothing saved")
        return 0
    saved = book.save(recipe, note=args.note or "; ".join(what))
    print(f"saved recipe {saved.name} version {saved.version} in {book.folder}: {'; '.join(what)}")
    return 0


def cmd_recipe_list(args: argparse.Namespace) -> int:
    from app.recipes import RecipeBook

    book = RecipeBook(args.recipes)
    names = book.names()
    if not names:
        print(f"no recipes in {book.folder} (make one: gutcheck recipe save NAME --model BUNDLE)")
        return 0
    recipes = [book.load(n) for n in names]
    if args.json:
        for r in recipes:
            print(json.dumps(asdict(r)))
        return 0
    print(f"{'recipe':<24} {'version':>7}  {'saved':<25} model")
    for r in recipes:
        print(f"{r.name:<24} {r.version:>7}  {r.saved:<25} {r.model_id}")
    return 0


def cmd_recipe_show(args: argparse.Namespace) -> int:
    from app.recipes import RecipeBook

    recipe = RecipeBook(args.recipes).load(args.name, args.version)
    if args.json:
        print(json.dumps(asdict(recipe), indent=2))
        return 0
    for key, value in asdict(recipe).items():
        shown = ("the model's own" if key.endswith("_threshold") and not value else
                 "the model's own" if key == "rule" and not value else
                 "leave as is" if key == "belt_speed" and not value else
                 "the whole frame" if key == "roi" and not value else
                 "none" if key == "crop" and not value else
                 "the model's own" if key == "knob_ranges" and not value else value)
        print(f"{key:<26} {shown}")
    return 0


def cmd_recipe_history(args: argparse.Namespace) -> int:
    from app.recipes import RecipeBook

    for r in RecipeBook(args.recipes).history(args.name):
        print(f"version {r.version}  {r.saved}  {r.saved_by}: {r.note}")
    return 0


def cmd_cameras(args: argparse.Namespace) -> int:
    from capture.cameras import list_cameras

    cameras = list_cameras()
    if args.json:
        for c in cameras:
            print(json.dumps(asdict(c)))
        return 0
    if not cameras:
        print("no cameras found")
        return 0
    for c in cameras:
        print(f"cam:{c.index:<3} {c.name:<32} {c.stable_id or '(no stable id: open it as cam:' + str(c.index) + ')'}")
    return 0


def cmd_log_audit(args: argparse.Namespace) -> int:
    import time

    from app.inspection_log import InspectionLog

    from app.settings import default_log_dir

    args.log_dir = args.log_dir or str(default_log_dir())
    if not (Path(args.log_dir) / "inspections.sqlite").is_file():
        raise GutcheckError(f"{args.log_dir}: no inspection log there (inspections.sqlite)")
    since = 0.0
    if args.since:
        from datetime import datetime

        try:
            since = datetime.fromisoformat(args.since).timestamp()
        except ValueError:
            raise GutcheckError(f"--since {args.since}: not an ISO 8601 time (2026-12-07 or 2026-12-07T06:00)") \
                from None
    log = InspectionLog(Path(args.log_dir))
    try:
        rows = log.audit_rows(since=since, limit=args.last)
    finally:
        log.close()
    for row in rows:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(row["time"]))
        if args.json:
            print(json.dumps(dict(row, time=stamp)))
        else:
            print(f"{stamp}  {row['who']:<12} {row['action']:<16} {row['detail']}")
    if not rows and not args.json:
        print("no audit rows" + (f" since {args.since}" if args.since else ""))
    return 0


def add_parsers(sub, publish_help: str, parser_class: type) -> None:
    r = sub.add_parser("recipe", help="part recipes: model, thresholds, camera, belt speed, outputs",
                       description="A recipe is everything that makes the station inspect one part. Every save "
                                   "is a new version; earlier versions are kept.")
    rs = r.add_subparsers(dest="recipe_command", required=True, metavar="ACTION", parser_class=parser_class)
    save = rs.add_parser("save", help="save a recipe (a new version when it exists)")
    save.add_argument("name")
    save.add_argument("--model", help="model bundle folder (needed for a new recipe)")
    save.add_argument("--density-threshold", type=float)
    save.add_argument("--error-threshold", type=float, help="reconstruction error threshold")
    save.add_argument("--rule", choices=["or", "and"])
    save.add_argument("--source", help="cam:N, cam:NAME (gutcheck cameras), synthetic:, ...")
    save.add_argument("--camera", metavar="SETTINGS",
                      help="camera settings: exposure=-6,gain=0,focus=30,white_balance=4500,auto_exposure=0,"
                           "auto_focus=0,auto_white_balance=0 (none: clear)")
    save.add_argument("--belt-speed", type=int, metavar="STEPS_PER_S", help="sent to the conveyor at changeover")
    save.add_argument("--roi", metavar="X,Y,W,H", help="cut this box from each frame first, when capturing and "
                                                     "inspecting (none: the whole frame)")
    save.add_argument("--crop", type=int, metavar="PX", help="then centre a PX square on the part (0: none)")
    save.add_argument("--knob-density", metavar="LOW,HIGH", help="what the density knob spans (none: the model's; "
                                                                 "write --knob-density=-90,-10 when it starts with -)")
    save.add_argument("--knob-error", metavar="LOW,HIGH", help="what the error knob spans (none: the model's)")
    save.add_argument("--dataset", help="dataset folder `capture --recipe` records into")
    save.add_argument("--publish", action="append", metavar="URL", help=publish_help)
    save.add_argument("--note", help="why (default: what changed)")
    save.set_defaults(func=cmd_recipe_save)
    lst = rs.add_parser("list", help="the recipes and their latest versions")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_recipe_list)
    show = rs.add_parser("show", help="one recipe")
    show.add_argument("name")
    show.add_argument("--version", type=int, help="an earlier version (default: the latest)")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_recipe_show)
    hist = rs.add_parser("history", help="every version of a recipe: when, who, what changed")
    hist.add_argument("name")
    hist.set_defaults(func=cmd_recipe_history)
    for p in (save, lst, show, hist):
        p.add_argument("--recipes", help=RECIPES_HELP)

    lg = sub.add_parser("log", help="read the inspection log", description="The inspection log's audit trail.")
    lgs = lg.add_subparsers(dest="log_command", required=True, metavar="ACTION", parser_class=parser_class)
    audit = lgs.add_parser("audit", help="who changed thresholds, recipes, models and the belt, and when")
    audit.add_argument("--log-dir", help="inspection log folder (default: inspections/ here if there is one, else "
                                         "in the user's data folder)")
    audit.add_argument("--since", help="from this ISO 8601 time on (2026-12-07T06:00)")
    audit.add_argument("--last", type=int, default=1000, help="at most this many rows (the newest; default 1000)")
    audit.add_argument("--json", action="store_true", help="one JSON object per row")
    audit.set_defaults(func=cmd_log_audit)

    cams = sub.add_parser("cameras", help="the cameras connected, by number, name and stable id")
    cams.add_argument("--json", action="store_true")
    cams.set_defaults(func=cmd_cameras)
