"""The inspection log in real SQLite: rows, images, CSV export, and a kill -9 mid-stream."""

from __future__ import annotations

import csv
import json
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np

from app.inspection_log import Inspection, InspectionLog


def _row(i: int, anomaly: bool) -> Inspection:
    return Inspection(i, anomaly, -40.0 - i, 0.01 * i, -47.0, 0.04, "or", "m-1", "synthetic:", "good")


def test_rows_images_counts_and_csv(tmp_path):
    log = InspectionLog(tmp_path, good_sample_every=2)
    img = np.zeros((16, 16, 3), np.uint8)
    for i in range(6):
        log.add(_row(i, i % 3 == 0), img)
    assert log.counts() == {"ok": 4, "anomaly": 2}
    recent = log.recent(3)
    assert [r["part_number"] for r in recent] == [5, 4, 3]
    kept = sorted(p.parent.name for p in (tmp_path / "images").rglob("*.png"))
    assert kept.count("anomaly") == 2 and kept.count("good") == 2  # every anomaly, every 2nd good part
    n = log.export_csv(tmp_path / "out.csv")
    rows = list(csv.DictReader(open(tmp_path / "out.csv")))
    assert n == 6 and len(rows) == 6 and rows[0]["verdict"] == "anomaly" and rows[1]["density_threshold"] == "-47.0"
    log.close()
    assert sqlite3.connect(tmp_path / "inspections.sqlite").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


CHILD = """
import sys
from app.inspection_log import Inspection, InspectionLog
log = InspectionLog(sys.argv[1])
i = 0
while True:
    rid = log.add(Inspection(i, i % 5 == 0, -1.0, 0.1, -2.0, 0.2, "or", "m", "s"))
    print(rid, flush=True)
    i += 1
"""


def test_kill_9_loses_at_most_the_row_in_flight(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    last = 0
    start = time.monotonic()
    while time.monotonic() - start < 1.5:
        last = int(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    printed = [last] + [int(x) for x in proc.stdout.read().split()]
    db = sqlite3.connect(tmp_path / "inspections.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = db.execute("SELECT MAX(id), COUNT(*) FROM inspections").fetchone()
    assert stored[0] == stored[1]  # no gaps
    assert stored[1] >= max(printed)  # every row reported as written is there
    assert last > 50


def test_headless_inspect_of_a_live_source_prints_json_lines(tiny_bundle, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "app.cli", "inspect", "--model", str(tiny_bundle), "--source",
                           "synthetic:seed=1,parts=6,defects=1.0", "--log-dir", str(tmp_path / "log")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["part"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all(r["verdict"] in ("ok", "anomaly") and "truth" in r for r in rows)
    assert all(isinstance(r["score"], float) for r in rows)  # the single combined score
    db = sqlite3.connect(tmp_path / "log" / "inspections.sqlite")
    assert db.execute("SELECT COUNT(*) FROM inspections").fetchone()[0] == 6
    # every anomaly keeps its picture and, beside it, the heatmap that explains the verdict
    anomalies = [r for r in db.execute("SELECT image FROM inspections WHERE verdict='anomaly'").fetchall()]
    assert anomalies  # every part has a defect: the tiny model flags some
    for (image,) in anomalies:
        assert (tmp_path / "log" / "images" / image).is_file()
        assert (tmp_path / "log" / "images" / image.replace(".png", "_heatmap.png")).is_file()
