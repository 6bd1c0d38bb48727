"""Tests for pipeline.core.oracle.fit (with terms and newton): the float64 Newton oracle for every
count family, at interior optima.

Independent references: statsmodels 0.15's NegativeBinomial (nb2), ZeroInflatedNegativeBinomialP
(p=2), Logit + TruncatedLFPoisson / TruncatedLFNegativeBinomialP(p=2) for the hurdles;
scipy.stats pmfs; torch autograd Hessians of the log-likelihood
written from `count_terms.family_terms(order=0)`. Boundaries, separation, weights and the
sandwich are in test_oracle_fit_limits.py; the ZIP and Poisson in test_oracle_zip.py.
"""

import numpy as np
import pytest
import torch
from count_samples import fit_arrays, scipy_pmf, simulate, statsmodels_fit, torch_loglik

from pipeline.core.errors import NotIdentifiableError
from pipeline.core.model import FAMILIES, fit_data
from pipeline.core.oracle.fit import STATUSES
from pipeline.core.oracle.terms import expected_frequencies, gradient_hessian, loglik_terms, scores

SEEDS = dict(zip(FAMILIES, range(21, 27)))


@pytest.fixture(scope="module", params=FAMILIES)
def fitted(request):
    """(family, X, Z, y, fit) on n = 2000 simulated rows of that family (alpha = 0.5)."""
    family = request.param
    X, Z, y = simulate(family, 2000, SEEDS[family])
    return family, X, Z, y, fit_arrays(family, X, Z, y)


def test_fit_converges_with_consistent_fields(fitted):
    family, X, Z, y, fit = fitted
    assert fit.status == "converged" and fit.status in STATUSES, fit.message
    assert fit.family.name == family and fit.grad_norm < 1e-10
    k = Z.shape[1] + X.shape[1] + (family in ("nb", "zinb", "hurdle_nb"))
    assert fit.params.shape == (k,) and fit.cov.shape == (k, k) and fit.n_params == k
    assert fit.nll == pytest.approx(-fit.loglik / len(y), rel=1e-15)
    np.testing.assert_array_equal(fit.se, np.sqrt(np.diag(fit.cov)))
    assert (fit.alpha is None) == (fit.log_alpha is None)
    if fit.alpha is not None:
        assert fit.alpha == pytest.approx(np.exp(fit.log_alpha), rel=1e-15)


def test_estimates_match_statsmodels(fitted):
    family, X, Z, y, fit = fitted
    ref, llf, how = statsmodels_fit(family, X, Z, y, fit.params)
    # Both are Newton fits stopped at rounding level (ours: decrement <= 1e-20, ~1e-10 SE);
    # the brief's 1e-6 relative is therefore wide (observed differences ~1e-12).
    np.testing.assert_allclose(fit.params, ref, rtol=1e-6, atol=1e-9, err_msg=how)
    assert fit.loglik == pytest.approx(llf, rel=1e-12)


def test_a_family_without_zero_part_ignores_z():
    X, Z, y = simulate("zip", 3000, 31)
    ours, ref = fit_arrays("poisson", X, Z, y), fit_arrays("poisson", X, None, y)
    np.testing.assert_array_equal(ours.params, ref.params)
    np.testing.assert_array_equal(ours.cov, ref.cov)
    assert ours.gamma.shape == (0,) and ours.log_alpha is None and ours.alpha is None
    assert ours.se_beta.shape == (3,) and ours.se_gamma.shape == (0,) and ours.q == 0


def test_hessian_and_gradient_match_autograd(fitted):
    family, X, Z, y, fit = fitted
    loglik = torch_loglik(family, X, Z, y)
    for theta in (fit.params, fit.params + np.linspace(-0.2, 0.2, len(fit.params))):
        ll, grad, hess = gradient_hessian(family, fit_data(X, Z, y), theta)
        t = torch.as_tensor(theta)
        ref_hess = torch.autograd.functional.hessian(loglik, t).numpy()
        ref_grad = torch.func.grad(loglik)(t).numpy()
        assert ll == pytest.approx(loglik(t).item(), rel=1e-13)
        # Both are float64 sums of the same per-observation formulas (analytic vs autograd):
        # rounding is ~n eps relative to the largest entry, far inside 1e-8. At the estimate
        # the gradient is itself rounding (~1e-10): there sums of n terms of size ~y agree to
        # n eps max(y) ~ 1e-11, hence the absolute 1e-9.
        scale = np.abs(ref_hess).max()
        np.testing.assert_allclose(hess, ref_hess, rtol=1e-8, atol=1e-8 * scale)
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-8, atol=1e-9)
    # At the estimate the covariance is the inverse of the autograd information. Autograd
    # differentiates digamma with torch.polygamma(1, .), off by up to 5e-10 relative (our
    # Hessian uses an accurate trigamma, `count_parts._trigamma`); through the inverse (condition
    # numbers ~1e2 here) that reference error reaches ~1e-7 relative on log alpha's entries.
    info = -torch.autograd.functional.hessian(loglik, torch.as_tensor(fit.params)).numpy()
    rtol = 2e-7 if fit.log_alpha is not None else 1e-8
    np.testing.assert_allclose(fit.cov, np.linalg.inv(info), rtol=rtol, atol=1e-12)


def test_scores_sum_to_the_gradient(fitted):
    family, X, Z, y, fit = fitted
    theta = fit.params + 0.05
    g = scores(family, fit_data(X, Z, y), theta)
    _, grad, _ = gradient_hessian(family, fit_data(X, Z, y), theta)
    assert g.shape == (len(y), len(theta))
    np.testing.assert_allclose(g.sum(axis=0), grad, rtol=1e-12, atol=1e-9)


def test_loglik_terms_match_scipy(fitted):
    family, X, Z, y, fit = fitted
    ref = np.log(scipy_pmf(family, y, X, Z, fit.params)[np.arange(len(y)), np.arange(len(y))])
    # scipy's pmfs go through other formulas (betaln/xlogy): agreement to ~1e-12 relative.
    np.testing.assert_allclose(loglik_terms(family, fit_data(X, Z, y), fit.params), ref, rtol=1e-10)


def test_expected_frequencies_sum_to_n_and_match_scipy(fitted):
    family, X, Z, y, fit = fitted
    values = np.arange(400)  # means up to e^1.1 ~ 3 with alpha ~ 0.5: the tail past 400 is nil
    freq = expected_frequencies(family, fit_data(X, Z, y), fit.params, values)
    assert freq.sum() == pytest.approx(len(y), rel=1e-10)
    head = values[:12]
    ref = scipy_pmf(family, head, X, Z, fit.params).sum(axis=1)
    np.testing.assert_allclose(freq[:12], ref, rtol=1e-10)
    grid = expected_frequencies(family, fit_data(X, Z, y), fit.params, head.reshape(3, 4))
    np.testing.assert_array_equal(grid, freq[:12].reshape(3, 4))


@pytest.mark.parametrize("family", FAMILIES)
def test_bad_input_is_rejected(family):
    X, Z, y = simulate(family, 300, 40)
    if Z.shape[1]:
        with pytest.raises(ValueError, match="needs at least one zero-part column in Z"):
            fit_arrays(family, X, Z[:, :0], y)
    with pytest.raises(ValueError):
        fit_arrays(family, X, Z, y - 1.0 * (y.max() + 1))
    with pytest.raises(ValueError):
        fit_arrays(family, X, Z, y, weights=-np.ones(300))
    with pytest.raises(ValueError):
        fit_arrays(family, X, Z, y, start=np.zeros(2))
    with pytest.raises(NotIdentifiableError):
        fit_arrays(family, X, Z, np.zeros(300))
    with pytest.raises(NotIdentifiableError):  # the positive counts all carry weight 0
        fit_arrays(family, X, Z, y, weights=(y == 0).astype(float))
    with pytest.raises(ValueError, match="unknown family"):
        fit_arrays("zigp", X, Z, y)


def test_collinear_columns_are_fixed_at_zero_and_singular():
    X, Z, y = simulate("zinb", 1500, 41)
    Xc = np.column_stack([X, X[:, 1] - 2 * X[:, 2]])
    fit, full = fit_arrays("zinb", Xc, Z, y), fit_arrays("zinb", X, Z, y)
    assert fit.status == "singular" and "count 3" in fit.message
    assert fit.beta[3] == 0 and np.isnan(fit.cov).all()
    assert fit.loglik == pytest.approx(full.loglik, rel=1e-12)


def test_max_iter_is_reported():
    X, Z, y = simulate("zinb", 500, 42)
    fit = fit_arrays("zinb", X, Z, y, start=np.zeros(7), max_iter=1)
    assert fit.status == "max_iter" and "1 iterations" in fit.message


@pytest.mark.parametrize("family", ["nb", "zinb", "hurdle_nb"])
def test_starts_far_away_reach_the_same_optimum(family):
    X, Z, y = simulate(family, 1500, 43)
    fit = fit_arrays(family, X, Z, y)
    k = len(fit.params)
    wild = fit_arrays(family, X, Z, y, start=np.random.default_rng(1).normal(size=k))
    assert wild.status == "converged", wild.message
    np.testing.assert_allclose(wild.params, fit.params, rtol=1e-8, atol=1e-9)
