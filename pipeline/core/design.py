"""ZIP-regression scenarios: a simulated covariate design, its two design matrices, the counts.

Per observation i, log lambda_i = x_i' beta (count part) and logit pi_i = z_i' gamma (zero part),
pi_i the probability of a structural zero (DESIGN section 7). A scenario lists its covariates
(`Covariate`); `draw_covariates` turns them into named float64 columns (a categorical becomes
0/1 dummies under treatment coding, its first level the reference); `design_matrix` picks the
columns one part uses, with an all-ones "intercept" first; `simulate_counts` draws the counts.

Stream layout: covariates draw from the generator one after another in the order listed, so
appending a covariate leaves the earlier columns unchanged; `simulate_counts` draws one uniform
per row for the gate, then one Poisson per row (gated rows included), so the counts of the
non-gated rows do not depend on the zero part. Pure numpy/scipy: no I/O, no module state.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import expit

DISTS = ("normal", "bernoulli", "poisson", "uniform", "categorical")
INTERCEPT = "intercept"
# Rates above 1e6 are far beyond count data, e^-lambda underflows, and in float32 the Poisson
# term already loses ~1.5e-3 nats at 1e4 (DESIGN section 2); below 1e-8 a row almost surely
# gives y = 0 and carries no information about beta.
MAX_RATE = 1e6
MIN_RATE = 1e-8
# |logit pi| > 30 puts pi within 1e-13 of 0 or 1: the zero part is deterministic there, its
# MLE drifts to infinity (separation), and float32's sigmoid has saturated long before (~17).
MAX_LOGIT = 30.0
PROB_TOL = 1e-9  # categorical probabilities must sum to 1 within this


@dataclass(frozen=True)
class Covariate:
    """One simulated covariate; only the fields of its `dist` are used."""

    name: str
    dist: str  # one of DISTS
    mean: float = 0.0  # normal: mean; poisson: its mean (rate)
    sd: float = 1.0  # normal
    p: float = 0.5  # bernoulli: P(1)
    low: float = 0.0  # uniform
    high: float = 1.0
    levels: tuple[str, ...] = ()  # categorical: level names, the first is the reference
    probs: tuple[float, ...] = ()  # categorical: level probabilities (empty: equal)
    corr_with: str | None = None  # normal only: an earlier normal covariate it correlates with
    rho: float = 0.0  # ... with this correlation, -1 < rho < 1


def _expand(cov: Covariate) -> tuple[str, ...]:
    if cov.dist == "categorical":
        return tuple(f"{cov.name}[{level}]" for level in cov.levels[1:])
    return (cov.name,)


def columns(covariates: Sequence[Covariate]) -> tuple[str, ...]:
    """The design-column names after expansion, in order ("intercept" not included).

    A categorical `c` with levels (a, b, c3) gives "c[b]", "c[c3]" (treatment coding, the first
    level the reference); every other covariate gives its own name.
    """
    return tuple(col for cov in covariates for col in _expand(cov))


def _finite(x) -> bool:
    return isinstance(x, numbers.Real) and math.isfinite(x)


def _field_problem(cov: Covariate, normals: set[str]) -> str | None:
    """What is wrong with the fields `cov.dist` uses, or None; `normals`: earlier normals."""
    d = cov.dist
    if cov.corr_with is not None and d != "normal":
        return f"corr_with is for normal covariates only, not {d}"
    if d == "normal":
        if not _finite(cov.mean):
            return f"mean must be finite, got {cov.mean}"
        if not (_finite(cov.sd) and cov.sd > 0):
            return f"sd must be > 0, got {cov.sd}"
        if cov.corr_with is None:
            return None if cov.rho == 0 else f"rho = {cov.rho} given without corr_with"
        if cov.corr_with not in normals:
            return f"corr_with {cov.corr_with!r} is not an earlier normal covariate"
        if not (_finite(cov.rho) and abs(cov.rho) < 1):
            return f"rho must be in (-1, 1), got {cov.rho}"
    elif d == "bernoulli":
        if not (_finite(cov.p) and 0 < cov.p < 1):
            return f"p must be in (0, 1), got {cov.p}"
    elif d == "poisson":
        if not (_finite(cov.mean) and cov.mean > 0):
            return f"mean (the poisson rate) must be > 0, got {cov.mean}"
    elif d == "uniform":
        if not (_finite(cov.low) and _finite(cov.high) and cov.low < cov.high):
            return f"low must be < high, got low = {cov.low}, high = {cov.high}"
    elif d == "categorical":
        levels, probs = tuple(cov.levels), tuple(cov.probs)
        if len(levels) < 2:
            return f"levels needs at least 2 levels, got {len(levels)}"
        if len(set(levels)) < len(levels):
            return f"levels has duplicates: {list(levels)}"
        if probs and len(probs) != len(levels):
            return f"probs has {len(probs)} entries for {len(levels)} levels"
        if probs and not all(_finite(q) and q >= 0 for q in probs):
            return f"probs must be finite and >= 0, got {list(probs)}"
        if probs and abs(math.fsum(probs) - 1) > PROB_TOL:
            return f"probs must sum to 1, got {math.fsum(probs)!r}"
    return None


def check_covariates(covariates: Sequence[Covariate]) -> None:
    """Reject a bad covariate list with a one-line message naming the covariate and field.

    Args:
        covariates: the scenario's covariates, in drawing order.

    Raises:
        ValueError: unknown dist, an empty or duplicate name, a name or expanded column that
            clashes with "intercept" or with another column, or a bad field (sd <= 0, p not in
            (0, 1), poisson mean <= 0, low >= high, categorical with < 2 levels, duplicate
            levels or bad probs, corr_with not an earlier normal, |rho| >= 1, rho without
            corr_with, corr_with on a non-normal).
    """
    names: set[str] = set()
    owner: dict[str, str] = {}  # design column -> the covariate that makes it
    normals: set[str] = set()
    for cov in covariates:
        where = f"covariate {cov.name!r}"
        if not isinstance(cov.name, str) or not cov.name:
            raise ValueError(f"{where}: name must be a non-empty string")
        if cov.dist not in DISTS:
            raise ValueError(f"{where}: unknown dist {cov.dist!r} (one of {', '.join(DISTS)})")
        if cov.name in names:
            raise ValueError(f"{where}: duplicate name")
        if cov.name == INTERCEPT:
            raise ValueError(f"{where}: name clashes with the {INTERCEPT!r} column")
        problem = _field_problem(cov, normals)
        if problem is not None:
            raise ValueError(f"{where}: {problem}")
        for col in _expand(cov):
            if col in owner:  # e.g. a normal "c[b]" and a categorical "c" with level "b"
                raise ValueError(f"{where}: column {col!r} clashes with covariate {owner[col]!r}")
            owner[col] = cov.name
        names.add(cov.name)
        if cov.dist == "normal":
            normals.add(cov.name)


def draw_covariates(
    covariates: Sequence[Covariate], n: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Draw n rows of every covariate, in order, from `rng`.

    Correlated normal: z = rho z_other + sqrt(1 - rho^2) e with z_other the other covariate's
    standardised draw and e a fresh standard normal, then x = mean + sd z. Categorical: one
    uniform per row, its level by the cumulative probabilities.

    Args:
        covariates: checked with `check_covariates` first.
        n: rows, >= 1.
        rng: the scenario's generator; consumed in the order of `covariates`.

    Returns:
        {column name: float64 array of length n}, in the order of `columns(covariates)`
        (categorical: 0/1 dummies of the non-reference levels).
    """
    check_covariates(covariates)
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    out: dict[str, np.ndarray] = {}
    standard: dict[str, np.ndarray] = {}  # normal covariates' z, for corr_with
    for cov in covariates:
        if cov.dist == "normal":
            z = rng.standard_normal(n)
            if cov.corr_with is not None:
                z = cov.rho * standard[cov.corr_with] + math.sqrt(1 - cov.rho**2) * z
            standard[cov.name] = z
            out[cov.name] = cov.mean + cov.sd * z
        elif cov.dist == "bernoulli":
            out[cov.name] = (rng.random(n) < cov.p).astype(np.float64)
        elif cov.dist == "poisson":
            out[cov.name] = rng.poisson(cov.mean, n).astype(np.float64)
        elif cov.dist == "uniform":
            out[cov.name] = rng.uniform(cov.low, cov.high, n)
        else:
            k = len(cov.levels)
            probs = np.asarray(cov.probs if cov.probs else [1.0] * k, dtype=np.float64)
            cdf = np.cumsum(probs) / probs.sum()  # last entry exactly 1: u < 1 picks a level
            index = np.searchsorted(cdf, rng.random(n), side="right")
            for j, col in enumerate(_expand(cov), start=1):
                out[col] = (index == j).astype(np.float64)
    return out


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
    bad = [name for name, value in coefficients.items() if not _finite(float(value))]
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
    X: np.ndarray, Z: np.ndarray, beta: np.ndarray, gamma: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Draw ZIP-regression counts: 0 with probability sigmoid(Z gamma), else Poisson(exp(X beta)).

    Args:
        X, beta: count-part design (n x k) and coefficients (k).
        Z, gamma: zero-part design (n x m) and coefficients (m).
        rng: consumed as n uniforms (the gates: u < pi is a structural zero), then n Poisson
            draws, one per row, gated rows included.

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
    gated = rng.random(n) < expit(Z @ gamma)
    counts = rng.poisson(np.exp(X @ beta), n).astype(np.int64)
    counts[gated] = 0
    return counts
