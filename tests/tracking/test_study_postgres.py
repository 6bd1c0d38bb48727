"""The study on a real PostgreSQL (issue #13): Optuna wraps an `RDBStorage` in a
`_CachedStorage`, and a trial claimed behind that cache's back crashed at its first
`suggest_float` with a `KeyError` in `_cached_storage.set_trial_param` — every worker, even a
single one. The grid now travels only through `enqueue_trial` / `ask` on the study's own
storage object, so each process's cache knows every trial it claims.
"""

from __future__ import annotations

import subprocess
import sys
import threading

import optuna
import pytest
import yaml
from conftest import TINY, merge
from optuna.trial import TrialState
from services_setup import postgres  # noqa: F401 (the fixture)

from pipeline.stages import config
from pipeline.tracking.storage import open_storage
from pipeline.tracking.study import (
    DONE,
    enqueue_grid,
    grid_points,
    load_study,
    lr_range,
    run_trials,
)

pytestmark = pytest.mark.services


def _cfg() -> config.SweepConfig:
    return config.SweepConfig(lr_grid=(0.01, 0.1, 1.0), optimizers=("adam", "sgd"))


def _objective(cfg):
    def objective(trial) -> float:
        lr = trial.suggest_float("lr", *lr_range(cfg), log=True)  # where the KeyError was
        return lr * (1 if trial.suggest_categorical("optimizer", ["adam", "sgd"]) == "adam" else 2)

    return objective


def test_workers_with_their_own_storage_objects_claim_and_suggest(postgres, tmp_path):  # noqa: F811
    """The parent queues the grid through one storage object, two workers (threads, each with
    its own storage object and so its own cache) run it: no KeyError, each point once."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = _cfg()
    url = postgres.url("optuna")
    storage, _ = open_storage(url, tmp_path, "http://unused")
    parent = load_study(storage, "grid", cfg, 0, create=True)
    assert enqueue_grid(parent, cfg) == 6
    errors, ran = [], []

    def worker() -> None:
        try:
            mine, _ = open_storage(url, tmp_path, "http://unused")
            ran.append(run_trials(load_study(mine, "grid", cfg, 0), cfg, _objective(cfg)))
        except BaseException as err:  # reported by the main thread
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert sum(ran) == 6
    done = sorted((t.params["lr"], t.params["optimizer"]) for t in parent.get_trials(states=DONE))
    assert done == sorted((p["lr"], p["optimizer"]) for p in grid_points(cfg))
    assert not parent.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))


def test_the_sweep_stage_runs_on_postgresql(postgres, tmp_path, stage_env):  # noqa: F811
    """The issue's reproduction: `python -m pipeline.sweep` with OPTUNA_STORAGE on
    PostgreSQL (MLflow local here) completes every trial instead of a traceback."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(merge(TINY, {"tracking": {"fit_plots": False}})))
    env = {**stage_env, "OPTUNA_STORAGE": postgres.url("optuna")}
    base = [sys.executable, "-m"]
    args = ["--params", str(params), "--workdir", str(tmp_path)]
    subprocess.run([*base, "pipeline.generate", *args], env=env, check=True, capture_output=True)
    done = subprocess.run([*base, "pipeline.sweep", *args, "--workers", "2"], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "KeyError" not in done.stderr
    assert (tmp_path / "data" / "fits.parquet").exists()
    name = config.load(params).study("sweep")[2]
    study = optuna.load_study(study_name=name, storage=postgres.url("optuna"))
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == len(TINY["sweep"]["lr_grid"])


def test_workers_opening_an_empty_database_at_once_all_get_the_storage(postgres, tmp_path):  # noqa: F811
    """Found while reproducing the issue: three workers started together on an empty
    database raced to create Optuna's tables, and the losers stopped with "duplicate key value
    violates unique constraint pg_type_typname_nsp_index"; `open_storage` now retries."""
    url = postgres.url("mlflow")  # an empty database (the `optuna` one may have tables already)
    barrier, errors = threading.Barrier(4), []

    def open_one() -> None:
        barrier.wait()
        try:
            open_storage(url, tmp_path, "http://unused")
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
