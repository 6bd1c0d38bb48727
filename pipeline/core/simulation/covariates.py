"""Simulated covariates of a ZIP-regression scenario: their spec, checks, columns and draws.

A scenario lists its covariates (`Covariate`); `check_covariates` rejects a bad list with one
line naming the covariate and field; `draw_covariates` turns them into named float64 columns
(a categorical becomes 0/1 dummies under treatment coding, its first level the reference,
`columns`). `design` builds the two design matrices from these columns. An exposure t (time
at risk, area) is one more column, drawn like a covariate after them (`check_exposure`): its
log enters the count part's linear predictor with coefficient 1 (an offset), no coefficient
is fitted for it.

Stream layout: covariates draw from the generator one after another in the order listed, so
appending a covariate leaves the earlier columns unchanged. Pure numpy: no I/O, no module
state.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DISTS = ("normal", "bernoulli", "poisson", "uniform", "categorical")
INTERCEPT = "intercept"
GROUP = "group"  # the column of a grouped scenario's group index (random intercepts)
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


def expand(cov: Covariate) -> tuple[str, ...]:
    """The design columns of one covariate.

    Args:
        cov: the covariate.

    Returns:
        Its name, or for a categorical one "name[level]" per non-reference level.
    """
    if cov.dist == "categorical":
        return tuple(f"{cov.name}[{level}]" for level in cov.levels[1:])
    return (cov.name,)


def columns(covariates: Sequence[Covariate]) -> tuple[str, ...]:
    """The design-column names after expansion, in order ("intercept" not included).

    A categorical `c` with levels (a, b, c3) gives "c[b]", "c[c3]" (treatment coding, the first
    level the reference); every other covariate gives its own name.
    """
    return tuple(col for cov in covariates for col in expand(cov))


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
        for col in expand(cov):
            if col in owner:  # e.g. a normal "c[b]" and a categorical "c" with level "b"
                raise ValueError(f"{where}: column {col!r} clashes with covariate {owner[col]!r}")
            owner[col] = cov.name
        names.add(cov.name)
        if cov.dist == "normal":
            normals.add(cov.name)


EXPOSURE_DISTS = ("uniform",)  # laws whose draws are all > 0 (uniform with low > 0)


def check_exposure(exposure: Covariate, covariates: Sequence[Covariate]) -> None:
    """Reject an exposure that could be <= 0 or whose column clashes with a covariate's.

    Args:
        exposure: the exposure, drawn after `covariates`.
        covariates: the scenario's covariates (checked with `check_covariates` first).

    Raises:
        ValueError: one line naming the problem: a dist not in `EXPOSURE_DISTS`, a uniform
            with low <= 0 (log t must be finite), bad fields, or a name that clashes.
    """
    if exposure.dist not in EXPOSURE_DISTS:
        raise ValueError(f"dist must be one of {', '.join(EXPOSURE_DISTS)} (an exposure is > 0), "
                         f"got {exposure.dist!r}")  # fmt: skip
    if not (_finite(exposure.low) and exposure.low > 0):
        raise ValueError(f"low must be > 0 (log exposure is the offset), got {exposure.low}")
    check_covariates([*covariates, exposure])


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
            for j, col in enumerate(expand(cov), start=1):
                out[col] = (index == j).astype(np.float64)
    return out
