"""Changeover in the dashboard (issue 22 items 1 and 3): a recipe picked, the belt stopped, everything the
recipe holds in force, the time it took; the station comes back in its last recipe with its counters."""

from __future__ import annotations

import gc
import shutil

import pytest

from app.links.conveyor_link import ConveyorLink
from app.links.simulators import ConveyorSimulator
from app.recipes import Recipe, RecipeBook
from app.settings import load_settings
from model_builder.bundle import load_bundle
from tests.conftest import screenshot
from tests.ptydevice import PtyDevice
from tests.test_capture_window import pump
from tests.test_publish import mosquitto_available  # noqa: F401  (a fixture)


def test_changeover_stops_the_belt_applies_the_recipe_and_the_station_comes_back_in_it(xvfb_display, tiny_bundle,
                                                                                      tmp_path):
    import ttkbootstrap as ttk

    from app.dashboard import Dashboard

    other = tmp_path / "other-model"
    shutil.copytree(tiny_bundle, other)
    bundle = load_bundle(tiny_bundle)
    book = RecipeBook(tmp_path / "recipes")
    t = bundle.thresholds
    book.save(Recipe("bracket", model=str(tiny_bundle), model_id=bundle.info.model_id, belt_speed=900,
                     source="synthetic:seed=4,parts=400,defects=0.2,fps=30"))
    book.save(Recipe("flange", model=str(other), model_id=bundle.info.model_id, belt_speed=1500,
                     density_threshold=t.density - 5.0, reconstruction_threshold=t.reconstruction * 2, rule="and",
                     source="synthetic:seed=5,parts=400,defects=0.2,fps=30", camera={"exposure": -0.25}))
    belt = ConveyorSimulator(PtyDevice(tmp_path / "conveyor")).start()
    conveyor = ConveyorLink(belt.url).start()
    root = ttk.Window(themename="flatly")
    root.geometry("1200x1000")
    settings = tmp_path / "settings.toml"
    dash = Dashboard(root, settings, tmp_path / "log", None, None, None, conveyor, recipes=book, recipe="bracket")
    try:
        assert pump(root, lambda: dash.recipe is not None and dash.inspector is not None, 60), dash.status.cget("text")
        assert dash.inspector.thresholds == t and belt.model.steps_per_s == 900
        dash.resume_belt()
        assert pump(root, lambda: sum(dash.counts.values()) >= 10, 60)
        assert belt.running or belt.model.state == "D"

        dash.recipe_var.set("flange")
        dash.change_over("flange")
        assert pump(root, lambda: not belt.running, 2)  # stopped at once, before anything loads
        assert pump(root, lambda: dash.recipe is not None and dash.recipe.name == "flange" and
                    dash.inspector is not None, 60), dash.status.cget("text")
        print(f"\nchangeover bracket -> flange: in force after {dash.changeover_s:.2f} s")
        assert dash.inspector.thresholds.rule == "and"
        assert dash.inspector.thresholds.density == pytest.approx(t.density - 5.0)
        assert belt.model.steps_per_s == 1500 and not belt.running  # the operator resumes, not the changeover
        assert dash.inspector.source.camera == {"exposure": -0.25}
        status = dash.status.cget("text")
        assert "recipe flange version 1 in force" in status
        assert "changed: model, thresholds, rule, source, camera, belt speed 900 -> 1500" in status
        assert "belt stopped: Resume" in status
        pump(root, lambda: False, 0.3)
        screenshot(root, "dashboard_after_changeover")
        dash.resume_belt()
        assert pump(root, lambda: sum(dash.counts.values()) >= 20, 60)
        counted = dict(dash.counts)
    finally:
        dash.close()
        belt.close()
    assert load_settings(settings).recipe == "flange"
    del dash, root
    gc.collect()


def test_a_restarted_station_reads_todays_counters_and_its_history_back_from_the_log(xvfb_display, tmp_path):
    import time

    import ttkbootstrap as ttk

    from app.dashboard import Dashboard
    from app.inspection_log import Inspection, InspectionLog

    log = InspectionLog(tmp_path / "log")
    yesterday = time.time() - 86400 * 1.5
    for i in range(30):
        log.add(Inspection(i + 1, i % 3 == 0, -50.0 - i, 0.1, -60.0, 0.5, "or", "m", "synthetic:",
                           time=yesterday if i < 5 else time.time()))
    log.close()
    root = ttk.Window(themename="flatly")
    dash = Dashboard(root, tmp_path / "settings.toml", tmp_path / "log")
    try:
        today = [i for i in range(5, 30)]
        assert dash.counts == {"ok": sum(1 for i in today if i % 3), "anomaly": sum(1 for i in today if not i % 3)}
        rows = dash.history.get_children()
        assert len(rows) == 20 and dash.history.item(rows[0])["text"].strip() == "30"  # the newest on top
        assert dash.history.item(rows[0])["values"][0] == "OK"
    finally:
        dash.close()
    del dash, root
    gc.collect()


def test_a_changeover_to_a_recipe_whose_model_was_replaced_keeps_the_belt_stopped(xvfb_display, tiny_bundle,
                                                                                  tmp_path):
    import ttkbootstrap as ttk

    from app.dashboard import Dashboard

    book = RecipeBook(tmp_path / "recipes")
    book.save(Recipe("old", model=str(tiny_bundle), model_id="an-earlier-build-20260101-000000"))
    belt = ConveyorSimulator(PtyDevice(tmp_path / "conveyor")).start()
    conveyor = ConveyorLink(belt.url).start()
    root = ttk.Window(themename="flatly")
    dash = Dashboard(root, tmp_path / "settings.toml", tmp_path / "log", load_bundle(tiny_bundle),
                     "synthetic:seed=1,parts=400,fps=30", None, conveyor, recipes=book)
    try:
        dash.resume_belt()
        assert pump(root, lambda: belt.running, 10)
        dash.change_over("old")
        assert pump(root, lambda: "cannot change over to recipe old" in dash.status.cget("text"), 30)
        assert "the belt stays stopped" in dash.status.cget("text")
        assert dash.inspector is None and not belt.running and dash.recipe is None
    finally:
        dash.close()
        belt.close()
    del dash, root
    gc.collect()


def test_the_audit_trail_records_who_changed_what_and_the_cli_and_window_show_it(xvfb_display, tiny_bundle,
                                                                                 tmp_path):
    import json
    import time

    import ttkbootstrap as ttk

    from app.dashboard import Dashboard
    from tests.test_cli import assert_one_line_error, gutcheck

    belt = ConveyorSimulator(PtyDevice(tmp_path / "conveyor")).start()
    conveyor = ConveyorLink(belt.url).start()
    root = ttk.Window(themename="flatly")
    bundle = load_bundle(tiny_bundle)
    dash = Dashboard(root, tmp_path / "settings.toml", tmp_path / "log", bundle, "synthetic:seed=1,parts=400,fps=20",
                     None, conveyor)
    try:
        t = bundle.thresholds
        for step in (1, 2, 3):  # three spinbox clicks within a second: one row, from the first value to the last
            dash.density_var.set(round(t.density + step, 4))
            dash.apply_spinboxes()
        dash.rule_var.set("and")  # the rule changed by a person
        dash.resume_belt()
        dash.stop_belt()
        dash.save_thresholds()
        window = dash.open_audit()
        pump(root, lambda: False, 0.3)
        screenshot(window, "audit_trail")
        shown = [dash.audit_tree.item(i)["values"][1] for i in dash.audit_tree.get_children()]
    finally:
        dash.close()
        belt.close()
    rows = [json.loads(line) for line in gutcheck("log", "audit", "--log-dir", tmp_path / "log", "--json")
            .stdout.splitlines()]
    actions = [r["action"] for r in rows]
    assert actions == ["thresholds", "belt", "belt", "thresholds saved"], rows
    assert f"density < {t.density:.6g} -> {t.density + 3:.6g}" in rows[0]["detail"]
    assert t.rule == "or" and "rule or -> and" in rows[0]["detail"]
    assert [r["detail"] for r in rows[1:3]] == ["resumed", "stopped"]
    assert all(r["who"] for r in rows) and rows[0]["time"].startswith(time.strftime("%Y-"))
    assert shown == actions[::-1]  # the window: newest first
    later = gutcheck("log", "audit", "--log-dir", tmp_path / "log", "--since", "2999-01-01")
    assert later.returncode == 0 and "no audit rows since 2999-01-01" in later.stdout
    assert_one_line_error(gutcheck("log", "audit", "--log-dir", tmp_path / "log", "--since", "yesterday"),
                          "not an ISO 8601 time")
    del dash, root
    gc.collect()


def test_the_line_changes_over_and_stops_over_mqtt_and_cannot_set_thresholds(xvfb_display, tiny_bundle, tmp_path,
                                                                             mosquitto_available):
    import json

    import paho.mqtt.client as mqtt
    import ttkbootstrap as ttk

    from app.dashboard import Dashboard
    from app.publish import LineCommand, MqttOutput, Secrets, parse_command
    from tests.test_publish import Broker, Subscriber

    assert parse_command(b'{"command": "stop"}') == LineCommand("stop")
    assert parse_command(b'{"command": "recipe", "name": "flange"}') == LineCommand("recipe", "flange")
    assert "only 'recipe' and 'stop'" in parse_command(b'{"command": "thresholds", "density": 1}')
    assert parse_command(b"\xff") == "not a JSON command"
    assert "bad recipe name" in parse_command(b'{"command": "recipe", "name": "../x"}')

    bundle = load_bundle(tiny_bundle)
    book = RecipeBook(tmp_path / "recipes")
    book.save(Recipe("flange", model=str(tiny_bundle), model_id=bundle.info.model_id, belt_speed=1200,
                     source="synthetic:seed=5,parts=400,fps=20"))
    broker = Broker(tmp_path)
    watcher = Subscriber(broker.port, "line")
    belt = ConveyorSimulator(PtyDevice(tmp_path / "conveyor")).start()
    conveyor = ConveyorLink(belt.url).start()
    root = ttk.Window(themename="flatly")
    publisher = MqttOutput(f"mqtt://127.0.0.1:{broker.port}/line", "st1", Secrets())
    dash = Dashboard(root, tmp_path / "settings.toml", tmp_path / "log", bundle, "synthetic:seed=1,parts=400,fps=20",
                     None, conveyor, publishers=[publisher], recipes=book, station="st1")
    line = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="line-controller")
    line.connect("127.0.0.1", broker.port)
    line.loop_start()
    try:
        def send(body: dict) -> None:
            line.publish("line/st1/command", json.dumps(body), qos=1).wait_for_publish(5)

        def results() -> list[dict]:
            return [json.loads(p) for t, p, _ in watcher.messages if t == "line/st1/command/result"]

        dash.resume_belt()
        assert pump(root, lambda: belt.running, 10)
        send({"command": "thresholds", "density": -1e9, "error": 1e9})
        assert pump(root, lambda: len(results()) == 1, 10)
        assert results()[0]["accepted"] is False and dash.inspector.thresholds == bundle.thresholds
        send({"command": "recipe", "name": "flange"})
        assert pump(root, lambda: dash.recipe is not None and dash.recipe.name == "flange" and
                    dash.inspector is not None, 30), dash.status.cget("text")
        assert belt.model.steps_per_s == 1200 and not belt.running
        dash.resume_belt()
        assert pump(root, lambda: belt.running, 10)
        send({"command": "stop"})
        assert pump(root, lambda: not belt.running, 10)
        assert pump(root, lambda: len(results()) == 3, 10)
        assert [r["accepted"] for r in results()] == [False, True, True]
        trail = [(r["who"], r["action"], r["detail"]) for r in dash.log.audit_rows()]
        assert [a for _, a, _ in trail].count("line command") == 3 and ("changeover" in [a for _, a, _ in trail])
        assert all(who.startswith("mqtt 127.0.0.1") for who, a, _ in trail if a == "line command")
    finally:
        line.loop_stop()
        line.disconnect()
        dash.close()
        belt.close()
        watcher.close()
        broker.kill()
    del dash, root
    gc.collect()
