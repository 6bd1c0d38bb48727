"""Profile-likelihood intervals for σ of a random intercept (`oracle.mixed.sigma_profile`):
the profile deviance meets the χ²₁ cutoff at both limits on Salamanders, the limits of a tiny
one-parameter problem against a brute-force profile (scipy's scalar optimisers on
`marginal_loglik`), the lower limit 0 on data without between-group variation, bad input."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from scipy import optimize, stats

from pipeline.core.model import fit_data
from pipeline.core.oracle import mixed

DATA = Path(__file__).parents[2] / "examples" / "salamanders.csv"
CUTOFF = float(stats.chi2.ppf(0.95, 1))


def _salamanders():
    """count ~ mined and an intercept-only zero part (the columns built as in
    tests/core/test_oracle_mixed.py), and the site labels."""
    d = pl.read_csv(DATA)
    ones = np.ones(d.height)
    mined = (d["mined"] == "no").to_numpy().astype(float)  # reference level "yes", as in R
    return fit_data(np.c_[ones, mined], ones[:, None], d["count"].to_numpy()), d["site"].to_numpy()


def _deviance(fit, data, groups, part, sigma):
    """2(ℓ̂ − ℓ_p(σ)) by one profile fit from the estimate (not from a neighbour's fit)."""
    mp = mixed.mixed_problem(fit.family, data, groups, fit.parts)
    index = mp.k_fixed + fit.parts.index(part)
    start = np.where(np.isfinite(fit.params), fit.params, math.log(0.5))
    prof = mixed._fit(mp, fit.nodes, start, 200, hold={index: math.log(sigma)})
    assert prof.status in ("converged", "boundary"), prof.message
    assert prof.params[index] == math.log(sigma) and np.isnan(prof.se[index])  # held
    return 2 * (fit.loglik - prof.loglik)


def test_salamanders_profile_deviance_meets_the_cutoff_at_both_limits():
    """ZIP, site intercept in the count part: at each limit the profile deviance is χ²₁(0.95)
    to 1e-4 (brentq stops within 1e-6 in log σ, where the deviance rises ~15 per unit:
    1.5e-5; each profile fit is at its optimum to a Newton decrement of 1e-20; measured:
    2e-6 and 5e-8)."""
    data, site = _salamanders()
    fit = mixed.fit_mixed("zip", data, site, ("count",))
    assert fit.status == "converged", fit.message
    lower, upper = mixed.sigma_profile(fit, data, site, "count")
    sigma = fit.sigma["count"]
    assert 0 < lower < sigma < upper < math.inf
    for limit in (lower, upper):
        assert _deviance(fit, data, site, "count", limit) == pytest.approx(CUTOFF, abs=1e-4)
    # The Wald interval on the log scale is the profile interval of the quadratic
    # approximation of ℓ in log σ: with 23 sites the two agree to first order (measured:
    # profile 0.329-0.860 against Wald 0.334-0.857, within 1.6%), so a factor of 2 only
    # catches gross errors (limits on the log scale, a wrong side, a limit stuck at a
    # bracket end); the cutoff itself is checked above.
    log_sigma, se = fit.params[-1], fit.se[-1]
    z = math.sqrt(CUTOFF)
    wald = (math.exp(log_sigma - z * se), math.exp(log_sigma + z * se))
    for got, want in zip((lower, upper), wald):
        assert want / 2 < got < 2 * want


def _tiny():
    """Poisson, intercept only, a count intercept of σ = 1 in six groups of 3..6 rows."""
    rng = np.random.default_rng(11)
    sizes = [3, 4, 5, 3, 6, 4]
    groups = np.repeat(np.arange(len(sizes)), sizes)
    b = rng.normal(0.0, 1.0, len(sizes))[groups]
    y = rng.poisson(np.exp(1.0 + b))
    ones = np.ones((len(y), 1))
    return fit_data(ones, ones, y), groups


def test_limits_match_a_brute_force_profile_of_a_one_parameter_problem():
    """With one fixed intercept β, ℓ_p(σ) = max_β `marginal_loglik`(β, log σ) is a scalar
    maximisation (scipy's Brent, x tolerance 1e-10) and ℓ̂ its maximum over log σ; the limits
    are brentq's roots of 2(ℓ̂ − ℓ_p) − c to 1e-9. Both codes find their roots to <= 1e-6 in
    log σ, so 1e-4 on σ (limits 0.44 and 1.73 here) leaves room without hiding a wrong root
    (measured: 2e-8 apart)."""
    data, groups = _tiny()
    fit = mixed.fit_mixed("poisson", data, groups, ("count",))
    assert fit.status == "converged", fit.message
    mp = mixed.mixed_problem("poisson", data, groups, ("count",))

    def profile(log_sigma):
        def minus(beta):
            theta = torch.tensor([beta, log_sigma], dtype=torch.float64)
            return -float(mixed.marginal_loglik(mp, theta, fit.nodes)[0])

        return -optimize.minimize_scalar(minus, bracket=(0.0, 2.0), tol=1e-10).fun

    top = optimize.minimize_scalar(lambda v: -profile(v), bracket=(-1.0, 0.5), tol=1e-10)
    best, l_hat = float(top.x), -float(top.fun)
    assert l_hat == pytest.approx(fit.loglik, abs=1e-8)  # the same maximum, found apart

    def excess(log_sigma):
        return 2 * (l_hat - profile(log_sigma)) - CUTOFF

    want = [math.exp(optimize.brentq(excess, *ends, xtol=1e-9))
            for ends in ((best - 4.0, best), (best, best + 4.0))]  # fmt: skip
    got = mixed.sigma_profile(fit, data, groups, "count")
    assert got[0] > 0  # the σ = 0 model is rejected here: a root-found lower limit
    np.testing.assert_allclose(got, want, atol=1e-4)


def _no_variation(seed):
    """Poisson counts without group effects (σ = 0): ten groups of eight rows, one covariate."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(10), 8)
    x = rng.normal(size=len(groups))
    X = np.c_[np.ones(len(groups)), x]
    return fit_data(X, X, rng.poisson(np.exp(0.7 + 0.3 * x))), groups


@pytest.mark.parametrize(("seed", "status"), [(0, "boundary"), (2, "converged")])
def test_data_simulated_with_sigma_zero_have_lower_limit_zero(seed, status):
    """Seed 0 puts σ̂ at 0 (the upper limit is searched up from σ = 0); seed 2 gives a small
    interior σ̂ (0.077) whose σ = 0 test does not reject: both lower limits are exactly 0 and
    the upper limits meet the cutoff as above."""
    data, groups = _no_variation(seed)
    fit = mixed.fit_mixed("poisson", data, groups, ("count",))
    assert fit.status == status, fit.message
    assert mixed.sigma_test(fit, data, groups, "count").statistic <= CUTOFF
    lower, upper = mixed.sigma_profile(fit, data, groups, "count")
    assert lower == 0.0
    assert fit.sigma["count"] < upper < math.inf
    assert _deviance(fit, data, groups, "count", upper) == pytest.approx(CUTOFF, abs=1e-4)


def test_bad_input_is_one_clear_error():
    data, groups = _no_variation(2)
    fit = mixed.fit_mixed("poisson", data, groups, ("count",))
    with pytest.raises(ValueError, match="no random intercept in the zero part"):
        mixed.sigma_profile(fit, data, groups, "zero")
    stuck = dataclasses.replace(fit, status="max_iter")
    with pytest.raises(ValueError, match="converged or boundary fit, got 'max_iter'"):
        mixed.sigma_profile(stuck, data, groups, "count")
    with pytest.raises(ValueError, match="level must be in"):
        mixed.sigma_profile(fit, data, groups, "count", level=1.0)
