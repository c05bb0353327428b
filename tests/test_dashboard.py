"""The dashboard in a real Tk window under Xvfb: synthetic conveyor, simulated knob box and
conveyor on pseudo-terminals, the inspection log in real SQLite."""

from __future__ import annotations

import sqlite3
import time

import pytest

from app.links.conveyor_link import ConveyorLink
from app.links.knob_link import KnobLink
from app.links.simulators import ConveyorSimulator, KnobBoxSimulator
from tests.ptydevice import PtyDevice
from model_builder.bundle import load_bundle
from tests.conftest import screenshot
from tests.test_capture_window import pump


@pytest.fixture
def station(xvfb_display, tiny_bundle, tmp_path):
    import ttkbootstrap as ttk

    from app.dashboard import Dashboard

    knob_sim = KnobBoxSimulator(PtyDevice(tmp_path / "knobs"), heartbeat_s=0.1).start()
    belt_sim = ConveyorSimulator(PtyDevice(tmp_path / "conveyor")).start()
    knobs = KnobLink(knob_sim.url, backoff_s=(0.1, 0.2, 0.4), stale_after_s=0.5, lost_after_s=1.0).start()
    conveyor = ConveyorLink(belt_sim.url).start()
    root = ttk.Window(themename="flatly")
    root.geometry("1200x900")
    dash = Dashboard(root, tmp_path / "settings.toml", tmp_path / "log", load_bundle(tiny_bundle),
                     "synthetic:seed=9,parts=60,defects=0.3", knobs, conveyor)
    yield dash, knob_sim, belt_sim, tmp_path
    dash.close()
    knob_sim.close()
    belt_sim.close()
    del dash, root
    import gc

    gc.collect()  # the window's Tk objects die here, in the main thread


def test_dashboard_runs_50_parts_with_knobs_and_conveyor(station):
    dash, knob_sim, belt_sim, tmp_path = station
    root = dash.root
    dash.resume_belt()
    assert pump(root, lambda: sum(dash.counts.values()) >= 50, 120), f"only {dash.counts}"
    assert pump(root, lambda: dash.inspector.finished.is_set(), 60)
    pump(root, lambda: False, 0.5)
    # Verdict counts on screen match the log.
    on_screen = dash.counter.cget("text")
    db = sqlite3.connect(tmp_path / "log" / "inspections.sqlite")
    ok = db.execute("SELECT COUNT(*) FROM inspections WHERE verdict='ok'").fetchone()[0]
    nok = db.execute("SELECT COUNT(*) FROM inspections WHERE verdict='anomaly'").fetchone()[0]
    assert ok + nok == 60
    assert f"inspected {ok + nok}   OK {ok}   NOK {nok}" in on_screen
    shot_run = screenshot(root, "dashboard_after_60_parts")

    # A knob move changes the proposed threshold; "take knob value" applies it.
    knob_sim.set(100, 900)
    assert pump(root, lambda: dash.knobs.latest is not None and dash.knobs.latest.a == 100, 3)
    before = dash.knob_proposal()
    knob_sim.set(800, 50)
    assert pump(root, lambda: dash.knob_proposal() != before, 3)
    proposal = dash.knob_proposal()
    assert proposal[0] > before[0] and proposal[1] < before[1]
    dash.take_knob("reconstruction")
    assert dash.current_thresholds().reconstruction == pytest.approx(proposal[1])
    assert float(dash.recon_var.get()) == pytest.approx(proposal[1], rel=1e-3)

    # A defect verdict stops the simulated belt; resume restarts it.
    dash.resume_belt()
    assert pump(root, lambda: belt_sim.running, 10)
    dash.rule_var.set("or")
    dash.density_var.set(1e9)  # the operator turns the density threshold up: every part is an anomaly now
    dash.apply_spinboxes()
    # One part: its defect verdict stops the belt, and no later verdict can stop it again after the resume.
    assert dash.open_source("synthetic:seed=3,parts=1,defects=0")
    assert pump(root, lambda: belt_sim.model.state == "D", 20)
    assert pump(root, lambda: dash.inspector.finished.is_set() and dash.inspector.conveyor.pending() == 0, 20)
    assert pump(root, lambda: "stopped: defect" in dash.belt_state.cget("text"), 3)
    shot_stop = screenshot(root, "dashboard_belt_stopped")
    dash.resume_belt()
    assert pump(root, lambda: belt_sim.running and "running" in dash.belt_state.cget("text"), 10)

    # Unplugging the knob box shows "lost"; plugging it back recovers.
    knob_sim.unplug()
    assert pump(root, lambda: "lost" in dash.knob_state.cget("text"), 3)
    lost_shot = screenshot(root, "dashboard_knobs_lost")
    knob_sim.plug()
    assert pump(root, lambda: "connected" in dash.knob_state.cget("text"), 3)
    assert "1 drop" in dash.knob_state.cget("text")  # a drop stays counted after the link recovers
    for shot in (shot_run, shot_stop, lost_shot):
        assert shot.stat().st_size > 20_000


def test_view_redraws_at_least_15_fps_while_inspecting(station):
    dash, _, _, _ = station
    root = dash.root
    assert pump(root, lambda: sum(dash.counts.values()) >= 10, 60)
    pump(root, lambda: False, 2.0)  # still inspecting: 60 parts take longer than this
    assert not dash.inspector.finished.is_set()
    fps = (len(dash.redraws) - 1) / (dash.redraws[-1] - dash.redraws[0])
    assert fps >= 15, fps


def test_calibration_helper_proposes_and_applies_thresholds(station):
    dash, _, _, _ = station
    root = dash.root
    dash.rule_var.set("or")
    dash.open_calibration(n=8, target_frr=0.0)  # zero false rejects on these 8 parts
    assert pump(root, lambda: dash.calibration["proposal"] is not None, 60)
    seen_d, seen_e = list(dash.calibration["density"]), list(dash.calibration["error"])
    proposal = dash.calibration["proposal"]
    assert proposal.density <= min(seen_d) and proposal.reconstruction >= max(seen_e)
    assert "proposal:" in dash.calibration["label"].cget("text")
    screenshot(root, "dashboard_calibration")
    dash.apply_calibration()
    assert dash.current_thresholds() == proposal
    assert float(dash.recon_var.get()) == pytest.approx(proposal.reconstruction, rel=1e-3)
    dash.save_thresholds()
    saved = (dash.settings_path).read_text()
    assert "reconstruction_threshold" in saved and "density_threshold" in saved


def test_hardware_check_from_the_tools_menu_borrows_the_ports_and_gives_them_back(station):
    dash, knob_sim, belt_sim, _ = station
    root = dash.root
    dash.resume_belt()
    assert pump(root, lambda: dash.inspector is not None and sum(dash.counts.values()) >= 3, 60)
    dash.open_hardware_check()
    dash._start_hardware_check()
    assert dash.inspector is None  # inspection paused while the check has the ports
    text = dash.hardware["text"]
    turned = set()

    def technician() -> bool:  # turns each knob end to end when the window asks
        shown = text.get("1.0", "end")
        for knob in "AB":
            if f"turn knob {knob}" in shown and knob not in turned:
                turned.add(knob)
                for value in range(0, 1001, 100):
                    knob_sim.set(value, knob_sim.b) if knob == "A" else knob_sim.set(knob_sim.a, value)
                    root.after(20)
        return "checks passed" in shown

    assert pump(root, technician, 60), text.get("1.0", "end")
    shown = text.get("1.0", "end")
    assert "11 of 11 checks passed" in shown, shown
    assert pump(root, lambda: dash.knobs is not None and dash.knobs.state() == "connected", 5)
    assert dash.conveyor is not None and dash.inspector is not None  # links back, inspection resumed
    assert belt_sim.model.state == "C"  # the check leaves the belt stopped
    dash.hardware["window"].geometry("900x560")
    shot = screenshot(dash.hardware["window"], "dashboard_hardware_check")
    assert shot.stat().st_size > 10_000
    dash._close_hardware_check()
    assert dash.hardware is None


def test_bad_inputs_are_messages_in_the_window(xvfb_display, tiny_bundle, tmp_path):
    import ttkbootstrap as ttk

    from app.dashboard import Dashboard

    (tmp_path / "settings.toml").write_text("density_threshold = = 3\n")
    root = ttk.Window(themename="flatly")
    dash = Dashboard(root, tmp_path / "settings.toml", tmp_path / "log")
    try:
        pump(root, lambda: False, 0.2)
        assert "settings file is damaged" in dash.status.cget("text")
        dash.open_model(str(tmp_path / "no-such-model"))
        assert pump(root, lambda: "no such model bundle folder" in dash.status.cget("text"), 10)
        dash.open_model(str(tiny_bundle))
        assert pump(root, lambda: dash.bundle is not None and "loaded" in dash.status.cget("text"), 30)
        assert not dash.open_source("cam:9")
        assert "cannot open the source" in dash.status.cget("text")
        screenshot(root, "dashboard_bad_inputs")
    finally:
        dash.close()


def test_dashboard_command_with_simulated_devices_runs_and_logs(xvfb_display, tiny_bundle, tmp_path):
    """What `gutcheck demo` opens: the dashboard process with a simulated knob box and conveyor."""
    import subprocess
    import sys

    code = ("import sys; from pathlib import Path; from app.dashboard_app import run_dashboard; "
            f"run_dashboard(model={str(tiny_bundle)!r}, source='synthetic:seed=4,parts=8', knobs=None, "
            f"conveyor=None, mode='part', settings=Path({str(tmp_path / 's.toml')!r}), "
            f"log_dir=Path({str(tmp_path / 'log')!r}), simulate_devices=True)")
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    db_path = tmp_path / "log" / "inspections.sqlite"
    deadline = time.monotonic() + 90
    rows = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if db_path.exists():
            rows = sqlite3.connect(db_path).execute("SELECT COUNT(*) FROM inspections").fetchone()[0]
            if rows == 8:
                break
        time.sleep(0.5)
    alive = proc.poll() is None
    proc.terminate()
    _, err = proc.communicate(timeout=10)
    assert alive, err[-2000:]
    assert rows == 8
    assert "Traceback" not in err


def test_dashboard_command_without_display_is_one_line(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    proc = subprocess.run([sys.executable, "-m", "app.cli", "dashboard"], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "gutcheck: error: no display: the dashboard needs a screen (use 'gutcheck " \
                                  "inspect' headless)"


def test_outputs_panel_shows_each_output_and_a_broker_that_goes_away(xvfb_display, tiny_bundle, tmp_path):
    import ttkbootstrap as ttk

    from app.dashboard import Dashboard
    from app.publish import FolderOutput, MqttOutput, Secrets
    from tests.test_publish import Broker

    broker = Broker(tmp_path)
    publishers = [MqttOutput(f"mqtt://127.0.0.1:{broker.port}/plant", "st1", Secrets()),
                  FolderOutput(tmp_path / "audit")]
    root = ttk.Window(themename="flatly")
    root.geometry("1200x980")
    dash = Dashboard(root, tmp_path / "settings.toml", tmp_path / "log", load_bundle(tiny_bundle),
                     "synthetic:seed=9,parts=30,defects=0.3,fps=25", None, None, "part", publishers)
    try:
        assert pump(root, lambda: sum(dash.counts.values()) >= 5, 60)
        text = dash.outputs_state.cget("text")
        assert f"mqtt 127.0.0.1:{broker.port}/plant: connected" in text and "log: ok" in text, text
        broker.kill()
        assert pump(root, lambda: "offline" in dash.outputs_state.cget("text")
                    and "failed" in dash.outputs_state.cget("text"), 30), dash.outputs_state.cget("text")
        screenshot(root, "dashboard_outputs_broker_down")
        assert str(dash.outputs_state.cget("foreground")) == "#c92a2a"  # red: something did not get through
    finally:
        dash.close()
        broker.kill() if broker.proc.poll() is None else None
        del dash, root
        import gc

        gc.collect()
