"""Quiet libraries: MLflow, Optuna, git and warnings chatter off (DESIGN §6).

Called by `stages.cli.run` before a stage starts and by every spawned logger process before
it imports MLflow (the environment variables only act if set first).
"""

import logging
import os
import warnings


def quiet_libraries() -> None:
    """Silence MLflow, Optuna, git and warnings chatter (DESIGN §6); call before importing them."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # A bar per downloaded file when a worker fetches other hosts' trial files.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="mlflow")

    for name in ("mlflow", "alembic", "optuna", "urllib3", "git"):
        logging.getLogger(name).setLevel(logging.WARNING)
