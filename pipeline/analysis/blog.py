"""The blog's table, reproduced with the batched engine, beside our tuned learning rate.

The sweep stage runs these fits (it owns the engine) and stores the table in
`data/blog.parquet`; the report only reads it.

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

from pipeline.analysis.recovery import best_lr, optimisation_table
from pipeline.core import seeds
from pipeline.core.descent.engine import fit_zip, stack_histograms
from pipeline.core.histogram import Histogram

BLOG_COLUMNS = ("err", "mixture", "lambda", "mixture_init", "lambda_init")
_TINY = 1e-12  # U(0, 1) can return 0.0; the engine needs pi0, lambda0 strictly inside


def blog_inits(
    seed: int,
    inits: int,
    init_pi: tuple[float, float] = (0.0, 1.0),
    init_lambda: tuple[float, float] = (0.0, 10.0),
) -> tuple[np.ndarray, np.ndarray]:
    """The blog's random starts, drawn from stream `blog` of the seed tree (`seeds`).

    Args:
        seed: the study's master seed (`params.seed`).
        inits: number of starts.
        init_pi, init_lambda: uniform ranges of pi0 and lambda0.

    Returns:
        (pi0, lambda0), float64 arrays of length `inits`, pi0 in (0, 1), lambda0 > 0.
    """
    rng = seeds.generator(seed, "blog")
    pi0 = np.clip(rng.uniform(*init_pi, size=inits), _TINY, 1 - _TINY)
    lam0 = np.maximum(rng.uniform(*init_lambda, size=inits), _TINY)
    return pi0, lam0


def blog_table(
    hist: Histogram,
    mle: dict,
    blog,
    *,
    seed: int,
    fit,
    tuned_lr: float | None = None,
    tuned_optimizer: str = "adam",
) -> pl.DataFrame:
    """Fit the blog's starts at the blog's settings and, optionally, at our tuned lr.

    Args:
        hist: the dataset (replicate 0 of the blog scenario).
        mle: its exact MLE as in the data stage's summary (mle_pi, mle_lambda, se_pi, se_lambda).
        blog: the blog's settings (`config.BlogConfig`: lr, steps, inits).
        seed: the master seed for the starts (`blog_inits`).
        tuned_lr: our best learning rate for this scenario; None leaves the tuned columns out.
        tuned_optimizer: the optimizer that went with `tuned_lr`.
        fit: the engine settings (`config.FitConfig`) for the tuned fits: stopping rule,
            model, budget.

    Returns:
        `blog.inits` rows: `init`, the blog's columns (`BLOG_COLUMNS`), the distance of the
        estimates from the exact MLE in its standard errors (`mixture_dev_se`,
        `lambda_dev_se`), and with `tuned_lr` the same at our settings with suffix `_tuned`
        plus `steps_tuned`, `status_tuned` and `lr_tuned`.
    """

    mle_pi, mle_lam = mle["mle_pi"], mle["mle_lambda"]
    se_pi, se_lam = mle["se_pi"], mle["se_lambda"]
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
            "mixture_dev_se": (ours.pi - mle_pi) / se_pi,
            "lambda_dev_se": (ours.lam - mle_lam) / se_lam,
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
        pl.lit(tuned_optimizer).alias("optimizer_tuned"),
        pl.Series("err_tuned", tuned.nll),
        pl.Series("mixture_tuned", tuned.pi),
        pl.Series("lambda_tuned", tuned.lam),
        pl.Series("mixture_dev_se_tuned", (tuned.pi - mle_pi) / se_pi),
        pl.Series("lambda_dev_se_tuned", (tuned.lam - mle_lam) / se_lam),
        pl.Series("steps_tuned", tuned.steps.astype(np.int64)),
        pl.Series("status_tuned", tuned.status.astype(str)),
    )


def blog_fits(params, summary: pl.DataFrame, hists: dict, fits: pl.DataFrame) -> pl.DataFrame:
    """The blog's table for the sweep stage: its settings, and ours at the scenario's best lr.

    The best (optimizer, lr) is the blog scenario's best by the sweep's objective
    (`recovery.best_lr` over its optimisation table), as the report names it.

    Args:
        params: the validated params (`blog`, `seed`, `fit`).
        summary, hists: the data stage's summary and histograms.
        fits: the sweep's per-fit table.

    Returns:
        The `blog_table`, or an empty frame when replicate 0 of the blog scenario is not
        identifiable (every count zero: there is no MLE to compare with).
    """
    blog = params.blog
    row = summary.filter((pl.col("scenario") == blog.scenario) & (pl.col("replicate") == 0))
    if row.height == 0 or not row["identifiable"][0]:
        return pl.DataFrame()
    part = fits.filter(pl.col("scenario") == blog.scenario)
    choice = best_lr(optimisation_table(part, max_steps=params.fit.max_steps))
    lr = choice["lr"][0] if choice.height else None
    optimizer = choice["optimizer"][0] if choice.height else "adam"
    return blog_table(hists[(blog.scenario, 0)], row.row(0, named=True), blog, seed=params.seed,
                      tuned_lr=lr, tuned_optimizer=optimizer, fit=params.fit)  # fmt: skip
