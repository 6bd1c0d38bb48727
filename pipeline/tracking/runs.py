"""MLflow tracking: the store, the run tree and fast batched logging (DESIGN §3, §6).

Run tree: invocation → stage (generate / sweep / aggregate) → trial → fit. Every run carries
`zip.*` tags tying it to its invocation, its level and a hash of the params it depends on, so
a later stage selects exactly its runs, and MLflow's standard source tags (the git commit and
the entry module). The invocation run summarises its stages (`Tracker.stage_run`). Users'
`fit_counts` analyses go to their own experiment (`Tracker.fit_counts`), one top-level run each.

Dates: MLflow's runs table pages the newest runs (100 a page, by start time) and fetches only
the direct parents of those it shows, so a fit whose trial is fetched but whose stage is not
leaves the trial at the top level. A run nested below a stage is therefore dated just before
its parent (`child_time`): sorted newest first, every subtree then follows its root, and a
page never holds a run whose grandparent it lacks. Its end time stays the real one.

Import this module only after `pipeline.stages.cli.quiet_libraries()` has run (stages do).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
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


PROJECT = Path(__file__).resolve().parents[2]  # the checkout holding `pipeline/` (and `.git`)


@functools.cache
def git_commit(root: Path = PROJECT) -> str:
    """The checkout's commit, read from `.git` (a worktree's `gitdir:` file followed, packed
    refs read), else from `git rev-parse HEAD`; "unknown" when neither says (no checkout, no
    git): tracking never fails over it."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        git = root / ".git"
        if git.is_file():  # a worktree or submodule: "gitdir: <path>"
            git = (root / git.read_text().split(":", 1)[1].strip()).resolve()
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return _commit(head)
        ref = head.split(":", 1)[1].strip()
        common = git
        if (git / "commondir").is_file():  # a worktree shares refs with its main checkout
            common = (git / (git / "commondir").read_text().strip()).resolve()
        for folder in (git, common):
            if (folder / ref).is_file():
                return _commit((folder / ref).read_text())
        for line in (common / "packed-refs").read_text().splitlines():
            if line.endswith(f" {ref}"):
                return _commit(line.split(" ", 1)[0])
    with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError):
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True)  # fmt: skip
        return _commit(out.stdout)
    return "unknown"


def _commit(text: str) -> str:
    """A 40-hex commit id from `text`, or ValueError."""
    text = text.strip()
    if len(text) != 40 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(text)
    return text


def source_name() -> str:
    """The entry module (`pipeline.sweep` under `python -m`), else the script's path."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name not in ("__main__", "__mp_main__"):
        return spec.name
    return Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"


def source_tags() -> dict[str, str]:
    """MLflow's standard source tags, shown on every run page."""
    return {"mlflow.source.git.commit": git_commit(), "mlflow.source.name": source_name(),
            "mlflow.source.type": "LOCAL"}  # fmt: skip


def child_time(parent_start: int, rank: int = 0) -> int:
    """The start time (ms) of a run below a stage: just before its parent's (module docstring).

    Args:
        parent_start: the parent run's start time in ms.
        rank: the child's place among its siblings that have children of their own (a trial's
            number): `2 * rank + 1` ms before the parent, so that the grandchildren, dated 1 ms
            before their own parent, sit between it and the next sibling.
    """
    return parent_start - 2 * rank - 1


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
        self.experiment = experiment
        self.open_runs: set[str] = set()
        self.invocation_run: str | None = None  # set by `stage_run`
        self.summary: dict[str, float] = {}  # the stage's numbers for its invocation run
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

    @classmethod
    def fit_counts(cls, tracking, root: Path) -> Tracker:
        """The experiment of users' `fit_counts` analyses (`tracking.fit_counts_experiment`).

        Its runs stand at the top level, one per analysis: `start(name, "analysis", tags=...)`
        with no parent (an invocation shell per call would double the table's rows).

        Args:
            tracking: `params.tracking` (`config.TrackingConfig`).
            root: the work directory holding `mlruns/`.
        """
        return cls(tracking.fit_counts_experiment, root=root)

    # -- runs -------------------------------------------------------------------------------
    def start(
        self,
        name: str,
        level: str,
        *,
        parent: str | None = None,
        tags: Mapping[str, str] | None = None,
        start_time: int | None = None,
    ) -> str:
        """Create a RUNNING run under `parent`; returns its id.

        Args:
            name: the run's name; `level` its `zip.level` tag.
            parent: the parent run's id, or None for a top-level run.
            tags: more tags (`zip.` prefixed unless they start with `mlflow.` or `zip.`).
            start_time: ms since the epoch (`child_time`); None: now.
        """
        all_tags = {
            **source_tags(),
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
        run = self.client.create_run(self.experiment_id, start_time=start_time, run_name=name,
                                     tags=all_tags)  # fmt: skip
        self.open_runs.add(run.info.run_id)
        return run.info.run_id

    @functools.cache  # noqa: B019 (a Tracker lives as long as its process)
    def start_time(self, run_id: str) -> int:
        """A run's start time in ms (fixed once created, so asked once)."""
        return int(self.client.get_run(run_id).info.start_time)

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
        self.log(run_id, params={"params_hash": params_hash, "invocation": inv,
                                 "git_commit": git_commit()})  # fmt: skip
        # An invocation spans several processes; it is left FINISHED and its stages nest in it.
        self.end(run_id)
        return run_id

    def summarise(self, stage: str, run_id: str, seconds: float) -> None:
        """Record a finished stage on this process's invocation run (`stage_run` sets it):
        tag `stage.<stage>` = the stage run's id, metrics `<stage>.seconds` and
        `<stage>.<key>` for each number a stage put in `self.summary` (the sweep: `fits`)."""
        if self.invocation_run is None:
            return
        metrics = {"seconds": seconds, **self.summary}
        self.log(self.invocation_run, metrics={f"{stage}.{k}": v for k, v in metrics.items()},
                 tags={f"stage.{stage}": run_id})  # fmt: skip

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
            self.invocation_run = parent
            self.summary = {}
            invocation = self.client.get_run(parent).data.tags.get(f"{TAG}invocation", "")
            run_id = self.start(
                stage,
                "stage",
                parent=parent,
                tags={"stage": stage, "params_hash": params_hash, "invocation": invocation},
            )
            began = time.perf_counter()
            yield run_id
        except KeyboardInterrupt:
            self.end_all("KILLED")
            raise
        except BaseException:
            self.end_all("FAILED")
            raise
        self.summarise(stage, run_id, time.perf_counter() - began)
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

    def log_inputs(self, run_id: str, paths: Mapping[str, Path], context: str = "input") -> None:
        """Record the data files a stage read as the run's MLflow dataset inputs.

        Args:
            run_id: the run.
            paths: dataset name -> file (absent files are skipped); each is recorded with
                its content's digest (`file_digest`) and its path as a local source.
            context: the `mlflow.data.context` tag of each input.
        """
        from mlflow.entities import Dataset, DatasetInput, InputTag

        inputs = [
            DatasetInput(
                Dataset(
                    name=name,
                    digest=file_digest(path),
                    source_type="local",
                    source=json.dumps({"uri": path.resolve().as_uri()}),
                ),
                tags=[InputTag("mlflow.data.context", context)],
            )  # fmt: skip
            for name, path in paths.items()
            if path.is_file()
        ]
        if inputs:
            self.client.log_inputs(run_id, datasets=inputs)

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


def file_digest(path: Path) -> str:
    """The first 16 hex digits of a file's SHA-256 (MLflow keeps a dataset digest short)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def alive(pid: int) -> bool:
    """Whether process `pid` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
