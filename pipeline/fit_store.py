"""The sweep's fits as tracked in MLflow, read into polars and checked against the per-fit table.

Runs come through the tracking API (`Tracker.search`: tags `zip.level = fit` and `zip.study`,
the Optuna study named after the sweep's params hash, as listed in the per-fit table). Metric
histories come straight from the store's `metrics` table when the store is SQLite (one
read-only query; DESIGN §6: 292,600 rows in 0.6 s, against one `get_metric_history` call per
run and key otherwise), else through the API.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import numpy as np
import polars as pl

from pipeline.errors import UserError
from pipeline.tracking import TAG

HISTORY_KEYS = ("nll", "pi", "lambda")
# Final values compared between the store and data/fits.parquet (both float64 end to end).
CHECKED = ("pi_hat", "lambda_hat", "nll_final")
_RTOL = 1e-12


def fit_runs(tracker, studies: Sequence[str]) -> pl.DataFrame:
    """Every fit run of these Optuna studies, as one row per run.

    Args:
        tracker: a `pipeline.tracking.Tracker` on the study's experiment.
        studies: study names (the `zip.study` tag).

    Returns:
        Columns run_id, run_status, study, trial, status (the `zip.status` tag) and `CHECKED`.
    """
    runs = [
        run
        for study in studies
        for run in tracker.search(f"tags.`{TAG}level` = 'fit' and tags.`{TAG}study` = '{study}'")
    ]
    rows = [
        {
            "run_id": r.info.run_id,
            "run_status": r.info.status,
            "study": r.data.tags.get(f"{TAG}study"),
            "trial": r.data.tags.get(f"{TAG}trial"),
            "status": r.data.tags.get(f"{TAG}status"),
            **{k: r.data.metrics.get(k) for k in CHECKED},
        }
        for r in runs
    ]
    schema = {
        "run_id": pl.String,
        "run_status": pl.String,
        "study": pl.String,
        "trial": pl.String,
        "status": pl.String,
        **dict.fromkeys(CHECKED, pl.Float64),
    }
    return pl.DataFrame(rows, schema=schema)


def cross_check(fits: pl.DataFrame, runs: pl.DataFrame) -> int:
    """Check that every fit of the table is a run of the store with the same outcome.

    Args:
        fits: data/fits.parquet (needs run_id, status and `CHECKED`).
        runs: `fit_runs` of the same sweep.

    Returns:
        The number of fit runs in the store with this params hash that the table does not
        list (trials interrupted and rerun, or pruned, leave such runs; they are ignored).

    Raises:
        UserError: a fit without a run id, a run id missing from the store, a duplicated run
            id, or a different status or final value.
    """
    where = "data/fits.parquet and the MLflow store disagree"
    if fits["run_id"].null_count():
        raise UserError(
            f"{where}: {fits['run_id'].null_count()} fits have no MLflow run id "
            "although tracking.log_fits is true; rerun `make sweep`"
        )
    if fits["run_id"].n_unique() != fits.height:
        raise UserError(f"{where}: data/fits.parquet lists a run id twice")
    both = fits.select("run_id", "status", *CHECKED).join(
        runs.with_columns(pl.lit(True).alias("in_store")),
        on="run_id",
        how="left",
        suffix="_store",
    )
    missing = both.filter(pl.col("in_store").is_null())
    if missing.height:
        raise UserError(
            f"{where}: {missing.height} of {fits.height} fits have no fit run in the "
            f"store (e.g. run {missing['run_id'][0]}); rerun `make sweep`"
        )
    bad = both.filter(pl.col("status") != pl.col("status_store"))
    if bad.height:
        row = bad.row(0, named=True)
        raise UserError(
            f"{where}: run {row['run_id']} has status {row['status_store']!r} in "
            f"the store but {row['status']!r} in the table ({bad.height} such fits)"
        )
    for key in CHECKED:
        a = both[key].fill_null(np.nan).to_numpy()
        b = both[f"{key}_store"].fill_null(np.nan).to_numpy()
        # MLflow drops non-finite metrics, so a NaN in the table is a missing value in the store.
        same = np.where(np.isfinite(a), np.isclose(a, b, rtol=_RTOL, atol=0.0), np.isnan(b))
        if not same.all():
            i = int(np.flatnonzero(~same)[0])
            raise UserError(
                f"{where}: run {both['run_id'][i]} has {key} = {b[i]!r} in the "
                f"store but {a[i]!r} in the table ({(~same).sum()} such values)"
            )
    return runs.height - runs.join(fits.select("run_id"), on="run_id", how="semi").height


def histories_sqlite(path: str, experiment_id: str, studies: Sequence[str]) -> pl.DataFrame:
    """All `HISTORY_KEYS` points of the studies' runs, in one read-only query.

    Args:
        path: the SQLite file of the MLflow store.
        experiment_id: the experiment.
        studies: study names (the `zip.study` tag).

    Returns:
        Columns run_id, key, step, value.
    """
    keys, names = (", ".join("?" for _ in x) for x in (HISTORY_KEYS, studies))
    query = f"""
        SELECT m.run_uuid AS run_id, m.key AS key, m.step AS step, m.value AS value
        FROM metrics m
        JOIN runs r ON r.run_uuid = m.run_uuid
        JOIN tags t ON t.run_uuid = m.run_uuid AND t.key = ? AND t.value IN ({names})
        WHERE r.experiment_id = ? AND m.key IN ({keys})
    """
    args = [f"{TAG}study", *studies, int(experiment_id), *HISTORY_KEYS]
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        df = pl.read_database(
            query,
            con,
            execute_options={"parameters": args},
            schema_overrides={"step": pl.Int64, "value": pl.Float64},
        )
    finally:
        con.close()
    return df.unique(["run_id", "key", "step"], keep="last")


def histories_api(client, run_ids: Sequence[str]) -> pl.DataFrame:
    """The same through the tracking API (any store; one call per run and key)."""
    rows = [
        (run_id, key, int(m.step), float(m.value))
        for run_id in run_ids
        for key in HISTORY_KEYS
        for m in client.get_metric_history(run_id, key)
    ]
    return pl.DataFrame(
        rows,
        schema={"run_id": pl.String, "key": pl.String, "step": pl.Int64, "value": pl.Float64},
        orient="row",
    ).unique(["run_id", "key", "step"], keep="last")


def store_view(tracker, fits: pl.DataFrame) -> tuple[str, pl.DataFrame]:
    """Read the sweep's fit runs and histories from the store and check them against `fits`.

    Args:
        tracker: a `Tracker` on the study's experiment.
        fits: data/fits.parquet (its `study` column names the Optuna studies).

    Returns:
        (one line saying where the fits came from, histories of the table's fits).
    """
    studies = sorted(fits["study"].unique().to_list())
    runs = fit_runs(tracker, studies)
    extra = cross_check(fits, runs)
    if tracker.uri.startswith("sqlite:///"):
        how = "SQLite metrics table"
        hist = histories_sqlite(tracker.uri[len("sqlite:///") :], tracker.experiment_id, studies)
    else:
        how = "tracking API"
        hist = histories_api(tracker.client, fits["run_id"].to_list())
    hist = hist.join(fits.select("run_id"), on="run_id", how="semi")
    line = (
        f"{fits.height:,} MLflow fit runs (study {', '.join(studies)}), identical to "
        f"data/fits.parquet in status and final π̂, λ̂, NLL; {hist.height:,} history points "
        f"via the {how}"
    )
    if extra:
        line += f"; {extra} other fit runs of the study (interrupted trials) ignored"
    return line, hist


def reach_steps(histories: pl.DataFrame, fits: pl.DataFrame, within: float) -> pl.DataFrame:
    """Per fit, the first recorded step at which it was within `within` SEs of the exact MLE.

    Both |pi - pi_MLE| / se_pi and |lambda - lambda_MLE| / se_lambda must be <= `within`.
    The step is exact up to the recording cadence of the histories.

    Args:
        histories: run_id, key, step, value (keys pi and lambda are used).
        fits: the per-fit table (run_id, scenario, optimizer, lr, mle_pi, mle_lambda, se_pi,
            se_lambda).
        within: distance in standard errors.

    Returns:
        One row per fit: scenario, optimizer, lr, run_id, reach_step (null: never).
    """
    wide = histories.filter(pl.col("key").is_in(["pi", "lambda"])).pivot(
        on="key", index=["run_id", "step"], values="value", aggregate_function="first"
    )
    keys = fits.select(
        "run_id", "scenario", "optimizer", "lr", "mle_pi", "mle_lambda", "se_pi", "se_lambda"
    )
    hit = (
        wide.join(keys, on="run_id")
        .filter(
            ((pl.col("pi") - pl.col("mle_pi")).abs() <= within * pl.col("se_pi"))
            & ((pl.col("lambda") - pl.col("mle_lambda")).abs() <= within * pl.col("se_lambda"))
        )
        .group_by("run_id")
        .agg(pl.col("step").min().alias("reach_step"))
    )
    return keys.select("scenario", "optimizer", "lr", "run_id").join(hit, on="run_id", how="left")


def reach_table(reach: pl.DataFrame) -> pl.DataFrame:
    """Per scenario × optimizer × lr: share of fits that got within reach, median and p90 step.

    Args:
        reach: from `reach_steps`.

    Returns:
        Columns scenario, optimizer, lr, reached, reach_median, reach_p90 (steps among the
        fits that got there).
    """
    step = pl.col("reach_step")
    return reach.group_by(["scenario", "optimizer", "lr"], maintain_order=True).agg(
        step.is_not_null().mean().alias("reached"),
        step.median().alias("reach_median"),
        step.quantile(0.9, interpolation="linear").alias("reach_p90"),
    )
