"""The local SQLite store logs in write-ahead-log mode (benchmarks/README.md, "Tracking
stores": faster with several logger processes), and `make clean` removes its side files."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from tracking_setup import EXPERIMENT, fresh_store

from pipeline.tracking.runs import Tracker


def test_the_local_store_is_put_in_wal_mode(isolated_mlflow, tmp_path, pytestconfig,
                                            tmp_path_factory):  # fmt: skip
    root = fresh_store(tmp_path, pytestconfig, tmp_path_factory)
    db = root / "mlruns" / "mlflow.db"
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # as MLflow made it
    tracker = Tracker(EXPERIMENT, root=root)
    tracker.end(tracker.start("run", "fit"))
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent in the file
    con.close()


def test_make_clean_removes_the_write_ahead_side_files():
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    clean = re.search(r"^clean:.*\n\t(.+)$", makefile, re.MULTILINE).group(1)
    side = {"mlruns/mlflow.db", "mlruns/mlflow.db-wal", "mlruns/mlflow.db-shm"}
    assert side <= set(clean.split())
