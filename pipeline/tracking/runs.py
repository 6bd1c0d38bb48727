"""MLflow tracking: the store, the run tree and fast batched logging (DESIGN §3, §6).

Run tree: invocation → stage (generate / sweep / aggregate / fit_counts) → trial → fit.
Every run carries `zip.*` tags tying it to its invocation, its level and a hash of the
params it depends on, so a later stage selects exactly its runs.

Import this module only after `pipeline.stages.cli.quiet_libraries()` has run (stages do).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pipeline.core.errors import UserError, environment_problem
from pipeline.tracking.values import finite, param, redact

TAG = "zip."
_STORE_DIR = "mlruns"


# The experiment kind MLflow's UI keys its layouts on (model training, not GenAI). MLflow
# 3.17.2's UI does not read it yet (the URL's `workflowType` decides; README "Browsing the
# runs"); the tag says what these runs are for the versions that do.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def tracking_uri(root: Path) -> str:
    """`MLFLOW_TRACKING_URI` if set, else the project's SQLite store under `mlruns/`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / _STORE_DIR / 'mlflow.db'}"


def invocation_id() -> str:
    """The id shared by every stage of one `make` call (`ZIP_INVOCATION`), else a fresh one."""
    return os.environ.get("ZIP_INVOCATION") or uuid.uuid4().hex[:12]


class Tracker:
    """One experiment in one MLflow store, with the runs this process opened.

    Args:
        experiment: experiment name (one per study).
        root: project root; the SQLite store and artifacts live under `root/mlruns/`.
    """

    def __init__(self, experiment: str, root: Path):
        from mlflow.tracking import MlflowClient

        uri = tracking_uri(root)
        # A SQLite store keeps its artifacts beside it (else MLflow falls back to ./mlruns).
        local = uri.startswith("sqlite:///")
        store = Path(uri.removeprefix("sqlite:///")).parent
        self.uri = uri
        self.open_runs: set[str] = set()
        try:
            if local:
                store.mkdir(parents=True, exist_ok=True)
            # No `mlflow.set_tracking_uri`: it exports MLFLOW_TRACKING_URI into os.environ, so
            # every later Tracker in the process (another workdir, a test) would log here.
            self.client = MlflowClient(tracking_uri=uri)  # opens (and migrates) the store
            self.experiment_id = self._experiment(experiment, store if local else None)
            if local:  # write-ahead log: several writers log faster (benchmarks/README.md)
                with contextlib.suppress(sqlite3.Error):  # a busy store switches next time
                    # The store's own file (MLFLOW_TRACKING_URI may name any sqlite path).
                    con = sqlite3.connect(uri.removeprefix("sqlite:///"), 2)  # mode persists
                    con.execute("PRAGMA journal_mode=WAL").close()
                    con.close()
        except UserError:
            raise
        except Exception as err:
            problem = environment_problem(err)
            if problem is None:
                text = str(err).strip()
                problem = (text.splitlines()[0] if text else type(err).__name__)[:200]
            raise UserError(
                f"MLflow tracking store {redact(uri)!r} is not usable: {problem}"
            ) from None

    def _experiment(self, name: str, store: Path | None) -> str:
        """The experiment's id: created (artifacts beside a local store) or checked.

        A local store's experiment must keep its artifacts under this store: a work
        directory copied or moved elsewhere would otherwise write its figures into the
        original's folder (MLflow stores the artifact location as an absolute path).
        """
        location = (store / "artifacts").as_uri() if store is not None else None
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            try:
                return self.client.create_experiment(name, artifact_location=location,
                                                     tags=EXPERIMENT_TAGS)  # fmt: skip
            except Exception:  # another process created it first
                exp = self.client.get_experiment_by_name(name)
                if exp is None:
                    raise
        if exp.lifecycle_stage == "deleted":
            raise UserError(f"MLflow experiment {name!r} was deleted in {redact(self.uri)}; "
                            "restore it in the UI, or use another tracking.experiment")  # fmt: skip
        if location is not None and exp.artifact_location.rstrip("/") != location.rstrip("/"):
            raise UserError(
                f"{store / 'mlflow.db'} was made in another folder: its experiment {name!r} "
                f"keeps artifacts at {exp.artifact_location}; this work directory is a copy or "
                "was moved, so delete its mlruns/ to start a fresh store here"
            )
        if any(exp.tags.get(k) != v for k, v in EXPERIMENT_TAGS.items()):  # an older store
            for key, value in EXPERIMENT_TAGS.items():
                self.client.set_experiment_tag(exp.experiment_id, key, value)
        return exp.experiment_id

    # -- runs -------------------------------------------------------------------------------
    def start(
        self,
        name: str,
        level: str,
        *,
        parent: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """Create a RUNNING run under `parent`; returns its id."""
        all_tags = {
            f"{TAG}level": level,
            f"{TAG}host": socket.gethostname(),
            f"{TAG}pid": str(os.getpid()),
            **{
                k if k.startswith(("mlflow.", TAG)) else TAG + k: str(v)
                for k, v in (tags or {}).items()
            },
        }
        if parent:
            all_tags["mlflow.parentRunId"] = parent
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        self.open_runs.add(run.info.run_id)
        return run.info.run_id

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        """Terminate a run (FINISHED, FAILED or KILLED)."""
        self.client.set_terminated(run_id, status=status)
        self.open_runs.discard(run_id)

    def end_all(self, status: str) -> None:
        """Terminate every run this process still has open (on interrupt or failure)."""
        for run_id in sorted(self.open_runs):
            try:
                self.client.set_terminated(run_id, status=status)
            except Exception:  # best effort while shutting down
                pass
        self.open_runs.clear()

    def invocation(self, params_hash: str) -> str:
        """The invocation run of this `make` call: found by tag, or created."""
        inv = invocation_id()
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{TAG}invocation` = '{inv}' and tags.`{TAG}level` = 'invocation'",
            max_results=1,
        )
        if found:
            return found[0].info.run_id
        run_id = self.start(
            f"invocation-{inv}", "invocation", tags={"invocation": inv, "params_hash": params_hash}
        )
        # An invocation spans several processes; it is left FINISHED and its stages nest in it.
        self.end(run_id)
        return run_id

    @contextlib.contextmanager
    def stage_run(self, stage: str, params_hash: str, invocation_hash: str):
        """A stage's run under this invocation: FINISHED at the end, KILLED on Ctrl-C/SIGTERM,
        FAILED on any other error (every run this process left open is closed the same way).

        Args:
            stage: the stage's name (run name and `zip.stage` tag).
            params_hash: hash of the blocks the stage reads (`zip.params_hash`).
            invocation_hash: hash of all params, recorded on a new invocation run.

        Yields:
            The stage run's id.
        """
        try:
            self.close_orphans()
            parent = self.invocation(invocation_hash)
            invocation = self.client.get_run(parent).data.tags.get(f"{TAG}invocation", "")
            run_id = self.start(
                stage,
                "stage",
                parent=parent,
                tags={"stage": stage, "params_hash": params_hash, "invocation": invocation},
            )
            yield run_id
        except KeyboardInterrupt:
            self.end_all("KILLED")
            raise
        except BaseException:
            self.end_all("FAILED")
            raise
        self.end(run_id)

    def close_orphans(self) -> int:
        """Mark RUNNING runs of dead processes on this host as FAILED (after a SIGKILL)."""
        host = socket.gethostname()
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"attributes.status = 'RUNNING' and tags.`{TAG}host` = '{host}'",
            max_results=50000,
        )
        closed = 0
        for run in runs:
            pid = int(run.data.tags.get(f"{TAG}pid", "0") or 0)
            if pid and pid != os.getpid() and not alive(pid):
                self.client.set_terminated(run.info.run_id, status="FAILED")
                closed += 1
        return closed

    def supersede(self, filter_string: str) -> int:
        """End FINISHED runs matching `filter_string` as KILLED, tagged `zip.superseded`.

        For the fit runs of a trial that did not complete (interrupted, killed): the report
        leaves them out, so the UI must not show them as results. Returns how many.
        """
        from mlflow.exceptions import MlflowException

        runs = self.search(f"{filter_string} and attributes.status = 'FINISHED'")
        marked = 0
        for run in runs:
            run_id = run.info.run_id
            try:
                self.client.set_tag(run_id, f"{TAG}superseded", "true")
            except MlflowException:
                # Workers on other hosts supersede the same trial's runs as they start: on
                # PostgreSQL the second INSERT of the tag is a unique violation (seen in CI).
                # Another worker marking it first is success; anything else is not.
                if self.client.get_run(run_id).data.tags.get(f"{TAG}superseded") != "true":
                    raise
                continue
            self.client.set_terminated(run_id, status="KILLED")
            marked += 1
        return marked

    # -- logging ----------------------------------------------------------------------------
    def log(
        self,
        run_id: str,
        *,
        params: Mapping[str, object] | None = None,
        metrics: Mapping[str, float] | None = None,
        histories: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Log params, final metrics, metric histories and tags in one `log_batch` call."""
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        metric_list = [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items() if finite(v)]
        for key, (steps, values) in (histories or {}).items():
            metric_list.extend(
                Metric(key, float(v), now, int(s)) for s, v in zip(steps, values) if finite(v)
            )
        self.client.log_batch(
            run_id,
            metrics=metric_list,
            params=[Param(k, param(v)) for k, v in (params or {}).items()],
            tags=[
                RunTag(k if k.startswith(("mlflow.", TAG)) else TAG + k, str(v))
                for k, v in (tags or {}).items()
            ],
            synchronous=True,
        )

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def log_figure(self, run_id: str, fig, name: str) -> None:
        self.client.log_figure(run_id, fig, name)

    def log_text(self, run_id: str, text: str, name: str) -> None:
        """Log `text` as the artifact file `name` (no temp file of ours to clean up)."""
        self.client.log_text(run_id, text, name)

    def search(self, filter_string: str, max_results: int = 100000) -> list:
        """All runs of the experiment matching `filter_string` (pages through the results)."""
        runs, token = [], None
        while True:
            page = self.client.search_runs(
                [self.experiment_id],
                filter_string=filter_string,
                max_results=min(max_results, 50000),
                page_token=token,
            )
            runs.extend(page)
            token = page.token
            if not token or len(runs) >= max_results:
                return runs[:max_results]


def alive(pid: int) -> bool:
    """Whether process `pid` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
