"""Real services for the tests marked `services`: a throwaway PostgreSQL and an MLflow server
on it, started by the project's own `pipeline.stages.services` (as `make services` does) and
stopped and deleted afterwards. Skipped where PostgreSQL is not installed (CI installs it).

(A module, not a `conftest.py`: a second conftest would shadow `from conftest import TINY`.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.core.errors import UserError
from pipeline.stages import services

PG_MISSING = "PostgreSQL is not installed (Debian: apt-get install postgresql)"


def require_postgres() -> None:
    """Skip the test unless PostgreSQL's programs are here (and, as root, its user)."""
    try:
        services.pg_bin()
    except UserError:
        pytest.skip(PG_MISSING)
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: PostgreSQL cannot be started")


@dataclass
class Running:
    """The started services: the database server, the tracking server and their URLs."""

    postgres: services.Postgres
    mlflow: subprocess.Popen
    artifacts: Path

    @property
    def storage(self) -> str:
        return self.postgres.url("optuna")

    @property
    def tracking_uri(self) -> str:
        return self.mlflow.url


def start(folder: Path, host: str = "127.0.0.1", clients: tuple[str, ...] = (),
          mlflow: bool = True) -> Running:  # fmt: skip
    """Start PostgreSQL (and the MLflow server unless `mlflow=False`) for one test."""
    require_postgres()
    pg = services.start_postgres(host, clients=clients)
    proc = None
    try:
        if mlflow:
            proc = services.start_mlflow(pg, folder / "artifacts", host.split(",")[0],
                                         log=folder / "mlflow.log")  # fmt: skip
    except BaseException:
        services.stop_postgres(pg)
        raise
    return Running(pg, proc, folder / "artifacts")


def stop(running: Running) -> None:
    """Stop both servers and delete the database folder (the artifacts are the test's)."""
    try:
        if running.mlflow is not None:
            services.stop_mlflow(running.mlflow)
    finally:
        services.stop_postgres(running.postgres)
    assert not Path(running.postgres.root).exists()


@pytest.fixture
def postgres(tmp_path):
    """A throwaway PostgreSQL (databases `optuna` and `mlflow`), no MLflow server."""
    running = start(tmp_path, mlflow=False)
    yield running.postgres
    stop(running)


class Hosts:
    """Workers as separate hosts: as root with `ip netns`, each worker runs in its own network
    namespace (and UTS namespace: its own host name), joined to a bridge by a veth pair; the
    services listen only on the bridge's address, so the workers reach them only through
    those links. Elsewhere, plain processes (separate work directories, loopback services).

    Attributes:
        isolated: whether namespaces are used; `mode` says which, for the test's output.
        address: where the services listen.
    """

    def __init__(self, count: int):
        self.count, self.tag = count, os.getpid() % 100000
        self.subnet = f"10.213.{os.getpid() % 250}"
        self.bridge = f"zipbr{self.tag}"
        self.names = [f"zipw{self.tag}-{i}" for i in range(count)]
        self.isolated = os.geteuid() == 0 and shutil.which("ip") and shutil.which("unshare")
        self.why = "not root or no ip/unshare"
        if os.environ.get("ZIP_TEST_HOSTS") == "processes":  # to try the fallback by hand
            self.isolated, self.why = False, "ZIP_TEST_HOSTS=processes"
        if self.isolated:
            try:
                self._make()
            except subprocess.CalledProcessError as err:
                self.close()
                self.isolated, self.why = False, f"ip netns failed: {err.stderr.strip()[:120]}"
        self.address = f"{self.subnet}.1" if self.isolated else "127.0.0.1"
        self.clients = (f"{self.subnet}.0/24",) if self.isolated else ()
        self.mode = (f"{count} network namespaces on bridge {self.bridge} ({self.subnet}.0/24)"
                     if self.isolated else f"{count} plain processes ({self.why})")  # fmt: skip

    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True)

    def _make(self) -> None:
        self._ip("link", "add", self.bridge, "type", "bridge")
        self._ip("addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)
        self._ip("link", "set", self.bridge, "up")
        for i, ns in enumerate(self.names):
            veth = f"zipv{self.tag}-{i}"
            self._ip("netns", "add", ns)
            self._ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            self._ip("link", "set", veth, "master", self.bridge, "up")
            for args in (("addr", "add", f"{self.subnet}.{i + 2}/24", "dev", "eth0"),
                         ("link", "set", "eth0", "up"), ("link", "set", "lo", "up")):  # fmt: skip
                self._ip("netns", "exec", ns, "ip", *args)

    def command(self, i: int, cmd: list[str]) -> list[str]:
        """`cmd` as run on host `i` (every step execs: the process's pid is `cmd`'s own)."""
        if not self.isolated:
            return cmd
        name = f"worker-{i}"
        return ["ip", "netns", "exec", self.names[i], "unshare", "--uts", "--", "sh", "-c",
                'hostname "$0" && exec "$@"', name, *cmd]  # fmt: skip

    def close(self) -> None:
        """Delete the namespaces (their veth ends go with them) and the bridge."""
        for ns in self.names:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)

    def leftovers(self) -> list[str]:
        """Namespaces or links of this object that still exist (none after `close`)."""
        if not shutil.which("ip"):
            return []
        out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        out += subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        return [w for w in out.split() if w.startswith((f"zipw{self.tag}-", self.bridge))]
