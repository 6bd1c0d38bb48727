"""Recovery in the count-regression scenarios: pure polars/numpy, no I/O.

Inputs are the sweep's `reg_fits` (one row per fit: scenario, replicate, init, optimizer, lr,
standardize, batch_size, status, steps, nll_final, nll_gap, max_err_se), its `reg_coefs` (one
row per fit × coefficient: part, term, estimate, se_gd, err_se) and the data stage's
`reg_summary` (one row per dataset × coefficient: truth, the Newton oracle's estimate and SE,
oracle_status). A *variant* is one (optimizer, lr, standardize, batch_size); batch_size null
is the full batch.

- `reg_optimisation_table`: per scenario × variant, how often, how fast and how close
  gradient descent got to the oracle.
- `reg_best_variant`: per scenario, the variant whose fits end closest to the oracle.
- `reg_recovery_table`: per scenario × coefficient, the oracle and GD (at the best variant) as
  estimators of the truth: bias, RMSE and Wald coverage.

Monte-Carlo standard errors (suffix `_se`) as in `recovery`: a share p of N fits or datasets
has SE sqrt(p (1 − p) / N), a bias over R datasets sd / sqrt(R).
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import NormalDist

import polars as pl

from pipeline.analysis.recovery import ordered

VARIANT = ["optimizer", "lr", "standardize", "batch_size"]
GROUP = ["scenario", *VARIANT]
DATASET = ["scenario", "replicate"]
FIT_KEY = ["study", "trial", "scenario", "replicate", "init", "standardize", "batch_size"]
TIGHT_SE = 0.01  # "reaches the oracle": every coefficient within this many oracle SEs
LOOSE_SE = 1.0  # "within sampling error of the oracle"
TIGHT, LOOSE = "within_0.01se", "within_1se"


def _share(mask: pl.Expr, name: str) -> list[pl.Expr]:
    """A share over the group's rows and its binomial Monte-Carlo SE."""
    p = mask.fill_null(False).cast(pl.Float64).mean()
    return [p.alias(name), (p * (1 - p) / pl.len()).sqrt().alias(f"{name}_se")]


def _finite(name: str) -> pl.Expr:
    return pl.col(name).cast(pl.Float64).fill_null(float("nan")).is_finite()


def reg_optimisation_table(fits: pl.DataFrame, order: Sequence[str] | None = None) -> pl.DataFrame:
    """How often, how fast and how close gradient descent got to the Newton oracle.

    Shares are of all fits; steps are over converged fits (mini-batch fits never pass the
    convergence test and end at max_steps); gaps (full-data mean NLL above the oracle's, nats
    per observation) and errors (`max_err_se`, the largest |coefficient − oracle| in oracle
    SEs) over fits that did not diverge and have a finite value. `within_0.01se` / `within_1se`
    are the shares of all fits whose every coefficient ends within 0.01 / 1 oracle SE (a
    diverged fit is never within). `err_median_all` is the median error over all fits with a
    diverged one counted as infinitely far: the score of `reg_best_variant`.

    Args:
        fits: the sweep's `reg_fits` table.
        order: scenario order for the rows (default: by name).

    Returns:
        One row per scenario × optimizer × lr × standardize × batch_size (full batch first).
    """
    ok = pl.col("status") != "diverged"
    conv = pl.col("status") == "converged"
    err = pl.col("max_err_se").cast(pl.Float64).fill_null(float("nan"))
    # Fixed row order: float sums (means) then do not depend on how the input was ordered.
    fits = fits.sort([*GROUP, "replicate", "init"], nulls_last=False)
    table = fits.group_by(GROUP, maintain_order=True).agg(
        pl.len().alias("fits"),
        pl.col("replicate").n_unique().alias("datasets"),
        *_share(conv, "converged"),
        *_share(pl.col("status") == "max_steps", "max_steps"),
        *_share(pl.col("status") == "stalled", "stalled"),
        *_share(~ok, "diverged"),
        pl.col("steps").filter(conv).median().alias("steps_median"),
        pl.col("nll_gap").filter(ok & _finite("nll_gap")).median().alias("gap_median"),
        pl.col("nll_gap").filter(ok & _finite("nll_gap")).max().alias("gap_max"),
        err.filter(ok & _finite("max_err_se")).median().alias("err_median"),
        err.filter(ok & _finite("max_err_se")).max().alias("err_max"),
        *_share(ok & (err < TIGHT_SE) & _finite("max_err_se"), TIGHT),
        *_share(ok & (err < LOOSE_SE) & _finite("max_err_se"), LOOSE),
        pl.when(ok & _finite("max_err_se"))
        .then(err)
        .otherwise(float("inf"))
        .median()
        .alias("err_median_all"),
    )
    return ordered(table, order, ["standardize", "batch_size"])


def reg_best_variant(optimisation: pl.DataFrame) -> pl.DataFrame:
    """Per scenario, the variant whose fits end closest to the oracle.

    The score is `err_median_all`: the median over all fits of the largest coefficient error
    in oracle SEs, a diverged fit counted as infinitely far (so a variant where most fits
    diverge never wins on its few survivors). Ties go to the higher share converged, then the
    full batch, then the smaller lr.

    Args:
        optimisation: `reg_optimisation_table`.

    Returns:
        One row per scenario (in the table's order): optimizer, lr, standardize, batch_size,
        err_median_all, converged, within_0.01se.
    """
    ranked = optimisation.with_columns(pl.col("batch_size").is_not_null().alias("_mini")).sort(
        ["err_median_all", "converged", "_mini", "lr", "optimizer", "standardize"],
        descending=[False, True, False, False, False, False],
        nulls_last=True,
        maintain_order=True,
    )
    first = ranked.group_by("scenario", maintain_order=True).first()
    scenarios = optimisation.select("scenario").unique(maintain_order=True)
    cols = [*VARIANT, "err_median_all", "converged", TIGHT]
    return scenarios.join(first.select("scenario", *cols), on="scenario", how="left")


def _with_variant(coefs: pl.DataFrame, fits: pl.DataFrame) -> pl.DataFrame:
    """The coefficient rows with their fit's optimizer and lr (joined from `fits` if absent)."""
    if all(c in coefs.columns for c in VARIANT):
        return coefs
    key = [c for c in FIT_KEY if c in coefs.columns and c in fits.columns]
    extra = [c for c in VARIANT if c not in coefs.columns]
    return coefs.join(fits.select(*key, *extra), on=key, how="inner", nulls_equal=True)


def best_fits(fits: pl.DataFrame, best: pl.DataFrame) -> pl.DataFrame:
    """Per dataset at its scenario's best variant, the non-diverged init with the lowest NLL.

    Ties go to the lowest init; a dataset whose inits all diverged has no row.
    """
    chosen = fits.join(best.select(GROUP), on=GROUP, how="semi", nulls_equal=True)
    usable = chosen.filter((pl.col("status") != "diverged") & _finite("nll_final"))
    return (
        usable.sort([*DATASET, "nll_final", "init"]).group_by(DATASET, maintain_order=True).first()
    )


def _estimator(est: str, truth: str, prefix: str) -> list[pl.Expr]:
    err = pl.col(est) - pl.col(truth)
    return [
        err.mean().alias(f"{prefix}bias"),
        (err.std() / err.count().sqrt()).alias(f"{prefix}bias_se"),
        (err * err).mean().sqrt().alias(f"{prefix}rmse"),
    ]


def _covered(est: str, se: str, z: float) -> pl.Expr:
    """Wald hit |est − truth| ≤ z se; a missing estimate or SE is a miss."""
    hit = (pl.col(est) - pl.col("truth")).abs() <= z * pl.col(se)
    return (hit & _finite(est) & _finite(se)).fill_null(False)


def _natural_scale(frame: pl.DataFrame, pairs: Sequence[tuple[str, str | None]]) -> pl.DataFrame:
    """The NB dispersion and the random intercepts' SDs on their own scales: rows of part
    "dispersion" (log α) become term "alpha", rows of part "random" (log σ, term
    `log_sigma_<part>`) term `sigma_<part>`, with value e^v and delta-method SE e^v·se, so an
    estimate on the boundary (log α or log σ = −inf) is 0, a number a bias and an RMSE can
    average (its SE stays NaN)."""
    disp = pl.col("part") == "dispersion"
    logged = disp | (pl.col("part") == "random")
    term = pl.col("term").str.strip_prefix("log_")
    cols = [pl.when(disp).then(pl.lit("alpha")).when(logged).then(term)
            .otherwise(pl.col("term")).alias("term")]  # fmt: skip
    for value, se in pairs:
        cols.append(pl.when(logged).then(pl.col(value).exp()).otherwise(pl.col(value)).alias(value))
        if se is not None:
            scaled = pl.col(value).exp() * pl.col(se)
            cols.append(pl.when(logged).then(scaled).otherwise(pl.col(se)).alias(se))
    return frame.with_columns(cols)


def reg_recovery_table(
    coefs: pl.DataFrame,
    fits: pl.DataFrame,
    summary: pl.DataFrame,
    *,
    level: float = 0.95,
    best: pl.DataFrame | None = None,
    order: Sequence[str] | None = None,
) -> pl.DataFrame:
    """Every coefficient's recovery of the truth, by the oracle and by GD at the best variant.

    The NB dispersion is reported as α and a random intercept's log σ as σ (`_natural_scale`).
    Datasets whose oracle did not converge (`oracle_status` neither "converged" nor "boundary"
    for some row) are left out of every column and counted in `excluded`. Over the R datasets
    left: the oracle's bias (± MC SE), RMSE and the coverage of estimate ± z·se of the truth
    (± MC SE sqrt(c (1 − c) / R)); GD's, per dataset the best-NLL non-diverged init at the
    scenario's best variant (`reg_best_variant`), with intervals estimate ± z·se_gd (SE from
    the observed information at the GD estimate). GD coverage is over all R datasets: a dataset
    without a GD estimate or with no finite se_gd counts as a miss. `gd_err_mean` /
    `gd_err_max`: mean and largest |GD − oracle| in oracle SEs.

    Args:
        coefs: the sweep's `reg_coefs` table.
        fits: the sweep's `reg_fits` table.
        summary: the data stage's `reg_summary` table.
        level: the intervals' nominal coverage.
        best: `reg_best_variant` (computed from `fits` when None).
        order: scenario order for the rows (default: by name).

    Returns:
        One row per scenario × coefficient (zero part first, in the summary's order): part,
        term, truth, datasets, excluded, the best variant, gd_estimates, then oracle_* and
        gd_* statistics.
    """
    z = NormalDist().inv_cdf(0.5 + level / 2)
    if best is None:
        best = reg_best_variant(reg_optimisation_table(fits, order))
    rows = summary.with_columns(
        pl.int_range(pl.len()).over(DATASET).alias("coef"),
        pl.col("estimate").alias("oracle"),
        pl.col("se").alias("se_oracle"),
    )
    rows = _natural_scale(rows, [("truth", None), ("oracle", "se_oracle")])
    usable = pl.col("oracle_status").is_in(["converged", "boundary"])
    status = rows.group_by(DATASET).agg(usable.all().alias("ok"))
    excluded = status.group_by("scenario").agg((~pl.col("ok")).sum().alias("excluded"))
    good = rows.join(status.filter("ok"), on=DATASET, how="semi")
    picked = best_fits(fits, best).select(*DATASET, *VARIANT, "init")
    gd = (
        _with_variant(coefs, fits)
        .join(picked, on=[*DATASET, *VARIANT, "init"], how="semi", nulls_equal=True)
        .select(*DATASET, "part", "term", pl.col("estimate").alias("gd"), "se_gd", "err_se")
    )
    gd = _natural_scale(gd, [("gd", "se_gd")])
    per = good.join(gd, on=[*DATASET, "part", "term"], how="left").sort([*DATASET, "coef"])
    table = per.group_by(["scenario", "part", "term"], maintain_order=True).agg(
        pl.col("coef").min(),
        pl.col("truth").first(),
        pl.len().alias("datasets"),
        pl.col("gd").is_not_null().sum().alias("gd_estimates"),
        *_estimator("oracle", "truth", "oracle_"),
        _covered("oracle", "se_oracle", z).cast(pl.Float64).mean().alias("oracle_cover"),
        *_estimator("gd", "truth", "gd_"),
        _covered("gd", "se_gd", z).cast(pl.Float64).mean().alias("gd_cover"),
        pl.col("err_se").abs().mean().alias("gd_err_mean"),
        pl.col("err_se").abs().max().alias("gd_err_max"),
    )
    cover_se = [
        (pl.col(c) * (1 - pl.col(c)) / pl.col("datasets")).sqrt().alias(f"{c}_se")
        for c in ("oracle_cover", "gd_cover")
    ]
    table = (
        table.with_columns(cover_se)
        .join(excluded, on="scenario", how="left")
        .join(best.select("scenario", *VARIANT), on="scenario", how="left")
    )
    names = list(order) if order else sorted(table["scenario"].unique().to_list())
    rank = pl.col("scenario").replace_strict(names, list(range(len(names))), default=len(names))
    first = ["scenario", "part", "term", "truth", "datasets", "excluded", *VARIANT]
    stats = ["bias", "bias_se", "rmse", "cover", "cover_se"]
    return table.sort([rank, "scenario", "coef"]).select(
        *first,
        "gd_estimates",
        *[f"oracle_{s}" for s in stats],
        *[f"gd_{s}" for s in stats],
        "gd_err_mean",
        "gd_err_max",
    )
