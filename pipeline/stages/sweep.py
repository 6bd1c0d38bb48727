"""`make sweep` / `make tune`: an Optuna study over learning rates, every fit tracked in MLflow.

One trial = one learning rate (and optimizer) fitted by the batched engine on every
identifiable dataset × `inits` seeded starts (`analysis.objective`). `make sweep` runs the grid
of `sweep`; `--tune` runs `params.tuned()` (the `tune` block over `sweep`: seeded TPE with a
median pruner). The study is named `<study>-<first 8 hex of the stage's params hash>`, so
changed params start a new study and unchanged params resume the old one: completed trials
are kept, never repeated (`tracking.study`).

The parent creates the MLflow store, experiment and stage run and the Optuna study, then runs
the trials itself (`--workers 1`) or in N spawned worker processes on the same study. At the
end it assembles `data/fits.parquet` (`data/tune_fits.parquet` for `--tune`) from the
COMPLETE trials' rows (and `data/histories.parquet` from their paths), refits the blog's
table at the best learning rate into `data/blog.parquet` (`make sweep` only), logs the
study's figures and prints a summary table.

Workers on several machines (`OPTUNA_STORAGE` a database, `MLFLOW_TRACKING_URI` a tracking
server, README "Scaling out"): every `python -m pipeline.sweep` creates or joins the study
(refused if its params differ from a live study's: `storage.check_params`), runs trials with
heartbeats, retries dead workers' trials (`heartbeat`), waits for the others' trials, then
assembles the tables, fetching the other hosts' trial files from their MLflow trial runs.

Ctrl-C or SIGTERM stops every process at its next safe point (`interrupts`): the running
trials end FAIL, the open MLflow runs KILLED, exit status 130. After a SIGKILL the next start
closes the orphaned runs as FAILED and re-runs the trials of dead processes (on a database,
live workers on any host do it by heartbeat).

One line and exit 2, never a traceback, when: a second sweep of the study starts in the same
work directory (`storage.study_lock`); `--workers` is outside 1 … 4 per CPU core (no more
processes than pending trials start); a worker is killed by a signal from outside (the OOM
killer, `kill -9`); the tracking server or the database stops answering (after at most
`ZIP_SERVICE_RETRY_S` seconds of retries, default 60: `storage.bounded_retries`). Output that
is not a terminal gets one line per finished trial (`TrialLines`), except in CI.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch

from pipeline.analysis.objective import build_problem
from pipeline.analysis.regression import build_reg_problem
from pipeline.core import seeds
from pipeline.core.descent.allocator import keep_heap
from pipeline.core.descent.engine import check_device
from pipeline.core.errors import UserError, environment_problem
from pipeline.stages import config
from pipeline.stages.cli import parser, progress, progress_lines
from pipeline.stages.sweep_steps import check_datasets, finish_stage, start_stage
from pipeline.store import datasets, files, reg_data
from pipeline.tracking import interrupts
from pipeline.tracking.fit_runs import FitLogger
from pipeline.tracking.heartbeat import Heartbeat, supersede_failed
from pipeline.tracking.quiet import quiet_libraries
from pipeline.tracking.runs import Tracker, tracking_uri
from pipeline.tracking.storage import (
    ServiceLost,
    bounded_retries,
    check_server,
    give_up_retries,
    lost_service,
    open_storage,
    study_lock,
)
from pipeline.tracking.study import DONE, load_study, planned_trials, run_trials
from pipeline.tracking.trial import TrialSetup, make_objective

_BIG_TRIAL = 64  # fits per trial from which logging is shared with spawned logger processes


@dataclass(frozen=True)
class Plan:
    """Everything a worker process needs to join the study (picklable)."""

    params_path: str
    workdir: str
    stage: str
    storage_url: str
    study: str
    stage_run: str
    worker: int
    workers: int


def load_reg_problems(layout, params, cfg) -> tuple:
    """The regression scenarios' fits (those with at least one dataset the oracle fitted)."""
    scenarios = params.data.regression.scenarios
    stamp = params.digest(*config.STAGE_BLOCKS["generate"])
    summary, rows = reg_data.load_regression(layout, stamp, [s.name for s in scenarios])
    built = (build_reg_problem(s.name, summary, rows[s.name], params.seed, cfg.regression,
                               params.fit.device, offset=s.offset_column, random=s.random)
             for s in scenarios)  # fmt: skip
    return tuple(p for p in built if p is not None)


def work(plan: Plan, params, tracker, heartbeat: Heartbeat, on_fits=None, on_done=None) -> int:
    """Run trials of the study in this process until it has all it needs.

    Args:
        plan: the study, stage run and this worker's index.
        params: the validated params.
        tracker: this process's `Tracker`.
        heartbeat: this process's `Heartbeat`, attached to the Optuna storage.
        on_fits, on_done: progress callbacks (fits logged, trial finished).

    Returns:
        The number of trials run here.
    """

    workdir = Path(plan.workdir)
    cfg, stamp, _ = params.study(plan.stage)
    layout = files.Layout(workdir)
    summary, hists = datasets.load_data(layout, params.digest(*config.STAGE_BLOCKS["generate"]))
    problem = build_problem(summary, hists, params.seed, cfg, params.fit.device)
    reg_problems = load_reg_problems(layout, params, cfg)
    big = problem.fits.height >= _BIG_TRIAL and params.tracking.log_fits
    processes = min(2, os.cpu_count() or 1) if plan.workers == 1 and big else 1
    logger = FitLogger(tracker, params.tracking.experiment, workdir, processes)
    logger.start()
    # Resumed or parallel TPE workers must not replay the same seeded suggestions.
    storage = heartbeat.storage
    probe = load_study(storage, plan.study, cfg, seeds.sampler_seed(params.seed))
    trials = len(probe.get_trials(deepcopy=False))
    seed = seeds.sampler_seed(params.seed, plan.worker, trials)
    study = load_study(storage, plan.study, cfg, seed)
    setup = TrialSetup(params, cfg, problem, tracker, logger, plan.stage_run, plan.study,
                       plan.stage, layout, stamp, on_fits, reg_problems)  # fmt: skip
    interrupted = True
    try:
        ran = run_trials(study, cfg, make_objective(setup), on_done, heartbeat)
        interrupted = False
    finally:
        logger.close(interrupted=interrupted)
    return ran


def worker_main(plan: Plan, errors=None) -> None:
    """Entry of a spawned worker process: join the study and run trials.

    A user's or the machine's error (a `UserError`, a full disk) goes to the parent through
    `errors` (a queue) and ends the worker with status 2; the parent reports it as one line.
    """
    quiet_libraries()

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    interrupts.install()  # Ctrl-C (the whole group gets it) or the parent's SIGTERM
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // plan.workers))
    keep_heap()  # the engines' temporaries stay in the heap: no page faults per step
    params = config.load(plan.params_path)
    tracker = Tracker(params.tracking.experiment, root=Path(plan.workdir))
    code = 0
    try:
        heartbeat = Heartbeat(tracker)
        storage, _ = open_storage(plan.storage_url, Path(plan.workdir), tracker.uri,
                                  heartbeat.on_stale)  # fmt: skip
        work(plan, params, tracker, heartbeat.attach(storage))
    except KeyboardInterrupt:
        tracker.end_all("KILLED")
        code = 130
    except BaseException as err:
        lost = lost_service(err, tracker.uri, plan.storage_url)
        if lost is not None:
            give_up_retries()  # closing the runs below must not retry the lost server again
        problem = str(err) if isinstance(err, UserError) else lost or environment_problem(err)
        if problem is not None and errors is not None:
            errors.put((problem, lost is not None))
            code = 2
        else:
            traceback.print_exc()
            code = 1
        tracker.end_all("FAILED")
    sys.exit(code)


def run_workers(plans: list[Plan], count_done, total: int) -> None:
    """Start one spawned process per plan and wait; SIGTERM them all on an interrupt."""

    ctx = mp.get_context("spawn")  # torch and open SQLite handles must not be forked
    errors = ctx.SimpleQueue()
    procs = [ctx.Process(target=worker_main, args=(plan, errors),
                         name=f"sweep-worker-{plan.worker}") for plan in plans]  # fmt: skip
    bar = progress(total, "trials", unit="trial")
    try:
        for proc in procs:
            proc.start()
        while any(proc.is_alive() for proc in procs):
            interrupts.check()
            bar.n = count_done()
            bar.refresh()
            for proc in procs:
                proc.join(0.5 / len(procs))
        bar.n = count_done()  # the last trials' lines
    except BaseException:  # Ctrl-C, or the parent lost a service while it watched
        for proc in procs:
            if proc.is_alive():
                proc.terminate()  # SIGTERM: the worker fails its trial and kills its runs
        for proc in procs:
            proc.join(30)
        raise
    finally:
        bar.close()
    codes = [proc.exitcode for proc in procs]
    if any(code in (130, -signal.SIGINT, -signal.SIGTERM) for code in codes):
        raise KeyboardInterrupt  # the workers were interrupted (Ctrl-C reaches them too)
    if not errors.empty():
        problem, lost = errors.get()  # the first worker's problem; the others share it
        raise (ServiceLost if lost else UserError)(problem)
    killed = [
        (proc.name, -code) for proc, code in zip(procs, codes) if code is not None and code < 0
    ]
    if killed:
        # A signal from outside the sweep (the kernel's out-of-memory killer, a `kill -9`):
        # the machine's doing, not a bug, so one line and exit 2; its trial reruns on resume.
        name, signum = killed[0]
        raise UserError(
            f"{name} was killed by {signal_name(signum)} from outside the sweep "
            "(out of memory? see `dmesg`); the next start re-runs its trial"
        )
    failed = [proc.name for proc, code in zip(procs, codes) if code != 0]
    if failed:
        raise RuntimeError(f"{', '.join(failed)} failed; see the traceback above")


def signal_name(signum: int) -> str:
    """`SIGKILL`, or `signal 99` for a number Python does not name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sweep (or `--tune`); see the module docstring. Returns the exit status."""
    p = parser("Optuna study over learning rates; every fit tracked in MLflow.")
    p.add_argument("--tune", action="store_true", help="run the `tune` settings (TPE)")
    p.add_argument("--workers", type=int, help="processes on one study (default: sweep.workers)")
    args = p.parse_args(argv)
    params = config.load(args.params)
    workdir = args.workdir.resolve()
    stage = "tune" if args.tune else "sweep"
    cfg, _, study_name = params.study(stage)
    workers = cfg.workers if args.workers is None else args.workers
    most = max_workers()
    if not 1 <= workers <= most:
        key = "sweep.workers" if args.workers is None else "--workers"
        raise UserError(f"{key}: must be between 1 and {most} (4 per CPU core), got {workers}")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        check_device(params.fit.device)
    except ValueError as err:
        raise UserError(f"fit.device: {err}") from None
    files.check_writable(files.Layout(workdir).data, workdir / "mlruns")
    check_datasets(workdir, params)  # before any run or study exists
    check_server(tracking_uri(workdir))  # one line, not minutes of retries, when it is down
    with study_lock(workdir, study_name), bounded_retries():
        return _sweep(args, params, workdir, stage, workers)


def _sweep(args, params, workdir: Path, stage: str, workers: int) -> int:
    """`main` once the checks passed and the study's lock is held."""
    cfg, _, study_name = params.study(stage)
    stamp = params.digest(*config.STAGE_BLOCKS[stage])
    restore = interrupts.install()
    tracker = Tracker(params.tracking.experiment, root=workdir)
    try:
        url = os.environ.get("OPTUNA_STORAGE") or cfg.storage
        heartbeat = Heartbeat(tracker)
        storage, where = open_storage(url, workdir, tracker.uri, heartbeat.on_stale)
        heartbeat.attach(storage)
        with (
            tracker.stage_run(stage, stamp, params.digest()) as stage_run,
            lost_services(tracker.uri, where),
        ):
            start = time.perf_counter()
            study, todo = start_stage(tracker, stage_run, heartbeat, params, stage, where)
            tracker.log_inputs(stage_run, data_inputs(files.Layout(workdir), params))
            count = min(workers, todo)  # a worker without a trial to run only costs memory
            plans = [Plan(str(args.params.resolve()), str(workdir), stage, where, study_name,
                          stage_run, i, count) for i in range(count)]  # fmt: skip
            if todo > 0:
                try:
                    _run(plans, params, tracker, heartbeat, study, cfg)
                except KeyboardInterrupt:
                    with contextlib.suppress(Exception):  # best effort; the next start redoes it
                        supersede_failed(study, tracker)
                    raise
            interrupts.check()
            seconds = time.perf_counter() - start
            finish_stage(tracker, stage_run, study, params, stage, workdir, seconds)
    finally:
        restore()
    return 0


@contextlib.contextmanager
def lost_services(uri: str, storage_url: str):
    """A tracking server or database lost in the block (here or in a worker): one line
    (`ServiceLost`, exit 2), and no more retries while the runs are closed on the way out."""
    try:
        yield
    except ServiceLost:
        give_up_retries()
        raise
    except Exception as err:
        lost = lost_service(err, uri, storage_url)
        if lost is None:
            raise
        give_up_retries()
        raise ServiceLost(lost) from None


def data_inputs(layout: files.Layout, params) -> dict[str, Path]:
    """The data stage's files a sweep reads, by dataset name (`Tracker.log_inputs`)."""
    paths = {"summary": layout.summary.path, "histograms": layout.histograms.path}
    if params.data.regression.scenarios:
        paths["reg_summary"] = layout.reg_summary.path
        for s in params.data.regression.scenarios:
            paths[f"regression/{s.name}"] = layout.reg_dataset(s.name).path
    return paths


def max_workers() -> int:
    """The most worker processes a sweep may start: 4 per CPU core (fits are CPU-bound; more
    only share the cores and hold a copy of the data each)."""
    return 4 * (os.cpu_count() or 1)


class TrialLines:
    """One line per finished trial on stderr, for output that is not a terminal (a log file
    or a pipe shows no progress bar): `trial 3 complete (4/7): adam lr=0.1, objective 0.0421`.

    Args:
        study: the study; trials already finished when it is made are not reported.
        total: the trials the stage plans (`planned_trials`).
        enabled: print lines (`cli.progress_lines()`); when False only `poll` counts.
    """

    def __init__(self, study, total: int, enabled: bool):
        self.study, self.total, self.enabled = study, total, enabled
        self.seen = {t.number for t in study.get_trials(deepcopy=False, states=DONE)}

    def poll(self) -> int:
        """Report the trials finished since the last call; returns how many are done."""
        done = self.study.get_trials(deepcopy=False, states=DONE)
        for t in sorted(done, key=lambda t: t.number):
            if t.number in self.seen:
                continue
            self.seen.add(t.number)
            if self.enabled:
                value = f", objective {t.value:.4g}" if t.value is not None else ""
                print(f"trial {t.number} {t.state.name.lower()} ({len(self.seen)}/{self.total}): "
                      f"{t.params.get('optimizer')} lr={t.params.get('lr'):g}{value}",
                      file=sys.stderr, flush=True)  # fmt: skip
        return len(done)


def _run(plans, params, tracker, heartbeat, study, cfg) -> None:

    total = planned_trials(study, cfg)
    lines = TrialLines(study, total, progress_lines())
    if len(plans) > 1:
        run_workers(plans, lines.poll, total)
        return
    bar = progress(total, "trials", unit="trial")
    bar.update(len(lines.seen))
    fits = {"logged": 0}

    def on_fits(n: int) -> None:
        fits["logged"] += n
        bar.set_postfix(fits=fits["logged"], refresh=True)

    def on_done(_) -> None:
        bar.update(1)
        lines.poll()

    # The batched fits are small tensors: extra threads only wait for the cores that the
    # logger processes use (benchmarks/README.md, "Threads").
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    keep_heap()
    try:
        work(plans[0], params, tracker, heartbeat, on_fits, on_done)
    finally:
        torch.set_num_threads(threads)
        bar.close()
