"""The sweep as separate processes: two workers on one study, SIGTERM, SIGKILL and resume."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time

import optuna
import polars as pl
import pytest
import yaml
from conftest import TINY, merge
from mlflow.tracking import MlflowClient
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from pipeline.stages import config, generate

GRID = [0.03, 0.1, 0.3, 1.0]


@pytest.fixture
def workdir(tmp_path, isolated_mlflow):
    """Tiny datasets in `tmp_path`, params with a 4-point grid (fit runs logged, no PNGs)."""
    params = merge(TINY, {"sweep": {"lr_grid": GRID, "inits": 3, "optimizers": ["adam"]},
                          "fit": {"max_steps": 60, "chunk_steps": 20},
                          "tracking": {"fit_plots": False}})  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    generate.generate(config.load(tmp_path / "params.yaml"), tmp_path)
    return tmp_path


def _start(workdir, env, *args):
    cmd = [sys.executable, "-m", "pipeline.sweep", "--params", str(workdir / "params.yaml"),
           "--workdir", str(workdir), *args]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip


def _study(workdir):
    params = config.load(workdir / "params.yaml")
    name = params.study("sweep")[2]
    log = workdir / "mlruns" / "optuna.log"
    if not log.exists():
        return None
    try:
        return optuna.load_study(
            study_name=name, storage=JournalStorage(JournalFileBackend(str(log)))
        )
    except KeyError:  # not created yet
        return None


def _wait_for(proc, workdir, complete: int, timeout: float = 120.0):
    """Poll the storage until `complete` trials are COMPLETE and another one is running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        study = _study(workdir)
        if study is not None:
            trials = study.get_trials(deepcopy=False)
            done = sum(t.state == TrialState.COMPLETE for t in trials)
            # A trial in progress: claimed, and its worker recorded (its first act).
            running = [t for t in trials if t.state == TrialState.RUNNING and "pid" in t.user_attrs]
            if done >= complete and running:
                return
        time.sleep(0.05)
    raise AssertionError("the sweep made no progress")


def _runs(workdir):
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("zip-test")
    return client.search_runs([exp.experiment_id], max_results=10000)


def _complete_lrs(study):
    return sorted(t.params["lr"] for t in study.get_trials(states=(TrialState.COMPLETE,)))


def test_two_workers_share_one_grid(workdir, stage_env):
    proc = _start(workdir, stage_env, "--workers", "2")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    study = _study(workdir)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * len(GRID)
    assert _complete_lrs(study) == GRID  # none lost, none twice
    pids = {t.user_attrs["pid"] for t in study.trials}
    assert proc.pid not in pids  # the trials ran in the worker processes
    runs = _runs(workdir)
    levels = collections.Counter((r.data.tags["zip.level"], r.info.status) for r in runs)
    assert levels[("trial", "FINISHED")] == len(GRID)
    params = config.load(workdir / "params.yaml")
    datasets = len(params.data.scenarios) * params.data.replicates
    assert levels[("fit", "FINISHED")] == len(GRID) * datasets * 3
    stage_run = next(r.info.run_id for r in runs if r.data.tags["zip.level"] == "stage")
    parents = {
        r.data.tags["mlflow.parentRunId"] for r in runs if r.data.tags["zip.level"] == "trial"
    }
    assert parents == {stage_run}


def test_sigterm_kills_runs_sigkill_is_resumed(workdir, stage_env):
    # 1. SIGTERM while a trial runs: exit 130, every run KILLED, the trial FAIL.
    proc = _start(workdir, stage_env)
    _wait_for(proc, workdir, complete=1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "interrupted"
    runs = _runs(workdir)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    stage_status = {r.info.status for r in runs if r.data.tags["zip.level"] == "stage"}
    assert stage_status == {"KILLED"}
    states = collections.Counter(t.state for t in _study(workdir).trials)
    assert states[TrialState.RUNNING] == 0 and states[TrialState.COMPLETE] >= 1

    # 2. SIGKILL while a trial runs: its trial stays RUNNING, its MLflow runs RUNNING.
    proc = _start(workdir, stage_env)
    done = states[TrialState.COMPLETE]
    _wait_for(proc, workdir, complete=done + 1)
    proc.kill()
    proc.communicate(timeout=60)
    orphaned = {r.info.run_id for r in _runs(workdir) if r.info.status == "RUNNING"}
    assert orphaned  # at least the stage run and the trial run

    # 3. Rerun: stale trials FAIL, orphaned runs FAILED, the grid completes without repeats.
    proc = _start(workdir, stage_env)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    study = _study(workdir)
    assert _complete_lrs(study) == GRID
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    runs = _runs(workdir)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert {r.info.status for r in runs if r.info.run_id in orphaned} == {"FAILED"}
    assert not list((workdir / "data").glob("**/.*.tmp"))  # no half-written file left
    fits = pl.read_parquet(workdir / "data" / "fits.parquet")
    datasets = pl.read_parquet(workdir / "data" / "summary.parquet").height
    assert fits.height == len(GRID) * datasets * 3 and sorted(fits["lr"].unique()) == GRID
    # The audit's item 11: fit runs of the interrupted and the killed trial do not look like
    # results in the UI: the FINISHED fit runs are exactly the report's fits; the others are
    # KILLED (tagged superseded) or FAILED (orphans of the killed process).
    fit_runs = [r for r in runs if r.data.tags["zip.level"] == "fit"]
    finished = {r.info.run_id for r in fit_runs if r.info.status == "FINISHED"}
    assert finished == set(fits["run_id"])
    superseded = [r for r in fit_runs if r.data.tags.get("zip.superseded") == "true"]
    assert {r.info.status for r in superseded} <= {"KILLED"}
    # ... and no scratch folder of the killed process is left behind
    assert not [p for p in (workdir / "mlruns" / ".fitlog").iterdir()]


def test_second_sweep_refused_killed_worker_one_line_progress_per_trial(workdir, stage_env):
    """Issue 21, items 8 and 15, and issue 19's progress lines: a second sweep of the study in
    the same work directory is refused in one line (it used to assemble the fits table while
    a trial of the first still ran); a worker killed by SIGKILL is one line naming it and its
    signal, exit 2 (it was a RuntimeError pointing to a traceback that was not there); output
    that is not a terminal gets one line per finished trial."""
    env = {k: v for k, v in stage_env.items() if k != "CI"}
    first = _start(workdir, env, "--workers", "2")
    _wait_for(first, workdir, complete=0, timeout=240)
    # One worker stopped mid-trial: the first sweep cannot end (its parent waits for it), so
    # the second starts while the first surely runs, whatever the machine's load.
    victim = next(t for t in _study(workdir).trials if t.state == TrialState.RUNNING)
    os.kill(victim.user_attrs["pid"], signal.SIGSTOP)
    second = _start(workdir, env)
    _, err = second.communicate(timeout=240)
    name = config.load(workdir / "params.yaml").study("sweep")[2]
    assert second.returncode == 2 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == (
        f"error: study {name} already runs in {workdir} (pid {first.pid}): wait for it to end, "
        "or give that sweep more --workers"
    )
    os.kill(victim.user_attrs["pid"], signal.SIGKILL)
    _, err = first.communicate(timeout=300)
    lines = err.strip().splitlines()
    assert first.returncode == 2 and "Traceback" not in err, err
    assert lines[-1].startswith("error: sweep-worker-") and "killed by SIGKILL" in lines[-1]
    done = sorted(t.number for t in _study(workdir).trials if t.state == TrialState.COMPLETE)
    reported = sorted(int(line.split()[1]) for line in lines if line.startswith("trial "))
    assert reported == done and len(done) < len(GRID)

    again = _start(workdir, stage_env)  # CI: no lines beyond the start and the end
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert not [line for line in err.splitlines() if line.startswith("trial ")]
    assert _complete_lrs(_study(workdir)) == GRID
