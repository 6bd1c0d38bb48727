"""`make ui` / `make dashboard` never leave their server behind.

The launchers (`python -m pipeline.ui | pipeline.dashboard`) start the server in its own
process group; SIGTERM, SIGHUP or Ctrl-C to the launcher stops that whole group, and so does
every other way out of `pipeline.stages.ui.serve` (the server's own exit, an exception). The
end-to-end tests start a real launcher on a free loopback port over a tiny store in `tmp_path`,
signal it, and check that the launcher exits, no process of the server's group is left and the
port is closed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend

from pipeline.stages import ui

ROOT = Path(__file__).resolve().parents[2]
# Seconds the launcher may take to stop its server: ui's grace is 20 s, then SIGKILL and 5 s;
# the rest is room for a loaded 2-core machine running two test workers (30 s was too few).
STOPPED_WITHIN = 120.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgrp) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid, pgrp = text.rsplit(")", 1)[1].split()[:3]
    return state, int(ppid), int(pgrp)


def _alive_in_group(pgid: int) -> list[int]:
    """The processes of group `pgid` that still run (zombies left to a lazy init excluded)."""
    alive = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None and st[2] == pgid and st[0] not in ("Z", "X"):
                alive.append(int(entry.name))
    return alive


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None and st[1] == pid:
                out.append(int(entry.name))
    return out


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} (waited {timeout:.0f} s)")
        time.sleep(0.1)


def _server_group(launcher: subprocess.Popen, port: int, log: Path) -> int:
    """Wait until the launcher's server listens on `port`; return the server's process group."""

    def up() -> bool:
        if launcher.poll() is not None:
            pytest.fail(f"the launcher exited ({launcher.returncode}):\n{log.read_text()}")
        return _accepts(port)

    _wait_for(up, 90, f"nothing listens on 127.0.0.1:{port}:\n{log.read_text()}")
    servers = _children(launcher.pid)
    assert len(servers) == 1, f"the launcher has children {servers}, expected one server"
    pgid = os.getpgid(servers[0])
    assert pgid == servers[0] != os.getpgid(launcher.pid), "the server leads its own group"
    return pgid


def _stop_and_check(launcher: subprocess.Popen, sig: int, pgid: int, port: int, log: Path):
    """Send `sig` to the launcher; it must exit 0 and take its server's group with it."""
    assert _alive_in_group(pgid), "the server is not running before the signal"
    launcher.send_signal(sig)
    try:
        code = launcher.wait(timeout=STOPPED_WITHIN)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the launcher is still running {STOPPED_WITHIN:.0f} s after {sig!r}")
    assert code == 0, log.read_text()
    # The launcher waits for the group before it exits: nothing may be left, not even briefly.
    assert _alive_in_group(pgid) == [], f"{sig!r} left the server's processes behind"
    assert not _accepts(port), f"127.0.0.1:{port} still accepts connections"


@contextlib.contextmanager
def _launched(module: str, args: list[str], env: dict[str, str], log: Path):
    """Run `python -m module args` (output to `log`); whatever happens, kill what is left."""
    with log.open("w") as out:
        # As from a terminal: a suite started under `nohup` would hand the launcher an ignored
        # SIGHUP, which it rightly keeps ignoring (a local run once failed the SIGHUP case so).
        launcher = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL),
        )  # fmt: skip
    groups: set[int] = set()
    try:
        yield launcher, groups
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait(10)
        for pgid in groups:  # a failed test must not leave a server running either
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)


@pytest.fixture
def ui_store(isolated_mlflow, tmp_path) -> Path:
    """An empty SQLite file at `tmp_path/mlruns/mlflow.db`: the launcher's Tracker makes the
    tables and the tiny params' experiment (no MLflow import in the test process)."""
    db = tmp_path / "mlruns" / "mlflow.db"
    db.parent.mkdir()
    sqlite3.connect(db).close()
    return tmp_path


@pytest.mark.slow
def test_ui_launcher_stops_its_mlflow_server_on_sigterm(ui_store, tiny_params, stage_env, tmp_path):
    port = _free_port()
    args = ["--params", str(tiny_params), "--workdir", str(ui_store), "--port", str(port)]
    log = tmp_path / "ui.log"
    with _launched("pipeline.ui", args, stage_env, log) as (launcher, groups):
        pgid = _server_group(launcher, port, log)
        groups.add(pgid)
        _stop_and_check(launcher, signal.SIGTERM, pgid, port, log)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_dashboard_launcher_stops_its_server_on(sig, tiny_params, isolated_mlflow, stage_env,
                                                tmp_path):  # fmt: skip
    journal = tmp_path / "mlruns" / "optuna.log"
    journal.parent.mkdir(parents=True)
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
    optuna.create_study(study_name="launcher-check", storage=storage)
    env = {k: v for k, v in stage_env.items() if k != "OPTUNA_STORAGE"}
    port = _free_port()
    args = ["--params", str(tiny_params), "--workdir", str(tmp_path), "--port", str(port)]
    log = tmp_path / "dashboard.log"
    with _launched("pipeline.dashboard", args, env, log) as (launcher, groups):
        pgid = _server_group(launcher, port, log)
        groups.add(pgid)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=60) as reply:
            assert b"launcher-check" in reply.read()
        _stop_and_check(launcher, sig, pgid, port, log)
    assert "GET /api/studies" not in log.read_text(), "a line per request (access log)"


# `serve` itself, with a stand-in server: a process that starts a grandchild in its group.
FAKE_SERVER = """
import json, signal, subprocess, sys, time
if sys.argv[2] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
with open(sys.argv[1], "w") as f:
    json.dump([child.pid], f)
if sys.argv[2] == "exits":
    sys.exit(3)  # leaves its child behind, in its group
time.sleep(120)
"""


def _fake(tmp_path: Path, mode: str) -> tuple[list[str], Path]:
    pids = tmp_path / f"{mode}.json"
    return [sys.executable, "-c", FAKE_SERVER, str(pids), mode], pids


def _grandchild(pids: Path) -> int:
    _wait_for(lambda: pids.exists() and pids.stat().st_size > 0, 20, "the fake server is up")
    return json.loads(pids.read_text())[0]


def test_serve_stops_what_the_server_left_when_it_exits_by_itself(tmp_path):
    cmd, pids = _fake(tmp_path, "exits")
    assert ui.serve(cmd, grace=5) == 3
    grandchild = _grandchild(pids)
    assert _stat(grandchild) is None or _stat(grandchild)[0] in ("Z", "X")


@pytest.mark.parametrize("sig", ui.STOP_SIGNALS, ids=lambda sig: sig.name)
def test_serve_stops_on_request_and_kills_a_server_that_ignores_sigterm(sig, tmp_path):
    cmd, pids = _fake(tmp_path, "stubborn")  # server and grandchild both ignore SIGTERM
    seen: list[int] = []

    def stray(signum, frame):  # catches the signal should serve have returned already
        seen.append(signum)

    def request_stop():  # a stop request: `sig` to this (the launcher's) process
        _grandchild(pids)
        os.kill(os.getpid(), sig)

    previous = signal.signal(sig, stray)
    timer = threading.Thread(target=request_stop, daemon=True)
    try:
        started = time.monotonic()
        timer.start()
        assert ui.serve(cmd, grace=1) == 0
        elapsed = time.monotonic() - started
        timer.join(10)
        assert signal.getsignal(sig) is stray, "serve restores the handlers"
    finally:
        signal.signal(sig, previous)
    assert seen == [], "the request reached serve"
    assert elapsed < 15
    grandchild = _grandchild(pids)
    assert _stat(grandchild) is None or _stat(grandchild)[0] in ("Z", "X")


def test_serve_stops_the_server_when_the_wait_raises(tmp_path, monkeypatch):
    cmd, pids = _fake(tmp_path, "runs")
    started: list[subprocess.Popen] = []

    class Popen(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)

        def wait(self, timeout=None):
            if pids.exists() and pids.stat().st_size > 0:
                raise RuntimeError("boom")
            return super().wait(timeout)

    monkeypatch.setattr(ui.subprocess, "Popen", Popen)
    with pytest.raises(RuntimeError, match="boom"):
        ui.serve(cmd, grace=5)
    grandchild = _grandchild(pids)
    assert _alive_in_group(started[0].pid) == []
    assert _stat(grandchild) is None or _stat(grandchild)[0] in ("Z", "X")


def test_serve_reports_a_missing_program(tmp_path):
    with pytest.raises(FileNotFoundError):
        ui.serve([str(tmp_path / "no-such-server")])
