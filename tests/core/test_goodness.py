"""Tests of `pipeline.core.inference.goodness`: frequency rows chosen from the data, expected
frequencies
by cdf differences, Pearson's test. References: brute-force sums of scipy's pmf over each row,
X2 by hand, the chi2(1) tail through the normal's log tail, and simulation (the test's level,
with its false-alarm rate stated)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.special import log_ndtr
from zip_samples import binomial_band, simulate

from pipeline.core.histogram import histogram, histogram_from_bincount
from pipeline.core.inference import goodness, model_tests
from pipeline.core.inference import intercept as inference
from pipeline.core.oracle import mle


def bins_of(y, **kwargs):
    h = histogram(y)
    starts = goodness.count_bins(h.values, h.freqs, **kwargs)
    return h, starts, goodness.bin_observed(h.values, h.freqs, starts)


def test_small_counts_get_one_row_each_and_a_pooled_tail():
    # 0..5 each 10 times, then 6 and 9 once: the tail starts where fewer than 5 counts remain
    y = np.r_[np.repeat(np.arange(6), 10), 6, 9]
    _, starts, observed = bins_of(y)
    assert starts.tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert observed.tolist() == [10, 10, 10, 10, 10, 10, 2]
    assert bins_of([3] * 40)[1].tolist() == [0, 1, 2, 3]  # the largest count opens the tail
    assert bins_of([0, 0, 7])[1].tolist() == [0, 1]  # fewer than 5 counts in all: "0", "1+"
    assert bins_of([0] * 9)[1].tolist() == [0, 1]


def test_wide_counts_are_cut_at_quantiles_with_zero_apart():
    """Poisson(216) without zeros used to fall into one "20+" row."""
    y = np.random.default_rng(1).poisson(216, 500)
    h, starts, observed = bins_of(y)
    assert starts[:2].tolist() == [0, 1] and observed[0] == 0  # zeros keep their row
    assert 10 <= len(starts) <= goodness.MAX_ROWS and observed.sum() == 500
    assert (observed[1:] >= goodness.MIN_ROW).all()
    # about equal shares of the positives per row: 500 / 19 = 26 (ties move a few counts)
    assert observed[1:].max() <= 2.5 * 500 / (len(starts) - 1)
    assert starts[-1] <= y.max()  # the open last row holds the largest counts
    # a zero-inflated sample: the zeros' row and the same cut of the positives
    z = np.r_[np.zeros(300, int), y]
    _, starts_z, observed_z = bins_of(z)
    assert observed_z[0] == 300 and starts_z.tolist() == starts.tolist()


def test_ties_at_quantiles_are_merged_into_rows_of_at_least_five():
    y = np.r_[np.full(200, 150), np.arange(151, 171)]  # a huge tie, then 20 single values
    _, starts, observed = bins_of(y, max_rows=5)
    assert observed.sum() == 220 and len(starts) <= 5
    assert (observed[1:] >= goodness.MIN_ROW).all()


def test_group_starts_by_hand():
    # 0 + 3 + 4 = 7 closes the first group; 10 the second; 1 + 1 < 5 joins the one before
    assert goodness.group_starts([0.0, 3.0, 4.0, 10.0, 1.0, 1.0], 5.0).tolist() == [0, 3]
    assert goodness.group_starts([6.0, 6.0], 5.0).tolist() == [0, 1]
    assert goodness.group_starts([1.0, 1.0], 5.0).tolist() == [0]


@pytest.mark.parametrize("pi, lam", [(0.0, 216.0), (0.3, 216.0), (0.2, 1e5), (0.4, 3.0)])
def test_binned_probabilities_are_sums_of_the_pmf_over_each_row(pi, lam):
    """Each row against scipy's pmf summed over its values (the tail up to 40 SD past lam)."""
    rng = np.random.default_rng(3)
    y = rng.binomial(1, 1 - pi, 400) * rng.poisson(lam, 400)
    h = histogram(y)
    starts = goodness.count_bins(h.values, h.freqs)
    probs = goodness.binned_probabilities(starts, lambda k: inference.zip_cdf(k, pi, lam),
                                          lambda k: inference.zip_sf(k, pi, lam))  # fmt: skip
    top = int(lam + 40 * math.sqrt(lam) + 50)
    edges = [*starts.tolist(), top + 1]
    k = np.arange(top + 1)
    pmf = (1 - pi) * stats.poisson.pmf(k, lam) + pi * (k == 0)
    brute = np.array([pmf[a:b].sum() for a, b in zip(edges[:-1], edges[1:])])
    np.testing.assert_allclose(probs, brute, rtol=1e-9, atol=1e-300)
    assert probs.sum() == pytest.approx(1.0, rel=1e-12)
    if pi == 0 and lam == 216.0:  # a far lower tail keeps full relative precision
        assert probs[0] == pytest.approx(math.exp(-216.0), rel=1e-12)


def test_binned_probabilities_of_many_distributions_at_once():
    lam = np.array([0.5, 3.0, 40.0])
    pi = np.array([0.1, 0.0, 0.6])
    starts = np.array([0, 1, 2, 5, 30])
    probs = goodness.binned_probabilities(starts, lambda k: inference.zip_cdf(k, pi, lam),
                                          lambda k: inference.zip_sf(k, pi, lam))  # fmt: skip
    assert probs.shape == (5, 3)
    for i in range(3):
        one = goodness.binned_probabilities(
            starts,
            lambda k, i=i: inference.zip_cdf(k, pi[i], lam[i]),
            lambda k, i=i: inference.zip_sf(k, pi[i], lam[i]),
        )
        np.testing.assert_allclose(probs[:, i], one, rtol=1e-15)  # fmt: skip
    np.testing.assert_allclose(probs.sum(0), 1.0, rtol=1e-12)


def test_pearson_by_hand():
    observed = [10, 3, 2, 20, 15]
    expected = [12.0, 2.0, 4.0, 18.0, 14.0]  # rows 1-2 merge: expected 6, observed 5
    g = goodness.pearson_test(observed, expected, parameters=1)
    x2 = (10 - 12) ** 2 / 12 + (5 - 6) ** 2 / 6 + (20 - 18) ** 2 / 18 + (15 - 14) ** 2 / 14
    assert g.statistic == pytest.approx(x2, rel=1e-14)
    assert (g.groups, g.df, g.small_groups, g.poor_reference) == (4, 2, 0, False)
    assert g.p_value == pytest.approx(stats.chi2.sf(x2, 2), rel=1e-12)
    assert g.log10_p_value == pytest.approx(math.log10(g.p_value), rel=1e-12)
    # too few groups for the parameters: df forced to 1 and the reference flagged poor
    few = goodness.pearson_test([10, 12], [11.0, 11.0], parameters=2)
    assert (few.df, few.poor_reference) == (1, True)


def test_merging_never_hides_a_misfit_in_rows_the_model_calls_impossible():
    """A model expecting almost everything in one row: merging to expected >= 5 would leave
    one group with X2 = 0; the rows are kept, X2 is huge and the reference flagged poor."""
    observed = [285, 35, 40, 35, 605]
    expected = [1e-90, 998.4, 1.0, 0.5, 0.1]
    g = goodness.pearson_test(observed, expected, parameters=1)
    assert g.groups == 5 and g.small_groups == 4 and g.poor_reference
    assert g.statistic > 1e6 and g.p_value < 1e-300


def test_log10_p_stays_finite_where_p_underflows():
    """chi2(1) tail = 2 Phi(-sqrt(x)): the reference is the normal's log tail (log_ndtr)."""
    observed, expected = [5000, 10, 10, 5000], [10.0, 5000.0, 5000.0, 10.0]
    g = goodness.pearson_test(observed, expected, parameters=2)
    assert g.df == 1 and g.p_value == 0.0
    reference = (math.log(2.0) + log_ndtr(-math.sqrt(g.statistic))) / math.log(10.0)
    assert g.log10_p_value == pytest.approx(reference, rel=1e-10)
    assert math.isfinite(g.log10_p_value) and g.log10_p_value < -1000
    assert model_tests.log_p_value(math.log(0.25)) == (pytest.approx(0.25), pytest.approx(-0.60206))


@pytest.mark.parametrize("x", [10.0, 1400.0, 1e4, 5e6])
def test_chi2_logsf_beyond_scipys_range(x):
    """scipy's chi2.logsf is -inf past x ~ 1500 (df = 1); the reference is log_ndtr."""
    reference = math.log(2.0) + log_ndtr(-math.sqrt(x))
    assert model_tests.chi2_logsf(x, 1) == pytest.approx(reference, rel=1e-12)
    # larger df: against the Gamma(df/2) density's leading term as a bound from below
    assert model_tests.chi2_logsf(x, 10) >= float(stats.chi2.logpdf(x, 10)) - 1e-9


def test_pearson_level_on_data_the_zip_generated():
    """600 ZIP(0.3, 3) samples of n = 500, the ZIP fitted exactly, rejected at 0.05. With MLEs
    from the ungrouped counts the true level lies between 0.05 and P(chi2(G-1) > the chi2(G-3)
    95 % quantile) <= 0.083 for the G = 8..10 groups here (Chernoff & Lehmann 1954; 2,000
    simulations gave 0.055). The band spans Binomial(600, 0.05) to Binomial(600, 0.085)
    quantiles: a false alarm has probability <= 1e-3 if the level is anywhere in there."""
    rng = np.random.default_rng(7)
    trials, rejected = 600, 0
    for _ in range(trials):
        y = rng.binomial(1, 0.7, 500) * rng.poisson(3.0, 500)
        h = histogram_from_bincount(np.bincount(y))
        fit = mle.exact_mle(h)
        table = inference.frequency_table(h, fit.pi, fit.lam, h.mean)
        rejected += goodness.pearson_test(table.observed, table.zip, 2).p_value < 0.05
    lo = binomial_band(trials, 0.05, 1e-3)[0]
    hi = binomial_band(trials, 0.085, 1e-3)[1]
    assert lo <= rejected / trials <= hi


def test_pearson_flags_a_zip_fitted_to_overdispersed_counts():
    """NB counts (variance 5x the mean), n = 2000: X2 is in the thousands on ~10 df, so a
    p-value above 0.05 (X2 < 18.3) would take a sample far outside any plausible draw."""
    y = np.random.default_rng(1).negative_binomial(2, 0.2, 2000)
    h = histogram(y)
    fit = mle.exact_mle(h)
    table = inference.frequency_table(h, fit.pi, fit.lam, h.mean)
    g = goodness.pearson_test(table.observed, table.zip, 2)
    assert g.p_value < 1e-100 and not g.poor_reference
    # the same test on counts the ZIP generated does not flag it (fixed seed, p far above 0.05)
    ok = histogram(simulate(0.3, 8.0, 2000, 5))
    fit = mle.exact_mle(ok)
    table = inference.frequency_table(ok, fit.pi, fit.lam, ok.mean)
    assert goodness.pearson_test(table.observed, table.zip, 2).p_value > 0.05
