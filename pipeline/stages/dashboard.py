"""`make dashboard`: optuna-dashboard on the sweep's Optuna storage, bound to 127.0.0.1.

The storage is the one the sweep uses: `OPTUNA_STORAGE`, else `sweep.storage` (or
`tune.storage` with `--tune`), else the journal file `mlruns/optuna.log`. The dashboard runs
with the `wsgiref` server (gunicorn's control socket is not wanted here) until Ctrl-C,
SIGTERM or SIGHUP, which stop it with its whole process group (`pipeline.stages.ui.serve`).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.core.errors import UserError
from pipeline.stages import config
from pipeline.stages.cli import parser
from pipeline.stages.ui import serve


def storage_location(params: config.Params, workdir: Path, tune: bool = False) -> str:
    """The storage URL or journal file the sweep (or `--tune`) uses."""
    cfg = params.tuned() if tune else params.sweep
    return os.environ.get("OPTUNA_STORAGE") or cfg.storage or str(workdir / "mlruns" / "optuna.log")


def dashboard_command(storage: str, port: int, host: str = "127.0.0.1") -> list[str]:
    """The `optuna-dashboard` command line."""
    exe = Path(sys.executable).with_name("optuna-dashboard")
    program = str(exe) if exe.exists() else (shutil.which("optuna-dashboard") or "optuna-dashboard")
    return [program, storage, "--host", host, "--port", str(port), "--server", "wsgiref"]


def main(argv: Sequence[str] | None = None) -> int:
    """Start optuna-dashboard and print its URL; returns its exit status."""
    p = parser("Browse the Optuna studies of the sweep in optuna-dashboard.")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--tune", action="store_true", help="the storage of `make tune`")
    args = p.parse_args(argv)
    params = config.load(args.params)
    storage = storage_location(params, args.workdir.resolve(), args.tune)
    if "://" not in storage and not Path(storage).exists():
        raise UserError(f"{storage}: no Optuna storage yet (run `make sweep` or `make tune`)")
    cmd = dashboard_command(storage, args.port)
    print(f"optuna-dashboard on {storage}: http://127.0.0.1:{args.port}/  (Ctrl-C stops it)",
          flush=True)  # fmt: skip
    try:
        return serve(cmd)  # owns the server: SIGTERM/SIGHUP/Ctrl-C stop its process group
    except FileNotFoundError:
        raise UserError("optuna-dashboard is not installed (run `make install`)") from None
