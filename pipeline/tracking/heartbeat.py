"""Dead workers recovered without their host: heartbeats, retried trials, closed runs (DESIGN §8).

On a database storage (`storage.has_heartbeat`), each worker beats for the trial it runs
(`Heartbeat.beating`, a thread calling `record_heartbeat`; Optuna's own heartbeat thread runs
only inside `study.optimize`, and the sweep uses ask/tell). Between trials, and while it waits
for the others' trials, a worker fails every trial whose heartbeat is older than the grace
period (`optuna.storages.fail_stale_trials`); the storage then calls `Heartbeat.on_stale`,
which queues the trial's grid point again and closes the dead worker's MLflow runs as FAILED:
the trial run and fit runs of that trial (tags `zip.study`, `zip.trial`), and every other run
its process had open (tags `zip.host`, `zip.pid`: its stage run). Fit runs the dead trial
had already finished are superseded (KILLED, tag `zip.superseded`), as after an interrupt.

Only one worker fails a given trial (the storage's state change is atomic), so the point is
queued once and the runs closed once. A trial claimed but killed before its first beat is
caught by the orphan rule of `study.fail_stale_trials` (no worker recorded, older than the
grace period).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable

import optuna
from optuna.trial import TrialState

from pipeline.tracking import interrupts
from pipeline.tracking.runs import alive
from pipeline.tracking.storage import has_heartbeat
from pipeline.tracking.study import DONE, enqueue_grid, grid_points, requeue


def fail_stale_trials(study, orphan_after_s: float = 30.0, same_host: bool = True,
                      on_fail: Callable | None = None,
                      age: Callable | None = None) -> int:  # fmt: skip
    """Mark RUNNING trials of dead processes FAIL; returns how many.

    A trial is stale when its worker (user attrs `host`, `pid`) is this host's and is dead
    (`same_host`: the journal file's check; on a database the heartbeat does it), or when it
    never recorded a worker (killed in the milliseconds between its claim and its first user
    attr) and started more than `orphan_after_s` ago. Trials of other hosts are left alone
    (their pids mean nothing here).

    Args:
        on_fail: called as `on_fail(study, frozen_trial)` for each trial failed here.
        age: seconds since a trial started; default from its `datetime_start`, whose clock
            (and, from a database, time zone) is the claiming host's.
    """

    host = socket.gethostname()
    failed = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = int(t.user_attrs.get("pid", 0))
        if pid:
            stale = same_host and t.user_attrs.get("host") == host and pid != os.getpid()
            stale = stale and not alive(pid)
        else:
            stale = (age or _started_ago)(t) > orphan_after_s
        if stale:
            try:
                frozen = study.tell(t.number, state=TrialState.FAIL)
            except (ValueError, RuntimeError):  # another worker failed or finished it first
                continue
            failed += 1
            if on_fail is not None:
                on_fail(study, frozen)
    return failed


def _started_ago(trial) -> float:
    start = trial.datetime_start  # aware (UTC) from a journal, naive from some storages
    return (datetime.datetime.now(start.tzinfo) - start).total_seconds() if start else 0.0


def supersede_failed(study, tracker) -> int:
    """Mark the FINISHED runs of the study's FAIL trials KILLED (`Tracker.supersede`).

    A trial interrupted or killed after some of its fit runs were logged left them FINISHED;
    one killed between ending its trial run and telling Optuna left the trial run FINISHED
    too (seen in CI). Its grid point runs again as a new trial, and only COMPLETE trials reach
    the report, so none of its runs may look like a result.

    Returns:
        How many runs were marked.
    """
    marked = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        marked += tracker.supersede(trial_runs(study.study_name, t.number))
    return marked


def trial_runs(study: str, trial: int) -> str:
    """The MLflow filter for every run of one trial: its trial run and its fit runs."""
    return f"tags.`zip.study` = '{study}' and tags.`zip.trial` = '{trial}'"


def close_dead(tracker, study: str, trial: int, host: str | None, pid: int | None) -> int:
    """End as FAILED the RUNNING runs of a dead worker on any host: its trial's (trial and fit
    runs, tags `zip.study`, `zip.trial`) and, given its host and pid, its process's others (its
    stage run). Returns how many."""
    where = [trial_runs(study, trial)]
    if host and pid:
        where.append(f"tags.`zip.host` = '{host}' and tags.`zip.pid` = '{pid}'")
    dead = {r.info.run_id for w in where
            for r in tracker.search(f"attributes.status = 'RUNNING' and {w}")}  # fmt: skip
    for run_id in sorted(dead):
        tracker.end(run_id, "FAILED")
    return len(dead)


class Heartbeat:
    """A worker's side of the heartbeat protocol (a no-op on a journal file).

    Args:
        tracker: this process's `Tracker` (closes a dead worker's runs).
    """

    def __init__(self, tracker):
        self.tracker = tracker
        self.storage = None  # set by `attach`: the storage's callback exists before it does
        self.recovered = 0
        self._unclaimed: dict[int, float] = {}  # trial number -> when first seen without pid

    def attach(self, storage) -> Heartbeat:
        """Use `storage` (opened with `on_stale=self.on_stale`); returns self."""
        self.storage = storage
        return self

    @property
    def active(self) -> bool:
        return self.storage is not None and has_heartbeat(self.storage)

    def on_stale(self, study, trial) -> None:
        """The storage's stale-trial callback: retry the point, close the dead worker's runs."""
        requeue(study, trial)
        self.close_runs(study.study_name, trial)
        self.recovered += 1

    def close_runs(self, study_name: str, trial) -> None:
        """End a dead trial's RUNNING runs (and its worker's) FAILED, its finished ones KILLED."""
        host, pid = trial.user_attrs.get("host"), trial.user_attrs.get("pid")
        close_dead(self.tracker, study_name, trial.number, host, pid)
        self.tracker.supersede(trial_runs(study_name, trial.number))

    def recover(self, study) -> None:
        """Fail the trials of dead workers (heartbeat, then the orphan rule) and retry them."""
        if not self.active:
            return
        with warnings.catch_warnings():  # fail_stale_trials is 'experimental' since 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        grace = self.storage.grace_period or 2 * self.storage.heartbeat_interval
        fail_stale_trials(study, orphan_after_s=max(grace, 30), same_host=False,
                          on_fail=self.on_stale, age=self._seen_for)  # fmt: skip

    def _seen_for(self, trial) -> float:
        """Seconds this worker has seen `trial` RUNNING without a worker recorded: this host's
        clock only (another host's `datetime_start` may be in another time zone)."""
        first = self._unclaimed.setdefault(trial.number, time.monotonic())
        return time.monotonic() - first

    @contextlib.contextmanager
    def beating(self, trial):
        """Record `trial`'s heartbeat now and every interval until the block ends."""
        if not self.active:
            yield
            return
        # Optuna's heartbeat API takes the trial's storage id, which `Trial` keeps private.
        trial_id = trial._trial_id
        self.storage.record_heartbeat(trial_id)  # before anything else: a first beat
        stop = threading.Event()
        interval = self.storage.heartbeat_interval

        def beat() -> None:
            while not stop.wait(interval):
                with contextlib.suppress(Exception):  # a missed beat: the grace period covers it
                    self.storage.record_heartbeat(trial_id)

        thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def wait_for_others(self, study, cfg) -> bool:
        """With nothing to claim: whether to look again (another worker's trial may die).

        True (after a pause) while the study is unfinished and some trial still runs; queues
        the grid's missing points when none runs or waits (a trial that failed without dying,
        e.g. interrupted on another host). False when the study has all it needs, or on a
        journal file (its workers are this machine's, and the parent waits for them).
        """
        if not self.active:
            return False
        trials = study.get_trials(deepcopy=False)
        live = [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
        if cfg.sampler == "grid":
            done = {(t.params.get("lr"), t.params.get("optimizer"))
                    for t in trials if t.state in DONE}  # fmt: skip
            missing = [p for p in grid_points(cfg) if (p["lr"], p["optimizer"]) not in done]
        else:
            missing = [None] * (int(cfg.n_trials) - sum(t.state in DONE for t in trials))
        if not missing:
            return False
        if not live:
            return cfg.sampler != "grid" or enqueue_grid(study, cfg) > 0
        self.pause(min(2.0, self.storage.heartbeat_interval))
        return True

    @staticmethod
    def pause(seconds: float) -> None:
        """Sleep, but stop at once on Ctrl-C/SIGTERM (`interrupts.check`)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            interrupts.check()
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        interrupts.check()
