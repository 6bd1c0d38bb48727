"""`make services`: a throwaway PostgreSQL 15 and an MLflow server on it, for workers on
several machines (DESIGN §8).

PostgreSQL runs from a fresh temporary folder, private to the user that runs it (mode 0700,
its Unix socket inside), holding two databases, `optuna` (the study, `OPTUNA_STORAGE`) and
`mlflow` (the runs), owned by the role `zip`: not a superuser, allowed into those two
databases only, with a generated password (scram-sha-256). The superuser of the cluster logs
in only through the private socket, as the operating-system user that owns it (peer). So
another local user reaches nothing: not the socket, and over TCP not without the password,
which lives only in `<state>/env` and `<state>/services.json` (mode 0600) and in the
servers' environments, never on a command line (`ps` shows those to everyone).

The addresses to listen on and the networks allowed in are checked as IP addresses and
networks (`ipaddress`) and written into the server's configuration files: no value reaches a
shell. `mlflow server` stores its runs in the `mlflow` database and proxies artifacts into
`<state>/artifacts` (`--artifacts-destination`), so workers need no shared disk: they reach
everything through the two URLs (`MLFLOW_TRACKING_URI`). One server worker, GenAI job
execution off (DESIGN §3). `start` reports a server only once it answers from a socket that
the process it started holds (a busy port is one line, and nothing is left running, Ctrl-C
included).

`initdb` refuses to run as root: as root the server runs as the `postgres` user, its folder
owned by it. `stop` stops both servers and deletes their data; the services are throwaway.
The functions are also the test suite's fixture (`tests/services_setup.py`).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import ipaddress
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.core.errors import UserError
from pipeline.stages.cli import ROOT
from pipeline.stages.ui import group_processes, port_in_use, server_env, stop_group
from pipeline.tracking.values import redact

USER = "zip"  # the database role: owns the two databases, nothing else (password auth)
DATABASES = ("optuna", "mlflow")


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address  # an IPv6 address in a URL


@dataclass
class Postgres:
    """A running throwaway PostgreSQL: where its files are and where it listens."""

    root: str  # private temporary folder: data/, sockets/, server.log
    host: str  # the address(es) it listens on, comma-separated (the first is used in URLs)
    port: int
    password: str  # the role `zip`'s

    def url(self, database: str) -> str:
        """SQLAlchemy URL of `database` (psycopg 3), with the password."""
        address = _url_host(self.host.split(",")[0])
        return f"postgresql+psycopg://{USER}:{self.password}@{address}:{self.port}/{database}"


def listen_addresses(host: str) -> list[str]:
    """The addresses of `host` ('127.0.0.1' or '10.0.0.5,127.0.0.1'), each checked.

    Raises:
        UserError: one of them is not an IP address (one line naming it).
    """
    parts = [part.strip() for part in host.split(",")]
    for part in parts:
        try:
            ipaddress.ip_address(part)
        except ValueError:
            example = "e.g. SERVICES_HOST=10.0.0.5 or 10.0.0.5,127.0.0.1"
            raise UserError(f"services host {host!r}: {part!r} is not an IP address ({example})"
                            ) from None  # fmt: skip
    return parts


def client_network(cidr: str) -> str:
    """`cidr` as a network ('10.0.0.7/24' gives '10.0.0.0/24'; an address is a /32 or /128).

    Raises:
        UserError: not a network (one line naming it).
    """
    try:
        return str(ipaddress.ip_network(cidr.strip(), strict=False))
    except ValueError:
        raise UserError(f"allowed network {cidr!r} is not an IP network "
                        "(e.g. ALLOW=10.0.0.0/24)") from None  # fmt: skip


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
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _refuse_busy(addresses: Sequence[str], port: int, option: str) -> None:
    for address in addresses:
        if port_in_use(port, address):
            raise UserError(f"{_url_host(address)}:{port} is in use (other services running?); "
                            f"choose another {option}")  # fmt: skip


def _owner() -> str:
    """The operating-system user that runs PostgreSQL (`postgres` when we are root)."""
    return "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name


def _as_owner(cmd: list[str]) -> list[str]:
    """`cmd` run as `postgres` when we are root (initdb and postgres refuse root)."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _quoted(value: str) -> str:
    """A string literal for postgresql.conf or SQL (values are checked before; belt and braces)."""
    return "'" + value.replace("'", "''") + "'"


def _hba(addresses: Sequence[str], clients: Sequence[str]) -> str:
    """pg_hba.conf: the superuser through the private socket only (peer); `zip` from loopback,
    the listening addresses and the allowed networks, into its two databases, by password."""
    nets = ["127.0.0.1/32", "::1/128", *(client_network(a) for a in addresses), *clients]
    lines = [f"local all {_owner()} peer"]
    databases = ",".join(DATABASES)
    lines += [f"host {databases} {USER} {net} scram-sha-256" for net in dict.fromkeys(nets)]
    return "\n".join(lines) + "\n"


def start_postgres(host: str = "127.0.0.1", port: int | None = None,
                   clients: tuple[str, ...] = ()) -> Postgres:  # fmt: skip
    """initdb a private temporary folder, start the server, create the role and databases.

    Args:
        host: IP address(es) to listen on, comma-separated (loopback by default).
        port: TCP port; a free one when None.
        clients: extra networks (CIDR) allowed to connect, e.g. workers' namespaces.

    Returns:
        The running server.

    Raises:
        UserError: a bad address or network, a busy port, not installed, or it did not start
            (one line, from its log).
    """
    addresses = listen_addresses(host)
    networks = [client_network(cidr) for cidr in clients]
    port = port or free_port(addresses[0])
    _refuse_busy(addresses, port, "--pg-port")
    binary = pg_bin()
    root = Path(tempfile.mkdtemp(prefix="zip-pg-"))  # mode 0700
    data, sockets, log = root / "data", root / "sockets", root / "server.log"
    sockets.mkdir(mode=0o700)
    if os.geteuid() == 0:  # the server runs as `postgres`: it must own its folder
        for path in (root, sockets):
            shutil.chown(path, "postgres")
    pg = Postgres(str(root), ",".join(addresses), port, secrets.token_urlsafe(24))
    settings = {"listen_addresses": pg.host, "port": str(port),
                "unix_socket_directories": str(sockets),
                "unix_socket_permissions": "0700"}  # fmt: skip
    sql = [f"CREATE ROLE {USER} LOGIN PASSWORD {_quoted(pg.password)};",
           *(f"CREATE DATABASE {name} OWNER {USER};" for name in DATABASES),
           "REVOKE ALL ON DATABASE postgres, template1 FROM PUBLIC;"]  # fmt: skip
    psql = [str(binary / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(sockets),
            "-p", str(port), "-U", _owner(), "-d", "postgres"]  # fmt: skip
    try:
        _run(_as_owner([str(binary / "initdb"), "-D", str(data), "-U", _owner(), "-E", "UTF8",
                        "--auth-local=peer", "--auth-host=scram-sha-256",
                        "--no-instructions"]), "initdb")  # fmt: skip
        with (data / "postgresql.conf").open("a") as conf:  # read by postgres, not by a shell
            conf.writelines(f"{key} = {_quoted(value)}\n" for key, value in settings.items())
        (data / "pg_hba.conf").write_text(_hba(addresses, networks))
        _run(_as_owner([str(binary / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
                        "start"]), f"pg_ctl start on port {port}", log)  # fmt: skip
        _run(_as_owner(psql), "role and database creation", stdin="\n".join(sql))
    except BaseException:
        stop_postgres(pg)
        raise
    return pg


def _run(cmd: list[str], what: str, log: Path | None = None, stdin: str | None = None) -> None:
    """Run `cmd` (secrets only through `stdin`); on failure one line from its output or from
    the server's `log` (read now: it is deleted with the folder)."""
    done = subprocess.run(cmd, capture_output=True, text=True, input=stdin)
    if done.returncode == 0:
        return
    lines = (done.stderr or done.stdout).strip().splitlines() or [f"exit {done.returncode}"]
    if log is not None and log.exists():  # its first complaint ("could not bind ...") says why
        told = [line.split("] ", 1)[-1] for line in log.read_text(errors="replace").splitlines()
                if any(word in line for word in ("could not", "FATAL", "ERROR"))]  # fmt: skip
        lines += told[:1]
    raise UserError(f"PostgreSQL {what} failed: {lines[-1].strip()[:200]}")


def stop_postgres(pg: Postgres) -> None:
    """Stop the server (fast shutdown) and delete its folder."""
    data = Path(pg.root) / "data"
    if (data / "postmaster.pid").exists():
        cmd = [str(pg_bin() / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]
        subprocess.run(_as_owner(cmd), capture_output=True)
    shutil.rmtree(pg.root, ignore_errors=True)


def _listening_inodes(port: int) -> set[str] | None:
    """Inodes of the TCP sockets listening on `port` (Linux /proc); None where unknown."""
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    if not tables[0].exists():
        return None
    inodes = set()
    for table in tables:
        with contextlib.suppress(OSError):
            for line in table.read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])  # state 0A: LISTEN
    return inodes


def group_listens(pgid: int, port: int) -> bool:
    """Whether a process of group `pgid` holds the socket listening on `port` (True where
    /proc cannot tell: then only the port check before the start guards)."""
    inodes = _listening_inodes(port)
    if inodes is None:
        return True
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for pid in group_processes(pgid):
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in wanted:
                        return True
    return False


def start_mlflow(pg: Postgres, artifacts: Path, host: str = "127.0.0.1",
                 port: int | None = None, log: Path | None = None) -> subprocess.Popen:  # fmt: skip
    """`mlflow server` on the `mlflow` database, proxying artifacts into `artifacts`.

    The server leads its own process group (stop it with `stop_mlflow`); the database URL, with
    its password, reaches it through its environment (`MLFLOW_BACKEND_STORE_URI`). Returns once
    its /health answers from a socket that its group holds; whatever stops the wait (an error,
    Ctrl-C) stops the server.

    Raises:
        UserError: the port is busy, another server answers on it, or it exited or did not
            answer within 120 s (the end of its log is shown).
    """
    port = port or free_port(host)
    _refuse_busy([host], port, "--mlflow-port")
    exe = Path(sys.executable).with_name("mlflow")
    cmd = [str(exe) if exe.exists() else "mlflow", "server",
           "--artifacts-destination", str(artifacts),
           "--host", host, "--port", str(port), "--workers", "1"]  # fmt: skip
    env = {**server_env(), "MLFLOW_BACKEND_STORE_URI": pg.url("mlflow")}
    log = log or Path(pg.root) / "mlflow.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    # No signal may land between the fork and the `try` that stops the server: Ctrl-C and
    # SIGTERM are only recorded meanwhile, and delivered again inside it. (Not by blocking
    # them: the server would inherit the mask and ignore the SIGTERM that stops it.)
    pending: list[int] = []
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda signum, _: pending.append(signum))
    try:
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    except BaseException:
        _restore(previous, pending)
        raise
    proc.url = f"http://{_url_host(host)}:{port}"
    try:
        _restore(previous, pending)  # a signal recorded since the fork lands here
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{proc.url}/health", timeout=2) as reply:
                    if reply.status == 200 and group_listens(proc.pid, port):
                        return proc
                    if reply.status == 200:
                        raise UserError(f"{proc.url} is answered by another server, not the "
                                        "one started; choose another --mlflow-port")  # fmt: skip
            time.sleep(0.3)
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise UserError(f"mlflow server did not start on {proc.url}: {tail[0][:200]}")
    except BaseException:
        stop_group(proc, grace=10)
        raise


def _restore(previous: dict, pending: list[int]) -> None:
    """Put back the signal handlers `previous` and deliver the first signal in `pending`."""
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    if pending:
        signal.raise_signal(pending[0])


@dataclass
class Services:
    """What `start` leaves running, saved to `<state>/services.json` for `stop`."""

    postgres: dict
    mlflow_pid: int
    tracking_uri: str
    storage: str


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, readable by its owner only (mode 0600, also when it existed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def start(state: Path, host: str, pg_port: int | None, mlflow_port: int | None,
          clients: tuple[str, ...] = ()) -> Services:  # fmt: skip
    """Start PostgreSQL and the MLflow server in the background; write `<state>/env`.

    Nothing is left running when it fails or is interrupted.

    Raises:
        UserError: they already run (`<state>/services.json` exists), a bad address or
            network, a busy port, or they did not start.
    """
    record = state / "services.json"
    if record.exists():
        raise UserError(f"services already started ({record}); `make services-stop` first")
    mlflow_host = listen_addresses(host)[0]
    for cidr in clients:
        client_network(cidr)
    if mlflow_port:  # before PostgreSQL starts: the common mistake costs nothing
        _refuse_busy([mlflow_host], mlflow_port, "--mlflow-port")
    pg = start_postgres(host, pg_port, clients)
    proc = None
    try:
        state.mkdir(mode=0o700, parents=True, exist_ok=True)
        proc = start_mlflow(pg, state / "artifacts", mlflow_host, mlflow_port,
                            state / "mlflow.log")  # fmt: skip
        services = Services(asdict(pg), proc.pid, proc.url, pg.url("optuna"))
        _write_private(record, json.dumps(asdict(services), indent=2))
        exports = f"OPTUNA_STORAGE={services.storage}\nexport MLFLOW_TRACKING_URI={proc.url}\n"
        _write_private(state / "env", f"export {exports}")
    except BaseException:
        try:
            if proc is not None:
                stop_mlflow(proc)
        finally:
            stop_postgres(pg)
            record.unlink(missing_ok=True)
        raise
    return services


def stop(state: Path) -> bool:
    """Stop what `start` started and delete its data and artifacts; False if nothing ran."""
    record = state / "services.json"
    if not record.exists():
        return False
    services = Services(**json.loads(record.read_text()))
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(services.mlflow_pid, 15)  # the server's whole group (uvicorn and its worker)
    # Waited on by /proc state, not `killpg(pid, 0)`: the server was orphaned when `start`
    # exited, and a dead orphan stays a zombie until the machine's init reaps it.
    for sig, grace in ((None, 20.0), (9, 10.0)):
        if sig is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(services.mlflow_pid, sig)
        deadline = time.monotonic() + grace
        while group_processes(services.mlflow_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not group_processes(services.mlflow_pid):
            break
    stop_postgres(Postgres(**services.postgres))
    shutil.rmtree(state, ignore_errors=True)
    return True


def stop_mlflow(proc: subprocess.Popen) -> None:
    """Stop an `mlflow server` started by `start_mlflow` (its whole process group)."""
    stop_group(proc, grace=10)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m pipeline.services start|stop|env`; see the module docstring."""
    p = argparse.ArgumentParser(description="Throwaway PostgreSQL + MLflow server for workers.")
    p.add_argument("action", choices=("start", "stop", "env"))
    p.add_argument("--state", type=Path, default=ROOT / ".services",
                   help="folder for the record, the env file, artifacts and logs")  # fmt: skip
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="IP address(es) to listen on, comma-separated (default: loopback only)",
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
        previous = signal.signal(signal.SIGTERM, _interrupt)  # cleaned up as Ctrl-C is
        try:
            services = start(args.state, args.host, args.pg_port, args.mlflow_port,
                             tuple(args.allow))  # fmt: skip
        finally:
            signal.signal(signal.SIGTERM, previous)
        print(f"PostgreSQL: {redact(services.storage)}\nMLflow:     {services.tracking_uri}")
        print(f"workers need:  source {env}   (or export the two lines it holds; keep it secret)")
        return 0
    if not env.exists():
        raise UserError(f"{env}: no services started (`make services`)")
    print(env.read_text(), end="")
    return 0
