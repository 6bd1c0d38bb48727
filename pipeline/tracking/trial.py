"""One Optuna trial of the sweep: fit every dataset × init at one learning rate, log, write.

`make_objective` builds the objective from a `TrialSetup` (the config and the data, loaded
once per process). A trial reports the objective so far after each chunk of engine steps
(Optuna prunes on it), logs its fit runs (`fit_logging.FitLogger`, in the background) while it
draws its own figures, writes its fit rows and their histories to
`data/trials/<study>/<number:05d>[.histories].parquet` (atomically, the rows last: their file
marks the trial done), and returns the objective (`sweep_objective`) or raises
`optuna.TrialPruned`. MLflow receives the same numbers; nothing reads them back from there.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import optuna
import polars as pl

from pipeline.analysis.objective import Problem, fit_histories, fit_rows, objective_parts, run_fits
from pipeline.report.convergence import trial_figures
from pipeline.store import files
from pipeline.tracking import interrupts
from pipeline.tracking.fit_runs import fit_payloads
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
        run_id = tracker.start(f"trial-{trial.number}", "trial", parent=setup.stage_run, tags=tags)
        trial.set_user_attr("mlflow_run_id", run_id)
        intermediate: list[tuple[int, float]] = []

        def on_chunk(step: int, value: float) -> bool:
            interrupts.check()  # between engine chunks: nothing is half-written
            intermediate.append((step, value))
            trial.report(value, step)
            return trial.should_prune()

        start = time.perf_counter()
        result = run_fits(setup.problem, fit_cfg, lr, optimizer, on_chunk, cfg.diverged_penalty)
        fit_seconds = time.perf_counter() - start
        rows = fit_rows(setup.problem, result)
        histories = fit_histories(result)
        rows = pl.DataFrame({"study": [setup.study] * rows.height}).with_columns(
            trial=pl.lit(trial.number, pl.Int64), optimizer=pl.lit(optimizer),
            lr=pl.lit(lr, pl.Float64),
        ).hstack(rows)  # fmt: skip
        pruned = bool((rows["status"] == "stopped").any())
        parts = objective_parts(rows, cfg.diverged_penalty)
        pending = None
        if tracking.log_fits:
            payloads = fit_payloads(rows, histories, fit_cfg=fit_cfg,
                                    max_points=tracking.max_points, plots=tracking.fit_plots,
                                    trial=trial.number, study=setup.study)  # fmt: skip
            pending = setup.fit_logger.submit(payloads, run_id)
        title = f"{setup.study} trial {trial.number}: {optimizer} lr={lr:g}"
        for name, fig in trial_figures(setup.problem, rows, histories, title).items():
            tracker.log_figure(run_id, fig, name)
        run_ids = pending.get() if pending is not None else [None] * rows.height
        rows = rows.with_columns(run_id=pl.Series(run_ids, dtype=pl.String))
        keys = rows.select("trial", "scenario", "replicate", "init").with_row_index("fit")
        keys = keys.with_columns(pl.col("fit").cast(pl.Int64))
        path_rows = keys.join(histories, on="fit").drop("fit")
        meta = {files.STUDY_KEY: setup.study}
        history_file = setup.layout.trial_histories(setup.study, trial.number)
        files.write(path_rows, history_file, setup.stamp, **meta)
        fits_file = setup.layout.trial_fits(setup.study, trial.number)
        files.write(rows, fits_file, setup.stamp, **meta)  # after its histories: it marks done
        tracker.log_artifact(run_id, fits_file.path, "data")
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
                    "chunk_steps": fit_cfg.chunk_steps,
                    "diverged_penalty": cfg.diverged_penalty},
            metrics={**parts, "fit_seconds": fit_seconds, "tracking_seconds": tracking_seconds,
                     "fit_runs_per_second": rows.height / tracking_seconds
                     if tracking.log_fits else float("nan")},
            histories={"intermediate": (np.array([s for s, _ in intermediate]),
                                        np.array([v for _, v in intermediate]))},
            tags={"state": "pruned" if pruned else "complete"},
        )  # fmt: skip
        tracker.end(run_id)
        if setup.on_fits is not None:
            setup.on_fits(rows.height)
        if pruned:
            raise optuna.TrialPruned(f"pruned at step {int(result.steps.max())}")
        return parts["objective"]

    return objective
