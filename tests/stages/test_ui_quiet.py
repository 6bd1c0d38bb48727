"""`make ui` keeps its terminal quiet: no line per HTTP request, but the server's errors show.

The launcher (`python -m pipeline.ui`, as `make ui` runs it) starts `mlflow server` with
uvicorn's access log off (`--uvicorn-opts=--no-access-log`). These tests run the real
launcher on a free loopback port over an empty store in `tmp_path`, with its output (stdout
and stderr, as the terminal would show them) in a file.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pipeline.stages import ui

ROOT = Path(__file__).resolve().parents[2]

# An access-log line, as MLflow 3.17's uvicorn_log_config.yaml formats it, e.g. (seen before
# the switch): 2026/12/04 19:30:28 INFO:     127.0.0.1:49978 - "GET /health HTTP/1.1" 200 OK
ACCESS_LINE = re.compile(r'"[A-Z]+ /\S* HTTP/[\d.]+" \d{3}')

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status(url: str, data: bytes | None = None) -> int:
    """The HTTP status of a request (an error status too); 0 when nothing answers."""
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


@pytest.fixture
def launch(isolated_mlflow, tiny_params, stage_env, tmp_path):
    """Start `python -m pipeline.ui` on a port over an empty store; its output goes to a log.

    The store is an empty SQLite file: the launcher's Tracker makes the tables and the tiny
    params' experiment. Yields a function `port -> (launcher, log)`; whatever happens, the
    launcher is stopped (it then stops its server's process group).
    """
    db = tmp_path / "mlruns" / "mlflow.db"
    db.parent.mkdir()
    sqlite3.connect(db).close()
    started: list[subprocess.Popen] = []

    def start(port: int) -> tuple[subprocess.Popen, Path]:
        log = tmp_path / "ui.log"
        args = ["--params", str(tiny_params), "--workdir", str(tmp_path), "--port", str(port)]
        cmd = [sys.executable, "-m", "pipeline.ui", *args]
        with log.open("w") as out:
            launcher = subprocess.Popen(cmd, cwd=ROOT, env=stage_env, stdout=out, stderr=out)
        started.append(launcher)
        return launcher, log

    yield start
    for launcher in started:
        if launcher.poll() is None:
            launcher.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                launcher.wait(timeout=30)
        if launcher.poll() is None:  # a test that failed must not leave it running
            launcher.kill()
            launcher.wait(timeout=10)


def test_the_access_line_pattern_matches_uvicorn_lines():
    line = '2026/12/04 19:30:28 INFO:     127.0.0.1:49978 - "GET /health HTTP/1.1" 200 OK'
    assert ACCESS_LINE.search(line)
    assert not ACCESS_LINE.search("2026/12/04 19:30:23 INFO:     Application startup complete.")


def test_make_ui_prints_no_line_per_request(launch):
    port = _free_port()
    launcher, log = launch(port)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while _status(f"{base}/health") != 200:
        assert launcher.poll() is None, f"the launcher exited:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no server within 90 s:\n{log.read_text()}"
        time.sleep(0.25)
    # What a browser asks for: the page, the API (found and not found), an unknown path.
    assert _status(f"{base}/") == 200
    assert _status(f"{base}/api/2.0/mlflow/experiments/search", b'{"max_results": 5}') == 200
    assert _status(f"{base}/api/2.0/mlflow/runs/get?run_id=none") in (400, 404)
    assert _status(f"{base}/no-such-page") == 404
    launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(timeout=30) == 0
    out = log.read_text()
    assert f"MLflow UI: {base}/#/experiments/" in out  # the link `make ui` prints
    assert "Application startup complete" in out, f"the server's output is not shown:\n{out}"
    requests = [line for line in out.splitlines() if ACCESS_LINE.search(line)]
    assert not requests, "access-log lines in `make ui`'s output:\n" + "\n".join(requests)
    assert "DeprecationWarning" not in out, out


def test_the_servers_startup_errors_still_show(isolated_mlflow, tmp_path):
    # The server itself (as `make ui` starts it) on a port another program holds: uvicorn's
    # error reaches the terminal. (MLflow 3.17 then exits 0; hence the launcher's own check.)
    (tmp_path / "mlruns").mkdir()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        try:
            done = subprocess.run(
                ui.server_command(tmp_path, port), env=ui.server_env(), cwd=tmp_path,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=90,
            )  # fmt: skip
        except subprocess.TimeoutExpired as err:
            pytest.fail(f"the server still runs on a port in use:\n{err.output}")
    assert "address already in use" in done.stdout, f"the bind error is not shown:\n{done.stdout}"
    assert "ERROR" in done.stdout


def test_make_ui_refuses_a_port_in_use(launch):
    with socket.socket() as busy:  # another program holds the port
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert ui.port_in_use(port)
        launcher, log = launch(port)
        code = launcher.wait(timeout=60)
    out = log.read_text()
    assert code == 2, out
    assert f"error: 127.0.0.1:{port} is in use" in out and f"make ui PORT={port + 1}" in out
    assert "MLflow UI:" not in out, "no link to a server that cannot start"
    assert not ui.port_in_use(port), "a closed port counts as free"
