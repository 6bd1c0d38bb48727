"""Profile likelihoods and profile-likelihood intervals of the intercept-only ZIP (and the
likelihood-ratio interval of a plain Poisson rate, `poisson_interval`).

Profiles (for the likelihood-ratio intervals):
- lam fixed: the share of zeros p0 = pi + (1 - pi) e^{-lam} enters as a binomial, so
  pi(lam) = max(0, (n0/n - e^{-lam}) / (1 - e^{-lam})) in closed form.
- pi fixed: the score in lam, S/lam - n+ - n0 w(lam) with w = (1 - pi) e^{-lam} / p0 in [0, 1],
  is > 0 below the mean and < 0 above the mean of the positive counts, so every root lies in
  [mean, positive mean]; it is not monotone in general, so all sign changes on a grid there
  are refined by brentq and the best root kept.

Every evaluation uses the sufficient statistics (`inference._stats`, `inference._loglik`), so
it costs O(1) whatever n is. Outward searches for the interval limits are bounded: they stop at
the edges of the float range rather than loop.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, stats

from pipeline.core.histogram import Histogram
from pipeline.core.inference.intercept import SuffStats, suff_loglik, suff_stats
from pipeline.core.oracle.mle import ZipMLE

_GRID = 33  # grid points for the inner maximisation in lam at fixed pi
_PI_CAP = 1.0 - 1e-15  # largest pi tried when bracketing the upper profile limit
_EDGE_STEPS = 260  # 4**260 > 1e156: with the 1e-300 / 1e300 stops, covers the float range


def profile_loglik_lam(hist: Histogram, lam: float) -> tuple[float, float]:
    """max over pi of l(pi, lam), in closed form.

    Args:
        hist: histogram of the counts.
        lam: Poisson rate > 0.

    Returns:
        (profile log-likelihood, maximising pi).
    """
    return _profile_lam(suff_stats(hist), lam)


def _profile_lam(st: SuffStats, lam: float) -> tuple[float, float]:
    e, zero_share = np.exp(-lam), st.n0 / st.n
    pi = max(0.0, (zero_share - e) / -np.expm1(-lam))
    return suff_loglik(st, pi, lam), float(pi)


def profile_loglik_pi(hist: Histogram, pi: float) -> tuple[float, float]:
    """max over lam of l(pi, lam): all score roots in [mean, positive mean], best kept.

    Args:
        hist: histogram of the counts, with at least one positive count.
        pi: structural-zero probability in [0, 1).

    Returns:
        (profile log-likelihood, maximising lam).
    """
    return _profile_pi(suff_stats(hist), pi)


def _profile_pi(st: SuffStats, pi: float) -> tuple[float, float]:
    lo, hi = st.total / st.n, st.total / st.n_pos
    if hi - lo <= 1e-12 * hi:
        return suff_loglik(st, pi, hi), hi
    r = pi / (1 - pi)

    def score(lam):  # S/lam - n+ - n0 w(lam), w = 1 / (1 + r e^lam) without overflow
        w = np.exp(-np.logaddexp(0.0, np.log(r) + lam)) if r > 0 else 1.0
        return st.total / lam - st.n_pos - st.n0 * w

    grid = np.linspace(lo, hi, _GRID)
    with np.errstate(divide="ignore"):
        g = np.array([score(x) for x in grid])
    candidates = [lo, hi]
    for a, b, ga, gb in zip(grid[:-1], grid[1:], g[:-1], g[1:]):
        if ga == 0:
            candidates.append(a)
        elif ga > 0 > gb:  # a maximum of l in lam (the score falls through zero)
            candidates.append(optimize.brentq(score, a, b, xtol=1e-14 * b, rtol=1e-15))
    values = [suff_loglik(st, pi, x) for x in candidates]
    best = int(np.argmax(values))
    return values[best], float(candidates[best])


def _crossing(fun, inside: float, outside: float) -> float:
    """The root of `fun` between the MLE (`inside`, fun < 0) and `outside` (fun > 0)."""
    lo, hi = sorted((inside, outside))
    return float(optimize.brentq(fun, lo, hi, xtol=1e-13 * max(hi, 1e-300), rtol=1e-15))


def profile_intervals(hist: Histogram, zip_fit: ZipMLE, level: float) -> dict[str, tuple]:
    """Profile-likelihood intervals {theta : 2 (l_hat - l_profile(theta)) <= chi2_1(level)}.

    On the boundary (pi_hat = 0) the lower limit for pi is 0. Limits that the likelihood does
    not reach inside the parameter space are reported as the edge (0 or 1 for pi, 0 for lam).

    Args:
        hist: histogram of the counts.
        zip_fit: the exact ZIP MLE of `hist`.
        level: coverage, e.g. 0.95.

    Returns:
        {"pi": (lower, upper), "lambda": (lower, upper)}.
    """
    st = suff_stats(hist)
    best = suff_loglik(st, zip_fit.pi, zip_fit.lam)
    q = stats.chi2.ppf(level, 1)

    def excess_pi(pi):
        return 2 * (best - _profile_pi(st, pi)[0]) - q

    def excess_lam(lam):
        return 2 * (best - _profile_lam(st, lam)[0]) - q

    pi_hat, lam_hat = zip_fit.pi, zip_fit.lam
    pi_lo = 0.0
    if pi_hat > 0 and excess_pi(0.0) > 0:
        pi_lo = _crossing(excess_pi, pi_hat, 0.0)
    pi_hi = 1.0
    for k in range(1, 16):
        edge = min(1.0 - 10.0**-k, _PI_CAP)
        if edge > pi_hat and excess_pi(edge) > 0:
            pi_hi = _crossing(excess_pi, pi_hat, edge)
            break
    if not (np.isfinite(lam_hat) and lam_hat > 0):
        raise ValueError(f"the MLE of lambda must be finite and > 0, got {lam_hat!r}")
    # Outward searches by factors of 4, bounded: 4**_EDGE_STEPS spans the float range.
    lam_lo = 0.0
    for k in range(1, _EDGE_STEPS + 1):
        edge = lam_hat / 4.0**k
        if edge < 1e-300:
            break
        if excess_lam(edge) > 0:
            lam_lo = _crossing(excess_lam, lam_hat, edge)
            break
    lam_hi = np.inf
    for k in range(1, _EDGE_STEPS + 1):
        edge = lam_hat * 4.0**k
        if edge > 1e300:
            break
        if excess_lam(edge) > 0:
            lam_hi = _crossing(excess_lam, lam_hat, edge)
            break
    return {"pi": (pi_lo, pi_hi), "lambda": (lam_lo, float(lam_hi))}


def _expm1_minus(t: float) -> float:
    """e^t - 1 - t, without cancellation near 0 (series below |t| = 1e-3)."""
    if abs(t) < 1e-3:  # the next term, t^6/720 < 2e-21: below float64 resolution of t^2/2
        return t * t * (1 / 2 + t * (1 / 6 + t * (1 / 24 + t / 120)))
    return float(np.expm1(t) - t)


def poisson_interval(n: int, total: float, level: float) -> tuple[float, float]:
    """Likelihood-ratio interval of a Poisson rate: {lam : 2 (l(lam_hat) - l(lam)) <= q}.

    With lam = lam_hat e^t the drop is 2 S (e^t - 1 - t), S the sum of the counts, so the
    limits solve e^t - 1 - t = q / (2 S) on either side of t = 0, each bracketed by doubling
    from the quadratic approximation sqrt(q / S). The series near t = 0 keeps full precision
    even for S ~ 1e19, where the interval is a few parts in 1e10 wide.

    Args:
        n: number of observations.
        total: S, the sum of the counts (> 0).
        level: coverage, e.g. 0.95.

    Returns:
        (lower, upper).
    """
    if not total > 0:
        raise ValueError(f"the sum of the counts must be > 0, got {total!r}")
    lam_hat, c = total / n, stats.chi2.ppf(level, 1) / (2.0 * total)

    def excess(t):
        return _expm1_minus(t) - c  # < 0 inside the interval, > 0 outside

    limits = []
    for sign in (-1.0, 1.0):
        edge = sign * np.sqrt(2.0 * c)
        while excess(edge) <= 0:  # e^t - 1 - t grows without bound both ways: this stops
            edge *= 2.0
        lo, hi = sorted((0.0, edge))
        limits.append(optimize.brentq(excess, lo, hi, xtol=1e-300, rtol=1e-15))
    return lam_hat * float(np.exp(limits[0])), lam_hat * float(np.exp(limits[1]))
