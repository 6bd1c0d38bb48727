"""Gradient descent as an estimator: per dataset its best fit against the truth, beside the
exact MLE — bias, SD, RMSE and Wald coverage, one row per scenario × optimizer × lr ×
parameter (`statistics_table`). Pure polars/numpy, no I/O.

Monte-Carlo standard errors (suffix `_se`) treat datasets as independent draws: a bias over m
datasets has SE sd / sqrt(m), a coverage share p has SE sqrt(p (1 - p) / m).
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import NormalDist

import numpy as np
import polars as pl

from pipeline.analysis.recovery import DATASET, GROUP, PARAMETERS, best_fits, ordered
from pipeline.core.oracle.mle import fisher_information


def wald_se(pi, lam, n, scale: str = "natural") -> tuple[np.ndarray, np.ndarray]:
    """Standard errors sqrt(diag(I^-1) / n) from the Fisher information at the estimate.

    Args:
        pi, lam: estimates (arrays).
        n: observations per dataset (array).
        scale: "natural" for (pi, lambda), "logit" for (logit pi, log lambda).

    Returns:
        (se of the first parameter, se of the second); NaN where the information is singular.
    """
    info = fisher_information(np.asarray(pi, float), np.asarray(lam, float), scale=scale)
    a, b, d = info[..., 0, 0], info[..., 0, 1], info[..., 1, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        det = a * d - b * b
        n = np.asarray(n, float)
        v1, v2 = d / det / n, a / det / n
        ok = np.isfinite(det) & (det > 0)
        return np.where(ok, np.sqrt(v1), np.nan), np.where(ok, np.sqrt(v2), np.nan)


def _covered(est, se, truth, z) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(est) & np.isfinite(se), np.abs(est - truth) <= z * se, False)


def _logit(p):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(p) - np.log1p(-np.asarray(p, float))


def _coverage_columns(pi, lam, pi_true, lam_true, n, z, prefix: str) -> dict[str, np.ndarray]:
    """Per-dataset Wald hits in both scales; a missing SE (pi_hat = 0 in logit) is a miss."""
    se_pi, se_lam = wald_se(pi, lam, n, "natural")
    se_s, se_eta = wald_se(pi, lam, n, "logit")
    inner = (pi_true > 0) & (pi_true < 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_lam, log_true = np.log(lam), np.log(lam_true)
    return {
        f"{prefix}cover_pi": _covered(pi, se_pi, pi_true, z),
        f"{prefix}cover_lambda": _covered(lam, se_lam, lam_true, z),
        f"{prefix}cover_log_pi": np.where(
            inner, _covered(_logit(pi), se_s, _logit(pi_true), z), np.nan
        ),
        f"{prefix}cover_log_lambda": _covered(log_lam, se_eta, log_true, z),
    }


def _estimator_stats(est: pl.Expr, truth: pl.Expr, prefix: str) -> list[pl.Expr]:
    err = est - truth
    return [
        err.mean().alias(f"{prefix}bias"),
        (err.std() / err.count().sqrt()).alias(f"{prefix}bias_se"),
        est.std().alias(f"{prefix}sd"),
        (err * err).mean().sqrt().alias(f"{prefix}rmse"),
    ]


def statistics_table(
    fits: pl.DataFrame,
    summary: pl.DataFrame,
    *,
    level: float = 0.95,
    order: Sequence[str] | None = None,
) -> pl.DataFrame:
    """The best-NLL init per dataset as an estimator of the truth, beside the exact MLE.

    Wald intervals est +- z SE use SEs from the Fisher information at the estimate (`wald_se`),
    on the natural scale (`cover`) and on the logit/log scale (`cover_log`). Coverage is over
    all datasets: a dataset without an estimate (every init diverged) counts as a miss.

    Args:
        fits: the per-fit table.
        summary: the data stage's summary (scenario, replicate, n, pi_true, lambda_true,
            mle_pi, mle_lambda, boundary).
        level: the intervals' nominal coverage.
        order: scenario order for the rows (default: by name).

    Returns:
        One row per scenario x optimizer x lr x parameter (pi, lambda): columns truth,
        datasets, estimates, bias, bias_se, sd, rmse, cover, cover_se, cover_log, then the same
        with prefix `mle_`, and `boundary` (share of datasets whose MLE has pi = 0).
    """
    z = NormalDist().inv_cdf(0.5 + level / 2)
    if "identifiable" in summary.columns:  # all-zero datasets have no MLE and no fits
        summary = summary.filter(pl.col("identifiable"))
    data = summary.select(
        "scenario",
        "replicate",
        "n",
        "pi_true",
        "lambda_true",
        "mle_pi",
        "mle_lambda",
        "boundary",
    )
    groups = fits.select(GROUP).unique()
    grid = groups.join(data, on="scenario", how="inner")
    best = best_fits(fits).select(*DATASET, "pi_hat", "lambda_hat")
    # Fixed row order: float sums (means) then do not depend on join or input order.
    per = grid.join(best, on=DATASET, how="left").sort(DATASET)
    cols = {
        k: per[k].to_numpy().astype(float) for k in per.columns if k not in (*GROUP, "boundary")
    }
    args = (cols["pi_true"], cols["lambda_true"], cols["n"], z)
    per = per.with_columns(
        **{
            k: pl.Series(v)
            for k, v in _coverage_columns(cols["pi_hat"], cols["lambda_hat"], *args, "").items()
        },
        **{
            k: pl.Series(v)
            for k, v in _coverage_columns(cols["mle_pi"], cols["mle_lambda"], *args, "mle_").items()
        },
    )
    rows = []
    for name, (est, mle, truth) in PARAMETERS.items():
        hits = (f"cover_{name}", f"cover_log_{name}")
        part = per.group_by(GROUP, maintain_order=True).agg(
            pl.lit(name).alias("parameter"),
            pl.col(truth).first().alias("truth"),
            pl.len().alias("datasets"),
            pl.col(est).count().alias("estimates"),
            *_estimator_stats(pl.col(est), pl.col(truth), ""),
            pl.col(hits[0]).cast(pl.Float64).mean().alias("cover"),
            pl.col(hits[1]).cast(pl.Float64).mean().alias("cover_log"),
            *_estimator_stats(pl.col(mle), pl.col(truth), "mle_"),
            pl.col(f"mle_{hits[0]}").cast(pl.Float64).mean().alias("mle_cover"),
            pl.col(f"mle_{hits[1]}").cast(pl.Float64).mean().alias("mle_cover_log"),
            pl.col("boundary").cast(pl.Float64).mean().alias("boundary"),
        )
        rows.append(part)
    table = pl.concat(rows).with_columns(
        (pl.col("cover") * (1 - pl.col("cover")) / pl.col("datasets")).sqrt().alias("cover_se")
    )
    first = [
        *GROUP,
        "parameter",
        "truth",
        "datasets",
        "estimates",
        "bias",
        "bias_se",
        "sd",
        "rmse",
        "cover",
        "cover_se",
        "cover_log",
    ]
    table = table.select(*first, *[c for c in table.columns if c not in first])
    return ordered(table, order, [pl.col("parameter") != "pi"])
