"""Tests of `pipeline.core.inference.intercept`: fits, tests and intervals against independent
references.

References: statsmodels' ZeroInflatedPoisson (point estimates, log-likelihood, AIC/BIC), brute
force (expected information by summing over counts, profiles by grid search, Vuong by looping
over raw observations) and simulation (level of the LR test, coverage of the profile
intervals). Statistical checks state their false-alarm rate; seeds are fixed.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats
from scipy.special import expit
from zip_samples import SCENARIOS, binomial_band, log_pmf, simulate

from pipeline.core.histogram import histogram, histogram_from_bincount
from pipeline.core.inference import intercept as inf
from pipeline.core.inference.model_choice import information_criteria
from pipeline.core.oracle import mle


@pytest.mark.parametrize("pi, lam, seed", SCENARIOS)
def test_point_estimates_match_statsmodels(pi, lam, seed):
    """statsmodels' BFGS stops at |gradient of the mean log-likelihood| < 1e-5, which leaves a
    parameter error of about I^-1 g, i.e. n SE^2 1e-5 = sqrt(n) (sqrt(n) SE) 1e-5 <= 2e-3 SE
    at n = 2000 (sqrt(n) SE <= 5 here); 0.01 SE is five times that bound."""
    from statsmodels.discrete.count_model import ZeroInflatedPoisson

    n = 2000
    y = simulate(pi, lam, n, seed)
    hist = histogram(y)
    fit = mle.exact_mle(hist)
    ones = np.ones((n, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = ZeroInflatedPoisson(y, ones, exog_infl=ones, inflation="logit").fit(disp=0)
    assert abs(expit(res.params[0]) - fit.pi) < 0.01 * fit.se_pi
    assert abs(np.exp(res.params[1]) - fit.lam) < 0.01 * fit.se_lam
    # Log-likelihood and information criteria: same model, same k = 2 parameters.
    assert inf.loglik(hist, fit.pi, fit.lam) == pytest.approx(res.llf, abs=1e-6)
    aic, bic = information_criteria(-n * fit.nll, 2, n)
    assert aic == pytest.approx(res.aic, abs=1e-5)
    assert bic == pytest.approx(res.bic, abs=1e-5)


@pytest.mark.parametrize("pi, lam, seed", SCENARIOS)
def test_standard_errors_match_brute_force_information(pi, lam, seed):
    """SE = sqrt(diag(I^-1) / n) with I = sum_k p(k) score(k) score(k)^T, the score by central
    differences (step 1e-6: error ~1e-10 relative) and the sum truncated where p(k) < 1e-300."""
    hist = histogram(simulate(pi, lam, 3000, seed))
    fit = mle.exact_mle(hist)
    k = np.arange(int(fit.lam + 40 * np.sqrt(fit.lam) + 50))
    h = 1e-6
    d_pi = (log_pmf(k, fit.pi + h, fit.lam) - log_pmf(k, fit.pi - h, fit.lam)) / (2 * h)
    d_lam = (log_pmf(k, fit.pi, fit.lam + h) - log_pmf(k, fit.pi, fit.lam - h)) / (2 * h)
    score = np.stack([d_pi, d_lam], -1)
    p = np.exp(log_pmf(k, fit.pi, fit.lam))
    info = np.einsum("k,ki,kj->ij", p, score, score)
    se = np.sqrt(np.diag(np.linalg.inv(info)) / hist.n)
    assert fit.se_pi == pytest.approx(se[0], rel=1e-6)
    assert fit.se_lam == pytest.approx(se[1], rel=1e-6)
    pois = inf.fit_poisson(hist)
    assert pois.se_lam == pytest.approx(np.sqrt(hist.mean / hist.n), rel=1e-12)


def test_lr_test_statistic_and_boundary_reference():
    hist = histogram(simulate(0.2, 3.0, 1000, 9))
    fit = mle.exact_mle(hist)
    test, _ = inf.zip_poisson_tests(hist, fit)
    by_nll = 2 * hist.n * (mle.poisson_mle(hist)[1] - fit.nll)
    assert test.statistic == pytest.approx(by_nll, rel=1e-9)
    assert test.p_value == pytest.approx(0.5 * stats.chi2.sf(by_nll, 1), rel=1e-9)
    assert test.log10_p_value == pytest.approx(np.log10(test.p_value), rel=1e-9)
    # Fewer zeros than a Poisson gives: boundary, T = 0 and P(T >= 0) = 1 under the mixture.
    poor = histogram(np.r_[np.ones(50, int), np.full(50, 2), np.full(20, 3)])
    edge = mle.exact_mle(poor)
    t = inf.zip_poisson_tests(poor, edge)[0]
    assert edge.boundary and (t.statistic, t.p_value, t.log10_p_value) == (0.0, 1.0, 0.0)


def test_lr_false_alarm_rate_on_poisson_data():
    """1000 Poisson(2) datasets of n = 2000, alpha = 0.05, exact MLE (closed form).

    The band holds the rejection count of a level-0.05 test with probability 1 - 1e-3
    (Binomial(1000, 0.05) quantiles: Monte-Carlo error only). n = 2000 so the finite-sample
    level is close to the asymptotic one: 20,000 simulations gave 0.048 +- 0.0015 at n = 2000
    (0.044 at n = 500, where the mixture weight and the chi2 tail are still settling), far
    inside the band [0.029, 0.073].
    """
    rng = np.random.default_rng(2024)
    alpha, trials = 0.05, 1000
    rejected = boundary = 0
    for y in rng.poisson(2.0, (trials, 2000)):
        hist = histogram_from_bincount(np.bincount(y))
        fit = mle.exact_mle(hist)
        rejected += inf.zip_poisson_tests(hist, fit)[0].p_value < alpha
        boundary += fit.boundary
    lo, hi = binomial_band(trials, alpha, 1e-3)
    assert lo <= rejected / trials <= hi
    # The other half of the reference: pi_hat = 0 about half the time (same false-alarm rate).
    lo, hi = binomial_band(trials, 0.5, 1e-3)
    assert lo <= boundary / trials <= hi


def test_vuong_matches_loop_over_observations():
    """pscl's z (raw, AIC- and BIC-corrected) with the one p convention: two-sided."""
    y = simulate(0.4, 2.5, 700, 10)
    hist = histogram(y)
    fit = mle.exact_mle(hist)
    m = log_pmf(y, fit.pi, fit.lam) - stats.poisson.logpmf(y, y.mean())
    n = len(y)
    _, tests = inf.zip_poisson_tests(hist, fit)
    for key, corr in (("raw", 0.0), ("aic", 1.0), ("bic", np.log(n) / 2)):
        z = (m.sum() - corr) / (np.sqrt(n) * m.std(ddof=1))
        assert tests[key].statistic == pytest.approx(z, rel=1e-9)
        assert tests[key].p_value == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-9)
    boundary = histogram(np.r_[np.ones(30, int), np.full(30, 2)])
    assert all(
        np.isnan(t.statistic)
        for t in inf.zip_poisson_tests(boundary, mle.exact_mle(boundary))[1].values()
    )


def test_frequency_table_pools_the_tail_and_sums_to_n():
    hist = histogram(simulate(0.3, 4.0, 5000, 11))
    fit = mle.exact_mle(hist)
    table = inf.frequency_table(hist, fit.pi, fit.lam, hist.mean)
    k = table.counts[-1]
    assert table.observed.sum() == hist.n
    assert table.observed[-1] == hist.freqs[hist.values >= k].sum()
    for expected in (table.zip, table.poisson):
        assert expected.sum() == pytest.approx(hist.n, rel=1e-12)
    pmf = np.exp(log_pmf(table.counts[:-1], fit.pi, fit.lam))
    assert np.allclose(table.zip[:-1], hist.n * pmf, rtol=1e-12)
    assert table.zip[0] == pytest.approx(hist.freqs[0], rel=1e-9)  # the ZIP MLE fits p0 exactly
    # The rows are chosen from the data: the tail row starts where fewer than 5 counts remain.
    assert table.observed[-1] < 5 <= table.observed[-2] + table.observed[-1]
    fixed = inf.frequency_table(hist, fit.pi, fit.lam, hist.mean, tail=3)
    assert list(fixed.counts) == [0, 1, 2, 3] and fixed.observed.sum() == hist.n
