"""How fast gradient descent gets near the exact MLE: first step within a distance, per fit.

Pure polars over the sweep's per-fit table and its histories (`data/histories.parquet`, one
row per fit and recorded step), no I/O. A fit is identified within a stage's tables by
(trial, scenario, replicate, init).
"""

from __future__ import annotations

import polars as pl

FIT = ["trial", "scenario", "replicate", "init"]


def reach_steps(histories: pl.DataFrame, fits: pl.DataFrame, within: float) -> pl.DataFrame:
    """Per fit, the first recorded step at which it was within `within` SEs of the exact MLE.

    Both |pi - pi_MLE| / se_pi and |lambda - lambda_MLE| / se_lambda must be <= `within`.
    The step is exact up to the recording cadence of the histories (`fit.record_every`).

    Args:
        histories: the `FIT` columns, step, pi and lambda.
        fits: the per-fit table (`FIT`, optimizer, lr, mle_pi, mle_lambda, se_pi, se_lambda).
        within: distance in standard errors.

    Returns:
        One row per fit: scenario, optimizer, lr, the `FIT` columns, reach_step (null: never).
    """
    keys = fits.select(*FIT, "optimizer", "lr", "mle_pi", "mle_lambda", "se_pi", "se_lambda")
    hit = (
        histories.select(*FIT, "step", "pi", "lambda")
        .join(keys, on=FIT)
        .filter(
            ((pl.col("pi") - pl.col("mle_pi")).abs() <= within * pl.col("se_pi"))
            & ((pl.col("lambda") - pl.col("mle_lambda")).abs() <= within * pl.col("se_lambda"))
        )
        .group_by(FIT)
        .agg(pl.col("step").min().alias("reach_step"))
    )
    fit_keys = keys.select("scenario", "optimizer", "lr", "trial", "replicate", "init")
    return fit_keys.join(hit, on=FIT, how="left")


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
