"""`make ui`: the MLflow UI on the project's store, cheap to open (DESIGN §3, §6).

Starts `mlflow server` bound to 127.0.0.1 with one worker and GenAI job execution off (else
seven job processes start: ~2.5 GB instead of ~0.5 GB), and prints the link that opens the
experiment's 'Model training' runs table with its nested runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.core.errors import UserError
from pipeline.stages import config
from pipeline.stages.cli import parser
from pipeline.tracking.runs import Tracker


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
    ]  # fmt: skip


def server_env() -> dict[str, str]:
    """Environment for the server: no GenAI job processes, no telemetry."""
    return {
        **os.environ,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "GIT_PYTHON_REFRESH": "quiet",
    }


def experiment_url(port: int, experiment_id: str | None, host: str = "127.0.0.1") -> str:
    """The link that opens the runs table (the 3.17 UI otherwise lands on GenAI traces)."""
    base = f"http://{host}:{port}/"
    if experiment_id is None:
        return base
    return f"{base}#/experiments/{experiment_id}?workflowType=machine_learning"


def main(argv: Sequence[str] | None = None) -> int:
    p = parser("Browse the study's MLflow runs.")
    p.add_argument("--port", type=int, default=5000)
    args = p.parse_args(argv)
    params = config.load(args.params)
    db = args.workdir / "mlruns" / "mlflow.db"
    if not db.exists():
        raise UserError(f"{db}: no tracking store yet (run `make data` or `make all` first)")

    experiment_id = Tracker(params.tracking.experiment, root=args.workdir).experiment_id
    print(f"MLflow UI: {experiment_url(args.port, experiment_id)}  (Ctrl-C to stop)", flush=True)
    proc = subprocess.Popen(server_command(args.workdir, args.port), env=server_env())
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(timeout=20)
        return 0
