"""Distribution functions of the fitted count families, row by row, and binned expected counts.

The frequency table's rows (`goodness.count_bins`) may span many counts (a range, an open
tail), so each model's expected frequency of a row is a difference of cdfs or survival
functions (`goodness.binned_probabilities`), not a sum over the row's values: a row spanning
10⁶ counts costs four scipy calls per observation, as one spanning a single count. Per row i
with count-part cdf F_i and survival S_i = 1 − F_i (Poisson with mean μ_i = exp(x_iᵀβ), or NB2
with size θ = 1/α and p = 1/(1 + αμ_i), scipy's `nbinom`):
    plain        F(k), S(k)
    zero-infl.   π + (1 − π)F(k), (1 − π)S(k),             π = σ(z_iᵀγ)
    hurdle       (1 − p⁺) + p⁺(F(k) − F(0))/S(0), p⁺S(k)/S(0),   p⁺ = σ(z_iᵀγ)
with parameters in the oracle's order [γ, β, log α] (log α = −inf: the Poisson limit). scipy's
NB cdf loses relative accuracy as θ grows (~1e-7 at θ = 1e10): harmless for a frequency table,
and the oracle puts α̂ < 1e-8 on the boundary (the Poisson) anyway.
Core layer: numpy/scipy, pure functions, no I/O.
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from scipy.special import expit

from pipeline.core.inference.goodness import binned_probabilities
from pipeline.core.model import family as family_of


def _count_part(family: str, mu: np.ndarray, log_alpha: float | None):
    """The frozen scipy distribution of the count part, one per row."""
    if log_alpha is None or not family_of(family).dispersion or log_alpha == -np.inf:
        return stats.poisson(mu)
    alpha = float(np.exp(log_alpha))
    return stats.nbinom(1.0 / alpha, 1.0 / (1.0 + alpha * mu))


def row_cdf_sf(family: str, X, Z, params):
    """cdf(k) and sf(k), each k -> (n,) array of P(Y_i <= k) and P(Y_i > k).

    Args:
        family: one of `count_terms.FAMILIES`.
        X: (n, p) count design; Z: (n, q) zero design (q = 0 for poisson/nb).
        params: [γ, β, (log α)] as `oracle.fit.OracleFit.params`.

    Returns:
        (cdf, sf), functions of an integer k >= 0.
    """
    X, Z = np.atleast_2d(np.asarray(X, float)), np.asarray(Z, float).reshape(len(X), -1)
    params = np.asarray(params, float)
    q, p = Z.shape[1], X.shape[1]
    fam = family_of(family)
    log_alpha = float(params[q + p]) if fam.dispersion else None
    with np.errstate(over="ignore"):
        count = _count_part(family, np.exp(X @ params[q : q + p]), log_alpha)
    part = fam.zero
    if part is None:
        return count.cdf, count.sf
    share = expit(Z @ params[:q])  # π (zero-inflated) or p⁺ (hurdle)
    if part == "inflation":
        return (lambda k: share + (1 - share) * count.cdf(k)), (lambda k: (1 - share) * count.sf(k))
    f0, s0 = count.cdf(0), count.sf(0)
    return ((lambda k: (1 - share) + share * (count.cdf(k) - f0) / s0),
            (lambda k: share * count.sf(k) / s0))  # fmt: skip


def binned_expected(family: str, X, Z, params, starts, weights=None) -> np.ndarray:
    """Expected frequency of each table row, Σ_i w_i P(Y_i in row j).

    Args:
        family, X, Z, params: as in `row_cdf_sf`.
        starts: lower edges of the rows (`goodness.count_bins`); the last row is open.
        weights: (n,) frequency weights (None: ones).

    Returns:
        (rows,) float64 array summing to Σ w.
    """
    cdf, sf = row_cdf_sf(family, X, Z, params)
    probs = binned_probabilities(starts, cdf, sf)  # (rows, n)
    w = np.ones(probs.shape[1]) if weights is None else np.asarray(weights, float)
    return probs @ w
