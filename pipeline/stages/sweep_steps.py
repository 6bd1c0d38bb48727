"""The sweep's parent-side bookkeeping: opening the stage, and closing it with its results.

`check_datasets` checks the data before anything starts; `start_stage` prepares a study for
(re)running: creates or loads it, fails trials of dead processes, queues the grid and records
the settings on the stage run (opened by `Tracker.stage_run`, which also closes orphaned runs).
`finish_stage` assembles the fits and histories tables from the COMPLETE trials' files and
refits the blog's table (atomically, never a half-written table), logs the study's figures
and best trial, and prints a summary.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
from optuna.trial import TrialState

from pipeline.analysis.blog import blog_fits
from pipeline.core import seeds
from pipeline.core.errors import UserError
from pipeline.stages import config
from pipeline.store import datasets, files
from pipeline.tracking.fit_runs import log_study
from pipeline.tracking.heartbeat import fail_stale_trials, supersede_failed
from pipeline.tracking.storage import check_params, record_params
from pipeline.tracking.study import DONE, enqueue_grid, load_study, planned_trials
from pipeline.tracking.trial import fetch_trial_files
from pipeline.tracking.values import flatten, redact


def check_datasets(workdir: Path, params) -> None:
    """Check the data stage's files; say which datasets are skipped (every count zero).

    Raises:
        UserError: the files are missing, stale or foreign, or no dataset is identifiable.
    """
    layout = files.Layout(workdir)
    summary, _ = datasets.load_data(layout, params.digest(*config.STAGE_BLOCKS["generate"]))
    skipped = summary.filter(~pl.col("identifiable"))
    if skipped.height == summary.height:
        raise UserError("no identifiable dataset to fit: every dataset is all zeros")
    if skipped.height:
        names = ", ".join(f"{s}/{r}" for s, r in skipped.select("scenario", "replicate").rows())
        print(f"skipping {skipped.height} dataset(s) with every count zero (not identifiable): "
              f"{names}")  # fmt: skip


def start_stage(tracker, run_id: str, heartbeat, params, stage: str, where: str):
    """Create or resume (or, on a shared database, join) the study and record the stage's
    settings on its run.

    Args:
        tracker: the parent's `Tracker`; `run_id` the stage run (`Tracker.stage_run`).
        heartbeat: the parent's `Heartbeat`, attached to the Optuna storage; `where` the
            storage's URL or path (printed, password hidden).
        params: the validated params; `stage` "sweep" or "tune".

    Returns:
        (study, number of trials still to run).

    Raises:
        UserError: the study runs other params (`storage.check_params`).
    """

    cfg, study_hash, study_name = params.study(stage)
    where = redact(where)
    check_params(heartbeat.storage, study_name, study_hash)
    study = load_study(heartbeat.storage, study_name, cfg, seeds.sampler_seed(params.seed),
                       create=True)  # fmt: skip
    record_params(study, study_hash)
    if heartbeat.active:  # a database: dead workers of any host, by heartbeat
        heartbeat.recover(study)
        stale = heartbeat.recovered
    else:  # the journal file: dead processes of this host
        stale = fail_stale_trials(study)
    superseded = supersede_failed(study, tracker)
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
    if superseded:
        notes.append(f"{superseded} fit run(s) of unfinished trials marked KILLED")
    print(f"study {study_name} ({cfg.sampler}) on {where}: {', '.join(notes)}")
    return study, planned - done


def assemble(study, layout: files.Layout, stage: str, params, tracker) -> files.File:
    """The stage's tables from its COMPLETE trials: fits, histories and (sweep) the blog's.

    Each trial's rows and paths are read from `data/trials/<study>/`, where trials that ran
    on other hosts are first fetched from their MLflow runs (`trial.fetch_trial_files`); the
    per-fit table is written last (it is the make target). Every write is atomic.

    Returns:
        The per-fit table's file.
    """
    _, study_hash, name = params.study(stage)
    stamp = params.digest(*config.STAGE_BLOCKS[stage])
    fits, paths = [], []
    regression = [] if not params.data.regression.scenarios else ["histories", "coefs", "fits"]
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        fetch_trial_files(tracker, t, [layout.trial_fits(name, t.number),
                                       layout.trial_histories(name, t.number)],
                          [layout.trial_reg(name, t.number, r) for r in regression])  # fmt: skip
        fits.append(files.read(layout.trial_fits(name, t.number), study_hash))
        paths.append(files.read(layout.trial_histories(name, t.number), study_hash))
    table = pl.concat(fits, how="diagonal") if fits else pl.DataFrame()
    histories = pl.concat(paths) if paths else pl.DataFrame()
    if fits:
        table = table.sort("trial", "scenario", "replicate", "init")
        histories = histories.sort("trial", "scenario", "replicate", "init", "step")
    meta = {files.STUDY_KEY: name}
    assemble_regression(study, layout, stage, params, meta)
    if stage == "sweep":
        summary, hists = datasets.load_data(layout, params.digest(*config.STAGE_BLOCKS["generate"]))
        blog = blog_fits(params, summary, hists, table) if fits else pl.DataFrame()
        files.write(blog, layout.blog, stamp, **meta)
    files.write(histories, layout.histories(stage), stamp, **meta)
    files.write(table, layout.fits(stage), stamp, **meta)
    return layout.fits(stage)


def assemble_regression(study, layout: files.Layout, stage: str, params, meta: dict) -> None:
    """The regression tables (fits, coefs, histories) from the COMPLETE trials' files; with no
    regression scenario, any old tables are removed (they would describe other params)."""
    _, study_hash, name = params.study(stage)
    stamp = params.digest(*config.STAGE_BLOCKS[stage])
    tables = ("histories", "coefs", "fits")  # fits last: the others are complete before it
    if not params.data.regression.scenarios:
        for table in tables:
            layout.reg(table, stage).path.unlink(missing_ok=True)
        return
    keys = ["trial", "scenario", "replicate", "init", "standardize", "batch_size"]
    for table in tables:
        parts = [files.read(layout.trial_reg(name, t.number, table), study_hash)
                 for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                 if layout.trial_reg(name, t.number, table).path.exists()]  # fmt: skip
        frame = pl.concat(parts) if parts else pl.DataFrame()
        if parts:
            frame = frame.sort(keys, nulls_last=False, maintain_order=True)
        files.write(frame, layout.reg(table, stage), stamp, **meta)


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

    table = assemble(study, files.Layout(workdir), stage, params, tracker)
    log_study(tracker, run_id, study, table.path)
    tracker.summary["fits"] = pl.scan_parquet(table.path).select(pl.len()).collect().item()
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
    print(f"fits table: {table.path} ({len(complete)} complete trials)")
    print(
        f"this run: {seconds:.1f} s; all trials of the study: fitting {fit_s:.1f} s, "
        f"tracking {track_s:.1f} s"
    )
