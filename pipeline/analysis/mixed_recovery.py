"""Recovery of the random intercepts' SDs σ in the grouped regression scenarios: pure polars.

Inputs are the data stage's `reg_summary` (a log σ row per dataset × random part, part
"random", term `log_sigma_<part>`: truth, the quadrature oracle's estimate and SE — −inf and
NaN at the boundary σ̂ = 0 — the LR test of σ = 0, `sigma_lr`/`sigma_p`, and the profile
interval `profile_lower`/`profile_upper` of log σ at `profile_level`) and the sweep's
`reg_fits`/`reg_coefs` with the scenario's best variant (`reg_recovery.reg_best_variant`).

- `sigma_table`: per scenario × random part, σ's recovery by the oracle (bias, RMSE, how
  often σ̂ = 0, the coverage of the Wald interval on the log scale and of the profile
  interval, how often the LR test rejects σ = 0) and by gradient descent at the best variant.
- `boundary_table`: gradient descent as σ̂ → 0, datasets split by the oracle's σ̂.

Monte-Carlo SEs (suffix `_se`) as in `reg_recovery`: a share p of R datasets has SE
sqrt(p (1 − p) / R), a bias sd / sqrt(R).
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import NormalDist

import polars as pl

from pipeline.analysis.recovery import ordered
from pipeline.analysis.reg_recovery import DATASET, VARIANT, _share, _with_variant, best_fits

RANDOM = "random"  # the summary's part of a log σ row
TEST_LEVEL = 0.05  # the LR test of σ = 0 rejects at p < 0.05
# The oracle's σ̂ that splits `boundary_table`'s rows: at σ̂ = 0 exactly, small, the rest.
SMALL_SIGMA = 0.2
BANDS = ("sigma_hat = 0", f"0 < sigma_hat < {SMALL_SIGMA:g}", f"sigma_hat >= {SMALL_SIGMA:g}")


def sigma_rows(summary: pl.DataFrame) -> pl.DataFrame:
    """The usable datasets' log σ rows, with σ, σ̂ and the random part's name (`part`).

    A dataset is usable as in `reg_recovery` (every row's oracle converged or on a boundary).
    """
    if summary.is_empty() or "profile_lower" not in summary.columns:
        return pl.DataFrame()
    usable = pl.col("oracle_status").is_in(["converged", "boundary"])
    ok = summary.group_by(DATASET).agg(usable.all().alias("ok")).filter("ok")
    rows = summary.filter(pl.col("part") == RANDOM).join(ok, on=DATASET, how="semi")
    return rows.with_columns(
        pl.col("term").str.strip_prefix("log_sigma_").alias("part"),
        pl.col("truth").exp().alias("sigma"),
        pl.col("estimate").exp().alias("sigma_hat"),
    )


def _gd_sigma(coefs: pl.DataFrame, fits: pl.DataFrame, best: pl.DataFrame) -> pl.DataFrame:
    """Per dataset × random part, GD's log σ at the best variant's best init, with its fit's
    status, steps and NLL gap."""
    picked = best_fits(fits, best).select(*DATASET, *VARIANT, "init", "status", "steps",
                                          "nll_gap")  # fmt: skip
    rows = _with_variant(coefs, fits).filter(pl.col("part") == RANDOM)
    return rows.join(picked, on=[*DATASET, *VARIANT, "init"], how="inner", nulls_equal=True).select(
        *DATASET, "term", pl.col("estimate").alias("gd"), pl.col("err_se").alias("gd_err_se"),
        pl.col("status").alias("gd_status"), pl.col("steps").alias("gd_steps"),
        pl.col("nll_gap").alias("gd_gap"),
    )  # fmt: skip


def sigma_table(
    summary: pl.DataFrame,
    coefs: pl.DataFrame,
    fits: pl.DataFrame,
    best: pl.DataFrame,
    order: Sequence[str] | None = None,
) -> pl.DataFrame:
    """σ's recovery per scenario × random part (module docstring).

    Columns: scenario, part, sigma (the truth), datasets; the oracle's `bias`, `bias_se`,
    `rmse` of σ̂ (σ̂ = 0 at the boundary), `at_zero` (share σ̂ = 0), `wald_cover` (exp of
    log σ̂ ± z·SE contains σ; a σ̂ = 0 has no such interval and counts as a miss, so the
    Wald interval never covers σ = 0) and `profile_cover` (the profile interval, lower limit
    0 where the LR test does not reject, contains σ), both at `level` (the profile
    intervals' level, `profile_level`), `reject` (share with p < `TEST_LEVEL` for σ = 0: the
    power, or at σ = 0 the size); then GD's `gd_bias`, `gd_rmse` of its σ and `gd_err_max`
    (largest |log σ − oracle| in oracle SEs where the oracle has an SE), over the datasets
    with a GD estimate (`gd_estimates`); `converged_fits` and `converged_err_max`: the
    converged full-batch fits of every trial and variant, and their largest error in oracle
    SEs on any parameter. All shares with MC SEs.
    """
    rows = sigma_rows(summary)
    if rows.is_empty():
        return pl.DataFrame()
    level = float(rows["profile_level"][0])
    z = NormalDist().inv_cdf(0.5 + level / 2)
    gd = _gd_sigma(coefs, fits, best)
    rows = rows.join(gd, on=[*DATASET, "term"], how="left")
    wald_lo = (pl.col("estimate") - z * pl.col("se")).exp()
    wald_hi = (pl.col("estimate") + z * pl.col("se")).exp()
    finite = pl.col("estimate").is_finite() & pl.col("se").is_finite()
    wald = finite & (wald_lo <= pl.col("sigma")) & (pl.col("sigma") <= wald_hi)
    lower, upper = pl.col("profile_lower").exp(), pl.col("profile_upper").exp()
    profile = (lower <= pl.col("sigma")) & (pl.col("sigma") <= upper)
    err = pl.col("sigma_hat") - pl.col("sigma")
    gd_sigma = pl.col("gd").exp()
    gd_err = gd_sigma - pl.col("sigma")
    table = (
        rows.group_by(["scenario", "part"], maintain_order=True)
        .agg(
            pl.col("sigma").first(),
            pl.len().alias("datasets"),
            err.mean().alias("bias"),
            (err.std() / err.count().sqrt()).alias("bias_se"),
            (err * err).mean().sqrt().alias("rmse"),
            *_share(pl.col("sigma_hat") == 0, "at_zero"),
            *_share(wald, "wald_cover"),
            *_share(profile, "profile_cover"),
            *_share(pl.col("sigma_p") < TEST_LEVEL, "reject"),
            pl.col("gd").is_not_null().sum().alias("gd_estimates"),
            gd_err.mean().alias("gd_bias"),
            (gd_err * gd_err).mean().sqrt().alias("gd_rmse"),
            pl.col("gd_err_se")
            .filter(pl.col("gd_err_se").is_finite())
            .abs()
            .max()
            .alias("gd_err_max"),
        )
        .with_columns(level=pl.lit(level))
    )
    conv = fits.filter((pl.col("status") == "converged") & pl.col("batch_size").is_null())
    agree = conv.group_by("scenario").agg(
        pl.len().alias("converged_fits"), pl.col("max_err_se").max().alias("converged_err_max")
    )
    table = table.join(agree, on="scenario", how="left").with_columns(
        pl.col("converged_fits").fill_null(0)
    )
    return ordered(table, order, by=("part",))


def boundary_table(
    summary: pl.DataFrame,
    coefs: pl.DataFrame,
    fits: pl.DataFrame,
    best: pl.DataFrame,
    order: Sequence[str] | None = None,
) -> pl.DataFrame:
    """Gradient descent as σ̂ → 0: per scenario × random part × band of the oracle's σ̂
    (`BANDS`), the datasets, GD's share converged (± MC SE), median steps, median and largest
    GD σ, and median NLL gap to the oracle (nats per observation), at the best variant."""
    rows = sigma_rows(summary)
    if rows.is_empty():
        return pl.DataFrame()
    rows = rows.join(_gd_sigma(coefs, fits, best), on=[*DATASET, "term"], how="inner")
    band = (pl.when(pl.col("sigma_hat") == 0).then(pl.lit(BANDS[0]))
            .when(pl.col("sigma_hat") < SMALL_SIGMA).then(pl.lit(BANDS[1]))
            .otherwise(pl.lit(BANDS[2])))  # fmt: skip
    rows = rows.with_columns(band.alias("band"), pl.col("gd").exp().alias("gd_sigma"))
    table = (
        rows.group_by(["scenario", "part", "band"], maintain_order=True)
        .agg(
            pl.col("sigma").first(),
            pl.len().alias("datasets"),
            *_share(pl.col("gd_status") == "converged", "converged"),
            pl.col("gd_steps").median().alias("steps_median"),
            pl.col("gd_sigma").median().alias("gd_sigma_median"),
            pl.col("gd_sigma").max().alias("gd_sigma_max"),
            pl.col("gd_gap").median().alias("gap_median"),
        )
        .with_columns(pl.col("band").replace_strict(BANDS, list(range(len(BANDS)))).alias("_b"))
    )
    return ordered(table, order, by=("part", "_b")).drop("_b")
