"""`make services` / `make services-stop` (`python -m pipeline.services`): a throwaway
PostgreSQL and MLflow server that workers reach through the two URLs of `<state>/env`, stopped
and deleted afterwards; and the sweep's one-line errors when either service is unreachable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import services_setup
import yaml
from conftest import TINY, merge
from services_setup import require_postgres

from pipeline.stages.services import free_port

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[2]


def _services(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.services", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)  # fmt: skip


def test_start_env_stop_leave_nothing(tmp_path, stage_env):
    require_postgres()
    state = tmp_path / "state"
    ports = ["--pg-port", str(free_port()), "--mlflow-port", str(free_port())]
    started = _services("start", "--state", str(state), *ports, env=stage_env)
    try:
        assert started.returncode == 0, started.stderr
        again = _services("start", "--state", str(state), *ports, env=stage_env)
        assert again.returncode == 2 and again.stderr.count("\n") == 1
        assert "already started" in again.stderr
        env = dict(line.removeprefix("export ").split("=", 1)
                   for line in (state / "env").read_text().splitlines())  # fmt: skip
        assert set(env) == {"OPTUNA_STORAGE", "MLFLOW_TRACKING_URI"}
        assert env["OPTUNA_STORAGE"].startswith("postgresql+psycopg://zip@127.0.0.1:")
        with urllib.request.urlopen(env["MLFLOW_TRACKING_URI"] + "/health", timeout=10) as r:
            assert r.status == 200
        record = json.loads((state / "services.json").read_text())
        printed = _services("env", "--state", str(state), env=stage_env)
        assert printed.stdout == (state / "env").read_text()
    finally:
        stopped = _services("stop", "--state", str(state), env=stage_env)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not state.exists() and not Path(record["postgres"]["root"]).exists()
    with pytest.raises(ProcessLookupError):
        os.killpg(record["mlflow_pid"], 0)
    assert "no services ran" in _services("stop", "--state", str(state), env=stage_env).stdout


def test_make_services_passes_its_variables_through_the_environment():
    out = subprocess.run(["make", "-n", "-C", str(ROOT), "services", "SERVICES_HOST=$(id)"],
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0 and "$(id)" not in out.stdout
    assert '--host="${ZIP_SERVICES_HOST:-127.0.0.1}"' in out.stdout


def test_an_unreachable_service_stops_the_sweep_in_one_line(tmp_path, stage_env):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(merge(TINY, {"tracking": {"fit_plots": False}})))
    args = ["--params", str(params), "--workdir", str(tmp_path)]
    subprocess.run([sys.executable, "-m", "pipeline.generate", *args], env=stage_env,
                   check=True, capture_output=True)  # fmt: skip
    dead = free_port()
    for key, value, message in (
        ("OPTUNA_STORAGE", f"postgresql+psycopg://zip@127.0.0.1:{dead}/optuna", "cannot be opened"),
        ("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{dead}", "does not answer"),
    ):
        env = {**stage_env, key: value}
        done = subprocess.run([sys.executable, "-m", "pipeline.sweep", *args], env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 2, done.stderr[-2000:]
        assert done.stderr.count("\n") == 1 and message in done.stderr


def test_the_fixture_starts_and_removes_postgres(tmp_path):
    running = services_setup.start(tmp_path, mlflow=False)
    root = Path(running.postgres.root)
    assert (root / "data" / "postmaster.pid").exists()
    services_setup.stop(running)
    assert not root.exists()
