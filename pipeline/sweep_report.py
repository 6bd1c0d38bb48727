"""The sweep's parent-side bookkeeping: opening the stage, and closing it with its results.

`check_datasets` checks the data before anything starts; `start_stage` prepares a study for
(re)running: creates or loads it, fails trials of dead processes, queues the grid and records
the settings on the stage run (opened by `Tracker.stage_run`, which also closes orphaned runs).
`finish_stage` assembles the fits table from the COMPLETE trials' rows (atomically, never a
half-written table), logs the study's figures and best trial, and prints a summary.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from pipeline import config, datasets
from pipeline.errors import UserError


def check_datasets(workdir: Path, params) -> None:
    """Check the data stage's files; say which datasets are skipped (every count zero).

    Raises:
        UserError: the files are missing, stale or foreign, or no dataset is identifiable.
    """
    summary, _ = datasets.load_study(workdir, params.digest(*config.STAGE_BLOCKS["generate"]))
    skipped = summary.filter(~pl.col("identifiable"))
    if skipped.height == summary.height:
        raise UserError("no identifiable dataset to fit: every dataset is all zeros")
    if skipped.height:
        names = ", ".join(f"{s}/{r}" for s, r in skipped.select("scenario", "replicate").rows())
        print(f"skipping {skipped.height} dataset(s) with every count zero (not identifiable): "
              f"{names}")  # fmt: skip


def start_stage(tracker, run_id: str, storage, params, stage: str, where: str):
    """Create or resume the study and record the stage's settings on its run.

    Args:
        tracker: the parent's `Tracker`; `run_id` the stage run (`Tracker.stage_run`).
        storage: the Optuna storage; `where` its URL or path (printed, password hidden).
        params: the validated params; `stage` "sweep" or "tune".

    Returns:
        (study, number of trials still to run).
    """
    from pipeline.sweep import stage_settings
    from pipeline.sweep_study import (
        DONE,
        enqueue_grid,
        fail_stale_trials,
        load_study,
        planned_trials,
        redact,
    )
    from pipeline.tracking import flatten

    cfg, _, study_name = stage_settings(params, stage)
    where = redact(where)
    study = load_study(storage, study_name, cfg, params.seed, create=True)
    stale = fail_stale_trials(study, storage)
    if cfg.sampler == "grid":
        enqueue_grid(study, cfg)
    planned = planned_trials(study, cfg)
    done = len(study.get_trials(deepcopy=False, states=DONE))
    raw = config.as_dict(params)
    blocks = {b: raw[b] for b in config.STAGE_BLOCKS[stage]}
    blocks["resolved"] = config.as_dict(cfg)
    tracker.log(run_id, params={**flatten(blocks), "storage": where, "study": study_name},
                tags={"study": study_name})  # fmt: skip
    notes = [f"{done}/{planned} trials done"]
    if stale:
        notes.append(f"{stale} trial(s) of dead processes marked FAIL")
    print(f"study {study_name} ({cfg.sampler}) on {where}: {', '.join(notes)}")
    return study, planned - done


def assemble(study, workdir: Path, stage: str, params, tracker) -> Path:
    """Concatenate the COMPLETE trials' rows into the stage's fits table (atomic write).

    A trial's rows are read from `data/trials/<study>/`, or fetched from its MLflow trial run
    when another machine ran it.

    Returns:
        The table's path.
    """
    import mlflow
    from optuna.trial import TrialState

    from pipeline.sweep import FITS_KIND, TRIAL_KIND, fits_path, stage_settings, trials_dir

    _, stamp, name = stage_settings(params, stage)
    folder = trials_dir(workdir, name)
    frames = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        path = folder / f"{t.number:05d}.parquet"
        if not path.exists() and t.user_attrs.get("mlflow_run_id"):
            folder.mkdir(parents=True, exist_ok=True)
            mlflow.artifacts.download_artifacts(
                run_id=t.user_attrs["mlflow_run_id"], artifact_path=f"data/{path.name}",
                dst_path=str(folder / ".fetched"), tracking_uri=tracker.uri,
            )  # fmt: skip
            (folder / ".fetched" / "data" / path.name).replace(path)
        frames.append(datasets.read(path, TRIAL_KIND, stamp))
    table = pl.concat(frames, how="diagonal") if frames else pl.DataFrame()
    if frames:
        table = table.sort("trial", "scenario", "replicate", "init")
    out = fits_path(workdir, stage)
    datasets.write(table, out, FITS_KIND, stamp, **{"zip.study": name})
    return out


def summary_table(study) -> pl.DataFrame:
    """One row per trial: number, optimizer, lr, objective, share converged, steps, state."""
    rows = [
        {
            "trial": t.number,
            "optimizer": t.params.get("optimizer"),
            "lr": t.params.get("lr"),
            "objective": t.value if t.values else t.user_attrs.get("objective"),
            "converged": t.user_attrs.get("share_converged"),
            "diverged": t.user_attrs.get("share_diverged"),
            "median_steps": t.user_attrs.get("median_steps"),
            "state": t.state.name,
        }
        for t in study.get_trials(deepcopy=False)
    ]
    schema = {"trial": pl.Int64, "optimizer": pl.String, "lr": pl.Float64,
              "objective": pl.Float64, "converged": pl.Float64, "diverged": pl.Float64,
              "median_steps": pl.Float64, "state": pl.String}  # fmt: skip
    return pl.DataFrame(rows, schema=schema)


def finish_stage(tracker, run_id: str, study, params, stage: str, workdir: Path,
                 seconds: float) -> None:  # fmt: skip
    """Assemble the fits table, log the study to the stage run and print the summary."""
    from optuna.trial import TrialState

    from pipeline.fit_logging import log_study

    table = assemble(study, workdir, stage, params, tracker)
    log_study(tracker, run_id, study, table)
    trials = study.get_trials(deepcopy=False)
    fit_s = sum(t.user_attrs.get("fit_seconds", 0.0) for t in trials)
    track_s = sum(t.user_attrs.get("tracking_seconds", 0.0) for t in trials)
    tracker.log(run_id, metrics={"seconds": seconds, "fit_seconds": fit_s,
                                 "tracking_seconds": track_s})  # fmt: skip
    table_text = summary_table(study).with_columns(
        pl.col(c).map_elements(lambda x: f"{x:.3g}", return_dtype=pl.String)
        for c in ("lr", "objective", "converged", "diverged", "median_steps")
    )
    with pl.Config(tbl_rows=500, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True,
                   tbl_formatting="ASCII_MARKDOWN"):  # fmt: skip
        print(table_text)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if complete:
        best = study.best_trial
        print(f"best: trial {best.number}, {best.params['optimizer']} lr={best.params['lr']:g}, "
              f"objective {best.value:.4g}")  # fmt: skip
    print(f"fits table: {table} ({len(complete)} complete trials)")
    print(
        f"this run: {seconds:.1f} s; all trials of the study: fitting {fit_s:.1f} s, "
        f"tracking {track_s:.1f} s"
    )
