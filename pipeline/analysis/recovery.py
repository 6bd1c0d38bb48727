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

The sweep's objective is defined here, beside `recovered`, so that the study's best trial and
the report's best learning rate are chosen by one rule (`fit_charges`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import polars as pl

GROUP = ["scenario", "optimizer", "lr"]
DATASET = ["scenario", "optimizer", "lr", "replicate"]
OFF_SE = 1.0  # a fit that did not diverge but ends further than this from the MLE, in SEs
COLLAPSED = 0.01  # ... with pi_hat below this fraction of the MLE's: pi collapsed towards 0
# The objective's tie-break among recovered fits: this × steps / max_steps (far below the
# 1 / fits a single fit more or less recovered moves the mean by, for any study < 1e6 fits).
STEP_WEIGHT = 1e-6
BEST_RULE = "the most fits recovered, then the fewest steps"  # what the objective ranks by
# The objective's name on Optuna's dashboard and in `trials_dataframe` (`set_metric_names`).
OBJECTIVE_NAME = f"share not recovered + {STEP_WEIGHT:g} x steps/max_steps"
PARAMETERS = {
    "pi": ("pi_hat", "mle_pi", "pi_true"),
    "lambda": ("lambda_hat", "mle_lambda", "lambda_true"),
}


def _share(mask: pl.Expr, name: str) -> list[pl.Expr]:
    """A share and its binomial Monte-Carlo SE."""
    p = mask.cast(pl.Float64).mean()
    return [p.alias(name), (p * (1 - p) / pl.len()).sqrt().alias(f"{name}_se")]


def ordered(df: pl.DataFrame, order: Sequence[str] | None, extra: Sequence = (),
            by: Sequence[str] = ("optimizer", "lr")):  # fmt: skip
    """Rows sorted by scenario (in `order`, else by name), `by`, then `extra`."""
    names = list(order) if order else sorted(df["scenario"].unique().to_list())
    rank = pl.col("scenario").replace_strict(names, list(range(len(names))), default=len(names))
    return df.sort([rank, "scenario", *by, *extra])


def recovered(status: np.ndarray, errors: np.ndarray, *, so_far: bool = False) -> np.ndarray:
    """Which fits recovered the exact MLE (oracle): converged, every parameter within `OFF_SE`.

    Args:
        status: (B,) fit statuses.
        errors: (B, P) each parameter's error in the MLE's standard errors (signed or not); a
            NaN (no estimate, no SE) is never within.
        so_far: a fit still "running" counts as converged (pruning's intermediate values).
            A fit "stopped" by the pruner always does: it exists only in a pruned trial, whose
            value is then its last intermediate value.

    Returns:
        (B,) booleans.
    """
    done = np.isin(
        status, ("converged", "stopped", "running") if so_far else ("converged", "stopped")
    )
    with np.errstate(invalid="ignore"):
        within = (np.abs(np.asarray(errors, dtype=float)) <= OFF_SE).all(axis=1)
    return done & within


def charge(recovered: np.ndarray, steps: np.ndarray, max_steps: int) -> np.ndarray:
    """Each fit's charge in the sweep's objective, in [0, 1 + `STEP_WEIGHT`].

    1 for a fit that did not recover the MLE (whatever went wrong: diverged, stopped at
    `max_steps`, converged far off); `STEP_WEIGHT` × steps / max_steps for one that did. The
    mean over fits is then the share not recovered, ties broken by the fewest steps.

    Args:
        recovered: (B,) from `recovered`.
        steps: (B,) optimizer steps each fit took (so far).
        max_steps: the step budget.

    Returns:
        (B,) charges.
    """
    used = np.clip(np.asarray(steps, dtype=float) / max_steps, 0.0, 1.0)
    return np.where(recovered, STEP_WEIGHT * used, 1.0)


def fit_errors(fits: pl.DataFrame) -> np.ndarray:
    """(B, P) each fit's parameter errors in the MLE's (oracle's) standard errors.

    A regression table carries its largest coefficient error (`max_err_se`); an intercept-only
    table its estimates, the exact MLE and its SEs (`PARAMETERS`).
    """
    if "max_err_se" in fits.columns:
        return fits["max_err_se"].cast(pl.Float64).fill_null(float("nan")).to_numpy()[:, None]
    cols = []
    for name, (hat, mle, _) in PARAMETERS.items():
        diff = (pl.col(hat) - pl.col(mle)) / pl.col(f"se_{name}")
        cols.append(fits.select(diff.cast(pl.Float64).fill_null(float("nan"))).to_series())
    return np.column_stack([c.to_numpy() for c in cols])


def fit_charges(fits: pl.DataFrame, max_steps: int) -> np.ndarray:
    """Each fit's charge in the sweep's objective (`charge` of `recovered`), in row order.

    Args:
        fits: a per-fit table, intercept-only or regression (status, steps and `fit_errors`).
        max_steps: the step budget.

    Returns:
        (B,) charges; their mean is the objective.
    """
    done = recovered(fits["status"].to_numpy(), fit_errors(fits))
    return charge(done, fits["steps"].to_numpy(), max_steps)


def objective_table(tables: Sequence[pl.DataFrame], max_steps: int) -> pl.DataFrame:
    """The study's objective per (optimizer, lr): the mean charge over every fit of every table.

    This is each Optuna trial's value recomputed from the fits tables (a trial is one
    optimizer × lr on every fit, intercept-only and regression).

    Args:
        tables: per-fit tables with optimizer and lr columns (empty ones are skipped).
        max_steps: the step budget.

    Returns:
        One row per optimizer × lr: fits, objective, recovered (share), sorted best first
        (lowest objective, then the smaller lr).
    """
    parts = [
        t.select("optimizer", "lr").with_columns(
            _charge=pl.Series(fit_charges(t, max_steps), dtype=pl.Float64)
        )
        for t in tables
        if t.height
    ]
    if not parts:
        schema = {"optimizer": pl.String, "lr": pl.Float64, "fits": pl.UInt32,
                  "objective": pl.Float64, "recovered": pl.Float64}  # fmt: skip
        return pl.DataFrame(schema=schema)
    return (
        pl.concat(parts)
        .group_by("optimizer", "lr", maintain_order=True)
        .agg(
            pl.len().alias("fits"),
            pl.col("_charge").mean().alias("objective"),
            (pl.col("_charge") < 1.0).mean().alias("recovered"),
        )
        .sort("objective", "lr", "optimizer")
    )


def optimisation_table(
    fits: pl.DataFrame, *, max_steps: int, order: Sequence[str] | None = None
) -> pl.DataFrame:
    """How well, how often and how fast gradient descent reached the exact MLE.

    Gap and error statistics are over the fits that did not diverge (a diverged fit has no
    estimate; its share is reported instead). `off_mle` is the share of all fits that did not
    diverge yet end more than `OFF_SE` standard errors from the MLE in pi or lambda,
    `converged_off` those among them flagged converged (stalled on a flat region), `recovered`
    the share flagged converged within `OFF_SE` of the MLE, and
    `off_collapsed` the share of those off fits whose pi_hat fell below `COLLAPSED` x the
    MLE's. `objective` is the sweep's objective over the group's fits (`fit_charges`: the
    share not recovered, then the fewest steps). Errors are |theta_hat - theta_MLE| in units
    of the MLE's standard error; the spread is, per dataset, max - min over its non-diverged
    inits (in SEs), averaged over datasets with at least two such inits.

    Args:
        fits: the per-fit table (scenario, optimizer, lr, replicate, init, status, steps,
            nll_gap, pi_hat, lambda_hat, mle_pi, mle_lambda, se_pi, se_lambda, boundary).
        max_steps: the step budget (the objective's tie-break).
        order: scenario order for the rows (default: by name).

    Returns:
        One row per scenario x optimizer x lr, sorted.
    """
    ok = pl.col("status") != "diverged"
    conv = pl.col("status") == "converged"
    off = ok & ((pl.col("err_pi") > OFF_SE) | (pl.col("err_lambda") > OFF_SE)).fill_null(True)
    # Fixed row order: float sums (means) then do not depend on how the input was ordered.
    fits = fits.sort([*DATASET, "init"])
    done = recovered(fits["status"].to_numpy(), fit_errors(fits))
    fits = fits.with_columns(
        pl.Series("_recovered", done, dtype=pl.Boolean),
        pl.Series("_charge", charge(done, fits["steps"].to_numpy(), max_steps), dtype=pl.Float64),
        ((pl.col("pi_hat") - pl.col("mle_pi")).abs() / pl.col("se_pi")).alias("err_pi"),
        ((pl.col("lambda_hat") - pl.col("mle_lambda")).abs() / pl.col("se_lambda")).alias(
            "err_lambda"
        ),
    )
    table = fits.group_by(GROUP, maintain_order=True).agg(
        pl.len().alias("fits"),
        pl.col("replicate").n_unique().alias("datasets"),
        pl.col("_charge").mean().alias("objective"),
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
        *_share(pl.col("_recovered"), "recovered"),
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

    "Recovered" fits are flagged converged and end within `OFF_SE` standard errors of the
    exact MLE (a fit can stop as converged on a flat region far from it). By the objective
    (`fit_charges`): the most fits recovered, then the fewest steps (mean over recovered fits),
    then the smaller lr — the rule `BEST_RULE` states. By share recovered: ties go to fewer
    median steps to convergence, then the smaller lr.

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
