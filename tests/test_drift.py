"""Drift watch: today's good parts compared with the calibration's; a light change part-way through
the synthetic stream raises it (banner, message to publishers), an unchanged stream does not."""

from __future__ import annotations

import numpy as np
import pytest

from app.drift import DriftWatch, drift_watch
from app.inspector import Inspector
from app.outputs import QueuedOutput
from capture.sources import SyntheticSource
from model_builder.bundle import load_bundle
from model_builder.scoring import GoodStatistics, Thresholds


class Events(QueuedOutput):
    """A publisher that keeps the events it is sent."""

    name = "events"

    def __init__(self):
        self.events = []
        super().__init__()

    def send(self, verdict) -> None:
        pass

    def send_event(self, event: dict) -> None:
        self.events.append(event)


def test_the_estimate_follows_a_shift_of_the_good_scores():
    rng = np.random.default_rng(0)
    ref_d, ref_e = rng.normal(-50, 2, 300), rng.normal(0.5, 0.05, 300)
    stats = GoodStatistics.from_scores(ref_d, ref_e)
    t = Thresholds(float(np.quantile(ref_d, 0.005)), float(np.quantile(ref_e, 0.995)), "or")
    watch = DriftWatch(ref_d, ref_e, stats)
    same = watch.assess(np.c_[rng.normal(-50, 2, 200), rng.normal(0.5, 0.05, 200)], t)
    moved = watch.assess(np.c_[rng.normal(-56, 2, 200), rng.normal(0.5, 0.05, 200)], t)
    assert not same.drifting and same.estimated_frr < 0.03 and abs(same.density_shift) < 0.3
    assert moved.drifting and moved.density_shift < -2 and moved.estimated_frr > 0.3


def verdicts(density: np.ndarray, error: np.ndarray, thresholds: Thresholds):
    """Verdict records as the pipeline makes them, for given scores."""
    from app.verdict import Verdict
    from capture.sources import Frame
    from model_builder.scoring import is_anomaly

    anomaly = is_anomaly(density, error, thresholds)
    frame = Frame(np.zeros((8, 8, 3), np.uint8), 0, 0.0)
    for i, (d, e, a) in enumerate(zip(density, error, anomaly), start=1):
        yield Verdict(i, bool(a), 0.0, float(d), float(e), thresholds, "m", "test", frame, (0, 0, 8, 8),
                      np.zeros((8, 8, 3)), None, np.zeros((8, 8)), 1.0, 0.0, time=float(i))


def reference(rng):
    ref_d, ref_e = rng.normal(-50, 2, 60), rng.normal(0.5, 0.05, 60)
    t = Thresholds(float(np.quantile(ref_d, 0.01)), float(np.quantile(ref_e, 0.99)), "or")
    return ref_d, ref_e, t


def test_a_shift_part_way_raises_drift_after_it_and_tells_the_publishers():
    """Good parts whose density falls by 1.5 spreads from part 300 on (new lamps): at 1 % false rejects
    calibrated, about 15 % of good parts would now be rejected."""
    rng = np.random.default_rng(1)
    ref_d, ref_e, t = reference(rng)
    said, events = [], Events()
    watch = DriftWatch(ref_d, ref_e, GoodStatistics.from_scores(ref_d, ref_e), on_change=lambda s: (
        said.append((part[0], s.describe())), events.put_event(s.to_json())))
    density = rng.normal(-50, 2, 600)
    density[300:] -= 3.0
    part = [0]
    for v in verdicts(density, rng.normal(0.5, 0.05, 600), t):
        part[0] = v.part
        watch.put(v)
    events.close()
    print(f"\ndrift raised at part {said[0][0]} (shift from part 300): {said[0][1]}")
    assert 300 < said[0][0] <= 400 and said[0][1].startswith("DRIFT")
    assert events.events[0]["format"] == "gutcheck-drift/1" and events.events[0]["drifting"] is True
    assert watch.latest.drifting and watch.latest.density_shift < -1


def test_an_unchanged_line_raises_no_drift_and_a_flood_of_rejects_does():
    rng = np.random.default_rng(2)
    ref_d, ref_e, t = reference(rng)
    watch = DriftWatch(ref_d, ref_e, GoodStatistics.from_scores(ref_d, ref_e))
    for v in verdicts(rng.normal(-50, 2, 1000), rng.normal(0.5, 0.05, 1000), t):
        watch.put(v)
        assert watch.latest is None or not watch.latest.drifting, watch.latest
    print(f"\nunchanged: {watch.latest.describe()}")
    flood = DriftWatch(ref_d, ref_e, GoodStatistics.from_scores(ref_d, ref_e))
    for v in verdicts(rng.normal(-70, 2, 100), rng.normal(0.5, 0.05, 100), t):  # nearly every part fails
        flood.put(v)
    assert flood.latest.drifting and flood.latest.reject_rate > 0.9


def line(rng, parts: int, defects: float, shift_from: int | None = None, shift: float = 0.0):
    """Scores of a line: goods like the calibration's (density -50 +- 2), `defects` of the parts far
    off (-75 +- 3), the goods' density lowered by `shift` from part `shift_from` on (new lamps)."""
    density, error = rng.normal(-50, 2, parts), rng.normal(0.5, 0.05, parts)
    if shift_from is not None:
        density[shift_from:] -= shift
    bad = rng.random(parts) < defects
    density[bad] = rng.normal(-75, 3, bad.sum())
    return density, error


def alarms(density, error, ref_d, ref_e, t) -> list[int]:
    """The parts at which the watch raised drift."""
    raised, at = [], [0]
    watch = DriftWatch(ref_d, ref_e, GoodStatistics.from_scores(ref_d, ref_e),
                       on_change=lambda s: raised.append(at[0]) if s.drifting else None)
    for v in verdicts(density, error, t):
        at[0] = v.part
        watch.put(v)
    return raised


@pytest.mark.parametrize("defects", [0.0, 0.3, 0.6])
def test_a_line_whose_defect_rate_is_simply_high_is_not_drifting(defects):
    """f6f4489 raised and cleared DRIFT five times in 40 parts of a 30 % defect line from the share
    of rejects alone; the share is now compared with the line's own. 5 lines of 1300 parts each."""
    raised = []
    for seed in range(5):
        rng = np.random.default_rng(seed)
        ref_d, ref_e, t = reference(rng)
        raised += alarms(*line(rng, 1300, defects), ref_d, ref_e, t)
    print(f"\n{defects:.0%} defects, no change: {1000 * len(raised) / 6500:.1f} alarms per 1000 parts")
    assert raised == []


@pytest.mark.parametrize("defects, within", [(0.0, 30), (0.3, 60), (0.6, 60)])
def test_a_light_change_that_fails_every_good_part_is_raised_whatever_the_defect_rate(defects, within):
    """The goods' density falls 6 spreads from part 300 on: every good part fails. f6f4489 raised it
    25-30 parts after the change on a line without defects, and on a 30 % or 60 % line mostly never
    afresh (its alarm was already on, from the defects)."""
    for seed in range(5):
        rng = np.random.default_rng(seed)
        ref_d, ref_e, t = reference(rng)
        raised = alarms(*line(rng, 600, defects, 300, 12.0), ref_d, ref_e, t)
        assert [a for a in raised if a < 300] == [] and raised, raised
        print(f"\n{defects:.0%} defects, seed {seed}: drift raised {raised[0] - 300} parts after the change")
        assert raised[0] - 300 <= within


def test_the_pipeline_feeds_the_watch_and_a_light_change_moves_the_good_parts(tiny_bundle):
    """Through the real pipeline and model: the same stream with the light changed from part 30 on
    moves the good parts' scores further from the calibration than the unchanged stream."""
    bundle = load_bundle(tiny_bundle)
    shifts = {}
    for light in (1.0, 1.5):
        watch = drift_watch(bundle, [], window=300)
        Inspector(bundle, SyntheticSource(seed=21, parts=80, defects=0.0, light_from=30, light=light), "part",
                  [watch]).run()
        shifts[light] = watch.latest
    print(f"\nunchanged: {shifts[1.0].describe()}\nlight x1.5 from part 30: {shifts[1.5].describe()}")
    assert shifts[1.5].reject_rate > shifts[1.0].reject_rate


def logged_line(bundle, folder, parts: int = 90):
    """An inspection log of `parts` synthetic good parts judged by `bundle`."""
    from app.inspection_log import InspectionLog
    from app.outputs import LogOutput

    log = InspectionLog(folder)
    inspector = Inspector(bundle, SyntheticSource(seed=5, parts=parts, defects=0.0), "part", [LogOutput(log)])
    inspector.run()
    inspector.close_outputs()
    log.close()
    return folder


def test_recalibrate_proposes_from_logged_goods_and_writes_only_when_asked(tiny_bundle, tmp_path, capsys):
    """The log gives new thresholds; the settings file is only touched with --write, and then keeps its
    other settings; with --recipe the proposal is the recipe's next version, which inspection then uses."""
    from app.cli import main
    from app.inspection_log import InspectionLog
    from app.recipes import Recipe, RecipeBook
    from app.settings import load_settings

    bundle = load_bundle(tiny_bundle)
    log_dir = logged_line(bundle, tmp_path / "log")
    settings = tmp_path / "gutcheck-settings.toml"
    settings.write_text('source = "cam:1"\n')

    def recalibrate(*args) -> tuple[int, str, str]:
        capsys.readouterr()
        rc = main(["recalibrate", "--log-dir", str(log_dir), *map(str, args)])
        out, err = capsys.readouterr()
        return rc, out, err

    rc, out, err = recalibrate("--model", tiny_bundle)
    print("\n" + out)
    assert rc == 0, err
    assert "proposed: density <" in out and "nothing written" in out
    assert settings.read_text() == 'source = "cam:1"\n'
    assert list(log_dir.glob("recalibration-*.png"))
    rc, out, err = recalibrate("--model", tiny_bundle, "--write", settings)
    assert rc == 0, err
    written = load_settings(settings)
    assert written.source == "cam:1" and written.density_threshold != 0.0 and written.model == str(tiny_bundle)
    rc, _, err = recalibrate("--model", tiny_bundle, "--log-dir", tmp_path / "nowhere")
    assert rc == 2 and "no inspection log there" in err

    book = RecipeBook(tmp_path / "recipes")
    book.save(Recipe("nut", model=str(tiny_bundle), model_id=bundle.info.model_id, belt_speed=900))
    rc, out, err = recalibrate("--recipe", "nut", "--recipes", book.folder, "--write")
    assert rc == 0, err
    assert "thresholds written to recipe nut version 2" in out
    new = book.load("nut")
    assert (new.version, new.belt_speed) == (2, 900) and new.note.startswith("recalibrated from 90 logged parts")
    assert new.density_threshold == written.density_threshold  # the same proposal, into the recipe
    assert new.thresholds(bundle).reconstruction == written.reconstruction_threshold
    assert book.load("nut", 1).density_threshold == 0.0  # the version before stays
    log = InspectionLog(log_dir)
    assert [r["detail"].split(" for ")[0] for r in log.audit_rows() if r["action"] == "recalibrated"] == \
        [str(settings), "recipe nut version 2"]
    log.close()
    for args, message in ((("--model", tiny_bundle, "--write"), "--write needs a SETTINGS file"),
                          (("--recipe", "nut", "--recipes", book.folder, "--write", settings), "takes no file"),
                          (("--recipe", "nut", "--recipes", book.folder, "--model", tiny_bundle), "not both")):
        rc, _, err = recalibrate(*args)
        assert rc == 2 and message in err and len(err.strip().splitlines()) == 1
    assert book.load("nut").version == 2


def test_a_restarted_watch_reads_its_recent_parts_back_from_the_log(tiny_bundle, tmp_path):
    """The drift watch of a restarted station carries on from the log's last parts of its model: a line
    that was drifting when it stopped is drifting at once, said once; an unmoved line is not."""
    from app.inspection_log import Inspection, InspectionLog

    bundle = load_bundle(tiny_bundle)
    t, stats = bundle.thresholds, bundle.good_statistics
    rng = np.random.default_rng(4)
    log = InspectionLog(tmp_path / "log")
    for i in range(120):
        moved = i >= 40  # the light changed at part 40: the goods moved 3 spreads down in density
        d = stats.density_median - (3.0 if moved else 0.0) * stats.density_spread + rng.normal(0, 0.2) * \
            stats.density_spread
        log.add(Inspection(i, False, float(d), stats.error_median, t.density, t.reconstruction, t.rule,
                           bundle.info.model_id, "test"))
    log.add(Inspection(0, True, 0.0, 0.0, t.density, t.reconstruction, t.rule, "another-model", "test"))
    said = []
    watch = drift_watch(bundle, [], say=said.append)
    assert watch.prime(log) == 120  # this model's parts only
    assert watch.latest.drifting and len(said) == 1 and said[0].startswith("DRIFT")
    assert watch.latest.density_shift < -2.5 and watch.sent == 0
    unmoved = InspectionLog(tmp_path / "unmoved")
    for i in range(60):
        unmoved.add(Inspection(i, False, stats.density_median + rng.normal(0, 0.2) * stats.density_spread,
                               stats.error_median, t.density, t.reconstruction, t.rule, bundle.info.model_id, "t"))
    calm = drift_watch(bundle, [], say=said.append)
    assert calm.prime(unmoved) == 60 and not calm.latest.drifting and len(said) == 1
    fresh = drift_watch(bundle, [], say=said.append)
    assert fresh.prime(InspectionLog(tmp_path / "empty")) == 0 and fresh.latest is None
    log.close()
    unmoved.close()


def test_the_proposal_follows_the_good_parts_and_warns_when_they_moved_very_far(tiny_bundle, tmp_path):
    """Logged parts: the calibration's goods moved down in density past today's threshold, with 10 % defects far
    off. The proposal must bring the moved goods' false rejects back near the target; a log whose
    parts moved very far says to look before writing."""
    from app.drift import calibration_goods
    from app.inspection_log import Inspection, InspectionLog
    from app.recalibrate import propose
    from model_builder.scoring import is_anomaly

    bundle = load_bundle(tiny_bundle)
    t, stats = bundle.thresholds, bundle.good_statistics
    ref_d, ref_e = calibration_goods(bundle)
    rng = np.random.default_rng(3)
    pick = rng.integers(len(ref_d), size=180)
    # far enough that today's threshold rejects most of them (it sits this many spreads below the median)
    shift = max(1.5, (stats.density_median - t.density) / stats.density_spread + 0.5)
    good_d = ref_d[pick] - shift * stats.density_spread + rng.normal(0, 0.1 * stats.density_spread, 180)
    good_e = ref_e[pick]
    log = InspectionLog(tmp_path / "log")

    def add(d, e):
        anomaly = bool(is_anomaly(np.array([d]), np.array([e]), t)[0])
        log.add(Inspection(0, anomaly, float(d), float(e), t.density, t.reconstruction, t.rule,
                           bundle.info.model_id, "test", None))

    for d, e in zip(good_d, good_e):
        add(d, e)
    for _ in range(20):  # defects: far off in density
        add(stats.density_median - 30 * stats.density_spread, stats.error_median)
    proposal = propose(bundle, log)
    before = is_anomaly(good_d, good_e, t).mean()
    after = is_anomaly(good_d, good_e, proposal.proposed).mean()
    print(f"\nmoved goods rejected: {before:.0%} now, {after:.0%} with the proposal (shift "
          f"{proposal.density_shift:+.2f} spreads)")
    assert before > 0.3 and after < 0.1 and -shift - 0.3 < proposal.density_shift < -shift + 0.3
    for _ in range(300):  # then a part that looks different: far off, and most of the log
        add(stats.density_median - 30 * stats.density_spread, stats.error_median)
    assert any(line.startswith("warning: the parts moved more than") for line in propose(bundle, log).lines())
    log.close()
