"""ZIP-regression scenarios: the two design matrices, the check of their linear predictors,
the counts.

Per observation i, log lambda_i = x_i' beta (count part) and logit pi_i = z_i' gamma (zero part),
pi_i the probability of a structural zero (DESIGN section 7). The covariates and their columns
come from `covariates`; `design_matrix` picks the columns one part uses, with an all-ones
"intercept" first; `linear_predictor_problem` rejects true coefficients that put a rate or a
logit out of range; `simulate_counts` draws the counts.

Stream layout: `simulate_counts` draws one uniform per row for the gate, then one Poisson per
row (gated rows included), so the counts of the non-gated rows do not depend on the zero part.
Pure numpy/scipy: no I/O, no module state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from scipy.special import expit

from pipeline.core.simulation.covariates import INTERCEPT

# Rates above 1e6 are far beyond count data, e^-lambda underflows, and in float32 the Poisson
# term already loses ~1.5e-3 nats at 1e4 (DESIGN section 2); below 1e-8 a row almost surely
# gives y = 0 and carries no information about beta.
MAX_RATE = 1e6
MIN_RATE = 1e-8
# |logit pi| > 30 puts pi within 1e-13 of 0 or 1: the zero part is deterministic there, its
# MLE drifts to infinity (separation), and float32's sigmoid has saturated long before (~17).
MAX_LOGIT = 30.0


def design_matrix(
    columns_values: Mapping[str, np.ndarray],
    coefficients: Mapping[str, float],
    n: int | None = None,
) -> tuple[np.ndarray, tuple[str, ...], np.ndarray]:
    """One part's design matrix and true coefficient vector.

    Args:
        columns_values: {column name: length-n array}, e.g. from `draw_covariates`.
        coefficients: {"intercept" or column name: true value}; the part uses these columns.
        n: rows, needed only when `columns_values` is empty (an intercept-only design).

    Returns:
        (n x k float64 matrix, its k column names, the k coefficients): "intercept" (all ones)
        first when present, then the used columns in the order of `columns_values`.

    Raises:
        ValueError: no coefficients, names not among the columns, a non-finite coefficient,
            columns of different lengths, or no way to tell n.
    """
    if not coefficients:
        raise ValueError("a part needs at least one coefficient")
    unknown = [name for name in coefficients if name != INTERCEPT and name not in columns_values]
    if unknown:
        raise ValueError(f"coefficients for unknown columns: {', '.join(map(repr, unknown))}")
    bad = [name for name, value in coefficients.items() if not math.isfinite(float(value))]
    if bad:
        raise ValueError(f"coefficients not finite: {', '.join(map(repr, bad))}")
    lengths = {len(values) for values in columns_values.values()}
    if n is not None:
        lengths.add(n)
    if len(lengths) != 1:
        raise ValueError(
            "cannot tell n: pass n for an intercept-only design"
            if not lengths
            else f"columns (and n) disagree on the number of rows: {sorted(lengths)}"
        )
    rows = lengths.pop()
    names = ((INTERCEPT,) if INTERCEPT in coefficients else ()) + tuple(
        name for name in columns_values if name in coefficients and name != INTERCEPT
    )
    cols = [
        np.ones(rows) if name == INTERCEPT else np.asarray(columns_values[name], np.float64)
        for name in names
    ]
    matrix = np.column_stack(cols).astype(np.float64, copy=False)
    return matrix, names, np.array([float(coefficients[name]) for name in names])


def _where(mask: np.ndarray, values: np.ndarray, pick) -> tuple[int, str]:
    """The row of the extreme (`pick`: argmax/argmin) of `values` over `mask`, and
    "row i (m of n rows)"."""
    rows = np.flatnonzero(mask)
    i = int(rows[pick(values[rows])])
    return i, f"row {i} ({rows.size} of {values.size} rows)"


def _rate(eta: float) -> str:
    return f"{math.exp(eta):.2g}" if -745 < eta < 709 else f"exp({eta:.4g})"  # no overflow


def linear_predictor_problem(eta: np.ndarray, s: np.ndarray) -> str | None:
    """Whether the true linear predictors are usable across the simulated design.

    Args:
        eta: x_i' beta, the log-rates.
        s: z_i' gamma, the logits of the structural-zero probabilities.

    Returns:
        None for a sane design, else one line listing the problems ("; "-separated): a
        non-finite value, a rate exp(eta) above MAX_RATE or below MIN_RATE, |s| > MAX_LOGIT.
    """
    eta = np.asarray(eta, dtype=np.float64).ravel()
    s = np.asarray(s, dtype=np.float64).ravel()
    problems = []
    for part, values in (("count part", eta), ("zero part", s)):
        bad = ~np.isfinite(values)
        if bad.any():
            i, where = _where(bad, values, lambda v: 0)
            problems.append(f"{part}: linear predictor is {values[i]} at {where}")
    finite = np.isfinite(eta)
    high = finite & (eta > math.log(MAX_RATE))
    if high.any():
        i, where = _where(high, eta, np.argmax)
        problems.append(f"count part: rate reaches {_rate(eta[i])} at {where}, above {MAX_RATE:g}")
    low = finite & (eta < math.log(MIN_RATE))
    if low.any():
        i, where = _where(low, eta, np.argmin)
        problems.append(f"count part: rate falls to {_rate(eta[i])} at {where}, below {MIN_RATE:g}")
    extreme = np.isfinite(s) & (np.abs(s) > MAX_LOGIT)
    if extreme.any():
        i, where = _where(extreme, np.abs(s), np.argmax)
        problems.append(
            f"zero part: logit reaches {s[i]:.3g} at {where}, beyond +-{MAX_LOGIT:g}"
            f" (pi within {expit(-MAX_LOGIT):.1g} of 0 or 1)"
        )
    return "; ".join(problems) if problems else None


def simulate_counts(
    X: np.ndarray,
    Z: np.ndarray,
    beta: np.ndarray,
    gamma: np.ndarray,
    rng: np.random.Generator,
    count_offset: np.ndarray | None = None,
) -> np.ndarray:
    """Draw ZIP-regression counts: 0 with probability sigmoid(Z gamma), else
    Poisson(exp(X beta + count_offset)).

    Args:
        X, beta: count-part design (n x k) and coefficients (k).
        Z, gamma: zero-part design (n x m) and coefficients (m).
        rng: consumed as n uniforms (the gates: u < pi is a structural zero), then n Poisson
            draws, one per row, gated rows included.
        count_offset: (n,) added to the log rates (log exposure), or None (no offset: the
            same draws as before offsets existed).

    Returns:
        int64 counts of length n.
    """
    X, Z = np.asarray(X, np.float64), np.asarray(Z, np.float64)
    beta, gamma = np.asarray(beta, np.float64), np.asarray(gamma, np.float64)
    if X.ndim != 2 or Z.ndim != 2 or X.shape[0] != Z.shape[0]:
        raise ValueError(f"X and Z must be matrices with equal rows, got {X.shape}, {Z.shape}")
    if beta.shape != (X.shape[1],) or gamma.shape != (Z.shape[1],):
        raise ValueError(
            f"coefficients do not match the designs: beta {beta.shape} for X {X.shape},"
            f" gamma {gamma.shape} for Z {Z.shape}"
        )
    n = X.shape[0]
    eta = X @ beta
    if count_offset is not None:
        count_offset = np.asarray(count_offset, np.float64)
        if count_offset.shape != (n,) or not np.isfinite(count_offset).all():
            raise ValueError(f"count_offset must be {n} finite values, got {count_offset.shape}")
        eta = eta + count_offset
    gated = rng.random(n) < expit(Z @ gamma)
    counts = rng.poisson(np.exp(eta), n).astype(np.int64)
    counts[gated] = 0
    return counts
