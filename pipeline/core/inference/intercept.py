"""What is truly intercept-only about the ZIP against the plain Poisson: the sufficient
statistics, the Poisson fit, the frequency table, and the glue that hands them to the tests.

The ZIP log-likelihood depends on the data only through n0 (zeros), n+ (positive counts),
S (sum of the counts) and C (sum of log y!):

    l(pi, lam) = n0 log(pi + (1 - pi) e^{-lam}) + n+ (log(1 - pi) - lam) + S log(lam) - C,

so every profile below costs O(1) per evaluation, whatever n is.

The tests themselves (likelihood ratio, Vuong) are `core.inference.model_tests`', shared with
the regression and family reports; profile-likelihood intervals are in
`core.inference.profile`, the choice between them and Wald intervals in
`core.inference.asymptotics`, the frequency table's rows and Pearson's test in
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
from pipeline.core.inference.model_tests import LRTest, Test, lr_test, vuong_statistics
from pipeline.core.laws.distributions import zip_log_pmf
from pipeline.core.oracle.mle import ZipMLE


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


def zip_poisson_tests(hist: Histogram, zip_fit: ZipMLE) -> tuple[LRTest, dict[str, Test]]:
    """The likelihood-ratio and Vuong tests of the Poisson against the ZIP on a histogram.

    Both come from `model_tests` (one implementation for every report): the LR statistic from
    the sufficient statistics against ½χ²₀ + ½χ²₁ (π = 0 is on the boundary), Vuong's z from
    the per-count log-likelihoods weighted by their frequencies (two-sided p, `VUONG_P`).

    Args:
        hist: histogram of the counts.
        zip_fit: the exact ZIP MLE of `hist`.

    Returns:
        (the `LRTest`, {"raw", "aic", "bic"} -> Vuong `Test`); on the boundary T = 0, p = 1 and
        Vuong's z is NaN (both fits coincide).
    """
    st = suff_stats(hist)
    ll_pois = suff_loglik(st, 0.0, st.total / st.n)
    ll_zip = ll_pois if zip_fit.boundary else suff_loglik(st, zip_fit.pi, zip_fit.lam)
    lr = lr_test("poisson", "zip", "pi = 0", ll_pois, ll_zip, 1)
    y = hist.values
    rows_zip = zip_log_pmf(y, zip_fit.pi, zip_fit.lam)
    vuong, _ = vuong_statistics(rows_zip, zip_log_pmf(y, 0.0, hist.mean), hist.freqs, 1)
    return lr, vuong


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
