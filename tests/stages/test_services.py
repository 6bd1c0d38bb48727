"""`make services` / `make services-stop` (`python -m pipeline.services`): a throwaway
PostgreSQL and MLflow server that workers reach through the two URLs of `<state>/env`, stopped
and deleted afterwards; and the sweep's one-line errors when either service is unreachable."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import services_setup
import yaml
from conftest import TINY, merge
from services_setup import postgres, require_postgres  # noqa: F401 (the fixture)

from pipeline.core.errors import UserError
from pipeline.stages import services
from pipeline.stages.services import free_port
from pipeline.stages.ui import group_processes

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
        assert env["OPTUNA_STORAGE"].startswith("postgresql+psycopg://zip:")
        password = env["OPTUNA_STORAGE"].split(":")[2].split("@")[0]
        assert len(password) >= 24 and password not in started.stdout + started.stderr
        for private in ("env", "services.json"):  # the password's only copies on disk
            assert (state / private).stat().st_mode & 0o777 == 0o600
        assert state.stat().st_mode & 0o777 == 0o700
        with urllib.request.urlopen(env["MLFLOW_TRACKING_URI"] + "/health", timeout=10) as r:
            assert r.status == 200
        record = json.loads((state / "services.json").read_text())
        # The server must not inherit a mask blocking the SIGTERM that stops it (a CI run:
        # blocked across the fork, it outlived an interrupted start).
        status = Path(f"/proc/{record['mlflow_pid']}/status").read_text().splitlines()
        blocked = int(next(x for x in status if x.startswith("SigBlk:")).split()[1], 16)
        stops = (1 << (signal.SIGTERM - 1)) | (1 << (signal.SIGINT - 1))
        assert not blocked & stops, f"the mlflow server blocks SIGTERM/SIGINT ({blocked:#x})"
        printed = _services("env", "--state", str(state), env=stage_env)
        assert printed.stdout == (state / "env").read_text()
    finally:
        stopped = _services("stop", "--state", str(state), env=stage_env)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not state.exists() and not Path(record["postgres"]["root"]).exists()
    assert not group_processes(record["mlflow_pid"])  # dead (an unreaped zombie is dead too)
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


def _psql(pg: services.Postgres, sql: str, user: str | None = None, password: str | None = None):
    """`psql` as role `zip` over TCP, as the operating-system `user` (None: ourselves)."""
    cmd = [str(services.pg_bin() / "psql"), "-X", "-w", "-h", "127.0.0.1", "-p", str(pg.port),
           "-U", "zip", "-d", "optuna", "-c", sql]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    if password is not None:
        env["PGPASSWORD"] = password
    if user is not None:
        cmd = ["runuser", "-u", user, "--", *cmd]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)


def test_other_local_users_get_nothing(postgres):  # noqa: F811
    """No trust: without the password nobody gets in; with it, `zip` is no superuser (no
    `COPY ... TO PROGRAM`, so no commands as the server's user); the socket is private."""
    open_dir = Path(tempfile.mkdtemp(prefix="zip-sentinel-"))  # writable by the server's user
    try:
        open_dir.chmod(0o777)
        sentinel = open_dir / "pwned"
        attack = f"COPY (SELECT 1) TO PROGRAM 'id > {sentinel}'"
        stranger = "nobody" if os.geteuid() == 0 and shutil.which("runuser") else None
        if stranger is not None:
            pwd.getpwnam(stranger)
        denied = _psql(postgres, attack, user=stranger)
        assert denied.returncode != 0 and "password" in denied.stderr, denied.stderr
        refused = _psql(postgres, attack, user=stranger, password=postgres.password)
        assert refused.returncode != 0 and "must be superuser" in refused.stderr, refused.stderr
        assert not sentinel.exists()
    finally:
        shutil.rmtree(open_dir)
    assert _psql(postgres, "SELECT 1", password=postgres.password).returncode == 0
    root, sockets = Path(postgres.root), Path(postgres.root) / "sockets"
    assert root.stat().st_mode & 0o777 == 0o700 and sockets.stat().st_mode & 0o777 == 0o700
    hba = (root / "data" / "pg_hba.conf").read_text()
    assert "trust" not in hba and " all all " not in hba


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--host", "127.0.0.1'$(id > {s})'"),
        ("--host", "127.0.0.1'; id > {s}; echo '"),
        ("--host", "127.0.0.1,localhost"),
        ("--host", "*"),
        ("--allow", "garbage"),
        ("--allow", "10.0.0.0/24 trust\nhost all all 0.0.0.0/0 trust"),
        ("--allow", "10.0.0.0/24'; id > {s}; echo '"),
    ],
)
def test_bad_addresses_are_one_line_and_start_nothing(option, value, tmp_path, stage_env):
    sentinel = tmp_path / "pwned"
    state = tmp_path / "state"
    done = _services("start", "--state", str(state), f"{option}={value.format(s=sentinel)}",
                     env=stage_env)  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "is not an IP" in done.stderr and done.stdout == ""
    assert not state.exists() and not sentinel.exists()


def test_the_checked_values_reach_postgresql_as_they_are():
    assert services.listen_addresses("10.0.0.5, 127.0.0.1") == ["10.0.0.5", "127.0.0.1"]
    assert services.client_network("10.0.0.7/24") == "10.0.0.0/24"
    assert services.client_network("fd00::1") == "fd00::1/128"


@contextlib.contextmanager
def _other_server():
    """Another HTTP server answering /health with 200 on a loopback port."""

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_a_busy_mlflow_port_is_one_line_and_starts_nothing(tmp_path, stage_env):
    require_postgres()
    state = tmp_path / "state"
    with _other_server() as port:
        done = _services("start", "--state", str(state), "--pg-port", str(free_port()),
                         "--mlflow-port", str(port), env=stage_env)  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert f"127.0.0.1:{port} is in use" in done.stderr and "--mlflow-port" in done.stderr
    assert not state.exists()


def test_a_busy_postgresql_port_is_one_line_naming_it(tmp_path, stage_env):
    require_postgres()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _services("start", "--state", str(tmp_path / "s"), "--pg-port", str(port),
                         env=stage_env)  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert f"127.0.0.1:{port} is in use" in done.stderr and "--pg-port" in done.stderr


class _Started:
    """What `services.start` started, seen from the test (monkeypatched constructors)."""

    def __init__(self, monkeypatch):
        self.roots: list[Path] = []
        self.procs: list[subprocess.Popen] = []
        start_postgres, popen = services.start_postgres, subprocess.Popen

        def recorded_postgres(*args, **kwargs):
            pg = start_postgres(*args, **kwargs)
            self.roots.append(Path(pg.root))
            return pg

        def recorded_popen(*args, **kwargs):
            proc = popen(*args, **kwargs)
            if kwargs.get("start_new_session"):
                self.procs.append(proc)
            return proc

        monkeypatch.setattr(services, "start_postgres", recorded_postgres)
        monkeypatch.setattr(services.subprocess, "Popen", recorded_popen)

    def left(self) -> list[str]:
        """What still runs or exists (nothing, after a failed or interrupted start)."""
        left = [str(root) for root in self.roots if root.exists()]
        return left + [f"pid {pid}" for p in self.procs for pid in services.group_processes(p.pid)]


def test_start_refuses_another_server_answering_on_its_port(tmp_path, monkeypatch):
    """The port was free when checked and another server took it before mlflow bound it:
    the health check is answered, but not from a socket of the server started."""
    require_postgres()
    started = _Started(monkeypatch)
    monkeypatch.setattr(services, "port_in_use", lambda port, host="127.0.0.1": False)
    with _other_server() as port:
        with pytest.raises(UserError, match=f"127.0.0.1:{port} is answered by another server"):
            services.start(tmp_path / "s", "127.0.0.1", None, port)
    assert len(started.roots) == 1 and len(started.procs) == 1
    assert started.left() == []
    assert not (tmp_path / "s" / "services.json").exists()


def test_ctrl_c_while_starting_stops_both_servers(tmp_path, monkeypatch):
    """Ctrl-C while waiting for mlflow's health check: neither server is left running."""
    require_postgres()
    started = _Started(monkeypatch)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(services.urllib.request, "urlopen", interrupted)
    with pytest.raises(KeyboardInterrupt):
        services.start(tmp_path / "s", "127.0.0.1", None, None)
    assert len(started.roots) == 1 and len(started.procs) == 1
    assert started.left() == []
    assert not (tmp_path / "s" / "services.json").exists()


def test_postgresql_failing_to_bind_says_which_port_and_why(monkeypatch):
    """The port was free when checked, then taken: the line comes from the server's log, read
    before its folder is deleted (not pg_ctl's "Examine the log output")."""
    require_postgres()
    monkeypatch.setattr(services, "port_in_use", lambda port, host="127.0.0.1": False)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UserError) as info:
            services.start_postgres(port=port)
    message = str(info.value)
    assert f"port {port}" in message and "Address already in use" in message, message
    assert "Examine the log" not in message and "\n" not in message


def _cmdlines_naming(text: str) -> list[str]:
    out = []
    for entry in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            line = entry.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if text in line:
                out.append(line)
    return out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_start_leaves_nothing_running(sig, tmp_path, stage_env):
    """The signal lands while `services start` waits for its mlflow server (its log exists):
    exit 130, and neither server nor the database folder is left."""
    require_postgres()
    state = tmp_path / "state"
    temp = Path(tempfile.mkdtemp(prefix="zip-test-"))  # PostgreSQL's folder goes here
    temp.chmod(0o711)  # reachable by the server's user (`postgres` when we are root)
    env = {**stage_env, "TMPDIR": str(temp)}
    cmd = [sys.executable, "-m", "pipeline.services", "start", "--state", str(state),
           "--pg-port", str(free_port()), "--mlflow-port", str(free_port())]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not (state / "mlflow.log").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the mlflow server was never started"
            time.sleep(0.05)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 130, err
        assert err == "interrupted\n" and "MLflow:" not in out
        assert _cmdlines_naming(str(state)) == [], "the mlflow server is still running"
        assert _cmdlines_naming(str(temp)) == [] and list(temp.iterdir()) == []
        assert not (state / "services.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
        _services("stop", "--state", str(state), env=stage_env)
        shutil.rmtree(temp, ignore_errors=True)
