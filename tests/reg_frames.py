"""Hand-made regression sweep tables with answers worked out by hand, shared by the tests of
`pipeline.analysis.reg_recovery` and of the report's regression sections.

One scenario "s" with two coefficients (zero/intercept, truth -1, oracle SE 0.1; count/
intercept, truth 0.5, oracle SE 0.02) and three datasets; replicate 2's oracle did not
converge, so it has no fits and is excluded. Four variants, each with 2 datasets × 2 inits:
- adam lr 0.1 standardised, full batch: all converge within 0.01 SE but one (the best);
- adam lr 0.1 raw, full batch: all stop at max_steps, 5 SE off;
- adam lr 1 standardised, full batch: 3 of 4 diverge, the survivor 1e-4 SE off;
- adam lr 0.1 standardised, batches of 10: all at max_steps, 0.5 SE off.
"""

from __future__ import annotations

import math

import polars as pl

TERMS = [("zero", "intercept"), ("count", "intercept")]
TRUTH = [-1.0, 0.5]
SE_ORACLE = [0.1, 0.02]
SE_GD = [0.2, 0.02]
ORACLE = {0: [-0.9, 0.52], 1: [-1.3, 0.46], 2: [-5.0, 9.0]}
ORACLE_STATUS = {0: "converged", 1: "converged", 2: "max_iterations"}
ORACLE_NLL = {0: 1.5, 1: 1.6, 2: 1.7}

STD, RAW, DIVERGING, MINI = (
    ("adam", 0.1, True, None),
    ("adam", 0.1, False, None),
    ("adam", 1.0, True, None),
    ("adam", 0.1, True, 10),
)
KEYS = [(0, 0), (0, 1), (1, 0), (1, 1)]  # (replicate, init)
# variant -> (replicate, init) -> (status, steps, nll_gap, max_err_se)
FITS = {
    STD: {
        (0, 0): ("converged", 120, 1e-9, 0.01),
        (0, 1): ("converged", 150, 2e-9, 0.003),
        (1, 0): ("converged", 130, 3e-9, 0.002),
        (1, 1): ("converged", 140, 1e-9, 0.004),
    },
    RAW: {key: ("max_steps", 500, 0.1 * (1 + key[1]), 5.0) for key in KEYS},
    DIVERGING: {
        (0, 0): ("converged", 20, 4e-9, 1e-4),
        (0, 1): ("diverged", 3, 1e6, math.nan),
        (1, 0): ("diverged", 4, 1e6, math.nan),
        (1, 1): ("diverged", 5, 1e6, math.nan),
    },
    MINI: {key: ("max_steps", 500, 1e-4, 0.5) for key in KEYS},
}


def summary_frame(scenario: str = "s") -> pl.DataFrame:
    """The data stage's `reg_summary` of the three datasets."""
    rows = []
    for rep, estimates in ORACLE.items():
        for (part, term), truth, est, se in zip(TERMS, TRUTH, estimates, SE_ORACLE):
            rows.append({"scenario": scenario, "replicate": rep, "seed": 100 + rep, "n": 1000,
                         "zero_share": 0.4, "mean": 1.2, "part": part, "term": term,
                         "truth": truth, "estimate": est, "se": se,
                         "oracle_nll": ORACLE_NLL[rep], "oracle_status": ORACLE_STATUS[rep],
                         "oracle_message": "", "oracle_iterations": 7})  # fmt: skip
    return pl.DataFrame(rows)


def _trial(variant) -> int:
    return {0.1: 0, 1.0: 1}[variant[1]]


def fits_frame(table: dict | None = None, scenario: str = "s") -> pl.DataFrame:
    """The sweep's `reg_fits` of `table` (default `FITS`)."""
    rows = []
    for (opt, lr, std, batch), fits in (table or FITS).items():
        for (rep, init), (status, steps, gap, err) in fits.items():
            rows.append({"study": "zip-lr", "trial": _trial((opt, lr)), "optimizer": opt,
                         "lr": lr, "scenario": scenario, "replicate": rep, "init": init,
                         "standardize": std, "batch_size": batch, "n": 1000,
                         "data_seed": 100 + rep, "init_seed": f"{rep}.{init}",
                         "oracle_nll": ORACLE_NLL[rep], "nll_final": ORACLE_NLL[rep] + gap,
                         "nll_gap": gap, "steps": steps, "status": status,
                         "grad_norm": 1e-9, "max_err_se": err, "run_id": ""})  # fmt: skip
    return pl.DataFrame(rows, schema_overrides={"batch_size": pl.Int64})


def coefs_frame(table: dict | None = None, scenario: str = "s") -> pl.DataFrame:
    """The sweep's `reg_coefs`: the zero intercept `max_err_se` oracle SEs above the oracle,
    the count intercept on it; SEs at the GD estimate `SE_GD`; NaN where the fit diverged.
    No optimizer or lr columns (they come from the fits through the trial)."""
    rows = []
    for (opt, lr, std, batch), fits in (table or FITS).items():
        for (rep, init), (status, _, _, err) in fits.items():
            for j, ((part, term), truth) in enumerate(zip(TERMS, TRUTH)):
                shift = err * SE_ORACLE[0] if j == 0 else 0.0
                bad = status == "diverged"
                est = math.nan if bad else ORACLE[rep][j] + shift
                rows.append({"trial": _trial((opt, lr)), "scenario": scenario, "replicate": rep,
                             "init": init, "standardize": std, "batch_size": batch,
                             "part": part, "term": term, "truth": truth, "start": 0.0,
                             "estimate": est, "oracle": ORACLE[rep][j],
                             "se_oracle": SE_ORACLE[j],
                             "se_gd": math.nan if bad else SE_GD[j],
                             "err_se": math.nan if bad else (err if j == 0 else 0.0)})  # fmt: skip
    return pl.DataFrame(rows, schema_overrides={"batch_size": pl.Int64})
