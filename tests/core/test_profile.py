"""Profile likelihoods and profile-likelihood intervals (`pipeline.core.inference.profile`) against
grid
searches, the likelihood-ratio equation, Wald intervals at large n and their coverage."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize, stats
from zip_samples import SCENARIOS, binomial_band, simulate

from pipeline.core.histogram import histogram, histogram_from_bincount
from pipeline.core.inference import intercept as inf
from pipeline.core.inference import profile as prof
from pipeline.core.inference.asymptotics import wald_or_profile
from pipeline.core.oracle import mle


@pytest.mark.parametrize("pi, lam, seed", SCENARIOS[:2] + [(0.0, 2.0, 4)])
def test_profiles_match_grid_search(pi, lam, seed):
    """Each profile value is the maximum of l over the other parameter (bounded search)."""
    hist = histogram(simulate(pi, lam, 1000, seed))
    fit = mle.exact_mle(hist)
    for p in (0.0, 0.5 * fit.pi, fit.pi, 0.2, 0.7, 0.95):
        value, at = prof.profile_loglik_pi(hist, p)
        ref = optimize.minimize_scalar(lambda x, p=p: -inf.loglik(hist, p, x),
                                       bounds=(1e-3, 100), method="bounded",
                                       options={"xatol": 1e-10})  # fmt: skip
        assert value >= -ref.fun - 1e-9
        assert value == pytest.approx(-ref.fun, abs=1e-6)
        assert value == pytest.approx(inf.loglik(hist, p, at), abs=1e-9)
    for x in (0.3 * fit.lam, fit.lam, 2.0 * fit.lam):
        value, at = prof.profile_loglik_lam(hist, x)
        grid = np.concatenate([np.linspace(0, 0.999, 2000), [at]])
        brute = max(inf.loglik(hist, g, x) for g in grid)
        assert value == pytest.approx(brute, abs=1e-9)
        assert value >= max(inf.loglik(hist, g, x) for g in grid[:-1]) - 1e-9
    assert prof.profile_loglik_pi(hist, fit.pi)[0] == pytest.approx(
        inf.loglik(hist, fit.pi, fit.lam), abs=1e-8
    )


@pytest.mark.parametrize("pi, lam, seed", [(0.3, 2.0, 5), (0.0, 2.0, 6), (0.6, 0.4, 7)])
def test_profile_limits_solve_the_likelihood_ratio_equation(pi, lam, seed):
    hist = histogram(simulate(pi, lam, 800, seed))
    fit = mle.exact_mle(hist)
    q = stats.chi2.ppf(0.95, 1)
    best = inf.loglik(hist, fit.pi, fit.lam)
    ivs = prof.profile_intervals(hist, fit, 0.95)
    lo, hi = ivs["pi"]
    assert lo <= fit.pi <= hi
    if fit.boundary:
        assert lo == 0.0
    else:
        assert 2 * (best - prof.profile_loglik_pi(hist, lo)[0]) == pytest.approx(q, abs=1e-6)
    assert 2 * (best - prof.profile_loglik_pi(hist, hi)[0]) == pytest.approx(q, abs=1e-6)
    lo, hi = ivs["lambda"]
    assert lo < fit.lam < hi
    for limit in (lo, hi):
        assert 2 * (best - prof.profile_loglik_lam(hist, limit)[0]) == pytest.approx(q, abs=1e-6)


def test_profile_and_wald_agree_for_large_n():
    """At n = 200,000 the log-likelihood is nearly quadratic: both intervals agree to ~1 %."""
    hist = histogram(simulate(0.4, 3.0, 200_000, 8))
    fit = mle.exact_mle(hist)
    ivs = prof.profile_intervals(hist, fit, 0.95)
    for key, est, se in (("pi", fit.pi, fit.se_pi), ("lambda", fit.lam, fit.se_lam)):
        wald = wald_or_profile(est, se, 0.95, lo=0.0).wald
        assert np.allclose(ivs[key], wald, atol=0.01 * 1.96 * se)


def test_profile_intervals_cover_at_nominal_rate():
    """400 ZIP(0.3, 2) datasets of n = 500: each parameter's 95 % profile interval covers the
    truth at a rate inside its Binomial(400, 0.95) band of false-alarm rate 1e-3 (2e-3 for
    both). The finite-sample coverage is close to nominal here: 3,000 simulations gave
    0.949 (pi) and 0.950 (lambda)."""
    pi, lam, trials = 0.3, 2.0, 400
    rng = np.random.default_rng(77)
    hits = np.zeros(2)
    for _ in range(trials):
        y = rng.binomial(1, 1 - pi, 500) * rng.poisson(lam, 500)
        hist = histogram_from_bincount(np.bincount(y))
        ivs = prof.profile_intervals(hist, mle.exact_mle(hist), 0.95)
        hits += [ivs["pi"][0] <= pi <= ivs["pi"][1], ivs["lambda"][0] <= lam <= ivs["lambda"][1]]
    lo, hi = binomial_band(trials, 0.95, 1e-3)
    assert np.all((lo <= hits / trials) & (hits / trials <= hi)), hits / trials


def test_profile_interval_of_pi_without_zeros_has_its_closed_form():
    """No zeros at all (mean 1e5): l(pi, lam) = n log(1 - pi) + (Poisson terms), so the profile
    drop is -2 n log(1 - pi) and the upper limit is 1 - exp(-q / 2n) exactly. The Wald
    interval there is [0, 0] (SE 0): `asymptotics.wald_or_profile` reports this one instead."""
    y = np.random.default_rng(0).poisson(1e5, 200)
    hist = histogram(y)
    fit = mle.exact_mle(hist)
    assert fit.boundary and fit.se_pi == 0.0
    lo, hi = prof.profile_intervals(hist, fit, 0.95)["pi"]
    assert lo == 0.0
    assert hi == pytest.approx(-np.expm1(-stats.chi2.ppf(0.95, 1) / 400), rel=1e-9)


@pytest.mark.parametrize("n, total", [(1000, 1), (250, 378), (200, 20_000_000), (4, 1.2e19)])
def test_poisson_interval_solves_the_likelihood_ratio_equation(n, total):
    """Checked in 50-digit arithmetic (mpmath): 2 (l(lam_hat) - l(limit)) = chi2_1(0.95)."""
    from mpmath import mp

    mp.dps = 50
    lo, hi = prof.poisson_interval(n, total, 0.95)
    lam_hat = mp.mpf(total) / n

    def drop(lam):
        lam = mp.mpf(lam)
        return float(2 * (total * mp.log(lam_hat / lam) - n * (lam_hat - lam)))

    q = stats.chi2.ppf(0.95, 1)
    assert 0 < lo < float(lam_hat) < hi
    # at S ~ 1e19 the limits are lam_hat (1 +- 6e-10); rounding them to float64 (1e-16 of
    # lam) shifts that 6e-10 by ~2e-7 relative, the drop (quadratic in it) by ~4e-7
    tol = 1e-9 if total < 1e10 else 1e-5
    assert drop(lo) == pytest.approx(q, rel=tol) and drop(hi) == pytest.approx(q, rel=tol)
