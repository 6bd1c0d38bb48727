"""Tests for pipeline.core.oracle.fit at its limits: the alpha -> 0 boundary, separation,
frequency weights and the sandwich covariance.

Independent references: the nested fits (Poisson, ZIP, hurdle Poisson), the NB's closed-form
score for alpha at 0, statsmodels' TruncatedLFPoisson / NegativeBinomial / Poisson(HC0), data
expanded by their frequencies, and the intercept-only Poisson sandwich in closed form.
"""

import numpy as np
import pytest
from count_samples import fit_arrays, simulate, statsmodels_fit
from statsmodels.discrete.discrete_model import Poisson
from statsmodels.discrete.truncated_model import TruncatedLFPoisson

from pipeline.core.model import FAMILIES, fit_data
from pipeline.core.oracle.fit import alpha_score
from pipeline.core.oracle.terms import gradient_hessian, loglik_terms, prepare, scores

POISSON_LIMIT = {"nb": "poisson", "zinb": "zip", "hurdle_nb": "hurdle_poisson"}


def _poisson_data_with_negative_score(family):
    """(X, Z, y, nested fit) of the Poisson-limit family whose NB score at alpha = 0 is < 0:
    the first seed from 50 with an underdispersed sample (about half of them are)."""
    for seed in range(50, 80):
        X, Z, y = simulate(family, 1500, seed, alpha=0.0)
        nest = fit_arrays(POISSON_LIMIT[family], X, Z, y)
        data = prepare(family, fit_data(X, Z, y))
        if alpha_score(data, nest.params) < 0:
            return X, Z, y, nest
    raise AssertionError("no underdispersed sample")


@pytest.mark.parametrize("family", ["nb", "zinb", "hurdle_nb"])
def test_negative_score_puts_alpha_on_the_boundary(family):
    X, Z, y, nest = _poisson_data_with_negative_score(family)
    fit = fit_arrays(family, X, Z, y)
    assert fit.status == "boundary" and "alpha_hat = 0" in fit.message, fit.message
    assert fit.log_alpha == -np.inf and fit.alpha == 0.0 and fit.n_params == nest.n_params + 1
    np.testing.assert_array_equal(fit.params[:-1], nest.params)
    assert fit.loglik == nest.loglik and fit.nll == nest.nll
    k = len(nest.params)
    np.testing.assert_array_equal(fit.cov[:k, :k], nest.cov)
    assert np.isnan(fit.cov[k]).all() and np.isnan(fit.cov[:, k]).all()
    # Newton from a dispersed start runs log alpha off to -inf and ends at the same place.
    run = fit_arrays(family, X, Z, y, start=np.r_[nest.params, np.log(0.5)])
    assert run.status == "boundary" and "log alpha ran below" in run.message, run.message
    np.testing.assert_allclose(run.params[:-1], nest.params, rtol=1e-8, atol=1e-10)
    assert run.loglik == pytest.approx(nest.loglik, rel=1e-13) and run.log_alpha == -np.inf


def test_alpha_score_is_the_nb_closed_form():
    # d l / d alpha at alpha = 0 for the NB2 is sum((y - mu)^2 - y) / 2 (Cameron & Trivedi).
    for seed in (1, 2):
        X, Z, y = simulate("nb", 1000, seed, alpha=0.1)
        beta = fit_arrays("poisson", X, Z, y).beta
        mu = np.exp(X @ beta)
        data = prepare("nb", fit_data(X, Z, y))
        ref = ((y - mu) ** 2 - y).sum() / 2
        # count_terms at alpha = 1e-10 carries ~1e-7 relative rounding (log1p(u) - u with
        # u ~ 1e-10 (y - mu) cancels) and an O(alpha) bias ~1e-9: 1e-6 is the honest bound.
        assert alpha_score(data, beta) == pytest.approx(ref, rel=1e-6)


@pytest.mark.parametrize("family", ["nb", "zinb", "hurdle_nb"])
def test_boundary_values_are_the_nested_models(family):
    X, Z, y, nest = _poisson_data_with_negative_score(family)
    params = np.r_[nest.params, -np.inf]
    inner = POISSON_LIMIT[family]
    np.testing.assert_array_equal(
        loglik_terms(family, fit_data(X, Z, y), params),
        loglik_terms(inner, fit_data(X, Z, y), nest.params),
    )
    ll, grad, hess = gradient_hessian(family, fit_data(X, Z, y), params)
    ll0, grad0, hess0 = gradient_hessian(inner, fit_data(X, Z, y), nest.params)
    assert ll == ll0 and grad[-1] == 0 and (hess[-1] == 0).all() and (hess[:, -1] == 0).all()
    np.testing.assert_array_equal(hess[:-1, :-1], hess0)
    assert (scores(family, fit_data(X, Z, y), params)[:, -1] == 0).all()
    # The limit is continuous: log alpha = -40 gives the nested values to ~alpha = 4e-18.
    near = gradient_hessian(family, fit_data(X, Z, y), np.r_[nest.params, -40.0])
    assert near[0] == pytest.approx(ll0, rel=1e-12)
    np.testing.assert_allclose(near[2][:-1, :-1], hess0, rtol=1e-10)


def test_hurdle_on_all_positive_counts_separates_and_keeps_the_truncated_fit():
    X, Z, y = simulate("hurdle_poisson", 2000, 60)
    y = y + (y == 0)  # every count positive: P(Y > 0) -> 1
    fit = fit_arrays("hurdle_poisson", X, Z, y)
    assert fit.status == "separated" and "zero-part coefficient 0" in fit.message
    assert "P(Y>0) -> 1" in fit.message and fit.gamma[0] > 30
    ref = TruncatedLFPoisson(y, X).fit(method="newton", disp=0, maxiter=100)
    assert ref.mle_retvals["converged"]
    # The count part is fitted apart to its own convergence: Newton-level agreement.
    np.testing.assert_allclose(fit.beta, ref.params, rtol=1e-8)
    k = Z.shape[1]
    np.testing.assert_allclose(fit.se[k:], ref.bse, rtol=1e-6)  # the count block stays valid
    assert fit.loglik == pytest.approx(ref.llf, abs=1e-6)  # plus ~n e^-30 from the logistic


def test_zinb_without_zeros_separates_towards_the_nb():
    X, Z, y = simulate("zinb", 2000, 61)
    y = y + (y == 0)
    fit, nb = fit_arrays("zinb", X, Z, y), fit_arrays("nb", X, Z[:, :0], y)
    assert fit.status == "separated" and "pi -> 0" in fit.message, fit.message
    # pi ~ e^-30 at most where the run stops: the count part is the NB's to ~1e-6 relative.
    np.testing.assert_allclose(fit.params[3:], nb.params, rtol=1e-6)
    assert fit.loglik == pytest.approx(nb.loglik, rel=1e-9)


def _with_duplicates(family, seed):
    """Rows with few distinct values (covariates on a grid) and their frequency table."""
    X, Z, y = simulate(family, 3000, seed)
    X[:, 1] = np.round(X[:, 1])
    if Z.shape[1]:
        Z[:, 1] = np.round(Z[:, 1])
    rows = np.column_stack([X, Z, y])
    uniq, freq = np.unique(rows, axis=0, return_counts=True)
    p, q = X.shape[1], Z.shape[1]
    return (X, Z, y), (uniq[:, :p], uniq[:, p : p + q], uniq[:, -1], freq)


@pytest.mark.parametrize("family", FAMILIES)
def test_frequency_weights_equal_the_expanded_data(family):
    (X, Z, y), (Xu, Zu, yu, freq) = _with_duplicates(family, 70 + FAMILIES.index(family))
    assert len(yu) < len(y) / 4
    full = fit_arrays(family, X, Z, y)
    weighted = fit_arrays(family, Xu, Zu, yu, weights=freq)
    assert weighted.status == full.status == "converged", weighted.message
    # Same sums in another order: both runs stop ~1e-10 SE from the same optimum.
    np.testing.assert_allclose(weighted.params, full.params, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(weighted.cov, full.cov, rtol=1e-7, atol=1e-12)
    assert weighted.loglik == pytest.approx(full.loglik, rel=1e-12)
    assert weighted.nll == pytest.approx(full.nll, rel=1e-12)
    robust = weighted.robust_cov
    np.testing.assert_allclose(robust, full.robust_cov, rtol=1e-7, atol=1e-12)
    # Rows of weight 0 are as good as absent.
    Xp, Zp, yp = (np.concatenate([A, A[:5]]) for A in (Xu, Zu, yu))
    zero = fit_arrays(family, Xp, Zp, yp, weights=np.r_[freq, np.zeros(5)])
    np.testing.assert_array_equal(zero.params, weighted.params)


@pytest.mark.parametrize("family", ["zip", "zinb", "hurdle_nb"])
def test_intercept_only_histogram_equals_the_counts(family):
    X, Z, y = simulate(family, 5000, 80)
    values, freq = np.unique(y, return_counts=True)
    ones = np.ones((len(y), 1))
    full = fit_arrays(family, ones, ones, y)
    hist = fit_arrays(family, ones[: len(values)], ones[: len(values)], values, weights=freq)
    np.testing.assert_allclose(hist.params, full.params, rtol=1e-8, atol=1e-10)
    assert hist.loglik == pytest.approx(full.loglik, rel=1e-12)


def test_sandwich_equals_the_model_covariance_when_the_model_is_right():
    X, Z, y = simulate("nb", 40_000, 90)
    fit = fit_arrays("nb", X, Z, y)
    robust = fit.robust_cov
    # Information equality: E[g g'] = -E[H]. Each sandwich SE estimates its model-based
    # counterpart with a relative sampling error ~ sqrt(kurtosis / n): within 1.2 % over four
    # seeds at n = 4e4 (log alpha, with the heaviest-tailed score, the widest); 5 % is ~4 sigma.
    ratio = np.sqrt(np.diag(robust) / np.diag(fit.cov))
    np.testing.assert_allclose(ratio, 1.0, atol=0.05)
    assert np.allclose(robust, robust.T, rtol=1e-12)


def test_sandwich_of_a_poisson_on_overdispersed_data():
    X, Z, y = simulate("nb", 20_000, 91, alpha=0.5)
    ones = np.ones((len(y), 1))
    fit = fit_arrays("poisson", ones, Z, y)
    robust = fit.robust_cov
    # Intercept-only Poisson: score y_i - ybar, information n ybar: the sandwich is exactly
    # sum((y - ybar)^2) / (n ybar)^2, the model variance 1 / (n ybar).
    n, ybar = len(y), y.mean()
    assert robust[0, 0] == pytest.approx(((y - ybar) ** 2).sum() / (n * ybar) ** 2, rel=1e-10)
    assert fit.cov[0, 0] == pytest.approx(1 / (n * ybar), rel=1e-10)
    # Their ratio is var/mean, whose expectation under NB2 with the covariates left out of the
    # fit is 1 + (alpha E[mu^2] + Var mu) / E[mu]; the sample value was within 4 % of it over
    # three seeds at n = 2e4: 10 % allowed.
    mu = np.exp(X @ np.array([0.8, 0.3, -0.2]))
    known = 1 + 0.5 * (mu**2).mean() / mu.mean() + mu.var() / mu.mean()
    assert robust[0, 0] / fit.cov[0, 0] == pytest.approx(known, rel=0.1)
    # With covariates: statsmodels' HC0 (no small-sample factor) is the same estimator.
    fit = fit_arrays("poisson", X, Z, y)
    ref = Poisson(y, X).fit(method="newton", disp=0, cov_type="HC0")
    np.testing.assert_allclose(fit.robust_cov, ref.cov_params(), rtol=1e-8)
    assert (np.diag(fit.robust_cov) > 1.5 * np.diag(fit.cov)).all()


def test_sandwich_at_the_boundary():
    X, Z, y, nest = _poisson_data_with_negative_score("nb")
    fit = fit_arrays("nb", X, Z, y)
    robust = fit.robust_cov
    np.testing.assert_allclose(robust[:-1, :-1], nest.robust_cov, rtol=1e-12)
    assert np.isnan(robust[-1]).all() and np.isnan(robust[:, -1]).all()


def test_statsmodels_nb_agrees_at_an_interior_optimum_after_a_boundary_check():
    # Overdispersed data: the score at alpha = 0 is positive and Newton finds alpha inside.
    X, Z, y = simulate("nb", 3000, 92, alpha=0.05)
    fit = fit_arrays("nb", X, Z, y)
    assert fit.status == "converged" and np.isfinite(fit.log_alpha)
    ref, llf, _ = statsmodels_fit("nb", X, Z, y, fit.params)
    np.testing.assert_allclose(fit.params, ref, rtol=1e-6)
    assert fit.loglik == pytest.approx(llf, rel=1e-12)
