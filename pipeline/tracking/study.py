"""The sweep's Optuna side: storage, study, resume, the grid queue and the worker loop.

Grid sweeps run from Optuna's own trial queue: the parent enqueues (`study.enqueue_trial`)
every grid point that has no COMPLETE, PRUNED, RUNNING or WAITING trial before any worker
starts, and workers take queued trials with `study.ask()`, whose WAITING → RUNNING claim is
atomic in every storage. Two guards keep a point from running twice when two sweeps share a
study (each parent may enqueue the same point): a claimed trial yields (ends FAIL, user attr
`duplicate_of`) when a trial of its point with a lower number is live or any is done; and
the grid's sampler (`QueueOnly`) never makes up a point, so an `ask()` that found the queue
empty ends FAIL (user attr `surplus`) instead of repeating a point. `GridSampler` is not used:
with several workers it re-evaluates running points (8 trials for a 7-point grid, Optuna 5.0)
and never retries a point whose trial FAILED. TPE workers `ask` until COMPLETE + PRUNED +
RUNNING + WAITING trials reach `n_trials`, so a resumed study counts what it already has.

A trial killed outright (SIGKILL, power loss) stays RUNNING in the storage. Each trial
records its host and pid; on the journal file (one machine) the next start marks RUNNING
trials of dead processes on this host FAIL (`heartbeat.fail_stale_trials`), and the grid
re-enqueues their points. On a database, live workers of any host do it by heartbeat while
they run (`heartbeat.Heartbeat`), and wait for each other's trials before the stage ends.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import warnings
from collections.abc import Callable

import optuna
from optuna.trial import TrialState

from pipeline.analysis.recovery import OBJECTIVE_NAME
from pipeline.core.errors import UserError
from pipeline.tracking import interrupts

DONE = (TrialState.COMPLETE, TrialState.PRUNED)


class QueueOnly(optuna.samplers.BaseSampler):
    """The grid's sampler: every grid trial is enqueued with its point, so nothing is sampled.

    A trial that reaches this sampler was created by `ask()` on an empty queue (another
    worker took the last point first); sampling for it raises `QueueEmpty`.
    """

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        raise QueueEmpty(param_name)


class QueueEmpty(LookupError):
    """`ask()` found no queued grid point."""


def make_sampler(cfg, seed: int):
    """`QueueOnly` for a grid (points come from the queue), else TPE seeded with `seed`."""
    if cfg.sampler == "grid":
        return QueueOnly()
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(cfg):
    """MedianPruner(pruner_startup_trials, pruner_warmup_steps), or none."""
    if cfg.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=cfg.pruner_startup_trials, n_warmup_steps=cfg.pruner_warmup_steps
        )
    return optuna.pruners.NopPruner()


def load_study(storage, name: str, cfg, sampler_seed: int, create: bool = False):
    """Create (`create=True`, parent only) or load the study, minimising the objective.

    The parent names the objective (`analysis.recovery.OBJECTIVE_NAME`) in the storage, so
    optuna-dashboard and `trials_dataframe` show what it is; workers read it from there.
    """
    kwargs = dict(study_name=name, storage=storage, sampler=make_sampler(cfg, sampler_seed),
                  pruner=make_pruner(cfg))  # fmt: skip
    try:
        if create:
            study = optuna.create_study(direction="minimize", load_if_exists=True, **kwargs)
            study.set_metric_names([OBJECTIVE_NAME])  # else "Objective 0" on the dashboard
            return study
        return optuna.load_study(**kwargs)
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"Optuna study {name!r} cannot be opened: {first[:200]}") from None


def grid_points(cfg) -> list[dict]:
    """The grid in run order (each optimizer, each lr), cut to `n_trials` when set."""
    points = [{"lr": lr, "optimizer": opt} for opt in cfg.optimizers for lr in cfg.lr_grid]
    return points[: cfg.n_trials] if cfg.n_trials else points


def _point(t) -> tuple:
    """A trial's grid point: its params once suggested, else the user attrs set at enqueue."""
    return (t.params.get("lr", t.user_attrs.get("grid_lr")),
            t.params.get("optimizer", t.user_attrs.get("grid_optimizer")))  # fmt: skip


def enqueue_grid(study, cfg) -> int:
    """Queue every grid point without a COMPLETE/PRUNED, RUNNING or WAITING trial.

    Queued trials carry their point as user attrs (`grid_lr`, `grid_optimizer`): a WAITING
    trial has no params until it runs.

    Returns:
        How many points were queued.
    """
    live = (*DONE, TrialState.RUNNING, TrialState.WAITING)
    taken = {_point(t) for t in study.get_trials(deepcopy=False, states=live)}
    queued = 0
    for p in grid_points(cfg):
        if (p["lr"], p["optimizer"]) not in taken:
            attrs = {"grid_lr": p["lr"], "grid_optimizer": p["optimizer"]}
            study.enqueue_trial(p, user_attrs=attrs)
            queued += 1
    return queued


def requeue(study, trial) -> bool:
    """Queue the grid point of a failed trial again, unless a trial already holds it.

    A TPE trial (no `grid_lr` user attr) is not queued: TPE workers ask for a new one.
    """
    if "grid_lr" not in trial.user_attrs:
        return False
    lr, optimizer = _point(trial)
    live = (*DONE, TrialState.RUNNING, TrialState.WAITING)
    if any(_point(t) == (lr, optimizer) for t in study.get_trials(deepcopy=False, states=live)):
        return False
    attrs = {"grid_lr": lr, "grid_optimizer": optimizer, "retry_of": trial.number}
    study.enqueue_trial({"lr": lr, "optimizer": optimizer}, user_attrs=attrs)
    return True


def _duplicate_of(study, trial) -> int | None:
    """The number of a trial that owns `trial`'s grid point, if any (see the module doc)."""
    mine = (trial.user_attrs.get("grid_lr"), trial.user_attrs.get("grid_optimizer"))
    live = (TrialState.RUNNING, TrialState.WAITING)
    for t in study.get_trials(deepcopy=False, states=(*DONE, *live)):
        if t.number != trial.number and _point(t) == mine:
            if t.state in DONE or t.number < trial.number:
                return t.number
    return None


def planned_trials(study, cfg) -> int:
    """How many trials the study should have run when this stage ends (COMPLETE + PRUNED)."""
    return len(grid_points(cfg)) if cfg.sampler == "grid" else int(cfg.n_trials)


def _ask(study):
    """`study.ask()`, without Optuna's warning that heartbeats are meant for `optimize`: the
    sweep beats for its trials itself (`heartbeat.Heartbeat.beating`)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage", category=UserWarning)
        return study.ask()


def next_trial(study, cfg):
    """Claim the next trial of this worker, or None when the study has all it needs."""
    if cfg.sampler != "grid":
        states = (*DONE, TrialState.RUNNING, TrialState.WAITING)
        if len(study.get_trials(deepcopy=False, states=states)) >= cfg.n_trials:
            return None
        return _ask(study)
    while study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        trial = _ask(study)  # takes a queued trial if one is left (atomic claim)
        try:
            trial.suggest_float("lr", *lr_range(cfg), log=True)
        except QueueEmpty:
            trial.set_user_attr("surplus", True)
            study.tell(trial, state=TrialState.FAIL)
            return None
        owner = _duplicate_of(study, trial)
        if owner is None:
            return trial
        trial.set_user_attr("duplicate_of", owner)
        study.tell(trial, state=TrialState.FAIL)
    return None


def lr_range(cfg) -> tuple[float, float]:
    """The learning rates a trial may suggest: the grid's span, or [lr_min, lr_max]."""
    if cfg.sampler == "grid":
        return min(cfg.lr_grid), max(cfg.lr_grid)
    return cfg.lr_min, cfg.lr_max


def run_trials(study, cfg, objective: Callable, on_done: Callable | None = None,
               heartbeat=None) -> int:  # fmt: skip
    """Run trials until `next_trial` has none; each ends COMPLETE, PRUNED or FAIL.

    Args:
        study: the loaded study.
        cfg: the sweep settings.
        objective: `objective(trial) -> float`; raises `optuna.TrialPruned` when pruned.
        on_done: called with each finished `FrozenTrial`.
        heartbeat: a `heartbeat.Heartbeat`: on a database, beat for each trial, retry dead
            workers' trials and wait for the others' before returning; None: neither.

    Returns:
        The number of trials this worker ran.

    Raises:
        Whatever the objective raised other than pruning (the trial is told FAIL first),
        KeyboardInterrupt included.
    """

    ran = 0
    while True:
        interrupts.check()  # between trials
        if heartbeat is not None:
            heartbeat.recover(study)
        trial = next_trial(study, cfg)
        if trial is None:
            if heartbeat is not None and heartbeat.wait_for_others(study, cfg):
                continue
            return ran
        beating = heartbeat.beating(trial) if heartbeat is not None else contextlib.nullcontext()
        with beating:
            # First thing after the claim: who runs it, so a later start can tell if it died.
            trial.set_user_attr("host", socket.gethostname())
            trial.set_user_attr("pid", os.getpid())
            try:
                value = objective(trial)
                frozen = study.tell(trial, value, skip_if_finished=True)
            except optuna.TrialPruned:
                frozen = study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
            except optuna.exceptions.UpdateFinishedTrialError:
                # This worker missed its beats for the grace period, so another declared it
                # dead and retries its point: its result must not count twice.
                print(f"trial {trial.number} was failed by another worker (missed heartbeats)",
                      file=sys.stderr)  # fmt: skip
                continue
            except BaseException:
                with contextlib.suppress(Exception):
                    study.tell(trial, state=TrialState.FAIL)
                raise
        if frozen.state not in DONE:
            continue
        ran += 1
        if on_done is not None:
            on_done(frozen)
