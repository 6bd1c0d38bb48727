"""Hand-made sweep tables with answers worked out by hand, shared by the tests of
`pipeline.analysis.recovery` (tests/analysis/test_recovery.py) and of the report's words
(tests/report/test_markdown.py).

One scenario "s" (truth pi = 0.5, lambda = 5, n = 10,000), three datasets (the third with its
exact MLE on the boundary pi = 0), two inits each at lr 0.1 (slow) and lr 1 (divergences), and
every standard error 0.01 in pi and 0.05 in lambda, so errors in SE are read off by eye.
"""

from __future__ import annotations

import math

import polars as pl

SE_PI, SE_LAM = 0.01, 0.05
MLE_PI, MLE_LAM, MLE_NLL = [0.49, 0.50, 0.0], [5.0, 5.1, 4.9], [1.7, 1.8, 1.9]

# (lr, replicate, init): (status, steps, nll_gap, pi_hat, lambda_hat)
FITS = {
    (0.1, 0, 0): ("converged", 100, 1e-9, 0.49, 5.0),
    (0.1, 0, 1): ("converged", 300, 2e-9, 0.492, 5.01),
    (0.1, 1, 0): ("max_steps", 500, 1e-3, 0.45, 5.2),
    (0.1, 1, 1): ("converged", 200, 0.0, 0.50, 5.1),
    (0.1, 2, 0): ("max_steps", 500, 1e-5, 0.003, 4.9),
    (0.1, 2, 1): ("max_steps", 500, 2e-5, 0.004, 4.9),
    (1.0, 0, 0): ("converged", 10, 0.0, 0.49, 5.0),
    (1.0, 0, 1): ("diverged", 7, math.nan, math.nan, math.nan),
    (1.0, 1, 0): ("converged", 20, 0.0, 0.50, 5.1),
    (1.0, 1, 1): ("max_steps", 500, 0.0, 0.50, 5.1),  # at the MLE, not converged: not recovered
    (1.0, 2, 0): ("diverged", 3, math.nan, math.nan, math.nan),
    (1.0, 2, 1): ("diverged", 4, math.nan, math.nan, math.nan),
}


def summary_frame() -> pl.DataFrame:
    """The data stage's summary of the three datasets; the third on the boundary."""
    return pl.DataFrame(
        {
            "scenario": ["s"] * 3,
            "replicate": [0, 1, 2],
            "n": [10_000] * 3,
            "pi_true": [0.5] * 3,
            "lambda_true": [5.0] * 3,
            "mle_pi": MLE_PI,
            "mle_lambda": MLE_LAM,
            "mle_nll": MLE_NLL,
            "boundary": [False, False, True],
        }
    )


def fits_frame() -> pl.DataFrame:
    """The sweep's per-fit table of `FITS` (optimizer adam)."""
    rows = []
    for (lr, rep, init), (status, steps, gap, pi, lam) in FITS.items():
        rows.append(
            {
                "scenario": "s",
                "optimizer": "adam",
                "lr": lr,
                "replicate": rep,
                "init": init,
                "status": status,
                "steps": steps,
                "nll_gap": gap,
                "pi_hat": pi,
                "lambda_hat": lam,
                "nll_final": MLE_NLL[rep] + gap,
                "mle_pi": MLE_PI[rep],
                "mle_lambda": MLE_LAM[rep],
                "se_pi": SE_PI,
                "se_lambda": SE_LAM,
                "boundary": rep == 2,
                "pi_true": 0.5,
                "lambda_true": 5.0,
            }
        )
    return pl.DataFrame(rows)


# The exact MLE of a blog-like dataset, for the blog table's last row.
MLE = {"mle_pi": 0.4996, "mle_lambda": 5.0195, "mle_nll": 1.7614, "se_pi": 0.01, "se_lambda": 0.05}


def report_tables():
    """(optimisation table, statistics table) of the hand-made frames."""
    from pipeline.analysis import recovery, statistics

    fits, summary = fits_frame(), summary_frame()
    return (
        recovery.optimisation_table(fits, max_steps=500),
        statistics.statistics_table(fits, summary, level=0.95),
    )
