"""The grid queue on Optuna's public API: each grid point runs exactly once, even when two
sweeps enqueue the same grid at once; a resumed study reruns only what did not finish."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from pipeline.stages import config
from pipeline.tracking.heartbeat import fail_stale_trials
from pipeline.tracking.study import (
    DONE,
    enqueue_grid,
    grid_points,
    lr_range,
    make_pruner,
    make_sampler,
    next_trial,
    run_trials,
)


def _cfg(**over) -> config.SweepConfig:
    return config.SweepConfig(
        **{"lr_grid": (0.01, 0.1, 1.0), "optimizers": ("adam", "sgd"), **over}
    )


def _study(cfg):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(sampler=make_sampler(cfg, 0), pruner=make_pruner(cfg))


def _objective(cfg):
    def objective(trial) -> float:
        lr = trial.suggest_float("lr", *lr_range(cfg), log=True)
        return lr * (1 if trial.suggest_categorical("optimizer", ["adam", "sgd"]) == "adam" else 2)

    return objective


def _done_points(study) -> list[tuple]:
    return sorted((t.params["lr"], t.params["optimizer"]) for t in study.get_trials(states=DONE))


def test_grid_runs_every_point_once():
    cfg = _cfg()
    study = _study(cfg)
    assert enqueue_grid(study, cfg) == 6
    assert enqueue_grid(study, cfg) == 0  # everything queued already
    assert run_trials(study, cfg, _objective(cfg)) == 6
    expected = sorted((p["lr"], p["optimizer"]) for p in grid_points(cfg))
    assert _done_points(study) == expected
    assert next_trial(study, cfg) is None  # nothing left, no surplus trial created
    assert len(study.get_trials()) == 6


def test_two_parents_enqueueing_at_once_still_run_each_point_once():
    """Both parents saw an empty study and queued the whole grid (the race of the audit)."""
    cfg = _cfg()
    study = _study(cfg)
    for _ in range(2):  # what each parent's enqueue_grid added
        for p in grid_points(cfg):
            attrs = {"grid_lr": p["lr"], "grid_optimizer": p["optimizer"]}
            study.enqueue_trial(p, user_attrs=attrs)
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 12
    run_trials(study, cfg, _objective(cfg))
    expected = sorted((p["lr"], p["optimizer"]) for p in grid_points(cfg))
    assert _done_points(study) == expected
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert len(failed) == 6 and all("duplicate_of" in t.user_attrs for t in failed)


def test_a_claimed_duplicate_yields_to_the_lower_number_whichever_is_claimed_first():
    cfg = _cfg(lr_grid=(0.1,), optimizers=("adam",))
    study = _study(cfg)
    enqueue_grid(study, cfg)
    study.enqueue_trial({"lr": 0.1, "optimizer": "adam"},
                        user_attrs={"grid_lr": 0.1, "grid_optimizer": "adam"})  # fmt: skip
    first = next_trial(study, cfg)  # takes trial 0; trial 1 is its duplicate
    assert first.number == 0
    assert next_trial(study, cfg) is None  # trial 1 yields to the live trial 0
    assert study.get_trials()[1].user_attrs["duplicate_of"] == 0
    study.tell(first, _objective(cfg)(first))
    assert _done_points(study) == [(0.1, "adam")]


def test_an_empty_queue_never_repeats_a_point():
    """`ask()` on an empty queue makes a trial the grid's sampler refuses to fill."""
    cfg = _cfg(lr_grid=(0.1,), optimizers=("adam",))
    study = _study(cfg)
    trial = study.ask()
    with pytest.raises(LookupError):
        trial.suggest_float("lr", 0.01, 1.0)


def test_stale_trials_of_dead_processes_are_failed_and_requeued():
    cfg = _cfg(lr_grid=(0.1, 1.0), optimizers=("adam",))
    study = _study(cfg)
    enqueue_grid(study, cfg)
    dead = next_trial(study, cfg)
    dead.set_user_attr("host", __import__("socket").gethostname())
    dead.set_user_attr("pid", 2**22 + 12345)  # above pid_max on Linux: no such process
    assert fail_stale_trials(study) == 1
    assert study.get_trials()[dead.number].state == TrialState.FAIL
    assert enqueue_grid(study, cfg) == 1  # its point goes back into the queue
    run_trials(study, cfg, _objective(cfg))
    assert _done_points(study) == [(0.1, "adam"), (1.0, "adam")]


def test_relative_storage_paths_belong_to_the_work_directory(tmp_path):
    """The audit's item 12: `sqlite:///mlruns/mlflow.db` resolved against the current folder,
    slipped past the guard and failed on MLflow's schema."""
    from pipeline.core.errors import UserError
    from pipeline.tracking.storage import open_storage

    mlflow_uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    with pytest.raises(UserError, match="is MLflow's store"):
        open_storage("sqlite:///mlruns/mlflow.db", tmp_path, mlflow_uri)
    _, where = open_storage("studies/optuna.log", tmp_path, mlflow_uri)
    assert where == str(tmp_path / "studies" / "optuna.log")


def test_fit_runs_of_failed_trials_are_superseded(isolated_mlflow, tmp_path, pytestconfig,
                                                  tmp_path_factory):  # fmt: skip
    """The audit's item 11: an interrupted trial's fit runs stayed FINISHED after a resume.
    And a CI run: a worker killed between ending its trial run and telling Optuna left the
    FAIL trial's trial run FINISHED; it is superseded with the fits."""
    from tracking_setup import EXPERIMENT, fresh_store

    from pipeline.tracking.heartbeat import supersede_failed
    from pipeline.tracking.runs import Tracker

    tracker = Tracker(EXPERIMENT, root=fresh_store(tmp_path, pytestconfig, tmp_path_factory))
    cfg = _cfg(lr_grid=(0.1, 1.0), optimizers=("adam",))
    study = _study(cfg)
    enqueue_grid(study, cfg)
    done, failed = next_trial(study, cfg), next_trial(study, cfg)
    tags = {"study": study.study_name}
    runs = {n: [tracker.start(f"fit-{n}-{i}", "fit", tags={**tags, "trial": n}) for i in range(2)]
            + [tracker.start(f"trial-{n}", "trial", tags={**tags, "trial": n})]
            for n in (done.number, failed.number)}  # fmt: skip
    for run_id in runs[done.number] + runs[failed.number]:
        tracker.end(run_id)
    study.tell(done, _objective(cfg)(done))
    study.tell(failed, state=TrialState.FAIL)
    assert supersede_failed(study, tracker) == 3
    for number, status in ((done.number, "FINISHED"), (failed.number, "KILLED")):
        for run_id in runs[number]:
            run = tracker.client.get_run(run_id)
            assert run.info.status == status
            assert (run.data.tags.get("zip.superseded") == "true") == (status == "KILLED")
    assert supersede_failed(study, tracker) == 0  # idempotent


def test_a_run_another_worker_superseded_first_is_not_an_error(
    isolated_mlflow, tmp_path, pytestconfig, tmp_path_factory
):
    """A CI run: two workers superseded one killed trial's runs at once; on PostgreSQL the second
    tag INSERT was a unique violation and the worker died. Simulated here by a second worker
    whose `set_tag` loses that race: it yields; a `set_tag` failing for another cause still
    raises."""
    from mlflow.exceptions import MlflowException
    from tracking_setup import EXPERIMENT, fresh_store

    from pipeline.tracking.runs import Tracker

    tracker = Tracker(EXPERIMENT, root=fresh_store(tmp_path, pytestconfig, tmp_path_factory))
    run_id = tracker.start("fit-0-0", "fit", tags={"study": "s", "trial": 0})
    tracker.end(run_id)
    where = "tags.`zip.study` = 's' and tags.`zip.trial` = '0'"
    real = tracker.client.set_tag

    def lose_the_race(rid, key, value):
        real(rid, key, value)  # the other worker's write lands first
        raise MlflowException("duplicate key value violates unique constraint")

    tracker.client.set_tag = lose_the_race
    assert tracker.supersede(where) == 0  # the other worker counts it
    run = tracker.client.get_run(run_id)
    assert run.data.tags["zip.superseded"] == "true"

    other = tracker.start("fit-0-1", "fit", tags={"study": "s", "trial": 1})
    tracker.end(other)

    def broken(rid, key, value):
        raise MlflowException("the store is read-only")

    tracker.client.set_tag = broken
    with pytest.raises(MlflowException, match="read-only"):
        tracker.supersede("tags.`zip.study` = 's' and tags.`zip.trial` = '1'")
