"""Exact maximum-likelihood estimation for the intercept-only zero-inflated Poisson (ZIP).

Y = 0 w.p. pi + (1 - pi) e^{-lam}; Y = k > 0 w.p. (1 - pi) lam^k e^{-lam} / k! (pi: structural
zeros). As a Bernoulli(zero) times a zero-truncated Poisson the score equations decouple:
lam / (1 - e^{-lam}) = c (the mean of the positive counts) and
1 - pi = (share of positives) / (1 - e^{-lam}).
When c <= 1 or that pi is negative the maximum is on the boundary pi = 0, lam = mean.
Core layer (DESIGN.md section 2): numpy/scipy (and the core's ZIP log-pmf), no I/O, no state.
"""

from typing import NamedTuple

import numpy as np
from scipy.special import lambertw

from pipeline.core.errors import NotIdentifiableError
from pipeline.core.histogram import Histogram
from pipeline.core.laws.distributions import zip_log_pmf


class ZipMLE(NamedTuple):
    """Exact ZIP maximum-likelihood estimate with expected-information standard errors.

    Standard errors are sqrt(diag(I^-1) / n) with I the per-observation Fisher information
    evaluated at the estimate. On the boundary (pi = 0) the information in (pi, lam) is still
    finite, so `se_pi` and `se_lam` are reported (one-sided: the estimator is not normal there,
    so they do not give a valid confidence interval), `se_log_lam = se_lam / lam`, and
    `se_logit_pi` is NaN because logit(0) = -inf.

    Attributes:
        pi: structural-zero probability.
        lam: Poisson rate.
        nll: mean negative log-likelihood per observation at the estimate.
        se_pi, se_lam: standard errors on the natural scale.
        se_logit_pi, se_log_lam: standard errors of logit(pi) and log(lam).
        boundary: True when the maximum is at pi = 0.
        n: number of observations.
    """

    pi: float
    lam: float
    nll: float
    se_pi: float
    se_lam: float
    se_logit_pi: float
    se_log_lam: float
    boundary: bool
    n: int


def _exp_tail2(x):
    """sum_{k>=2} x^k / k! = e^x - 1 - x, without cancellation for |x| < 1."""
    x = np.asarray(x, dtype=float)
    small = np.where(np.abs(x) < 1.0, x, 0.0)
    acc = np.ones_like(small)
    for k in range(20, 2, -1):  # Horner; the truncation error is below |x|^21 / 21! < 2e-20
        acc = 1.0 + small * acc / k
    series = 0.5 * small * small * acc
    return np.where(np.abs(x) < 1.0, series, np.expm1(np.clip(x, None, 700.0)) - x)


def _rate_terms(lam):
    """Return (e, 1 - e, lam - (1 - e), 1 - e (1 + lam)) with e = exp(-lam), all accurate."""
    lam = np.asarray(lam, dtype=float)
    e = np.exp(-lam)
    one_minus_e = -np.expm1(-lam)
    # Both differences vanish like lam^2 / 2 as lam -> 0; the series keeps full precision.
    r = np.where(lam < 1.0, _exp_tail2(-lam), lam - one_minus_e)
    d = np.where(lam < 1.0, e * _exp_tail2(np.minimum(lam, 1.0)), 1.0 - e * (1.0 + lam))
    return e, one_minus_e, r, d


def _solve_rate(excess: float) -> float:
    """Root lam > 0 of lam / (1 - e^{-lam}) = 1 + excess, for excess = c - 1 > 0.

    Starts from the Lambert-W closed form lam = c + W0(-c e^{-c}) and polishes it by Newton
    steps in u = log(lam) on log(lam / (1 - e^{-lam}) - 1) = log(excess). That function of u
    has slope between 1 and ~1.2 everywhere, so Newton converges from any start, and working
    with excess instead of c keeps full relative precision near the branch point c -> 1
    (where W0 has a square-root singularity and lam ~ 2 (c - 1)).
    """
    c = 1.0 + excess
    lam = float(np.real(c + lambertw(-c * np.exp(-c), 0)))
    if not (np.isfinite(lam) and lam > 0):
        lam = 2.0 * excess if excess < 1 else c
    u, target = np.log(lam), np.log(excess)
    for _ in range(100):
        lam = np.exp(u)
        _, one_minus_e, r, d = _rate_terms(lam)
        step = (np.log(r) - np.log(one_minus_e) - target) / (lam * d / (one_minus_e * r))
        u -= step
        if abs(step) < 1e-15:
            break
    return float(np.exp(u))


def _standard_errors(pi: float, lam: float, n: int) -> tuple[float, float, float, float]:
    """(se_pi, se_lam, se_logit_pi, se_log_lam) from the closed-form inverse information.

    det I = (1 - e (1 + lam)) / (lam p0), which gives
    n var(pi) = (1 - pi) (pi (1 - lam e) + (1 - pi) e) / (1 - e (1 + lam)),
    n var(lam) = lam (1 - e) / ((1 - pi) (1 - e (1 + lam))), both free of cancellation.
    The diagonal of the inverse transforms exactly by the squared Jacobian, so the logit/log
    standard errors are the natural ones divided by pi (1 - pi) and lam.
    """
    e, one_minus_e, _, d = _rate_terms(lam)
    se_pi = float(np.sqrt((1 - pi) * (pi * (1 - lam * e) + (1 - pi) * e) / (d * n)))
    se_lam = float(np.sqrt(lam * one_minus_e / ((1 - pi) * d * n)))
    se_logit_pi = se_pi / (pi * (1 - pi)) if pi > 0 else float("nan")
    return se_pi, se_lam, se_logit_pi, se_lam / lam


def zip_estimate(n, n_pos, total) -> tuple[float, float]:
    """(π̂, λ̂) of the intercept-only ZIP from its sufficient statistics (frequency weights may
    be real): n = Σ w, n_pos = Σ w over positive counts (> 0), total = Σ w y; π̂ = 0, λ̂ = the
    mean on the boundary.
    """
    excess = (total - n_pos) / n_pos  # c - 1 from exact integers: no rounding of c near 1
    pi = 0.0
    if excess > 0:
        lam = _solve_rate(excess)
        pi = float(1.0 - (n_pos / n) / -np.expm1(-lam))
    if pi <= 0:
        pi, lam = 0.0, total / n
    return pi, lam


def exact_mle(hist: Histogram) -> ZipMLE:
    """Closed-form ZIP maximum-likelihood estimate.

    Args:
        hist: histogram of the observed counts.

    Returns:
        The `ZipMLE`; `boundary` is True (pi = 0, lam = mean) when there are no more zeros than
        a Poisson would give, no zeros at all, or every positive count equals 1.

    Raises:
        NotIdentifiableError: when the histogram is empty or every count is zero.
    """
    n = hist.n
    if n == 0:
        raise NotIdentifiableError("no observations: pi and lambda are not identifiable")
    n_zero = int(hist.freqs[hist.values == 0].sum())
    n_pos = n - n_zero
    if n_pos == 0:
        raise NotIdentifiableError("all counts are zero: pi and lambda are not identifiable")
    pi, lam = zip_estimate(n, n_pos, hist.total)  # exact: an int64 dot product wraps
    nll = zip_nll(hist, pi, lam)
    return ZipMLE(pi, lam, nll, *_standard_errors(pi, lam, n), boundary=bool(pi == 0.0), n=n)


def fisher_information(pi, lam, *, scale: str = "natural") -> np.ndarray:
    """Expected Fisher information per observation, in closed form.

    With e = exp(-lam) and p0 = pi + (1 - pi) e:
    natural (pi, lam): I_pp = (1-e)/((1-pi) p0), I_pl = -e/p0, I_ll = (1-pi)/lam - pi(1-pi)e/p0;
    logit (s = logit pi, eta = log lam): I_ss = pi^2 (1-pi)(1-e)/p0,
    I_se = -pi(1-pi) lam e/p0, I_ee = (1-pi) lam (1 - pi lam e/p0).

    Args:
        pi: structural-zero probability (array-like, broadcast against `lam`).
        lam: Poisson rate > 0.
        scale: "natural" for (pi, lam) or "logit" for (logit pi, log lam).

    Returns:
        Array of shape broadcast(pi, lam).shape + (2, 2).
    """
    if scale not in ("natural", "logit"):
        raise ValueError(f"scale must be 'natural' or 'logit', got {scale!r}")
    pi, lam = np.broadcast_arrays(np.asarray(pi, dtype=float), np.asarray(lam, dtype=float))
    e, one_minus_e, _, _ = _rate_terms(lam)
    p0 = pi + (1 - pi) * e
    with np.errstate(divide="ignore", invalid="ignore"):
        # e/p0 = 1 at pi = 0 even when e underflows; pi/p0 = 0 there.
        e_p0 = np.where(pi > 0, e / np.where(p0 > 0, p0, 1.0), 1.0)
        pi_p0 = np.where(pi > 0, pi / np.where(p0 > 0, p0, 1.0), 0.0)
        # I_ll and I_ee use p0 - pi lam e = pi (1 - lam e) + (1 - pi) e > 0 (no cancellation).
        rest = pi_p0 * (1 - lam * e) + (1 - pi) * e_p0
        if scale == "natural":
            i_11 = one_minus_e / ((1 - pi) * p0)
            i_12 = -e_p0
            i_22 = (1 - pi) / lam * rest
        else:
            i_11 = pi * (1 - pi) * one_minus_e * pi_p0
            i_12 = -pi * (1 - pi) * lam * e_p0
            i_22 = (1 - pi) * lam * rest
    return np.stack([np.stack([i_11, i_12], -1), np.stack([i_12, i_22], -1)], -2)


def zip_nll_grid(hist: Histogram, pi, lam) -> np.ndarray:
    """Mean ZIP negative log-likelihood per observation over broadcast arrays of parameters.

    Evaluates the one stable log-pmf (`distributions.zip_log_pmf`), so pi = 0, pi = 1 and
    large lam stay finite where the likelihood is positive (+inf where it is zero).

    Args:
        hist: histogram of the counts (n > 0).
        pi: structural-zero probability in [0, 1].
        lam: Poisson rate >= 0.

    Returns:
        Array of shape broadcast(pi, lam).shape.
    """
    if hist.n == 0:
        raise ValueError("the histogram is empty")
    pi, lam = np.broadcast_arrays(np.asarray(pi, dtype=float), np.asarray(lam, dtype=float))
    log_p = zip_log_pmf(hist.values, pi[..., None], lam[..., None])
    return -(log_p @ hist.freqs.astype(float)) / hist.n


def zip_nll(hist: Histogram, pi: float, lam: float) -> float:
    """Mean ZIP negative log-likelihood per observation (stable; see `zip_nll_grid`).

    Args:
        hist, pi, lam: as in `zip_nll_grid`, with scalar pi and lam.

    Returns:
        The mean negative log-likelihood.
    """
    return float(zip_nll_grid(hist, pi, lam))


def poisson_mle(hist: Histogram) -> tuple[float, float]:
    """Maximum-likelihood fit of a plain Poisson.

    Args:
        hist: histogram of the counts (n > 0).

    Returns:
        (lam_hat, mean negative log-likelihood), with lam_hat = sample mean.
    """
    lam = hist.mean
    return lam, zip_nll(hist, 0.0, lam)
