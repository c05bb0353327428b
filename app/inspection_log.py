"""The inspection log: SQLite in WAL mode, one row per verdict, with the images of every anomaly
(and a sample of good parts) saved beside it. Each row is committed on its own, so a kill -9
loses at most the row in flight."""

from __future__ import annotations

import csv
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from capture.errors import GutcheckError
from capture.imageio import write_image_atomic

SCHEMA = """
CREATE TABLE IF NOT EXISTS inspections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    part_number INTEGER,
    verdict TEXT NOT NULL CHECK (verdict IN ('ok', 'anomaly')),
    density REAL NOT NULL,
    reconstruction_error REAL NOT NULL,
    density_threshold REAL NOT NULL,
    reconstruction_threshold REAL NOT NULL,
    rule TEXT NOT NULL,
    model_id TEXT NOT NULL,
    source TEXT NOT NULL,
    image TEXT,
    truth TEXT
);
CREATE INDEX IF NOT EXISTS inspections_time ON inspections (time);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
);
"""
AUDIT_COLUMNS = ("id", "time", "who", "action", "detail")
AUDIT_COALESCE_S = 3.0  # one threshold turned in steps (spinbox clicks, a knob) is one row, not one per step
COLUMNS = ("id", "time", "part_number", "verdict", "density", "reconstruction_error", "density_threshold",
           "reconstruction_threshold", "rule", "model_id", "source", "image", "truth")


@dataclass
class Inspection:
    """One verdict as the log keeps it."""

    part_number: int | None
    anomaly: bool
    density: float
    error: float
    density_threshold: float
    reconstruction_threshold: float
    rule: str
    model_id: str
    source: str
    truth: str | None = None
    time: float = 0.0


def _open_log(path: Path) -> sqlite3.Connection:
    """The log's database, or a one-line error for a file that is not a Gutcheck log. An existing
    file is checked read-only first (immutable: no lock, no -wal/-shm made), so a damaged log or
    another program's SQLite file is left exactly as it was: never switched to WAL, never given our table."""
    try:
        if path.is_file() and path.stat().st_size:
            _check_existing(path)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
    except sqlite3.DatabaseError as exc:
        raise GutcheckError(f"{path}: the inspection log is damaged ({exc}); move it aside to start a new one") \
            from None
    return db


def _check_existing(path: Path) -> None:
    with open(path, "rb") as f:
        if f.read(16) != b"SQLite format 3\x00":
            raise GutcheckError(f"{path}: not an inspection log (not an SQLite file)")
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
    try:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "inspections" not in tables:
            raise GutcheckError(f"{path}: not an inspection log (an SQLite file of another program, with tables "
                                f"{', '.join(sorted(tables)[:5])})")
        check = db.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise sqlite3.DatabaseError(check)
    finally:
        db.close()


def current_user() -> str:
    """The name of the person logged in to this computer (what the audit trail records as who)."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a service account without a name
        return "unknown user"


class InspectionLog:
    """Thread-safe: the pipeline writes, the dashboard reads."""

    def __init__(self, folder: Path, good_sample_every: int = 50):
        self.folder = Path(folder)
        self.images = self.folder / "images"  # made by the first image kept (write_image_atomic)
        self.good_sample_every = good_sample_every
        self._lock = threading.Lock()
        path = self.folder / "inspections.sqlite"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.db = _open_log(path)
        self._goods = 0

    def add(self, item: Inspection, image: np.ndarray | None = None, heatmap_image: np.ndarray | None = None) -> int:
        """Append one verdict (committed at once); anomalies and every Nth good part keep their image,
        and, when given, the heatmap over the model's view beside it (`<name>_heatmap.png`)."""
        item.time = item.time or time.time()
        keep = image is not None and (item.anomaly or self._goods % self.good_sample_every == 0)
        if not item.anomaly:
            self._goods += 1
        rel = None
        if keep:
            stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(item.time))
            rel = f"{'anomaly' if item.anomaly else 'good'}/{stamp}_{int(item.time * 1000) % 1000:03d}_" \
                  f"{item.part_number or 0}.png"
            write_image_atomic(self.images / rel, image)
            if heatmap_image is not None:
                write_image_atomic(self.images / rel.replace(".png", "_heatmap.png"), heatmap_image)
        with self._lock:
            cur = self.db.execute(
                "INSERT INTO inspections (time, part_number, verdict, density, reconstruction_error, "
                "density_threshold, reconstruction_threshold, rule, model_id, source, image, truth) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (item.time, item.part_number, "anomaly" if item.anomaly else "ok", float(item.density),
                 float(item.error), float(item.density_threshold), float(item.reconstruction_threshold), item.rule,
                 item.model_id, item.source, rel, item.truth))
            return int(cur.lastrowid)

    def counts(self, since: float = 0.0) -> dict[str, int]:
        """Parts judged ok and anomaly (from time.time() `since` on: 0 = all)."""
        with self._lock:
            rows = dict(self.db.execute("SELECT verdict, COUNT(*) FROM inspections WHERE time >= ? GROUP BY verdict",
                                        (since,)).fetchall())
        return {"ok": rows.get("ok", 0), "anomaly": rows.get("anomaly", 0)}

    def recent(self, n: int = 20) -> list[dict]:
        with self._lock:
            rows = self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM inspections ORDER BY id DESC LIMIT ?",
                                   (n,)).fetchall()
        return [dict(zip(COLUMNS, r)) for r in rows]

    def recent_scores(self, model_id: str, limit: int = 500) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Density, reconstruction error and verdict (True: anomaly) of the last `limit` parts inspected
        by model `model_id`, oldest first."""
        with self._lock:
            rows = self.db.execute("SELECT density, reconstruction_error, verdict='anomaly' FROM inspections WHERE "
                                   "model_id=? ORDER BY id DESC LIMIT ?", (model_id, limit)).fetchall()
        scores = np.array(rows[::-1], dtype=float).reshape(-1, 3)
        return scores[:, 0], scores[:, 1], scores[:, 2].astype(bool)

    def recent_inspections(self, model_id: str, limit: int = 500) -> list[Inspection]:
        """The last `limit` parts inspected by model `model_id`, oldest first, as the log keeps them."""
        with self._lock:
            rows = self.db.execute("SELECT part_number, verdict='anomaly', density, reconstruction_error, "
                                   "density_threshold, reconstruction_threshold, rule, model_id, source, truth, time "
                                   "FROM inspections WHERE model_id=? ORDER BY id DESC LIMIT ?",
                                   (model_id, limit)).fetchall()
        return [Inspection(r[0], bool(r[1]), *r[2:]) for r in rows[::-1]]

    def model_ids(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self.db.execute("SELECT DISTINCT model_id FROM inspections").fetchall()]

    def export_csv(self, path: Path) -> int:
        """All rows to a CSV file (atomically); returns the row count."""
        import io

        from capture.imageio import write_bytes_atomic

        with self._lock:
            rows = self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM inspections ORDER BY id").fetchall()
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
        write_bytes_atomic(Path(path), buf.getvalue().encode())
        return len(rows)

    def audit(self, action: str, detail: str, who: str = "", coalesce: bool = False) -> int:
        """Record who did what to the station (thresholds, recipe, model, belt). With `coalesce`, the same
        action again within AUDIT_COALESCE_S of the last row updates that row: `detail` is then the whole
        change ("density threshold -60.7 -> -58.7" after two clicks), so pass it from the first value."""
        now = time.time()
        who = who or current_user()
        with self._lock:
            last = self.db.execute("SELECT id, time, who, action FROM audit ORDER BY id DESC LIMIT 1").fetchone()
            if coalesce and last and last[3] == action and last[2] == who and now - last[1] <= AUDIT_COALESCE_S:
                self.db.execute("UPDATE audit SET time=?, detail=? WHERE id=?", (now, detail, last[0]))
                return int(last[0])
            cur = self.db.execute("INSERT INTO audit (time, who, action, detail) VALUES (?,?,?,?)",
                                  (now, who, action, detail))
            return int(cur.lastrowid)

    def audit_rows(self, since: float = 0.0, limit: int = 1000) -> list[dict]:
        """The audit trail from time.time() `since` on, oldest first (at most the last `limit` rows)."""
        with self._lock:
            rows = self.db.execute(f"SELECT {', '.join(AUDIT_COLUMNS)} FROM audit WHERE time >= ? ORDER BY id DESC "
                                   "LIMIT ?", (since, limit)).fetchall()
        return [dict(zip(AUDIT_COLUMNS, r)) for r in rows[::-1]]

    def close(self) -> None:
        with self._lock:
            self.db.close()
