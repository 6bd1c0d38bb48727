"""`make services`: a throwaway PostgreSQL 15 and an MLflow server on it, for workers on
several machines (DESIGN §8).

PostgreSQL runs from a fresh temporary directory (`initdb -A trust`: no password, so it listens
only on the addresses given, loopback by default), holding two databases: `optuna` (the study,
`OPTUNA_STORAGE`) and `mlflow` (the runs). `mlflow server` stores its runs there and proxies
artifacts into `<state>/artifacts` (`--artifacts-destination`), so workers need no shared
disk: they reach everything through the two URLs (`MLFLOW_TRACKING_URI`). One server worker,
GenAI job execution off (DESIGN §3).

`initdb` refuses to run as root: as root the server runs as the `postgres` user, its directory
owned by it. `stop` stops both servers and deletes their data; the services are throwaway.
The functions are also the test suite's fixture (`tests/services_setup.py`).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.core.errors import UserError
from pipeline.stages.cli import ROOT
from pipeline.stages.ui import server_env, stop_group

USER = "zip"  # the database role (trust authentication, no password)
DATABASES = ("optuna", "mlflow")


@dataclass
class Postgres:
    """A running throwaway PostgreSQL: where its files are and where it listens."""

    root: str  # temporary folder: data/, sockets/, server.log
    host: str  # the address(es) it listens on, comma-separated (the first is used in URLs)
    port: int

    def url(self, database: str) -> str:
        """SQLAlchemy URL of `database` (psycopg 3)."""
        return f"postgresql+psycopg://{USER}@{self.host.split(',')[0]}:{self.port}/{database}"


def pg_bin() -> Path:
    """PostgreSQL's programs: `$PG_BIN`, else Debian's newest `/usr/lib/postgresql/*/bin`,
    else the folder of `initdb` on PATH.

    Raises:
        UserError: PostgreSQL is not installed.
    """
    found = os.environ.get("PG_BIN") or next(
        iter(sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)), None
    )
    if found is None and shutil.which("initdb"):
        found = str(Path(shutil.which("initdb")).parent)
    if found is None or not (Path(found) / "initdb").exists():
        raise UserError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    return Path(found)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on at `host` now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _as_owner(cmd: list[str]) -> list[str]:
    """`cmd` run as `postgres` when we are root (initdb and postgres refuse root)."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def start_postgres(host: str = "127.0.0.1", port: int | None = None,
                   clients: tuple[str, ...] = ()) -> Postgres:  # fmt: skip
    """initdb a temporary folder, start the server, create the databases.

    Args:
        host: address(es) to listen on, comma-separated (never '*' by default).
        port: TCP port; a free one when None.
        clients: extra networks (CIDR) allowed to connect, e.g. workers' namespaces.

    Returns:
        The running server.

    Raises:
        UserError: not installed, or it did not start (one line; its log is kept).
    """
    binary = pg_bin()
    root = Path(tempfile.mkdtemp(prefix="zip-pg-"))
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:  # the server runs as `postgres`: it must own (and reach) its folder
        os.chmod(root, 0o755)
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    pg = Postgres(str(root), host, port or free_port(host.split(",")[0]))
    steps = [
        [str(binary / "initdb"), "-D", str(data), "-A", "trust", "-U", USER, "-E", "UTF8",
         "--no-instructions"],
        [str(binary / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60",
         "-o", f"-p {pg.port} -k {sockets} -c listen_addresses='{host}'", "start"],
    ]  # fmt: skip
    try:
        _run(_as_owner(steps[0]), "initdb")
        with (data / "pg_hba.conf").open("a") as hba:  # trust is for these networks only
            hba.writelines(f"host all all {cidr} trust\n" for cidr in clients)
        _run(_as_owner(steps[1]), "pg_ctl start")
        for name in DATABASES:
            _run([str(binary / "createdb"), "-h", str(sockets), "-p", str(pg.port), "-U", USER,
                  name], "createdb")  # fmt: skip
    except BaseException:
        stop_postgres(pg)
        raise
    return pg


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        text = (done.stderr or done.stdout).strip().splitlines() or [f"exit {done.returncode}"]
        raise UserError(f"PostgreSQL {what} failed: {text[-1][:200]}")


def stop_postgres(pg: Postgres) -> None:
    """Stop the server (fast shutdown) and delete its folder."""
    data = Path(pg.root) / "data"
    if (data / "postmaster.pid").exists():
        cmd = [str(pg_bin() / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]
        subprocess.run(_as_owner(cmd), capture_output=True)
    shutil.rmtree(pg.root, ignore_errors=True)


def start_mlflow(pg: Postgres, artifacts: Path, host: str = "127.0.0.1",
                 port: int | None = None, log: Path | None = None) -> subprocess.Popen:  # fmt: skip
    """`mlflow server` on the `mlflow` database, proxying artifacts into `artifacts`.

    The server leads its own process group (stop it with `stop_mlflow`). Returns once its
    /health answers.

    Raises:
        UserError: it exited or did not answer within 120 s (the end of its log is shown).
    """
    port = port or free_port(host)
    exe = Path(sys.executable).with_name("mlflow")
    cmd = [str(exe) if exe.exists() else "mlflow", "server",
           "--backend-store-uri", pg.url("mlflow"), "--artifacts-destination", str(artifacts),
           "--host", host, "--port", str(port), "--workers", "1"]  # fmt: skip
    log = log or Path(pg.root) / "mlflow.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env=server_env(), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    proc.url = f"http://{host}:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{proc.url}/health", timeout=2) as reply:
                if reply.status == 200:
                    return proc
        time.sleep(0.3)
    stop_group(proc)
    tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
    raise UserError(f"mlflow server did not start on {proc.url}: {tail[0][:200]}")


@dataclass
class Services:
    """What `start` leaves running, saved to `<state>/services.json` for `stop`."""

    postgres: dict
    mlflow_pid: int
    tracking_uri: str
    storage: str


def start(state: Path, host: str, pg_port: int | None, mlflow_port: int | None,
          clients: tuple[str, ...] = ()) -> Services:  # fmt: skip
    """Start PostgreSQL and the MLflow server in the background; write `<state>/env`.

    Raises:
        UserError: they already run (`<state>/services.json` exists) or did not start.
    """
    record = state / "services.json"
    if record.exists():
        raise UserError(f"services already started ({record}); `make services-stop` first")
    state.mkdir(parents=True, exist_ok=True)
    pg = start_postgres(host, pg_port, clients)
    try:
        proc = start_mlflow(pg, state / "artifacts", host.split(",")[0], mlflow_port,
                            state / "mlflow.log")  # fmt: skip
    except BaseException:
        stop_postgres(pg)
        raise
    services = Services(asdict(pg), proc.pid, proc.url, pg.url("optuna"))
    record.write_text(json.dumps(asdict(services), indent=2))
    (state / "env").write_text(f"export OPTUNA_STORAGE={services.storage}\n"
                               f"export MLFLOW_TRACKING_URI={services.tracking_uri}\n")  # fmt: skip
    return services


def stop(state: Path) -> bool:
    """Stop what `start` started and delete its data and artifacts; False if nothing ran."""
    record = state / "services.json"
    if not record.exists():
        return False
    services = Services(**json.loads(record.read_text()))
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(services.mlflow_pid, 15)  # the server's whole group (uvicorn and its worker)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.killpg(services.mlflow_pid, 0)
        except (ProcessLookupError, PermissionError):
            break
        time.sleep(0.1)
    else:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(services.mlflow_pid, 9)
    stop_postgres(Postgres(**services.postgres))
    shutil.rmtree(state, ignore_errors=True)
    return True


def stop_mlflow(proc: subprocess.Popen) -> None:
    """Stop an `mlflow server` started by `start_mlflow` (its whole process group)."""
    stop_group(proc, grace=10)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m pipeline.services start|stop|env`; see the module docstring."""
    p = argparse.ArgumentParser(description="Throwaway PostgreSQL + MLflow server for workers.")
    p.add_argument("action", choices=("start", "stop", "env"))
    p.add_argument("--state", type=Path, default=ROOT / ".services",
                   help="folder for the record, the env file, artifacts and logs")  # fmt: skip
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address(es) to listen on, comma-separated (default: loopback only)",
    )
    p.add_argument("--pg-port", type=int, default=5433)
    p.add_argument("--mlflow-port", type=int, default=5001)
    p.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="CIDR",
        help="a network whose workers may connect (repeatable)",
    )
    args = p.parse_args(argv)
    env = args.state / "env"
    if args.action == "stop":
        print("services stopped, their data deleted" if stop(args.state) else "no services ran")
        return 0
    if args.action == "start":
        services = start(args.state, args.host, args.pg_port, args.mlflow_port, tuple(args.allow))
        print(f"PostgreSQL: {services.storage}\nMLflow:     {services.tracking_uri}")
        print(f"workers need:  source {env}   (or export the two lines it holds)")
        return 0
    if not env.exists():
        raise UserError(f"{env}: no services started (`make services`)")
    print(env.read_text(), end="")
    return 0
