"""One Optuna trial of the sweep: fit every dataset × init at one learning rate, log, write.

`make_objective` builds the objective from a `TrialSetup` (the config and the data, loaded
once per process). A trial reports the objective so far after each chunk of engine steps
(Optuna prunes on it), logs its fit runs (`fit_runs.FitLogger`, in the background) while it
draws its own figures, writes its fit rows and their histories to
`data/trials/<study>/<number:05d>[.histories].parquet` (atomically, the rows last: their file
marks the trial done), and returns the objective (`analysis.objective`: the share of fits not
recovered, then the fewest steps, over intercept-only and regression fits) or raises
`optuna.TrialPruned`. MLflow receives the same numbers; nothing reads them back from there.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import mlflow.artifacts
import numpy as np
import optuna
import polars as pl

from pipeline.analysis.objective import (
    Problem,
    fit_histories,
    fit_rows,
    objective_parts,
    objective_value,
    run_fits,
)
from pipeline.analysis.recovery import fit_charges
from pipeline.analysis.reg_batch import combine, run_combined, run_mixed
from pipeline.analysis.regression import reg_tables
from pipeline.core import seeds
from pipeline.core.errors import UserError
from pipeline.report.convergence import trial_figures
from pipeline.store import files
from pipeline.tracking import interrupts
from pipeline.tracking.fit_runs import fit_payloads
from pipeline.tracking.runs import child_time
from pipeline.tracking.study import lr_range


@dataclass
class TrialSetup:
    """What every trial of one worker shares (built once per process).

    Attributes:
        params: the validated params; `cfg` its sweep settings (`tuned()` for `--tune`).
        problem: the fits.
        tracker: this process's `Tracker`; `fit_logger` its `FitLogger`.
        stage_run: the MLflow stage run the trial runs nest in.
        study: the study name; `stage` "sweep" or "tune".
        layout: the work directory's `files.Layout` (each trial's rows and histories go to
            `layout.trial_fits` / `layout.trial_histories`); `stamp` their params hash.
        on_fits: called with the number of fits logged (progress bar), or None.
        reg_problems: the regression scenarios' fits (`analysis.regression.RegProblem`).
    """

    params: object
    cfg: object
    problem: Problem
    tracker: object
    fit_logger: object
    stage_run: str
    study: str
    stage: str
    layout: object
    stamp: str
    on_fits: Callable[[int], None] | None = None
    reg_problems: tuple = ()


def regression_fits(setup: TrialSetup, lr: float, optimizer: str, on_call=None):
    """Every regression problem × (standardize, batch size) variant at one (lr, optimizer);
    a scenario with random intercepts full batch on its covariates as drawn (`run_mixed`).

    Args:
        on_call: called with each engine call's (fits, coefs, histories) as soon as it ends
            (the trial hands them to the loggers while the next call fits).

    Returns:
        (fits, coefs, histories) frames (`analysis.regression.reg_tables`), concatenated in
        the order of the calls; None when there is no regression scenario. The engine runs
        without pruning here: the pruner judges a trial on the intercept-only fits, reported
        chunk by chunk before.
    """
    if not setup.reg_problems:
        return None
    reg_cfg, fit_cfg, seed = setup.cfg.regression, setup.params.fit, setup.params.seed
    batches = combine(setup.reg_problems, reg_cfg.standardize, fit_cfg.device)
    calls = []
    for size in reg_cfg.batch_sizes:
        key = seeds.integer(seeds.stream(seed, "shuffle", size or 0))
        for combined in batches:  # one engine call per family and batch size
            interrupts.check()
            tables = [reg_tables(problem, result, standardize, size)
                      for problem, standardize, result in run_combined(
                          combined, fit_cfg, lr, optimizer, size, key)]  # fmt: skip
            calls.append(tuple(pl.concat([t[i] for t in tables]) for i in range(3)))
            if on_call is not None:
                on_call(calls[-1])
    for problem in (pr for pr in setup.reg_problems if pr.random):  # one call per scenario
        interrupts.check()
        calls.append(reg_tables(problem, run_mixed(problem, fit_cfg, lr, optimizer), False, None))
        if on_call is not None:
            on_call(calls[-1])
    return tuple(pl.concat([c[i] for c in calls]) for i in range(3))


def _labelled(tables, trial: int, study: str, optimizer: str, lr: float):
    """A trial's regression tables with its trial number (all), study, optimizer and lr."""
    tables = tuple(t.with_columns(trial=pl.lit(trial, pl.Int64)) for t in tables)
    return (tables[0].with_columns(study=pl.lit(study), optimizer=pl.lit(optimizer),
                                   lr=pl.lit(lr, pl.Float64)), *tables[1:])  # fmt: skip


def reg_parts(rows: pl.DataFrame, reg_fits: pl.DataFrame, max_steps: int) -> dict[str, float]:
    """The objective over every fit (intercept-only and regression) and the regression parts."""
    status = reg_fits["status"].to_numpy()
    ok = reg_fits.filter(pl.col("status") != "diverged")
    reg_charges = fit_charges(reg_fits, max_steps)
    charged = np.concatenate([fit_charges(rows, max_steps), reg_charges])
    return {
        "objective": objective_value(charged),
        "reg_share_recovered": float(np.mean(reg_charges < 1.0)),
        "reg_share_converged": float(np.mean(status == "converged")),
        "reg_share_diverged": float(np.mean(status == "diverged")),
        "reg_median_max_err_se": float(ok["max_err_se"].median()) if ok.height else float("nan"),
    }


def trial_name(number: int, optimizer: str, lr: float) -> str:
    """A trial run's name, e.g. `trial-3 adam lr=0.1` (what tells trials apart in the UI)."""
    return f"trial-{number} {optimizer} lr={lr:.3g}"


def make_objective(setup: TrialSetup) -> Callable:
    """The Optuna objective: one trial = one (lr, optimizer) on every fit of the problem.

    The trial reports the objective so far after each chunk of engine steps and stops the
    engine when the pruner says so. Its fits are logged (fit runs, trial run with figures),
    its rows written to `trials_dir/<number:05d>.parquet`, then it returns the objective or
    raises `optuna.TrialPruned`.

    Args:
        setup: the `TrialSetup`.

    Returns:
        `objective(trial) -> float`.
    """

    cfg, fit_cfg, tracking = setup.cfg, setup.params.fit, setup.params.tracking

    def objective(trial) -> float:
        lr = trial.suggest_float("lr", *lr_range(cfg), log=True)
        optimizer = trial.suggest_categorical("optimizer", list(cfg.optimizers))
        tracker = setup.tracker
        tags = {"trial": trial.number, "study": setup.study, "stage": setup.stage}
        # Dated just before the stage run, its fits just before it (`runs.child_time`).
        began = child_time(tracker.start_time(setup.stage_run), trial.number)
        run_id = tracker.start(trial_name(trial.number, optimizer, lr), "trial",
                               parent=setup.stage_run, tags=tags, start_time=began)  # fmt: skip
        trial.set_user_attr("mlflow_run_id", run_id)
        intermediate: list[tuple[int, float]] = []

        def on_chunk(step: int, value: float) -> bool:
            interrupts.check()  # between engine chunks: nothing is half-written
            intermediate.append((step, value))
            trial.report(value, step)
            return trial.should_prune()

        start = time.perf_counter()
        result = run_fits(setup.problem, fit_cfg, lr, optimizer, on_chunk)
        rows = fit_rows(setup.problem, result)
        histories = fit_histories(result)
        rows = pl.DataFrame({"study": [setup.study] * rows.height}).with_columns(
            trial=pl.lit(trial.number, pl.Int64), optimizer=pl.lit(optimizer),
            lr=pl.lit(lr, pl.Float64),
        ).hstack(rows)  # fmt: skip
        pruned = bool((rows["status"] == "stopped").any())
        parts = objective_parts(rows, fit_cfg.max_steps)
        fit_seconds = time.perf_counter() - start
        pending = None
        if tracking.log_fits:  # the logger processes log these while the regressions fit
            payloads = fit_payloads(rows, histories, fit_cfg=fit_cfg,
                                    max_points=tracking.max_points, plots=tracking.fit_plots,
                                    trial=trial.number, study=setup.study)  # fmt: skip
            pending = setup.fit_logger.submit(payloads, run_id, child_time(began))
        reg_pending = []  # each engine call's fit runs, logged while the next call fits
        handed = [0.0]  # seconds spent building payloads between the calls (not fitting)

        def log_call(tables) -> None:
            began_call = time.perf_counter()
            fits, coefs, paths = _labelled(tables, trial.number, setup.study, optimizer, lr)
            if tracking.log_fits and fits.height:
                payloads = fit_payloads(fits, paths, coefs=coefs, fit_cfg=fit_cfg,
                                        max_points=tracking.max_points,
                                        plots=tracking.fit_plots, trial=trial.number,
                                        study=setup.study)  # fmt: skip
                reg_pending.append(setup.fit_logger.submit(payloads, run_id, child_time(began)))
            handed[0] += time.perf_counter() - began_call

        reg_start = time.perf_counter()
        reg = None if pruned else regression_fits(setup, lr, optimizer, log_call)
        if reg is not None:
            reg = _labelled(reg, trial.number, setup.study, optimizer, lr)
            parts.update(reg_parts(rows, reg[0], fit_cfg.max_steps))
        fit_seconds += time.perf_counter() - reg_start - handed[0]
        title = f"{setup.study} trial {trial.number}: {optimizer} lr={lr:g}"
        for name, fig in trial_figures(setup.problem, rows, histories, title).items():
            tracker.log_figure(run_id, fig, name)
        run_ids = pending.get() if pending is not None else [None] * rows.height
        rows = rows.with_columns(run_id=pl.Series(run_ids, dtype=pl.String))
        keys = rows.select("trial", "scenario", "replicate", "init").with_row_index("fit")
        keys = keys.with_columns(pl.col("fit").cast(pl.Int64))
        path_rows = keys.join(histories, on="fit").drop("fit")
        meta = {files.STUDY_KEY: setup.study}
        if reg is not None:
            reg_ids = ([i for p in reg_pending for i in p.get()] if tracking.log_fits
                       else [None] * reg[0].height)  # fmt: skip
            reg_fits = reg[0].with_columns(run_id=pl.Series(reg_ids, dtype=pl.String))
            for name, table in zip(("histories", "coefs", "fits"), (reg[2], reg[1], reg_fits)):
                file = setup.layout.trial_reg(setup.study, trial.number, name)
                files.write(table, file, setup.stamp, **meta)
                tracker.log_artifact(run_id, file.path, "data")
        history_file = setup.layout.trial_histories(setup.study, trial.number)
        files.write(path_rows, history_file, setup.stamp, **meta)
        fits_file = setup.layout.trial_fits(setup.study, trial.number)
        files.write(rows, fits_file, setup.stamp, **meta)  # after its histories: it marks done
        # Workers on other hosts assemble the tables from these (`fetch_trial_files`).
        for file in (history_file, fits_file):
            tracker.log_artifact(run_id, file.path, "data")
        tracking_seconds = time.perf_counter() - start - fit_seconds
        for key, value in parts.items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("fit_seconds", fit_seconds)
        trial.set_user_attr("tracking_seconds", tracking_seconds)
        # The history ends on the objective itself, at the last step any fit took.
        last = int(rows["steps"].max())
        if not intermediate or last > intermediate[-1][0]:
            intermediate.append((last, parts["objective"]))
        tracker.log(
            run_id,
            params={"lr": lr, "optimizer": optimizer, "fits": rows.height, "inits": cfg.inits,
                    "model": fit_cfg.model, "max_steps": fit_cfg.max_steps, "tol": fit_cfg.tol,
                    "chunk_steps": fit_cfg.chunk_steps},
            metrics={**parts, "fit_seconds": fit_seconds, "tracking_seconds": tracking_seconds,
                     "fit_runs_per_second": rows.height / tracking_seconds
                     if tracking.log_fits else float("nan")},
            histories={"intermediate": (np.array([s for s, _ in intermediate]),
                                        np.array([v for _, v in intermediate]))},
            tags={"state": "pruned" if pruned else "complete"},
        )  # fmt: skip
        tracker.end(run_id)
        if setup.on_fits is not None:
            setup.on_fits(rows.height + (reg[0].height if reg is not None else 0))
        if pruned:
            raise optuna.TrialPruned(f"pruned at step {int(result.steps.max())}")
        return parts["objective"]

    return objective


def fetch_trial_files(tracker, trial, wanted: list, optional: list = ()) -> None:
    """Bring a trial's files that this work directory lacks from its MLflow trial run.

    Without a shared disk, each worker writes its trials' stamped parquet files to its own
    work directory and logs them to its trial run (artifact folder `data/`); whoever assembles
    the study downloads the others' (their stamps are checked when read, as local files are).

    Args:
        tracker: this process's `Tracker` (its tracking URI).
        trial: the COMPLETE `FrozenTrial` (user attr `mlflow_run_id`).
        wanted: the `files.File`s the trial must have; `optional` those it may lack.

    Raises:
        UserError: a wanted file is neither here nor in the trial's run.
    """
    missing = [(f, True) for f in wanted if not f.path.exists()]
    missing += [(f, False) for f in optional if not f.path.exists()]
    run_id = trial.user_attrs.get("mlflow_run_id")
    for file, needed in missing:
        file.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with tempfile.TemporaryDirectory(dir=file.path.parent) as tmp:
                got = mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=f"data/{file.path.name}", dst_path=tmp,
                    tracking_uri=tracker.uri)  # fmt: skip
                os.replace(got, file.path)  # whole or absent
        except Exception as err:
            if needed:
                first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
                raise UserError(f"trial {trial.number}: {file.path} is not here and not in its "
                                f"MLflow run {run_id}: {first}") from None  # fmt: skip
