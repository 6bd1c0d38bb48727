"""Hand-made grouped-scenario tables with answers worked out by hand, shared by the tests of
`pipeline.analysis.mixed_recovery` and of the report's σ section (`report.sigma_sections`).

Scenario "g" (σ = 0.5) has four datasets: σ̂ = 0.4, 0.6, 0.5 and 1.0 (log scale SE 0.2),
profile intervals (0.3, 0.55), (0.45, 0.8), (0.2, 0.45) and (0.7, 1.5); LR p-values 1e-6,
1e-4, 0.2, 1e-9. Scenario "z" (σ = 0) has three: σ̂ = 0 twice (boundary, profile (0, 0.2))
and σ̂ = 0.1 once (profile (0, 0.3)), p 1, 1 and 0.3. One variant (adam lr 0.1, full batch),
one init per dataset: g's fits all converge; z's two boundary fits stop at max_steps with σ
0.01 and 0.03, the third converges.
"""

from __future__ import annotations

import math

import polars as pl

from pipeline.analysis import mixed_recovery as mr
from pipeline.analysis.reg_recovery import reg_best_variant, reg_optimisation_table

G = {  # replicate: (sigma_hat, se, profile lower, upper, p, gd sigma, err_se)
    0: (0.4, 0.2, 0.3, 0.55, 1e-6, 0.4, 1e-6),
    1: (0.6, 0.2, 0.45, 0.8, 1e-4, 0.6, -2e-6),
    2: (0.5, 0.2, 0.2, 0.45, 0.2, 0.5, 3e-6),
    3: (1.0, 0.2, 0.7, 1.5, 1e-9, 1.0, 1e-6),
}
Z = {  # at the boundary the oracle's log σ is -inf with no SE, and GD creeps
    0: (0.0, math.nan, 0.0, 0.2, 1.0, 0.01, math.nan),
    1: (0.0, math.nan, 0.0, 0.2, 1.0, 0.03, math.nan),
    2: (0.1, 0.9, 0.0, 0.3, 0.3, 0.1, 5e-6),
}
VARIANT = {"optimizer": "adam", "lr": 0.1, "standardize": False, "batch_size": None}


def _log(v: float) -> float:
    return -math.inf if v == 0 else math.log(v)


def tables():
    summary, fits, coefs = [], [], []
    for name, truth, rows in (("g", 0.5, G), ("z", 0.0, Z)):
        for rep, (s_hat, se, lo, hi, p, gd, err) in rows.items():
            status = "boundary" if s_hat == 0 else "converged"
            base = {"scenario": name, "replicate": rep, "oracle_status": status}
            summary += [
                {**base, "part": "count", "term": "intercept", "truth": 1.0, "estimate": 1.1,
                 "se": 0.1, "sigma_p": None, "profile_lower": None, "profile_upper": None,
                 "profile_level": None},
                {**base, "part": "random", "term": "log_sigma_count", "truth": _log(truth),
                 "estimate": _log(s_hat), "se": se, "sigma_p": p, "profile_lower": _log(lo),
                 "profile_upper": _log(hi), "profile_level": 0.95},
            ]  # fmt: skip
            creeping = s_hat == 0
            fit_err = 1e-5 if not creeping else 1e-3  # log σ not judged at the boundary
            fits.append({"study": "s", "trial": 0, "scenario": name, "replicate": rep, "init": 0,
                         **VARIANT, "status": "max_steps" if creeping else "converged",
                         "steps": 500 if creeping else 300, "nll_final": 1.0,
                         "nll_gap": 1e-5 if creeping else 0.0,
                         "max_err_se": fit_err})  # fmt: skip
            key = {"study": "s", "trial": 0, "scenario": name, "replicate": rep, "init": 0,
                   "standardize": False, "batch_size": None}  # fmt: skip
            coefs += [
                {**key, "part": "count", "term": "intercept", "estimate": 1.1, "err_se": 1e-6},
                {**key, "part": "random", "term": "log_sigma_count", "estimate": math.log(gd),
                 "err_se": err},
            ]  # fmt: skip
    schema = {"batch_size": pl.Int64}
    return (pl.DataFrame(summary), pl.DataFrame(fits, schema_overrides=schema),
            pl.DataFrame(coefs, schema_overrides=schema))  # fmt: skip


def computed():
    """(`sigma_table`, `boundary_table`) of the hand-made tables."""
    summary, fits, coefs = tables()
    best = reg_best_variant(reg_optimisation_table(fits))
    return (mr.sigma_table(summary, coefs, fits, best, ["g", "z"]),
            mr.boundary_table(summary, coefs, fits, best, ["g", "z"]))  # fmt: skip
