"""Recovery statistics from the per-fit table: pure polars/numpy, no I/O, no MLflow.

Inputs are the sweep's per-fit table (one row per dataset x init x optimizer x learning rate)
and the data stage's per-dataset summary (truth, exact MLE, n). Two tables come out, both one
group per scenario x optimizer x lr:

- `optimisation_table`: did the optimiser get to the exact MLE, how often, how fast;
- `statistics.statistics_table` (its own module): per dataset, the best-NLL init's estimate as
  an estimator of the truth,
  beside the exact MLE (bias, SD, RMSE, Wald coverage), one row per parameter.

Monte-Carlo standard errors (suffix `_se`) treat groups as independent draws: a share p of N
fits has SE sqrt(p (1 - p) / N), a bias over m datasets has SE sd / sqrt(m). Inits of the same
dataset are not independent, so the SE of a share of fits is a lower bound when the outcome
depends on the data rather than on the init.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import polars as pl

GROUP = ["scenario", "optimizer", "lr"]
DATASET = ["scenario", "optimizer", "lr", "replicate"]
OFF_SE = 1.0  # a fit that did not diverge but ends further than this from the MLE, in SEs
COLLAPSED = 0.01  # ... with pi_hat below this fraction of the MLE's: pi collapsed towards 0
PARAMETERS = {
    "pi": ("pi_hat", "mle_pi", "pi_true"),
    "lambda": ("lambda_hat", "mle_lambda", "lambda_true"),
}


def _share(mask: pl.Expr, name: str) -> list[pl.Expr]:
    """A share and its binomial Monte-Carlo SE."""
    p = mask.cast(pl.Float64).mean()
    return [p.alias(name), (p * (1 - p) / pl.len()).sqrt().alias(f"{name}_se")]


def ordered(df: pl.DataFrame, order: Sequence[str] | None, extra: Sequence = ()):
    """Rows sorted by scenario (in `order`, else by name), optimizer, lr, then `extra`."""
    names = list(order) if order else sorted(df["scenario"].unique().to_list())
    rank = pl.col("scenario").replace_strict(names, list(range(len(names))), default=len(names))
    return df.sort([rank, "scenario", "optimizer", "lr", *extra])


def objective(diverged_penalty: float) -> pl.Expr:
    """The sweep's objective as an aggregation over fits (`sweep_objective.objective_value`).

    Mean NLL gap clipped at 0 (a converged fit may sit a rounding error below the closed-form
    NLL); a diverged fit, or one without a finite gap, counts `diverged_penalty`.

    Args:
        diverged_penalty: charge for a diverged fit (mean NLL units).

    Returns:
        A polars expression to use inside `agg` over the per-fit table.
    """
    gap = pl.col("nll_gap").fill_null(float("nan"))
    charged = pl.when((pl.col("status") == "diverged") | ~gap.is_finite())
    return charged.then(diverged_penalty).otherwise(gap.clip(lower_bound=0.0)).mean()


def optimisation_table(
    fits: pl.DataFrame, *, diverged_penalty: float, order: Sequence[str] | None = None
) -> pl.DataFrame:
    """How well, how often and how fast gradient descent reached the exact MLE.

    Gap and error statistics are over the fits that did not diverge (a diverged fit has no
    estimate; its share is reported instead). `off_mle` is the share of all fits that did not
    diverge yet end more than `OFF_SE` standard errors from the MLE in pi or lambda,
    `converged_off` those among them flagged converged (stalled on a flat region), `recovered`
    the share flagged converged within `OFF_SE` of the MLE, and
    `off_collapsed` the share of those off fits whose pi_hat fell below `COLLAPSED` x the
    MLE's. Errors are |theta_hat - theta_MLE| in units of the MLE's standard error; the spread
    is, per dataset, max - min over its non-diverged inits (in SEs), averaged over datasets
    with at least two such inits.

    Args:
        fits: the per-fit table (scenario, optimizer, lr, replicate, init, status, steps,
            nll_gap, pi_hat, lambda_hat, mle_pi, mle_lambda, se_pi, se_lambda, boundary).
        diverged_penalty: the sweep's objective charge for a diverged fit.
        order: scenario order for the rows (default: by name).

    Returns:
        One row per scenario x optimizer x lr, sorted.
    """
    ok = pl.col("status") != "diverged"
    conv = pl.col("status") == "converged"
    off = ok & ((pl.col("err_pi") > OFF_SE) | (pl.col("err_lambda") > OFF_SE)).fill_null(True)
    # Fixed row order: float sums (means) then do not depend on how the input was ordered.
    fits = fits.sort([*DATASET, "init"]).with_columns(
        ((pl.col("pi_hat") - pl.col("mle_pi")).abs() / pl.col("se_pi")).alias("err_pi"),
        ((pl.col("lambda_hat") - pl.col("mle_lambda")).abs() / pl.col("se_lambda")).alias(
            "err_lambda"
        ),
    )
    table = fits.group_by(GROUP, maintain_order=True).agg(
        pl.len().alias("fits"),
        pl.col("replicate").n_unique().alias("datasets"),
        objective(diverged_penalty).alias("objective"),
        *_share(conv, "converged"),
        *_share(pl.col("status") == "max_steps", "max_steps"),
        *_share(pl.col("status") == "diverged", "diverged"),
        pl.col("steps").filter(conv).median().alias("steps_median"),
        pl.col("steps").filter(conv).quantile(0.9, interpolation="linear").alias("steps_p90"),
        pl.col("nll_gap").filter(ok).median().alias("gap_median"),
        pl.col("nll_gap").filter(ok).max().alias("gap_max"),
        pl.col("err_pi").filter(ok).median().alias("err_pi_median"),
        pl.col("err_pi").filter(ok).max().alias("err_pi_max"),
        pl.col("err_lambda").filter(ok).median().alias("err_lambda_median"),
        pl.col("err_lambda").filter(ok).max().alias("err_lambda_max"),
        *_share(off, "off_mle"),
        *_share(conv & off, "converged_off"),
        *_share(conv & ~off, "recovered"),
        # Why fits end far off: a step overshoots into pi ~ 0, where d NLL / d logit(pi) ~ pi.
        (pl.col("pi_hat") < COLLAPSED * pl.col("mle_pi"))
        .filter(off)
        .cast(pl.Float64)
        .mean()
        .alias("off_collapsed"),
        # Why fits stop short: the MLE on the boundary pi = 0 sends logit(pi) to -inf slowly.
        pl.col("boundary")
        .filter(pl.col("status") == "max_steps")
        .cast(pl.Float64)
        .mean()
        .alias("max_steps_on_boundary"),
    )
    spread = (
        fits.filter(ok)
        .group_by(DATASET, maintain_order=True)
        .agg(
            pl.len().alias("n_ok"),
            ((pl.col("pi_hat").max() - pl.col("pi_hat").min()) / pl.col("se_pi").first()).alias(
                "spread_pi"
            ),
            (
                (pl.col("lambda_hat").max() - pl.col("lambda_hat").min())
                / pl.col("se_lambda").first()
            ).alias("spread_lambda"),
        )
        .filter(pl.col("n_ok") >= 2)
        .group_by(GROUP, maintain_order=True)
        .agg(
            pl.col("spread_pi").mean().alias("spread_pi_se"),
            pl.col("spread_lambda").mean().alias("spread_lambda_se"),
        )
    )
    table = table.join(spread, on=GROUP, how="left")
    return ordered(table, order)


def best_lr(recovery: pl.DataFrame) -> pl.DataFrame:
    """Per scenario, the best (optimizer, lr) by the sweep's objective and by share recovered.

    "Recovered" fits are flagged converged and end within `recovery.OFF_SE` standard errors of
    the exact MLE (a fit can stop as converged on a flat region far from it). Ties go to fewer
    median steps, then the smaller lr.

    Args:
        recovery: the optimisation table.

    Returns:
        One row per scenario (in the table's order): optimizer, lr, objective, recovered,
        steps_median of the best by objective, then optimizer_recovered, lr_recovered,
        recovered_best, steps_median_best of the best by share recovered.
    """
    cols = ["optimizer", "lr", "objective", "recovered", "steps_median"]
    by_obj = recovery.sort("objective", "lr", nulls_last=True)
    by_rec = recovery.with_columns(pl.col("steps_median").fill_null(math.inf).alias("_steps")).sort(
        ["recovered", "_steps", "lr"], descending=[True, False, False]
    )
    first = [df.group_by("scenario", maintain_order=True).first() for df in (by_obj, by_rec)]
    order = recovery.select("scenario").unique(maintain_order=True)
    return order.join(first[0].select("scenario", *cols), on="scenario", how="left").join(
        first[1].select(
            "scenario",
            pl.col("optimizer").alias("optimizer_recovered"),
            pl.col("lr").alias("lr_recovered"),
            pl.col("recovered").alias("recovered_best"),
            pl.col("steps_median").alias("steps_median_best"),
        ),
        on="scenario",
        how="left",
    )


def best_fits(fits: pl.DataFrame) -> pl.DataFrame:
    """Per dataset (and optimizer, lr) the non-diverged init with the lowest final NLL.

    Ties go to the lowest init index. A dataset whose inits all diverged has no row.

    Args:
        fits: the per-fit table.

    Returns:
        One row per scenario x optimizer x lr x replicate, with the chosen fit's columns.
    """
    usable = fits.filter(
        (pl.col("status") != "diverged")
        & pl.col("nll_final").is_finite()
        & pl.col("pi_hat").is_finite()
        & pl.col("lambda_hat").is_finite()
    )
    return (
        usable.sort([*DATASET, "nll_final", "init"]).group_by(DATASET, maintain_order=True).first()
    )
