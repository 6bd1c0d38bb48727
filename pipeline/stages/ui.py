"""`make ui`: the MLflow UI on the project's store, cheap to open (DESIGN §3, §6).

Starts `mlflow server` bound to 127.0.0.1 with one worker and GenAI job execution off (else
seven job processes start: ~2.5 GB instead of ~0.5 GB), and prints the link that opens the
experiment's 'Model training' runs table with its nested runs. The terminal stays quiet: no
line per HTTP request (uvicorn's access log is off), while the server's startup messages and
errors still show.

The launcher owns its server's lifetime (`serve`, also used by `make dashboard`): the server
runs in its own process group, SIGTERM, SIGHUP and SIGINT (Ctrl-C) to the launcher stop the
whole group, and no exit path leaves it behind (only SIGKILL to the launcher can).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from pipeline.core.errors import UserError
from pipeline.stages import config
from pipeline.stages.cli import parser
from pipeline.tracking.runs import Tracker

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


def group_processes(pgid: int) -> list[int]:
    """The pids of group `pgid` that still run (zombies excluded; Linux /proc)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _ppid, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if int(pgrp) == pgid and state not in ("Z", "X"):
            alive.append(int(stat.parent.name))
    return alive


def _group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs (a zombie, on Linux, counts as gone)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not Path("/proc").is_dir() or bool(group_processes(pgid))


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # gone, or not ours
        os.killpg(pgid, sig)


def stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop `proc` and every process of its group: SIGTERM, then SIGKILL after `grace` s.

    Returns once the group is gone (or 5 s after the SIGKILL, for a process stuck in the
    kernel), so the launcher never exits before its server.

    `proc` must lead its own process group (`start_new_session=True`); the group is signalled
    even when `proc` has exited already, for the children it may have left behind.
    """
    pgid = proc.pid
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        _signal_group(pgid, sig)
        deadline = time.monotonic() + wait
        while proc.poll() is None or _group_alive(pgid):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        else:
            return


def serve(cmd: Sequence[str], env: dict[str, str] | None = None, grace: float = 10.0) -> int:
    """Run the server `cmd` until it exits or the launcher is asked to stop; never leave it.

    The server runs in its own process group (so the terminal's Ctrl-C reaches only the
    launcher). SIGTERM, SIGHUP and SIGINT to the launcher (unless ignored, e.g. by `nohup`)
    only record the request: no exception can land between starting the server and owning
    it. Whatever ends the wait (the server's exit, a stop request, an exception), the whole
    group is then stopped (`stop_group`).

    Returns:
        The server's exit status, or 0 after a stop request.

    Raises:
        FileNotFoundError: `cmd[0]` does not exist.
    """
    requests: list[int] = []

    def request_stop(signum, frame):
        requests.append(signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS:
            if signal.getsignal(sig) is not signal.SIG_IGN:
                previous[sig] = signal.signal(sig, request_stop)
    proc = None
    try:
        proc = subprocess.Popen(list(cmd), env=env, start_new_session=True)
        while not requests:
            try:
                return proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                continue
        return 0
    finally:
        try:
            if proc is not None:
                stop_group(proc, grace)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def server_command(workdir: Path, port: int, host: str = "127.0.0.1") -> list[str]:
    """The `mlflow server` command line for the store under `workdir/mlruns/`."""
    mlflow = Path(sys.executable).with_name("mlflow")
    exe = str(mlflow) if mlflow.exists() else (shutil.which("mlflow") or "mlflow")
    store = workdir / "mlruns"
    return [
        exe, "server",
        "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
        "--artifacts-destination", str(store / "artifacts"),
        "--host", host, "--port", str(port), "--workers", "1",
        # Forwarded to uvicorn (mlflow/server/__init__.py, `_build_uvicorn_command`): without it
        # every request of the browser prints a line. Errors go through uvicorn's own logger.
        "--uvicorn-opts=--no-access-log",
    ]  # fmt: skip


# MLflow 3.17's server imports `starlette.middleware.wsgi`, which warns at every start: a
# note for MLflow's developers, not for someone browsing runs.
_STARLETTE_WSGI_WARNING = "ignore:starlette.middleware.wsgi is deprecated:UserWarning"


def server_env() -> dict[str, str]:
    """Environment for the server: no GenAI job processes, no telemetry, no deprecation note.

    A `PYTHONWARNINGS` of the user's is kept, after ours (later filters take precedence).
    """
    warnings = [_STARLETTE_WSGI_WARNING, os.environ.get("PYTHONWARNINGS", "")]
    return {
        **os.environ,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "GIT_PYTHON_REFRESH": "quiet",
        "PYTHONWARNINGS": ",".join(w for w in warnings if w),
    }


def experiment_url(port: int, experiment_id: str | None, host: str = "127.0.0.1") -> str:
    """The link that opens the runs table (the 3.17 UI otherwise lands on GenAI traces)."""
    base = f"http://{host}:{port}/"
    if experiment_id is None:
        return base
    return f"{base}#/experiments/{experiment_id}?workflowType=machine_learning"


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether another program holds `host:port`, so that the server could not bind it.

    MLflow 3.17's `mlflow server` exits 0 after its uvicorn fails to bind (it ignores the
    status), so the launcher checks first. It binds as uvicorn does (`SO_REUSEADDR`: a port
    left in TIME_WAIT is free); any other failure is left to the server to report.
    """
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            return err.errno == errno.EADDRINUSE
    return False


def main(argv: Sequence[str] | None = None) -> int:
    p = parser("Browse the study's MLflow runs.")
    p.add_argument("--port", type=int, default=5000)
    args = p.parse_args(argv)
    params = config.load(args.params)
    db = args.workdir / "mlruns" / "mlflow.db"
    if not db.exists():
        raise UserError(f"{db}: no tracking store yet (run `make data` or `make all` first)")
    if port_in_use(args.port):
        raise UserError(
            f"127.0.0.1:{args.port} is in use (another `make ui`?); choose another port, "
            f"e.g. `make ui PORT={args.port + 1}`"
        )

    experiment_id = Tracker(params.tracking.experiment, root=args.workdir).experiment_id
    print(f"MLflow UI: {experiment_url(args.port, experiment_id)}  (Ctrl-C to stop)", flush=True)
    try:
        return serve(server_command(args.workdir, args.port), env=server_env(), grace=20)
    except FileNotFoundError:
        raise UserError("mlflow is not installed (run `make install`)") from None
