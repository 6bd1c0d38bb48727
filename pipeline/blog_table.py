"""The blog's table, reproduced with the batched engine, beside our tuned learning rate.

The blog fitted one dataset (pi = 0.5, lambda = 5) ten times from random starts
pi0 ~ U(0, 1), lambda0 ~ U(0, 10), with Adam at lr = 1 for exactly 100 full-batch steps of its
`MixtureSameFamily` model, and printed per start: `err` (final mean NLL), `mixture` (pi_hat),
`lambda` (lambda_hat), `mixture_init` and `lambda_init`. Here the same starts also run at the
learning rate (and optimizer) the sweep found best for that scenario, with the sweep's
stopping rule, and the exact MLE is the reference every row is measured against.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from pipeline.config import BlogConfig, FitConfig
from pipeline.histogram import Histogram
from pipeline.mle import exact_mle

BLOG_COLUMNS = ("err", "mixture", "lambda", "mixture_init", "lambda_init")
# Stream tag for the blog's starts: independent of the sweep's init streams.
_BLOG_STREAM = 0xB106
_TINY = 1e-12  # U(0, 1) can return 0.0; the engine needs pi0, lambda0 strictly inside


def blog_inits(
    seed: int,
    inits: int,
    init_pi: tuple[float, float] = (0.0, 1.0),
    init_lambda: tuple[float, float] = (0.0, 10.0),
) -> tuple[np.ndarray, np.ndarray]:
    """The blog's random starts, drawn from a stream seeded by `seed`.

    Args:
        seed: the study's master seed (`params.seed`).
        inits: number of starts.
        init_pi, init_lambda: uniform ranges of pi0 and lambda0.

    Returns:
        (pi0, lambda0), float64 arrays of length `inits`, pi0 in (0, 1), lambda0 > 0.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_BLOG_STREAM,)))
    pi0 = np.clip(rng.uniform(*init_pi, size=inits), _TINY, 1 - _TINY)
    lam0 = np.maximum(rng.uniform(*init_lambda, size=inits), _TINY)
    return pi0, lam0


def blog_table(
    hist: Histogram,
    blog: BlogConfig,
    *,
    seed: int,
    tuned_lr: float | None = None,
    tuned_optimizer: str = "adam",
    fit: FitConfig | None = None,
) -> pl.DataFrame:
    """Fit the blog's starts at the blog's settings and, optionally, at our tuned lr.

    Args:
        hist: the dataset (replicate 0 of the blog scenario).
        blog: the blog's settings (lr, steps, inits).
        seed: the master seed for the starts (`blog_inits`).
        tuned_lr: our best learning rate for this scenario; None leaves the tuned columns out.
        tuned_optimizer: the optimizer that went with `tuned_lr`.
        fit: the sweep's engine settings for the tuned fits (stopping rule, model, budget).

    Returns:
        `blog.inits` rows: `init`, the blog's columns (`BLOG_COLUMNS`), the distance of the
        estimates from the exact MLE in its standard errors (`mixture_dev_se`,
        `lambda_dev_se`), and with `tuned_lr` the same at our settings with suffix `_tuned`
        plus `steps_tuned`, `status_tuned` and `lr_tuned`.
    """
    from pipeline.fitting import fit_zip, stack_histograms

    fit = fit or FitConfig()
    mle = exact_mle(hist)
    values, freqs = stack_histograms([hist])
    pi0, lam0 = blog_inits(seed, blog.inits)
    index = np.zeros(blog.inits, dtype=np.int64)
    # The blog ran a fixed number of steps: tol = grad_tol = 0 means never "converged".
    ours = fit_zip(
        values,
        freqs,
        index,
        pi0,
        lam0,
        blog.lr,
        optimizer="adam",
        model="mixture",
        max_steps=blog.steps,
        tol=0.0,
        grad_tol=0.0,
        record_every=blog.steps,
        chunk_steps=blog.steps,
    )
    table = pl.DataFrame(
        {
            "init": np.arange(blog.inits, dtype=np.int64),
            "err": ours.nll,
            "mixture": ours.pi,
            "lambda": ours.lam,
            "mixture_init": pi0,
            "lambda_init": lam0,
            "mixture_dev_se": (ours.pi - mle.pi) / mle.se_pi,
            "lambda_dev_se": (ours.lam - mle.lam) / mle.se_lam,
        }
    )
    if tuned_lr is None:
        return table
    tuned = fit_zip(
        values,
        freqs,
        index,
        pi0,
        lam0,
        tuned_lr,
        optimizer=tuned_optimizer,
        momentum=fit.momentum,
        model=fit.model,
        max_steps=fit.max_steps,
        tol=fit.tol,
        window=fit.window,
        grad_tol=fit.grad_tol,
        record_every=fit.max_steps,
        chunk_steps=fit.max_steps,
    )
    return table.with_columns(
        pl.lit(float(tuned_lr)).alias("lr_tuned"),
        pl.Series("err_tuned", tuned.nll),
        pl.Series("mixture_tuned", tuned.pi),
        pl.Series("lambda_tuned", tuned.lam),
        pl.Series("mixture_dev_se_tuned", (tuned.pi - mle.pi) / mle.se_pi),
        pl.Series("lambda_dev_se_tuned", (tuned.lam - mle.lam) / mle.se_lam),
        pl.Series("steps_tuned", tuned.steps.astype(np.int64)),
        pl.Series("status_tuned", tuned.status.astype(str)),
    )


def with_mle_row(table: pl.DataFrame, hist: Histogram) -> pl.DataFrame:
    """The table for reading: `init` as text and a last row "exact MLE" with its estimates.

    Args:
        table: from `blog_table`.
        hist: the same dataset.

    Returns:
        The rows of `table` plus the exact MLE (its NLL in every `err*` column, its estimates
        in every `mixture*` / `lambda*` estimate column, zero deviations, no init).
    """
    mle = exact_mle(hist)
    row: dict[str, object] = {"init": "exact MLE"}
    for col in table.columns:
        if col == "init":
            continue
        if col.startswith("err"):
            row[col] = mle.nll
        elif col in ("mixture", "mixture_tuned"):
            row[col] = mle.pi
        elif col in ("lambda", "lambda_tuned"):
            row[col] = mle.lam
        elif "_dev_se" in col:
            row[col] = 0.0
        else:
            row[col] = None
    shown = table.with_columns(pl.col("init").cast(pl.String))
    extra = pl.DataFrame([row], schema=shown.schema)
    return pl.concat([shown, extra])
