"""`make dashboard`: optuna-dashboard on the sweep's Optuna storage, bound to 127.0.0.1.

The storage is the one the sweep uses: `OPTUNA_STORAGE`, else `sweep.storage` (or
`tune.storage` with `--tune`), else the journal file `mlruns/optuna.log`. The dashboard runs
until Ctrl-C, SIGTERM or SIGHUP, which stop it with its whole process group
(`pipeline.stages.ui.serve`). A busy port is one line before anything starts.

The launcher does not run optuna-dashboard's own command: that takes the storage URL (with its
password, if any) on its command line, where `ps` shows it to every user, and its `wsgiref`
server prints a line per request whatever `--quiet` says. It serves optuna-dashboard's WSGI app
(`optuna_dashboard.wsgi`) with a threaded `wsgiref` server (gunicorn's control socket is not
wanted here) that logs errors only, the storage passed in the environment.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.core.errors import UserError
from pipeline.stages import config
from pipeline.stages.cli import parser
from pipeline.stages.ui import port_in_use, serve
from pipeline.tracking.values import redact

STORAGE_VARIABLE = "ZIP_DASHBOARD_STORAGE"

# The server process: `python -c SERVER host port`, the storage in $ZIP_DASHBOARD_STORAGE.
SERVER = """
import os, sys
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from optuna_dashboard import wsgi

class Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True

class Quiet(WSGIRequestHandler):
    def log_request(self, code="-", size="-"):
        pass  # no line per request; errors still reach stderr (log_error)

app = wsgi(os.environ["ZIP_DASHBOARD_STORAGE"])
host, port = sys.argv[1], int(sys.argv[2])
try:
    httpd = make_server(host, port, app, server_class=Server, handler_class=Quiet)
except OSError as err:
    sys.exit(f"error: {host}:{port}: {err.strerror}")
httpd.serve_forever()
"""


def storage_location(params: config.Params, workdir: Path, tune: bool = False) -> str:
    """The storage URL or journal file the sweep (or `--tune`) uses."""
    cfg = params.tuned() if tune else params.sweep
    return os.environ.get("OPTUNA_STORAGE") or cfg.storage or str(workdir / "mlruns" / "optuna.log")


def dashboard_command(storage: str, port: int, host: str = "127.0.0.1"):
    """The dashboard server's command line and environment (which alone holds `storage`).

    Returns:
        (argv, env) for `serve`.
    """
    argv = [sys.executable, "-c", SERVER, host, str(port)]
    return argv, {**os.environ, STORAGE_VARIABLE: storage}


def main(argv: Sequence[str] | None = None) -> int:
    """Start the dashboard and print its URL; returns its exit status."""
    p = parser("Browse the Optuna studies of the sweep in optuna-dashboard.")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--tune", action="store_true", help="the storage of `make tune`")
    args = p.parse_args(argv)
    params = config.load(args.params)
    storage = storage_location(params, args.workdir.resolve(), args.tune)
    if "://" not in storage and not Path(storage).exists():
        raise UserError(f"{storage}: no Optuna storage yet (run `make sweep` or `make tune`)")
    if importlib.util.find_spec("optuna_dashboard") is None:
        raise UserError("optuna-dashboard is not installed (run `make install`)")
    if port_in_use(args.port):
        raise UserError(
            f"127.0.0.1:{args.port} is in use (another `make dashboard`?); choose another port, "
            f"e.g. `make dashboard DASHBOARD_PORT={args.port + 1}`"
        )
    cmd, env = dashboard_command(storage, args.port)
    url = f"http://127.0.0.1:{args.port}/"
    print(f"optuna-dashboard on {redact(storage)}: {url}  (Ctrl-C stops it)", flush=True)
    return serve(cmd, env=env)  # owns the server: SIGTERM/SIGHUP/Ctrl-C stop its process group
