"""Inference for the intercept-only ZIP against plain Poisson: tests, intervals, fit tables.

The ZIP log-likelihood depends on the data only through n0 (zeros), n+ (positive counts),
S (sum of the counts) and C (sum of log y!):

    l(pi, lam) = n0 log(pi + (1 - pi) e^{-lam}) + n+ (log(1 - pi) - lam) + S log(lam) - C,

so every profile below costs O(1) per evaluation, whatever n is.

Profile-likelihood intervals are in `core.inference.profile`, the choice between them and Wald
intervals
in `core.inference.asymptotics`, the frequency table's rows and Pearson's test in
`core.inference.goodness`.

Pure numpy/scipy: no I/O, no module state.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from scipy import stats
from scipy.special import gammaln

from pipeline.core.descent.likelihood import closed_form
from pipeline.core.histogram import Histogram
from pipeline.core.inference import goodness
from pipeline.core.laws.distributions import zip_log_pmf
from pipeline.core.oracle.mle import ZipMLE

VUONG_CAVEAT = (
    "Poisson is ZIP with pi = 0, a point on the boundary of the ZIP parameter space, so the "
    "models are nested and Vuong's non-nested test is not a valid test of zero inflation "
    "(Wilson 2015, Economics Letters 127:51-53); use the likelihood-ratio test above."
)
LR_REFERENCE = "0.5*chi2(0) + 0.5*chi2(1)"


class Test(NamedTuple):
    """A test statistic, its p-value and log10 p-value (NaN when undefined); the log stays
    finite where p underflows to 0."""

    statistic: float
    p_value: float
    log10_p_value: float


class PoissonFit(NamedTuple):
    """Plain Poisson maximum-likelihood fit: rate, mean NLL, standard error of the rate."""

    lam: float
    nll: float
    se_lam: float


class FrequencyTable(NamedTuple):
    """Observed and expected frequencies per row; the last row pools the tail {Y >= counts[-1]}.

    Attributes:
        counts: lower edges of the rows (int64, from 0): row j holds counts[j] .. counts[j+1]-1,
            the last row counts[-1] and above; 0, 1, ..., K when every row is one count.
        observed: observed frequencies per row.
        zip, poisson: expected frequencies under the fitted ZIP and Poisson.
    """

    counts: np.ndarray
    observed: np.ndarray
    zip: np.ndarray
    poisson: np.ndarray


class SuffStats(NamedTuple):
    """The ZIP likelihood's sufficient statistics (see the module docstring)."""

    n: int
    n0: int
    n_pos: int
    total: float  # S, the sum of the counts
    log_fact: float  # C, the sum of log y!


def suff_stats(hist: Histogram) -> SuffStats:
    """(n, n0, n+, S, C): the sufficient statistics the likelihood needs."""
    n = hist.n
    n0 = int(hist.freqs[hist.values == 0].sum())
    total = float(hist.total)  # exact sum, then one rounding
    log_fact = float(np.dot(gammaln(hist.values + 1.0), hist.freqs))
    return SuffStats(n, n0, n - n0, total, log_fact)


def suff_loglik(st: SuffStats, pi: float, lam: float) -> float:
    """n times minus the engine's closed-form mean NLL (`likelihood.closed_form`)."""
    with np.errstate(divide="ignore"):
        gate_logits = torch.tensor(np.log(pi) - np.log1p(-pi), dtype=torch.float64)
        log_rate = torch.tensor(np.log(lam), dtype=torch.float64)
    per_obs = torch.tensor([st.n0, st.total, st.log_fact], dtype=torch.float64) / st.n
    return float(-st.n * closed_form(gate_logits, log_rate, per_obs.unbind())[0])


def loglik(hist: Histogram, pi: float, lam: float) -> float:
    """Total ZIP log-likelihood (pi = 0 gives the Poisson one).

    Args:
        hist: histogram of the counts.
        pi: structural-zero probability in [0, 1).
        lam: Poisson rate > 0.

    Returns:
        The sum over observations of log p(y).
    """
    return suff_loglik(suff_stats(hist), pi, lam)


def fit_poisson(hist: Histogram) -> PoissonFit:
    """Plain Poisson MLE: lam = mean, SE = sqrt(lam / n).

    Args:
        hist: histogram of the counts (n > 0).

    Returns:
        The `PoissonFit`.
    """
    st = suff_stats(hist)
    lam = st.total / st.n
    return PoissonFit(lam, -suff_loglik(st, 0.0, lam) / st.n, float(np.sqrt(lam / st.n)))


def lr_test(hist: Histogram, zip_fit: ZipMLE) -> Test:
    """Likelihood-ratio test of H0: pi = 0 (Poisson) against pi > 0 (ZIP).

    pi = 0 is on the boundary, so under H0 the statistic T is 0 with probability 1/2 and
    chi2(1) otherwise: P(T >= t) = chi2_1.sf(t) / 2 for t > 0 and 1 for t = 0.

    Args:
        hist: histogram of the counts.
        zip_fit: the exact ZIP MLE of `hist`.

    Returns:
        `Test(T, p, log10 p)`; T = 0 and p = 1 on the boundary.
    """
    if zip_fit.boundary:
        return Test(0.0, 1.0, 0.0)
    st = suff_stats(hist)
    gain = suff_loglik(st, zip_fit.pi, zip_fit.lam) - suff_loglik(st, 0.0, st.total / st.n)
    stat = max(0.0, 2.0 * gain)
    if stat == 0:
        return Test(0.0, 1.0, 0.0)
    return Test(stat, *goodness.log_p_value(goodness.chi2_logsf(stat, 1) - np.log(2.0)))


def vuong_tests(hist: Histogram, zip_fit: ZipMLE) -> dict[str, Test]:
    """Vuong's z statistic for ZIP against Poisson, raw and AIC/BIC-corrected (as pscl).

    z = (sum m_i - correction) / (sqrt(n) sd(m)), m_i = log f_zip(y_i) - log f_pois(y_i),
    correction 0 (raw), 1 (AIC: one extra parameter) or log(n)/2 (BIC). The p-value is
    one-sided for "ZIP is closer": P(N(0,1) >= z). See `VUONG_CAVEAT`: not a valid test here.

    Args:
        hist: histogram of the counts.
        zip_fit: the exact ZIP MLE of `hist`.

    Returns:
        {"raw", "aic", "bic"} -> `Test`; NaN on the boundary, where both fits coincide.
    """
    n = hist.n
    if zip_fit.boundary or n < 2:
        nan = Test(float("nan"), float("nan"), float("nan"))
        return {"raw": nan, "aic": nan, "bic": nan}
    y = hist.values
    m = zip_log_pmf(y, zip_fit.pi, zip_fit.lam) - zip_log_pmf(y, 0.0, hist.mean)
    f = hist.freqs.astype(float)
    mean = float(np.dot(m, f) / n)
    sd = float(np.sqrt(np.dot(f, (m - mean) ** 2) / (n - 1)))
    out = {}
    for name, corr in (("raw", 0.0), ("aic", 1.0), ("bic", np.log(n) / 2)):
        z = (mean * n - corr) / (np.sqrt(n) * sd) if sd > 0 else float("nan")
        out[name] = Test(float(z), *goodness.log_p_value(stats.norm.logsf(z)))
    return out


def information_criteria(nll: float, n: int, k: int) -> tuple[float, float]:
    """AIC and BIC from a mean NLL per observation.

    Args:
        nll: mean negative log-likelihood per observation.
        n: number of observations.
        k: number of free parameters.

    Returns:
        (AIC, BIC) = (2k + 2 n nll, k log n + 2 n nll).
    """
    return 2 * k + 2 * n * nll, k * np.log(n) + 2 * n * nll


def wald_interval(estimate: float, se: float, level: float, lo=0.0, hi=np.inf):
    """Wald interval estimate +- z se, clipped to the parameter space [lo, hi].

    Args:
        estimate: point estimate.
        se: standard error.
        level: coverage, e.g. 0.95.
        lo, hi: bounds of the parameter space.

    Returns:
        (lower, upper).
    """
    z = stats.norm.ppf(0.5 + level / 2)
    return float(max(lo, estimate - z * se)), float(min(hi, estimate + z * se))


def zip_cdf(k: int, pi, lam):
    """P(Y <= k) under ZIP(pi, lam) for an integer k >= 0 (pi = 0: the Poisson).

    Args:
        k: the count.
        pi, lam: structural-zero probability and rate (scalars or arrays, e.g. one per row).

    Returns:
        pi + (1 - pi) F_Poisson(k; lam), broadcast over pi and lam.
    """
    return pi + (1 - np.asarray(pi)) * stats.poisson.cdf(k, lam)


def zip_sf(k: int, pi, lam):
    """P(Y > k) under ZIP(pi, lam) for an integer k >= 0: (1 - pi) times the Poisson's."""
    return (1 - np.asarray(pi)) * stats.poisson.sf(k, lam)


def frequency_table(
    hist: Histogram, pi: float, lam: float, lam_poisson: float, tail: int | None = None
) -> FrequencyTable:
    """Observed against expected frequencies on rows chosen from the data (`goodness.count_bins`).

    Args:
        hist: histogram of the counts.
        pi, lam: fitted ZIP parameters.
        lam_poisson: fitted Poisson rate.
        tail: K: rows 0, 1, ..., K-1 and "K+" instead of the rows chosen from the data.

    Returns:
        The `FrequencyTable`; each row's expected frequencies are n times a difference of cdfs
        or survival functions, whatever the number of values it spans.
    """
    if tail is None:
        starts = goodness.count_bins(hist.values, hist.freqs)
    else:
        starts = np.arange(max(1, int(tail)) + 1, dtype=np.int64)
    n = hist.n

    def expected(gate, rate):
        probs = goodness.binned_probabilities(starts, lambda k: zip_cdf(k, gate, rate),
                                              lambda k: zip_sf(k, gate, rate))  # fmt: skip
        return n * probs

    return FrequencyTable(starts, goodness.bin_observed(hist.values, hist.freqs, starts),
                          expected(pi, lam), expected(0.0, lam_poisson))  # fmt: skip
