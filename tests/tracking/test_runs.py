"""The MLflow run tree on a SQLite store in `tmp_path`: experiment, runs, stage runs, orphans,
batched logging, paging; `thin` and `flatten`."""

from __future__ import annotations

import math
import os
import socket

import numpy as np
import pytest
from tracking_setup import EXPERIMENT, fresh_store

from pipeline.core.errors import UserError
from pipeline.tracking.runs import (
    Tracker,
    invocation_id,
    tracking_uri,
)

DEAD_PID = 2**22 + 12345  # above Linux's largest pid_max: no such process


@pytest.fixture
def workdir(isolated_mlflow, tmp_path, pytestconfig, tmp_path_factory):
    return fresh_store(tmp_path, pytestconfig, tmp_path_factory)


@pytest.fixture
def tracker(workdir):
    return Tracker(EXPERIMENT, root=workdir)


def _status(tracker, run_id) -> str:
    return tracker.client.get_run(run_id).info.status


def _history(tracker, run_id, key) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in tracker.client.get_metric_history(run_id, key))


# -- store and experiment ----------------------------------------------------------------------
def test_tracking_uri_is_the_environment_or_the_store_under_root(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(tmp_path) == f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/x.db")
    assert tracking_uri(tmp_path) == "sqlite:////elsewhere/x.db"


def test_invocation_id_is_the_make_call_or_fresh(monkeypatch):
    monkeypatch.setenv("ZIP_INVOCATION", "make-42")
    assert invocation_id() == invocation_id() == "make-42"
    monkeypatch.delenv("ZIP_INVOCATION")
    a, b = invocation_id(), invocation_id()
    assert a != b
    assert len(a) == 12 and set(a) <= set("0123456789abcdef")


def test_tracker_creates_the_experiment_with_artifacts_beside_the_store(workdir, isolated_mlflow):
    tracker = Tracker(EXPERIMENT, root=workdir)
    assert tracker.uri == isolated_mlflow
    exp = tracker.client.get_experiment(tracker.experiment_id)
    assert exp.name == EXPERIMENT and exp.lifecycle_stage == "active"
    assert exp.artifact_location == (workdir / "mlruns" / "artifacts").as_uri()
    # No global tracking URI: a later Tracker elsewhere must not log into this store.
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert Tracker(EXPERIMENT, root=workdir).experiment_id == tracker.experiment_id
    other = Tracker("another", root=workdir)
    assert other.experiment_id != tracker.experiment_id
    assert tracker.client.get_experiment(other.experiment_id).name == "another"


def test_the_experiment_opens_in_the_model_training_layout(workdir):
    """The tag MLflow 3.17's UI reads (DESIGN §8): on a new experiment, and set on an older
    store's experiment that lacks it."""
    tracker = Tracker(EXPERIMENT, root=workdir)
    tags = tracker.client.get_experiment(tracker.experiment_id).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    tracker.client.delete_experiment_tag(tracker.experiment_id, "mlflow.experimentKind")
    again = Tracker(EXPERIMENT, root=workdir)
    tags = again.client.get_experiment(again.experiment_id).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"


def test_tracker_follows_mlflow_tracking_uri(workdir, pytestconfig, tmp_path_factory, monkeypatch):
    elsewhere = fresh_store(tmp_path_factory.mktemp("elsewhere"), pytestconfig, tmp_path_factory)
    uri = f"sqlite:///{elsewhere / 'mlruns' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tracker = Tracker(EXPERIMENT, root=workdir)
    run_id = tracker.start("s", "stage")
    assert tracker.uri == uri
    from mlflow.tracking import MlflowClient

    assert MlflowClient(tracking_uri=uri).get_run(run_id).info.run_name == "s"


def test_a_store_under_another_name_is_switched_to_wal_in_place(tmp_path, monkeypatch):
    """The journal mode is set on the URI's own file: no stray mlflow.db beside it."""
    import sqlite3

    db = tmp_path / "custom.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    Tracker(EXPERIMENT, root=tmp_path)
    assert not (tmp_path / "mlflow.db").exists()
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# -- runs --------------------------------------------------------------------------------------
def test_start_tags_level_host_pid_and_prefixes_tags(tracker):
    parent = tracker.start("parent", "stage")
    tags = {"stage": "sweep", "zip.trial": 3, "mlflow.note.content": "hello"}
    run_id = tracker.start("child", "trial", parent=parent, tags=tags)
    run = tracker.client.get_run(run_id)
    assert run.info.status == "RUNNING" and run.info.run_name == "child"
    assert run.info.experiment_id == tracker.experiment_id
    expected = {
        "zip.level": "trial",
        "zip.host": socket.gethostname(),
        "zip.pid": str(os.getpid()),
        "zip.stage": "sweep",
        "zip.trial": "3",
        "mlflow.note.content": "hello",
        "mlflow.parentRunId": parent,
    }
    assert {k: run.data.tags.get(k) for k in expected} == expected
    assert "mlflow.parentRunId" not in tracker.client.get_run(parent).data.tags
    assert tracker.open_runs == {parent, run_id}


@pytest.mark.parametrize("status", ["FINISHED", "FAILED", "KILLED"])
def test_end_sets_the_status_and_forgets_the_run(tracker, status):
    kept, ended = tracker.start("kept", "fit"), tracker.start("ended", "fit")
    tracker.end(ended, status)
    assert _status(tracker, ended) == status
    assert _status(tracker, kept) == "RUNNING"
    assert tracker.open_runs == {kept}


def test_end_defaults_to_finished(tracker):
    run_id = tracker.start("r", "fit")
    tracker.end(run_id)
    assert _status(tracker, run_id) == "FINISHED"


def test_end_all_closes_every_open_run_and_survives_a_deleted_one(tracker):
    done = tracker.start("done", "fit")
    tracker.end(done)
    open_ids = [tracker.start(f"open-{i}", "fit") for i in range(3)]
    tracker.client.delete_run(open_ids[0])  # set_terminated on it raises: best effort
    tracker.end_all("KILLED")
    assert [_status(tracker, r) for r in open_ids[1:]] == ["KILLED", "KILLED"]
    assert _status(tracker, done) == "FINISHED"
    assert tracker.open_runs == set()


# -- invocation and stage runs -----------------------------------------------------------------
def _level(tracker, level: str) -> list:
    return tracker.search(f"tags.`zip.level` = '{level}'")


def test_invocation_is_reused_within_one_make_call(tracker, monkeypatch):
    monkeypatch.setenv("ZIP_INVOCATION", "inv-a")
    first = tracker.invocation("hash-1")
    assert tracker.invocation("hash-2") == first  # found by tag, keeps its first hash
    run = tracker.client.get_run(first)
    assert run.info.status == "FINISHED" and run.info.run_name == "invocation-inv-a"
    assert run.data.tags["zip.invocation"] == "inv-a"
    assert run.data.tags["zip.params_hash"] == "hash-1"
    assert run.data.tags["zip.level"] == "invocation"
    monkeypatch.setenv("ZIP_INVOCATION", "inv-b")
    second = tracker.invocation("hash-1")
    assert second != first
    assert sorted(r.info.run_id for r in _level(tracker, "invocation")) == sorted([first, second])
    assert tracker.open_runs == set()


def test_without_zip_invocation_each_call_is_its_own_invocation(tracker):
    assert tracker.invocation("h") != tracker.invocation("h")
    assert len(_level(tracker, "invocation")) == 2


def test_stages_of_one_make_call_nest_in_one_invocation(tracker, monkeypatch):
    monkeypatch.setenv("ZIP_INVOCATION", "inv-make")
    ids = {}
    for stage in ("generate", "sweep"):
        with tracker.stage_run(stage, f"stamp-{stage}", "all-params") as run_id:
            assert _status(tracker, run_id) == "RUNNING"
            ids[stage] = run_id
    (invocation,) = _level(tracker, "invocation")
    assert invocation.data.tags["zip.params_hash"] == "all-params"
    for stage, run_id in ids.items():
        run = tracker.client.get_run(run_id)
        assert run.info.status == "FINISHED" and run.info.run_name == stage
        tags = run.data.tags
        assert tags["mlflow.parentRunId"] == invocation.info.run_id
        assert (tags["zip.level"], tags["zip.stage"]) == ("stage", stage)
        assert tags["zip.params_hash"] == f"stamp-{stage}"
        assert tags["zip.invocation"] == "inv-make"
    assert tracker.open_runs == set()


@pytest.mark.parametrize(
    "error, status",
    [(KeyboardInterrupt, "KILLED"), (ValueError, "FAILED"), (SystemExit, "FAILED")],
)
def test_stage_run_closes_every_open_run_on_an_error(tracker, error, status):
    finished = None
    with pytest.raises(error):
        with tracker.stage_run("sweep", "s", "p") as run_id:
            finished = tracker.start("trial-0", "trial", parent=run_id)
            tracker.end(finished)
            child = tracker.start("trial-1", "trial", parent=run_id)
            raise error
    assert _status(tracker, run_id) == status
    assert _status(tracker, child) == status
    assert _status(tracker, finished) == "FINISHED"  # already ended: left alone
    assert tracker.open_runs == set()


def test_stage_run_first_closes_orphans_of_dead_processes(tracker):
    orphan = tracker.start("killed-9", "stage", tags={"pid": DEAD_PID})
    tracker.open_runs.clear()  # as if another process had opened it
    with tracker.stage_run("aggregate", "s", "p"):
        assert _status(tracker, orphan) == "FAILED"


# -- orphans -----------------------------------------------------------------------------------
def test_close_orphans_fails_only_running_runs_of_dead_pids_on_this_host(tracker):
    runs = {
        "dead": tracker.start("dead", "fit", tags={"pid": DEAD_PID}),
        "mine": tracker.start("mine", "fit"),
        "parent_process": tracker.start("pp", "fit", tags={"pid": os.getppid()}),
        "other_host": tracker.start("oh", "fit", tags={"pid": DEAD_PID, "host": "not-this-host"}),
        "no_pid": tracker.start("np", "fit", tags={"pid": ""}),
        "dead_finished": tracker.start("df", "fit", tags={"pid": DEAD_PID}),
    }
    tracker.end(runs["dead_finished"])
    assert tracker.close_orphans() == 1
    status = {name: _status(tracker, run_id) for name, run_id in runs.items()}
    assert status == {"dead": "FAILED", "mine": "RUNNING", "parent_process": "RUNNING",
                      "other_host": "RUNNING", "no_pid": "RUNNING",
                      "dead_finished": "FINISHED"}  # fmt: skip
    assert tracker.close_orphans() == 0


# -- logging -----------------------------------------------------------------------------------
def test_log_sends_params_metrics_histories_and_tags_in_one_batch(tracker, monkeypatch):
    run_id = tracker.start("r", "fit")
    calls = []
    real = tracker.client.log_batch
    monkeypatch.setattr(
        tracker.client, "log_batch", lambda *a, **k: calls.append(k) or real(*a, **k)
    )
    tracker.log(
        run_id,
        params={"lr": 0.1, "optimizer": "adam", "grid": [0.1, 1.0], "steps": 60,
                "note": "x" * 7000},
        metrics={"nll_gap": 1.5e-13, "steps": 60, "converged": np.float32(1.0), "nan": math.nan,
                 "inf": math.inf, "-inf": -math.inf, "none": None, "text": "abc"},
        histories={"nll": (np.array([0, 10, 20, 30]), np.array([2.0, np.nan, 1.5, np.inf]))},
        tags={"state": "complete", "zip.trial": 7, "mlflow.note.content": "n"},
    )  # fmt: skip
    assert len(calls) == 1
    data = tracker.client.get_run(run_id).data
    assert data.params == {"lr": "0.1", "optimizer": "adam", "grid": "[0.1, 1.0]", "steps": "60",
                           "note": "x" * 6000}  # fmt: skip
    assert data.metrics == {"nll_gap": 1.5e-13, "steps": 60.0, "converged": 1.0, "nll": 1.5}
    assert _history(tracker, run_id, "nll") == [(0, 2.0), (20, 1.5)]  # non-finite dropped
    assert _history(tracker, run_id, "steps") == [(0, 60.0)]
    assert data.tags["zip.state"] == "complete"
    assert data.tags["zip.trial"] == "7"
    assert data.tags["mlflow.note.content"] == "n"


def test_log_keeps_a_history_longer_than_one_mlflow_batch(tracker):
    run_id = tracker.start("r", "fit")
    steps = np.arange(0, 12_000, 10)  # 1200 points: MLflow sends 1000 per request
    values = np.exp(-steps / 5000.0)
    tracker.log(run_id, histories={"nll": (steps, values)})
    history = _history(tracker, run_id, "nll")
    assert [s for s, _ in history] == steps.tolist()
    np.testing.assert_allclose([v for _, v in history], values, rtol=1e-15)


def test_log_with_nothing_logs_nothing(tracker):
    run_id = tracker.start("r", "fit")
    tracker.log(run_id)
    data = tracker.client.get_run(run_id).data
    assert data.params == {} and data.metrics == {}


# -- search ------------------------------------------------------------------------------------
def test_search_filters_and_pages_through_every_result(tracker, monkeypatch):
    fits = {tracker.start(f"fit-{i}", "fit") for i in range(5)}
    trial = tracker.start("trial", "trial")
    real = tracker.client.search_runs
    pages = []

    def two_per_page(*args, **kwargs):  # as if the store returned pages of 2
        page = real(*args, **{**kwargs, "max_results": min(2, kwargs["max_results"])})
        pages.append(len(page))
        return page

    monkeypatch.setattr(tracker.client, "search_runs", two_per_page)
    found = tracker.search("tags.`zip.level` = 'fit'")
    assert {r.info.run_id for r in found} == fits and len(found) == 5
    assert pages == [2, 2, 1]
    assert [r.info.run_id for r in tracker.search("attributes.run_name = 'trial'")] == [trial]


def test_search_stops_once_it_has_max_results(tracker):
    for i in range(4):
        tracker.start(f"fit-{i}", "fit")
    assert len(tracker.search("", max_results=3)) == 3
    assert len(tracker.search("")) == 4


def test_a_copied_work_directory_refuses_to_write_into_the_original(workdir, tmp_path):
    """The audit's item 12: the experiment's absolute artifact location made a copy of a
    work directory write its figures into the original."""
    import shutil

    Tracker(EXPERIMENT, root=workdir)
    copy = tmp_path / "copy"
    shutil.copytree(workdir / "mlruns", copy / "mlruns")
    with pytest.raises(UserError, match="was made in another folder.*delete its mlruns/"):
        Tracker(EXPERIMENT, root=copy)


def test_a_deleted_experiment_is_one_line(workdir):
    tracker = Tracker("gone", root=workdir)
    tracker.client.delete_experiment(tracker.experiment_id)
    with pytest.raises(UserError, match="'gone' was deleted"):
        Tracker("gone", root=workdir)


@pytest.mark.parametrize("damage", ["garbage", "under-a-file"])
def test_an_unusable_store_is_one_line(tmp_path, isolated_mlflow, damage):
    if damage == "garbage":
        (tmp_path / "mlruns").mkdir()
        (tmp_path / "mlruns" / "mlflow.db").write_text("not a database")
        root = tmp_path
    else:
        (tmp_path / "afile").write_text("x")
        root = tmp_path / "afile"
    with pytest.raises(UserError, match="is not usable") as info:
        Tracker(EXPERIMENT, root=root)
    assert "\n" not in str(info.value)


def test_search_returns_at_most_max_results(tracker):
    for i in range(5):
        tracker.end(tracker.start(f"r{i}", "fit"))
    assert len(tracker.search("tags.`zip.level` = 'fit'", max_results=3)) == 3
