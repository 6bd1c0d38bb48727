"""Tests of the oracle (pipeline.core.oracle.fit and terms) on ZIP and Poisson regressions, and of
the closed-form fast path of the intercept-only ZIP and Poisson.

Independent references: statsmodels' ZeroInflatedPoisson and Poisson point estimates (its own
Newton code), torch autograd Hessians of the project's one ZIP log-pmf (`zip_log_prob`), the
closed-form intercept-only MLE (`mle.exact_mle`), scipy.stats.poisson and finite differences.
"""

import warnings

import numpy as np
import pytest
import scipy.stats
import torch
from count_samples import fit_arrays
from scipy.special import expit
from statsmodels.discrete.count_model import ZeroInflatedPoisson
from statsmodels.discrete.discrete_model import Poisson

from pipeline.core.errors import NotIdentifiableError
from pipeline.core.histogram import histogram
from pipeline.core.laws.distributions import zip_log_prob
from pipeline.core.model import fit_data, histogram_data
from pipeline.core.oracle.fit import STATUSES, fit_model
from pipeline.core.oracle.mle import exact_mle
from pipeline.core.oracle.terms import (
    covariances,
    expected_frequencies,
    gradient_hessian,
    loglik_terms,
    prepare,
)


def zip_terms(X, Z, y, gamma, beta):
    """Per-row log-likelihoods of the ZIP (q > 0) or the Poisson (q = 0) at [gamma, beta]."""
    family = "zip" if Z.shape[1] else "poisson"
    return loglik_terms(family, fit_data(X, Z, y), np.r_[gamma, beta])


def simulate(kind, n, seed):
    """(X, Z, y, gamma, beta) of a ZIP regression with intercepts and covariates of `kind`."""
    rng = np.random.default_rng(seed)
    draw = {
        "normal": lambda: rng.normal(size=n),
        "binary": lambda: rng.binomial(1, 0.4, n).astype(float),
        "poisson": lambda: rng.poisson(1.5, n).astype(float),
    }[kind]
    X = np.column_stack([np.ones(n), draw(), draw()])
    Z = np.column_stack([np.ones(n), draw(), rng.normal(size=n)])
    gamma, beta = np.array([-0.4, 0.7, -0.5]), np.array([0.8, 0.3, -0.2])
    structural = rng.random(n) < expit(Z @ gamma)
    y = np.where(structural, 0, rng.poisson(np.exp(X @ beta)))
    return X, Z, y, gamma, beta


def statsmodels_zip(X, Z, y, start):
    """statsmodels' Newton fit (zero part first) from `start`: its estimates, never its SEs."""
    model = ZeroInflatedPoisson(y, X, exog_infl=Z, inflation="logit")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = model.fit(method="newton", start_params=start, maxiter=200, disp=0)
    assert res.mle_retvals["converged"]
    return res


def torch_hessian(X, Z, y, theta):
    """Autograd Hessian of the total log-likelihood written with `zip_log_prob`, float64."""
    q = Z.shape[1]
    Xt, Zt, yt = (torch.as_tensor(a, dtype=torch.float64) for a in (X, Z, y))

    def loglik(t):
        return zip_log_prob(yt, Zt @ t[:q], Xt @ t[q:]).sum()

    theta_t = torch.as_tensor(theta, dtype=torch.float64)
    return loglik(theta_t).item(), torch.autograd.functional.hessian(loglik, theta_t).numpy()


@pytest.mark.parametrize("kind, seed", [("normal", 1), ("binary", 2), ("poisson", 3)])
def test_estimates_match_statsmodels(kind, seed):
    X, Z, y, gamma, beta = simulate(kind, 3000, seed)
    fit = fit_arrays("zip", X, Z, y)
    assert fit.status == "converged" and fit.status in STATUSES
    # statsmodels starts from the true parameters, independent of our fit: its default start
    # can land on the Poisson (DESIGN 7) and its Newton from zeros returns NaN on the "poisson"
    # design. It stops ~1e-9 from our optimum, so 1e-6 (relative, or absolute near 0) is wide.
    ref = statsmodels_zip(X, Z, y, np.r_[gamma, beta])
    np.testing.assert_allclose(np.r_[fit.gamma, fit.beta], ref.params, rtol=1e-6, atol=1e-6)
    assert fit.loglik == pytest.approx(ref.llf, rel=1e-12)
    assert fit.nll == pytest.approx(-ref.llf / len(y), rel=1e-12)
    assert fit.grad_norm < 1e-10


def test_standard_errors_match_autograd_and_differ_from_statsmodels():
    # Small rates (exp(0.8 + ...) ~ 1-3) make the cross block matter, where statsmodels drops it.
    X, Z, y, _, _ = simulate("normal", 2000, 4)
    fit = fit_arrays("zip", X, Z, y)
    theta = np.r_[fit.gamma, fit.beta]
    ll, hess = torch_hessian(X, Z, y, theta)
    cov = np.linalg.inv(-hess)
    # Both Hessians are exact formulas in float64 with O(n eps) rounding: 1e-8 is generous.
    np.testing.assert_allclose(fit.cov, cov, rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(np.r_[fit.se_gamma, fit.se_beta], np.sqrt(np.diag(cov)), rtol=1e-8)
    model, _ = covariances(prepare("zip", fit_data(X, Z, y)), fit.params)
    np.testing.assert_allclose(model, fit.cov, rtol=1e-12)
    assert fit.loglik == pytest.approx(ll, rel=1e-12)
    ref = statsmodels_zip(X, Z, y, theta)
    assert np.max(np.abs(ref.bse / np.r_[fit.se_gamma, fit.se_beta] - 1)) > 1e-3


@pytest.mark.parametrize("pi, lam, seed", [(0.5, 5.0, 0), (0.3, 0.5, 5), (0.2, 1e6, 6)])
def test_intercept_only_reproduces_closed_form(pi, lam, seed):
    rng = np.random.default_rng(seed)
    n = 10_000
    y = rng.binomial(1, 1 - pi, n) * rng.poisson(lam, n)
    ones = np.ones((n, 1))
    fit, exact = fit_arrays("zip", ones, ones, y), exact_mle(histogram(y))
    assert fit.status == "converged" and not exact.boundary and fit.iterations == 0
    assert "closed form" in fit.message and fit.pi == expit(fit.gamma[0])
    # The fast path and Newton (any start takes Newton) find the same maximum: 1e-8 relative
    # is ~1e-8 SE at n = 1e4, far above Newton's stop (~1e-10 SE) and rounding.
    newton = fit_arrays("zip", ones, ones, y, start=fit.params + [0.3, -0.2])
    assert newton.iterations > 0 and newton.status == "converged"
    np.testing.assert_allclose(newton.params, fit.params, rtol=1e-8)
    np.testing.assert_allclose(newton.cov, fit.cov, rtol=1e-7)
    assert newton.loglik == pytest.approx(fit.loglik, rel=1e-13)
    values, freqs = np.unique(y, return_counts=True)
    hist = fit_model("zip", histogram_data(values, freqs))
    np.testing.assert_allclose(hist.params, fit.params, rtol=1e-12)
    assert hist.loglik == pytest.approx(fit.loglik, rel=1e-12)
    # Two exact methods (Newton to rounding vs a Lambert-W root polished by Newton): 1e-8.
    assert expit(fit.gamma[0]) == pytest.approx(exact.pi, rel=1e-8)
    assert np.exp(fit.beta[0]) == pytest.approx(exact.lam, rel=1e-8)
    assert fit.nll == pytest.approx(exact.nll, rel=1e-8)
    # Observed = expected information at the intercept-only MLE (its score equations make the
    # data terms match their expectations), so the SEs agree with the closed form.
    assert fit.se_gamma[0] == pytest.approx(exact.se_logit_pi, rel=1e-8)
    assert fit.se_beta[0] == pytest.approx(exact.se_log_lam, rel=1e-8)


def test_reference_numbers_of_design():
    rng = np.random.default_rng(0)
    y = rng.binomial(1, 0.5, 10_000) * rng.poisson(5, 10_000)
    ones = np.ones((10_000, 1))
    fit = fit_arrays("zip", ones, ones, y)
    # DESIGN.md section 2 quotes 6 significant digits (8 for the NLL).
    assert expit(fit.gamma[0]) == pytest.approx(0.499593, abs=5e-7)
    assert np.exp(fit.beta[0]) == pytest.approx(5.019519, abs=5e-7)
    assert fit.nll == pytest.approx(1.77508314, abs=5e-9)
    assert fit.se_gamma[0] == pytest.approx(0.020137, abs=5e-7)
    assert fit.se_beta[0] == pytest.approx(0.006418, abs=5e-7)


def test_poisson_regression_matches_statsmodels():
    rng = np.random.default_rng(7)
    n = 3000
    X = np.column_stack([np.ones(n), rng.normal(size=n), rng.binomial(1, 0.3, n)])
    y = rng.poisson(np.exp(X @ [0.5, 0.3, -0.4]))
    fit = fit_arrays("poisson", X, None, y)
    ref = Poisson(y, X).fit(method="newton", disp=0, maxiter=100)
    assert fit.status == "converged" and fit.gamma.shape == (0,) and fit.se_gamma.shape == (0,)
    # A concave GLM: both Newton fits are at rounding level; the Poisson information has no
    # cross block to drop, so statsmodels' SEs are a valid reference here too.
    np.testing.assert_allclose(fit.beta, ref.params, rtol=1e-8)
    np.testing.assert_allclose(fit.se_beta, ref.bse, rtol=1e-8)
    assert fit.loglik == pytest.approx(ref.llf, rel=1e-12)


def test_default_start_does_not_collapse_to_poisson():
    X, Z, y, _, _ = simulate("binary", 3000, 8)
    fit = fit_arrays("zip", X, Z, y)
    from_zeros = fit_arrays("zip", X, Z, y, start=np.zeros(6))
    np.testing.assert_allclose(fit.beta, from_zeros.beta, rtol=1e-9)
    assert expit(Z @ fit.gamma).mean() > 0.2  # clear zero inflation is found, not pi ~ 0
    assert fit.loglik > fit_arrays("poisson", X, None, y).loglik + 100


@pytest.mark.parametrize("seed", [13, 18, 26])
def test_wild_starts_reach_the_same_optimum(seed):
    # Starts with rates up to e^17 and pi numerically 0 or 1 (indefinite Hessians, saturated
    # weights): the damped, trust-region Newton still ends at the optimum, to rounding.
    X, Z, y, _, _ = simulate("poisson", 1000, 100 + seed)
    start = np.random.default_rng(seed).normal(scale=2, size=6)
    fit, wild = fit_arrays("zip", X, Z, y), fit_arrays("zip", X, Z, y, start=start)
    assert wild.status == "converged"
    np.testing.assert_allclose(np.r_[wild.gamma, wild.beta], np.r_[fit.gamma, fit.beta], atol=1e-9)


def test_gradient_and_hessian_against_autograd_and_differences():
    X, Z, y, gamma, beta = simulate("poisson", 1500, 9)
    gamma, beta = gamma + 0.3, beta - 0.2  # away from the optimum: H is not a special case
    ll, grad, hess = gradient_hessian("zip", fit_data(X, Z, y), np.r_[gamma, beta])
    ll_t, hess_t = torch_hessian(X, Z, y, np.r_[gamma, beta])
    assert ll == pytest.approx(ll_t, rel=1e-12)
    np.testing.assert_allclose(hess, hess_t, rtol=1e-10, atol=1e-9)
    # Central differences of the summed terms: O(h^2) truncation plus O(eps |ll| / h) rounding,
    # about 1e-5 relative at h = 1e-5.
    theta, h = np.r_[gamma, beta], 1e-5
    q = len(gamma)
    numeric = []
    for k in range(len(theta)):
        e = np.zeros_like(theta)
        e[k] = h
        up, down = theta + e, theta - e
        numeric.append(
            (
                zip_terms(X, Z, y, up[:q], up[q:]).sum()
                - zip_terms(X, Z, y, down[:q], down[q:]).sum()
            )
            / (2 * h)
        )
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-4)


def test_loglik_terms_limits_and_formula():
    rng = np.random.default_rng(10)
    n = 500
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    Z = np.column_stack([np.ones(n), rng.normal(size=n)])
    y = rng.poisson(4.0, n)
    beta = np.array([1.3, 0.2])
    poisson = scipy.stats.poisson.logpmf(y, np.exp(X @ beta))
    # q = 0 is the Poisson; pi ~ e^-50 differs from it by ~e^-50 per term.
    np.testing.assert_allclose(zip_terms(X, Z[:, :0], y, [], beta), poisson, rtol=1e-12)
    np.testing.assert_allclose(zip_terms(X, Z, y, [-50.0, 0.0], beta), poisson, rtol=1e-12)
    gamma = np.array([0.4, -1.0])
    s, lam = Z @ gamma, np.exp(X @ beta)
    sp = np.logaddexp(0, s)
    direct = np.where(
        y == 0,
        np.logaddexp(-np.logaddexp(0, -s), -sp - lam),  # DESIGN section 2, written out
        -sp + y * np.log(lam) - lam - scipy.special.gammaln(y + 1),
    )
    np.testing.assert_allclose(zip_terms(X, Z, y, gamma, beta), direct, rtol=1e-12)


def test_expected_frequencies_sum_to_n():
    X, Z, _, gamma, beta = simulate("normal", 2000, 11)
    values = np.arange(200)  # rates up to exp(0.8 + 0.5 * 4) ~ 16: the tail beyond 200 is nil
    zeros = np.zeros(2000)
    freq = expected_frequencies("zip", fit_data(X, Z, zeros), np.r_[gamma, beta], values)
    assert freq.sum() == pytest.approx(2000, rel=1e-10)
    assert freq[0] == pytest.approx(np.exp(zip_terms(X, Z, zeros, gamma, beta)).sum())
    pois = expected_frequencies("poisson", fit_data(X, None, zeros), beta, values[:5])
    lam = np.exp(X @ beta)
    np.testing.assert_allclose(pois, scipy.stats.poisson.pmf(values[:5, None], lam).sum(axis=1))


def test_all_zero_counts_are_not_identifiable():
    X = np.ones((50, 1))
    with pytest.raises(NotIdentifiableError):
        fit_arrays("zip", X, X, np.zeros(50))
    with pytest.raises(NotIdentifiableError):
        fit_arrays("poisson", X, None, np.zeros(50))


def test_collinear_columns_are_singular():
    X, Z, y, _, _ = simulate("normal", 1000, 12)
    Xc = np.column_stack([X, X[:, 1] - 2 * X[:, 2]])
    fit = fit_arrays("zip", Xc, Z, y)
    assert fit.status == "singular" and "count 3" in fit.message
    assert np.isnan(fit.cov).all() and np.isnan(fit.se_beta).all()
    # The dropped column is fixed at 0; the others give the full-rank model's likelihood.
    assert fit.beta[3] == 0 and fit.loglik == pytest.approx(fit_arrays("zip", X, Z, y).loglik)


def test_separation_is_detected_and_named():
    # Every observation with z = 1 is positive: no structural zeros there, gamma_1 -> -inf.
    rng = np.random.default_rng(13)
    n = 2000
    z = rng.binomial(1, 0.5, n).astype(float)
    y = np.where((z == 0) & (rng.random(n) < 0.4), 0, rng.poisson(3.0, n))
    y[(z == 1) & (y == 0)] = 1
    ones = np.ones(n)
    fit = fit_arrays("zip", np.column_stack([ones, rng.normal(size=n)]), np.c_[ones, z], y)
    assert fit.status == "separated" and "zero-part coefficient 1" in fit.message
    assert fit.gamma[1] < -30 and fit.iterations < 100
    # A Poisson regressor whose group has only zeros: beta_1 -> -inf.
    x = rng.binomial(1, 0.5, n)
    poisson = fit_arrays("poisson", np.c_[ones, x], None, np.where(x == 1, 0, rng.poisson(2.0, n)))
    assert poisson.status == "separated" and "count-part coefficient 1" in poisson.message


def test_max_iter_and_bad_input():
    X, Z, y, _, _ = simulate("normal", 500, 14)
    assert fit_arrays("zip", X, Z, y, max_iter=1, start=np.zeros(6)).status == "max_iter"
    for bad_y in (-y, y + 0.5, y[:-1]):
        with pytest.raises(ValueError):
            fit_arrays("zip", X, Z, bad_y)
    with pytest.raises(ValueError):
        fit_arrays("zip", np.where(X == X[0, 1], np.nan, X), Z, y)
    with pytest.raises(ValueError):
        fit_arrays("zip", X, Z[:-1], y)
    with pytest.raises(ValueError):
        fit_arrays("zip", X, Z, y, start=np.zeros(5))
