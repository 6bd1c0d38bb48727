"""What the tracking tests share: a migrated MLflow store per test, a tiny sweep problem.

Migrating a fresh SQLite store costs 6-15 s on a busy core, so one empty store is migrated
(`migrated_store`) and copied into each test's `tmp_path/mlruns/mlflow.db`, where
`Tracker(experiment, root=tmp_path)` opens it. (A module, not a `conftest.py`: a second
conftest here would shadow `from conftest import TINY` in other test folders.)
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from conftest import sweep_data

from pipeline.analysis.objective import build_problem
from pipeline.stages import config

EXPERIMENT = "zip-test"
_TEMPLATES: dict[Path, Path] = {}  # session base temp folder -> its migrated empty store


def _copy_db(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite database (SQLite's backup API)."""
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def migrated_store(pytestconfig, tmp_path_factory) -> Path:
    """An empty MLflow SQLite store with every migration applied.

    Made once per MLflow version and kept in pytest's cache (`.pytest_cache/`), or once per
    session when the cache is off (`-p no:cacheprovider`).
    """
    base = tmp_path_factory.getbasetemp()
    if base in _TEMPLATES:
        return _TEMPLATES[base]
    import mlflow
    from mlflow.tracking import MlflowClient

    cache = getattr(pytestconfig, "cache", None)
    if cache is not None:
        folder = cache.mkdir("tracking-mlflow-store")
    else:
        folder = tmp_path_factory.mktemp("mlflow-template")
    path = folder / f"mlflow-{mlflow.__version__}.db"
    if not path.exists():
        work = tmp_path_factory.mktemp("mlflow-migrate") / "mlflow.db"
        with pytest.MonkeyPatch.context() as mp:
            mp.delenv("MLFLOW_TRACKING_URI", raising=False)
            MlflowClient(tracking_uri=f"sqlite:///{work}").search_experiments()
        partial = folder / f".{path.name}.{os.getpid()}.tmp"
        _copy_db(work, partial)
        os.replace(partial, path)  # whole or absent, also for a concurrent session
    _TEMPLATES[base] = path
    return path


def fresh_store(root: Path, pytestconfig, tmp_path_factory) -> Path:
    """Copy the migrated empty store to `root/mlruns/mlflow.db`; returns `root`."""
    (root / "mlruns").mkdir()
    _copy_db(migrated_store(pytestconfig, tmp_path_factory), root / "mlruns" / "mlflow.db")
    return root


def make_problem(inits: int = 2, n: int = 300, seed: int = 1):
    """Two identifiable datasets (blog and rare-events, one replicate each) × `inits` starts.

    Returns:
        (problem, sweep settings with `lr_grid` (0.1, 1.0) and Adam), via `build_problem`.
    """
    summary, hists = sweep_data((("blog", 0.5, 5.0), ("rare-events", 0.3, 0.5)), 1, n, seed)
    cfg = config.SweepConfig(lr_grid=(0.1, 1.0), inits=inits, optimizers=("adam",))
    return build_problem(summary, hists, 0, cfg), cfg
