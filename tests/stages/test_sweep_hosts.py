"""Beyond one machine, proven (issue #13): three workers as separate hosts on one study.

PostgreSQL and an MLflow server on it are started by the project's own code
(`pipeline.stages.services`, as `make services` does). Each worker has its own work directory:
it regenerates the datasets from the seed (`python -m pipeline.generate`) and joins the study
through `OPTUNA_STORAGE` and the tracking server through `MLFLOW_TRACKING_URI` only — as root,
from its own network namespace, where nothing else is reachable (`services_setup.Hosts`). One
worker is SIGKILLed mid-trial and never restarted: the others fail its trial by heartbeat, run
its grid point again and close its MLflow runs. Checked: every grid point COMPLETE once, every
fit run FINISHED once and none RUNNING, `data/fits.parquet` equal to a single-process SQLite
run of the same params, and nothing left running or on disk afterwards.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import polars as pl
import pytest
import services_setup
import yaml
from conftest import TINY, merge
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from pipeline.stages import config

pytestmark = [pytest.mark.services, pytest.mark.slow]

GRID = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0]
PARAMS = merge(TINY, {"sweep": {"lr_grid": GRID, "inits": 4, "optimizers": ["adam"]},
                      "tracking": {"fit_plots": False}})  # fmt: skip
VICTIM = 1
KEYS = ["lr", "scenario", "replicate", "init"]


def _env(storage: str | None, tracking: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(CI="true", PYTHONUNBUFFERED="1", ZIP_HEARTBEAT_INTERVAL="1", ZIP_GRACE_PERIOD="6")
    for key, value in (("OPTUNA_STORAGE", storage), ("MLFLOW_TRACKING_URI", tracking)):
        env.pop(key, None)
        if value:
            env[key] = value
    return env


def _stage(workdir: Path, stage: str, *args: str) -> list[str]:
    return [sys.executable, "-m", f"pipeline.{stage}", "--params", str(workdir / "params.yaml"),
            "--workdir", str(workdir), *args]  # fmt: skip


def _worker(hosts, i: int, workdir: Path, env: dict) -> subprocess.Popen:
    """Host i: generate its own datasets, then join the sweep (one shell line, so the pid we
    kill is the sweep's own: `exec`)."""
    workdir.mkdir()
    (workdir / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    script = f"{' '.join(_stage(workdir, 'generate'))} >/dev/null && exec " + " ".join(
        _stage(workdir, "sweep", "--workers", "1")
    )
    cmd = hosts.command(i, ["sh", "-c", script])
    out = subprocess.PIPE
    return subprocess.Popen(cmd, env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)  # fmt: skip


def _victims_trial(study_name: str, storage, proc: subprocess.Popen, deadline: float) -> int:
    """Wait until worker `proc` (the sweep, after `exec`) runs a trial and has opened its MLflow
    trial run (user attr `mlflow_run_id`: a kill before that leaves no run to close, seen once
    on a loaded machine); returns its number.

    `storage` is one `RDBStorage` for all the polls (a URL would open a new connection pool
    each time, and PostgreSQL refuses clients past its 100 connections)."""
    pid = proc.pid
    while time.monotonic() < deadline:
        if proc.poll() is not None:  # it died before running a trial: say why
            raise AssertionError(f"the victim exited {proc.returncode}: {proc.stdout.read()}")
        try:
            study = optuna.load_study(study_name=study_name, storage=storage)
        except KeyError:  # not created yet
            study = None
        for t in study.get_trials(states=(TrialState.RUNNING,)) if study else ():
            if t.user_attrs.get("pid") == pid and t.user_attrs.get("mlflow_run_id"):
                return t.number
        time.sleep(0.05)
    raise AssertionError("the victim never ran a trial")


def _gone(pid: int, wait: float = 10.0) -> bool:
    """Whether process `pid` has exited (or is a zombie: exited, not yet reaped by init)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.1)
    return False


def _frame(path: Path) -> pl.DataFrame:
    """The fits table without what differs between runs (trial numbers, MLflow run ids)."""
    return pl.read_parquet(path).drop("trial", "run_id").sort(KEYS)


def test_three_hosts_one_killed(tmp_path, isolated_mlflow):
    start = time.monotonic()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    hosts = services_setup.Hosts(3)
    print(f"workers as separate hosts: {hosts.mode}")
    running = procs = storage = None
    try:
        running = services_setup.start(tmp_path / "services", hosts.address, hosts.clients)
        env = _env(running.storage, running.tracking_uri)
        # The victim starts first and the others once it runs a trial: however fast they are,
        # it cannot find the grid taken (a CI run once saw it start last and get no trial).
        procs = [None, None, None]
        procs[VICTIM] = _worker(hosts, VICTIM, tmp_path / f"host{VICTIM}", env)
        # The reference: one process, SQLite for MLflow and Optuna, same params.
        ref = tmp_path / "reference"
        ref.mkdir()
        (ref / "params.yaml").write_text(yaml.safe_dump(PARAMS))
        ref_env = _env("sqlite:///optuna.db", None)
        subprocess.run(_stage(ref, "generate"), env=ref_env, check=True, capture_output=True)
        name = config.load(ref / "params.yaml").study("sweep")[2]
        storage = optuna.storages.RDBStorage(running.storage)
        victim = _victims_trial(name, storage, procs[VICTIM], time.monotonic() + 180)
        for i in (0, 2):
            procs[i] = _worker(hosts, i, tmp_path / f"host{i}", env)
        os.killpg(procs[VICTIM].pid, signal.SIGKILL)  # the host dies: nothing of it runs on
        done = subprocess.run(_stage(ref, "sweep", "--workers", "1"), env=ref_env,
                              capture_output=True, text=True, timeout=240)  # fmt: skip
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        outs = [p.communicate(timeout=240)[0] for p in procs]
        codes = [p.returncode for p in procs]
        assert codes[VICTIM] == -signal.SIGKILL
        for i in (0, 2):
            assert codes[i] == 0, outs[i][-3000:]
        if hosts.isolated:  # the services were out of reach but through the links
            assert "127.0.0.1" not in running.storage + running.tracking_uri

        # Every grid point COMPLETE exactly once; the victim's trial FAILed and was retried.
        study = optuna.load_study(study_name=name, storage=storage)
        complete = [t.params["lr"] for t in study.get_trials(states=(TrialState.COMPLETE,))]
        assert sorted(complete) == GRID
        assert study.trials[victim].state == TrialState.FAIL
        assert [t.user_attrs.get("retry_of") for t in study.trials].count(victim) == 1
        assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))

        # Every fit run present once and FINISHED; nothing RUNNING (the victim's runs FAILED).
        client = MlflowClient(tracking_uri=running.tracking_uri)
        exp = client.get_experiment_by_name(PARAMS["tracking"]["experiment"])
        runs = client.search_runs([exp.experiment_id], max_results=5000)
        assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
        fits = [r for r in runs if r.data.tags.get("zip.level") == "fit"]
        finished = collections.Counter(
            (r.data.params["lr"], r.info.run_name) for r in fits if r.info.status == "FINISHED"
        )
        datasets = len(PARAMS["data"]["scenarios"]) * PARAMS["data"]["replicates"]
        assert len(finished) == len(GRID) * datasets * PARAMS["sweep"]["inits"]
        assert set(finished.values()) == {1}
        dead = {r.info.status for r in runs if r.data.tags.get("zip.trial") == str(victim)}
        assert dead and dead <= {"FAILED", "KILLED"}

        # The fits table, on each surviving host, equals the single-process SQLite run's.
        expected = _frame(ref / "data" / "fits.parquet")
        for i in (0, 2):
            got = _frame(tmp_path / f"host{i}" / "data" / "fits.parquet")
            assert got.equals(expected), f"host {i}'s fits.parquet differs from the reference"
    finally:
        for proc in [p for p in procs or () if p is not None]:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        pg_root = running.postgres.root if running else None
        postmaster = Path(pg_root or "/nonexistent") / "data" / "postmaster.pid"
        pg_pid = int(postmaster.read_text().split()[0]) if postmaster.exists() else None
        if storage is not None:
            storage.engine.dispose()
        if running is not None:
            services_setup.stop(running)
        hosts.close()
    # Nothing left: the processes (and their children), the database server and its folder,
    # the namespaces and links.
    for proc in procs:
        assert proc.poll() is not None
        with pytest.raises(ProcessLookupError):
            os.killpg(proc.pid, 0)
    assert running.mlflow.poll() is not None and not Path(pg_root).exists()
    assert _gone(pg_pid)
    assert not hosts.leftovers()
    print(f"three hosts, one killed: {time.monotonic() - start:.0f} s")
