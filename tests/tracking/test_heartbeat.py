"""Dead workers recovered without their host (DESIGN §8): on a database, a live worker fails a
trial whose heartbeat stopped, queues its grid point again and closes the dead worker's MLflow
runs; the journal file keeps the host/pid check. Also the storage's guards: heartbeat
settings, params of the study, an unreachable tracking server."""

from __future__ import annotations

import socket
import time

import optuna
import pytest
from optuna.trial import TrialState
from services_setup import postgres  # noqa: F401 (the fixture)
from tracking_setup import EXPERIMENT, fresh_store

from pipeline.core.errors import UserError
from pipeline.stages import config
from pipeline.tracking.heartbeat import Heartbeat, close_dead, fail_stale_trials
from pipeline.tracking.runs import Tracker
from pipeline.tracking.storage import (
    check_params,
    check_server,
    heartbeat_settings,
    open_storage,
    record_params,
)
from pipeline.tracking.study import DONE, enqueue_grid, load_study, lr_range, next_trial, run_trials

CFG = config.SweepConfig(lr_grid=(0.1, 0.3, 1.0), optimizers=("adam",))
DEAD_PID = 2**22 + 12345  # above Linux's largest pid_max: no such process


class FakeTracker:
    """Records what a recovering worker asks MLflow to close."""

    def __init__(self):
        self.searched, self.superseded = [], []

    def search(self, filter_string):
        self.searched.append(filter_string)
        return []

    def supersede(self, filter_string):
        self.superseded.append(filter_string)
        return 0


def _objective(trial) -> float:
    return trial.suggest_float("lr", *lr_range(CFG), log=True)


@pytest.mark.services
def test_a_live_worker_retries_a_dead_workers_trial_by_heartbeat(postgres, tmp_path, monkeypatch):  # noqa: F811
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    monkeypatch.setenv("ZIP_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("ZIP_GRACE_PERIOD", "2")
    url = postgres.url("optuna")
    dead, live = Heartbeat(FakeTracker()), Heartbeat(FakeTracker())
    dead.attach(open_storage(url, tmp_path, "http://unused", dead.on_stale)[0])
    live.attach(open_storage(url, tmp_path, "http://unused", live.on_stale)[0])
    study_dead = load_study(dead.storage, "grid", CFG, 0, create=True)
    enqueue_grid(study_dead, CFG)
    trial = next_trial(study_dead, CFG)
    with dead.beating(trial):  # it beat, recorded itself on another host, then died
        trial.set_user_attr("host", "elsewhere")
        trial.set_user_attr("pid", DEAD_PID)
    study = load_study(live.storage, "grid", CFG, 0)
    live.recover(study)
    assert live.recovered == 0  # still within its grace period
    time.sleep(3.5)
    assert run_trials(study, CFG, _objective, heartbeat=live) == 3
    assert live.recovered == 1
    trial_runs, worker_runs = live.tracker.searched
    assert f"tags.`zip.study` = 'grid' and tags.`zip.trial` = '{trial.number}'" in trial_runs
    assert f"tags.`zip.host` = 'elsewhere' and tags.`zip.pid` = '{DEAD_PID}'" in worker_runs
    assert f"tags.`zip.trial` = '{trial.number}'" in live.tracker.superseded[0]
    states = {t.number: t.state for t in study.get_trials()}
    assert states[trial.number] == TrialState.FAIL
    done = sorted(t.params["lr"] for t in study.get_trials(states=DONE))
    assert done == [0.1, 0.3, 1.0]
    retry = [t for t in study.get_trials(states=DONE) if "retry_of" in t.user_attrs]
    assert [t.user_attrs["retry_of"] for t in retry] == [trial.number]


@pytest.mark.services
def test_a_worker_with_other_params_is_refused(postgres, tmp_path):  # noqa: F811
    storage, _ = open_storage(postgres.url("optuna"), tmp_path, "http://unused")
    study = load_study(storage, "zip-lr-aaaaaaaa", CFG, 0, create=True)
    record_params(study, "aaaaaaaa11111111")
    check_params(storage, "zip-lr-aaaaaaaa", "aaaaaaaa11111111")  # the same params: joins
    check_params(storage, "zip-lr-bbbbbbbb", "bbbbbbbb22222222")  # nothing live there yet
    enqueue_grid(study, CFG)
    with pytest.raises(
        UserError, match=r"zip-lr-aaaaaaaa .*\(hash aaaaaaaa; this worker's bbbbbbbb\)"
    ):
        check_params(storage, "zip-lr-bbbbbbbb", "bbbbbbbb22222222")
    with pytest.raises(UserError, match="same params file"):  # the same name, another hash
        check_params(storage, "zip-lr-aaaaaaaa", "aaaaaaaa33333333")


def test_on_the_journal_file_the_host_pid_check_stays_and_nobody_waits(tmp_path):
    storage, _ = open_storage(None, tmp_path, "sqlite:///unused.db")
    heartbeat = Heartbeat(FakeTracker()).attach(storage)
    assert not heartbeat.active
    study = load_study(storage, "grid", CFG, 0, create=True)
    enqueue_grid(study, CFG)
    trial = next_trial(study, CFG)
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", DEAD_PID)
    heartbeat.recover(study)  # no heartbeat on a journal file: nothing happens here
    assert study.get_trials()[trial.number].state == TrialState.RUNNING
    assert run_trials(study, CFG, _objective, heartbeat=heartbeat) == 2  # returns, no wait
    record_params(study, "1234")
    with pytest.raises(UserError, match="other params"):
        check_params(storage, "grid", "5678")


def test_tracker_closes_a_dead_workers_runs(isolated_mlflow, tmp_path, pytestconfig,
                                            tmp_path_factory):  # fmt: skip
    tracker = Tracker(EXPERIMENT, root=fresh_store(tmp_path, pytestconfig, tmp_path_factory))
    stage = tracker.start("sweep", "stage", tags={"host": "h1", "pid": DEAD_PID})
    tags = {"study": "s", "trial": 3, "host": "h1", "pid": DEAD_PID}
    trial = tracker.start("trial-3", "trial", parent=stage, tags=tags)
    fits = [tracker.start(f"fit-{i}", "fit", parent=trial, tags={**tags, "pid": 7}) for i in (0, 1)]
    tracker.end(fits[0])
    other = tracker.start("trial-4", "trial", parent=stage, tags={**tags, "trial": 4, "pid": 8})
    assert close_dead(tracker, "s", 3, "h1", DEAD_PID) == 3  # stage, trial and the open fit
    status = {r: tracker.client.get_run(r).info.status for r in (stage, trial, *fits, other)}
    assert status == {stage: "FAILED", trial: "FAILED", fits[0]: "FINISHED",
                      fits[1]: "FAILED", other: "RUNNING"}  # fmt: skip


@pytest.mark.parametrize(
    ("interval", "grace", "message"),
    [("0", "5", "whole number"), ("x", "5", "whole number"), ("5", "5", "must exceed")],
)
def test_bad_heartbeat_settings_are_one_line(monkeypatch, interval, grace, message):
    monkeypatch.setenv("ZIP_HEARTBEAT_INTERVAL", interval)
    monkeypatch.setenv("ZIP_GRACE_PERIOD", grace)
    with pytest.raises(UserError, match=message):
        heartbeat_settings()


def test_an_unreachable_database_or_tracking_server_is_one_line(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UserError, match="cannot be opened"):
        open_storage(f"postgresql+psycopg://zip@127.0.0.1:{port}/optuna", tmp_path, "x")
    start = time.monotonic()
    with pytest.raises(UserError, match="does not answer"):
        check_server(f"http://127.0.0.1:{port}")
    assert time.monotonic() - start < 5
    check_server("sqlite:///local.db")  # not a server: nothing to check


def test_a_claimed_trial_that_never_recorded_its_worker_is_failed_by_this_hosts_clock():
    """The orphan rule on a database measures age on this host's clock: another host's
    `datetime_start` may be hours off (its time zone)."""
    study = optuna.create_study()
    enqueue_grid(study, CFG)
    orphan = next_trial(study, CFG)  # claimed, then killed before `host`/`pid` were set
    failed = []
    beat = Heartbeat(FakeTracker())
    assert beat._seen_for(study.trials[orphan.number]) < 1  # first seen now
    assert fail_stale_trials(study, same_host=False, age=beat._seen_for,
                             on_fail=lambda s, t: failed.append(t.number)) == 0  # fmt: skip
    assert fail_stale_trials(study, same_host=False, age=lambda t: 99.0,
                             on_fail=lambda s, t: failed.append(t.number)) == 1  # fmt: skip
    assert failed == [orphan.number]
    assert study.trials[orphan.number].state == TrialState.FAIL
