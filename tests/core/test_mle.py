"""Tests for pipeline.core.oracle.mle: exact ZIP MLE and Fisher information (histograms:
test_histogram.py).

Independent references: DESIGN.md reference numbers, statsmodels point estimates, a numerical
optimiser, mpmath at 50 digits near the branch point, and torch autograd Hessians (torch is
used only here, never in the core module).
"""

import warnings

import mpmath
import numpy as np
import pytest
import scipy.optimize
import scipy.stats
import torch
from scipy.special import expit, lambertw, logit

from pipeline.core.errors import NotIdentifiableError
from pipeline.core.histogram import Histogram, histogram
from pipeline.core.oracle.mle import (
    exact_mle,
    fisher_information,
    poisson_mle,
    zip_nll,
    zip_nll_grid,
)

SCENARIOS = [(0.5, 5.0), (0.3, 0.5), (0.9, 3.0), (0.02, 8.0), (0.2, 1.0)]


def simulate(pi, lam, n, seed):
    """ZIP sample: structural zero with probability pi, else Poisson(lam)."""
    rng = np.random.default_rng(seed)
    return np.where(rng.random(n) < pi, 0, rng.poisson(lam, n))


def torch_total_nll(hist, a, b, scale):
    """Total NLL as a torch function of (logit pi, log lam) or (pi, lam), float64."""
    values = torch.as_tensor(hist.values, dtype=torch.float64)
    freqs = torch.as_tensor(hist.freqs, dtype=torch.float64)
    if scale == "logit":  # DESIGN.md section 2 stable form
        sp = torch.nn.functional.softplus
        log_zero = torch.logaddexp(-sp(-a), -sp(a) - torch.exp(b))
        log_pos = -sp(a) + values * b - torch.exp(b) - torch.lgamma(values + 1)
    else:
        log_zero = torch.log(a + (1 - a) * torch.exp(-b))
        log_pos = torch.log1p(-a) + values * torch.log(b) - b - torch.lgamma(values + 1)
    return -(freqs * torch.where(values == 0, log_zero, log_pos)).sum()


def torch_inverse_hessian_se(hist, x, scale):
    f = lambda p: torch_total_nll(hist, p[0], p[1], scale)  # noqa: E731
    hess = torch.autograd.functional.hessian(f, torch.tensor(x, dtype=torch.float64))
    return np.sqrt(np.diag(np.linalg.inv(hess.numpy())))


# --- reference numbers and external references ------------------------------------------------


def test_design_reference_numbers():
    rng = np.random.default_rng(0)
    n = 10_000
    y = rng.binomial(1, 0.5, n) * rng.poisson(5, n)  # binomial drawn first
    fit = exact_mle(histogram(y))
    assert round(fit.pi, 6) == 0.499593
    assert round(fit.lam, 6) == 5.019519
    assert round(fit.nll, 8) == 1.77508314
    assert round(fit.se_logit_pi, 6) == 0.020137
    assert round(fit.se_log_lam, 6) == 0.006418
    assert not fit.boundary and fit.n == n


def statsmodels_fit(y):
    from statsmodels.discrete.count_model import ZeroInflatedPoisson

    n = len(y)
    model = ZeroInflatedPoisson(y, np.ones((n, 1)), exog_infl=np.ones((n, 1)), inflation="logit")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # statsmodels' 'newton' uses a Hessian with the cross block zeroed, so it converges only
        # linearly (and diverges at lam = 0.5); BFGS with the default gtol = 1e-5 stops up to
        # 2e-4 relative from the optimum. gtol = 1e-10 gets within ~2e-9.
        return model.fit(disp=0, method="bfgs", maxiter=1000, gtol=1e-10)


@pytest.mark.parametrize("pi, lam", SCENARIOS)
def test_matches_statsmodels_point_estimates(pi, lam):
    y = simulate(pi, lam, 5000, seed=int(100 * pi + 10 * lam))
    fit = exact_mle(histogram(y))
    s, eta = statsmodels_fit(y).params  # [inflate_const (logit pi), const (log lam)]
    # 1e-6: a margin of ~500x over what the tightened BFGS reaches on these data.
    assert expit(s) == pytest.approx(fit.pi, rel=1e-6)
    assert np.exp(eta) == pytest.approx(fit.lam, rel=1e-6)


def test_statsmodels_standard_error_is_too_small_at_small_rate():
    """Known discrepancy: statsmodels zeroes the Hessian's cross block (DESIGN.md section 2)."""
    y = simulate(0.3, 0.5, 5000, seed=7)
    fit = exact_mle(histogram(y))
    se_sm = statsmodels_fit(y).bse[0]
    assert se_sm < 0.6 * fit.se_logit_pi  # about 0.52x the correct value at lam = 0.5


def mean_nll_gradient(hist, x):
    """Analytic gradient of the mean NLL in (logit pi, log lam)."""
    pi, lam = expit(x[0]), np.exp(x[1])
    e = np.exp(-lam)
    p0 = pi + (1 - pi) * e
    f0 = hist.zero_share
    d_s = -(f0 * pi * (1 - pi) * (1 - e) / p0 - (1 - f0) * pi)
    d_eta = -(-f0 * (1 - pi) * e * lam / p0 + hist.mean - (1 - f0) * lam)
    return np.array([d_s, d_eta])


def numerical_optimum(hist, x0):
    """BFGS on the mean NLL in (logit pi, log lam), then MINPACK's hybrid solver on the
    analytic score (BFGS alone stalls at |grad| ~ 1e-9 from line-search precision loss)."""
    res = scipy.optimize.minimize(
        lambda x: zip_nll(hist, expit(x[0]), np.exp(x[1])),
        x0=x0,
        jac=lambda x: mean_nll_gradient(hist, x),
        method="BFGS",
        options={"gtol": 1e-10},
    )
    root = scipy.optimize.root(lambda x: mean_nll_gradient(hist, x), res.x, tol=1e-15)
    assert np.abs(mean_nll_gradient(hist, root.x)).max() < 1e-13
    return expit(root.x[0]), np.exp(root.x[1])


@pytest.mark.parametrize("pi, lam", SCENARIOS + [(0.6, 0.1), (0.1, 40.0)])
def test_matches_numerical_optimum(pi, lam):
    hist = histogram(simulate(pi, lam, 3000, seed=11))
    fit = exact_mle(hist)
    pi_num, lam_num = numerical_optimum(hist, [0.0, np.log(hist.mean)])
    assert pi_num == pytest.approx(fit.pi, rel=1e-7)
    assert lam_num == pytest.approx(fit.lam, rel=1e-7)
    assert fit.nll <= zip_nll(hist, pi_num, lam_num) + 1e-15


@pytest.mark.parametrize("c", [1.5, 3.0, 5.0, 20.0])
def test_lambert_w_closed_form(c):
    """Far from the branch point the DESIGN.md closed form is accurate on its own."""
    lam_w = float(np.real(c + lambertw(-c * np.exp(-c), 0)))
    # Positive counts {1: 3 times, 4c - 3: once} have mean exactly c.
    hist = Histogram(np.array([0, 1, int(4 * c - 3)]), np.array([10**6, 3, 1]))
    assert exact_mle(hist).lam == pytest.approx(lam_w, rel=1e-12)


# --- accuracy near the branch point c -> 1 ----------------------------------------------------


@pytest.mark.parametrize("n_zero, n_ones", [(10**7, 999), (10**12, 10**6 - 1), (10**17, 10**8 - 1)])
def test_branch_point_accuracy_against_mpmath(n_zero, n_ones):
    """One count of 2 among ones: c - 1 = 1/n_pos, lam ~ 2/n_pos, interior thanks to the zeros."""
    hist = Histogram(np.array([0, 1, 2]), np.array([n_zero, n_ones, 1]))
    fit = exact_mle(hist)
    n_pos = n_ones + 1
    with mpmath.workdps(50):
        c = mpmath.mpf(n_pos + 1) / n_pos
        lam = mpmath.findroot(lambda x: x / -mpmath.expm1(-x) - c, 2 / mpmath.mpf(n_pos))
        pi = 1 - (mpmath.mpf(n_pos) / (n_zero + n_pos)) / -mpmath.expm1(-lam)
    assert not fit.boundary
    assert fit.lam == pytest.approx(float(lam), rel=1e-12)
    assert fit.pi == pytest.approx(float(pi), rel=1e-12)


def test_slightly_above_one_matches_numerical_optimum():
    hist = Histogram(np.array([0, 1, 2]), np.array([5000, 95, 5]))  # c = 1.05
    fit = exact_mle(hist)
    pi_num, lam_num = numerical_optimum(hist, [0.0, 0.0])
    assert not fit.boundary
    assert pi_num == pytest.approx(fit.pi, rel=1e-7)
    assert lam_num == pytest.approx(fit.lam, rel=1e-7)


# --- boundary and non-identifiable cases ------------------------------------------------------


@pytest.mark.parametrize(
    "counts, lam",
    [
        ([1, 2, 3, 4], 2.5),  # no zeros
        ([0] + [2, 3, 4] * 33, 2.97),  # 1% zeros < exp(-2.97) = 5%
        ([0, 0, 1, 1, 1], 0.6),  # every positive count is 1: c = 1
        ([1, 1, 1], 1.0),  # c = 1 and no zeros
        ([5], 5.0),  # a single observation
        ([7, 7, 7, 7], 7.0),  # a single nonzero value, no zeros
    ],
)
def test_boundary_cases(counts, lam):
    hist = histogram(counts)
    fit = exact_mle(hist)
    assert fit.boundary and fit.pi == 0.0
    assert fit.lam == pytest.approx(lam, rel=1e-15)
    assert fit.nll == pytest.approx(poisson_mle(hist)[1], rel=1e-15)
    assert np.isnan(fit.se_logit_pi)
    # Natural-scale SEs are the inverse of the (finite) information at pi = 0.
    cov = np.linalg.inv(fisher_information(0.0, lam)) / hist.n
    np.testing.assert_allclose([fit.se_pi, fit.se_lam], np.sqrt(np.diag(cov)), rtol=1e-10)
    assert fit.se_log_lam == pytest.approx(fit.se_lam / fit.lam, rel=1e-15)
    # No point with pi > 0 does better.
    grid = zip_nll_grid(hist, np.linspace(1e-6, 0.9, 200)[:, None], np.geomspace(0.1, 20, 200))
    assert grid.min() >= fit.nll


def test_fewer_zeros_than_poisson_is_boundary():
    y = np.random.default_rng(3).poisson(3.0, 5000)
    y = y[y > 0][:4900]
    y = np.concatenate([y, np.zeros(100, np.int64)])  # 2% zeros, Poisson(~3.1) gives ~4.5%
    hist = histogram(y)
    assert hist.zero_share < np.exp(-hist.mean)
    fit = exact_mle(hist)
    assert fit.boundary and fit.lam == pytest.approx(hist.mean, rel=1e-15)


def test_single_nonzero_value_with_zeros_is_interior():
    hist = histogram([0, 0, 5])
    fit = exact_mle(hist)
    assert not fit.boundary
    assert fit.lam / -np.expm1(-fit.lam) == pytest.approx(5.0, rel=1e-14)
    assert fit.pi == pytest.approx(1 - (1 / 3) / -np.expm1(-fit.lam), rel=1e-14)


@pytest.mark.parametrize(
    "hist", [histogram([0, 0, 0]), Histogram(np.zeros(0, int), np.zeros(0, int))]
)
def test_not_identifiable(hist):
    with pytest.raises(NotIdentifiableError, match="not identifiable"):
        exact_mle(hist)


def test_all_zero_message():
    with pytest.raises(ValueError, match="all counts are zero"):
        exact_mle(histogram(np.zeros(10)))


def test_plain_poisson_hits_boundary_about_half_the_time():
    """Asymptotically P(pi_hat = 0) = 1/2 under a Poisson (LRT mixture 1/2 chi2_0 + 1/2 chi2_1)."""
    rng = np.random.default_rng(2024)
    reps = 400
    hits = sum(exact_mle(histogram(rng.poisson(2.0, 2000))).boundary for _ in range(reps))
    lo, hi = scipy.stats.binom.interval(1 - 1e-4, reps, 0.5)  # false-alarm rate 1e-4
    assert lo <= hits <= hi


# --- Fisher information and standard errors ---------------------------------------------------

GRID = [(pi, lam) for pi in (0.01, 0.3, 0.9) for lam in (0.05, 0.5, 5.0, 50.0)]


@pytest.mark.parametrize("scale", ["natural", "logit"])
@pytest.mark.parametrize("pi, lam", GRID)
def test_fisher_information_is_hessian_of_expected_nll(pi, lam, scale):
    """I(theta0) = Hessian at theta0 of sum_k p(k; theta0) (-log p(k; theta)), exactly."""
    k = np.arange(int(lam + 20 * np.sqrt(lam) + 40))  # the tail beyond is < 1e-40
    weights = (1 - pi) * scipy.stats.poisson.pmf(k, lam)
    weights[0] += pi
    hist = Histogram(k, weights)  # float "frequencies": expected counts per observation
    x0 = [logit(pi), np.log(lam)] if scale == "logit" else [pi, lam]
    f = lambda p: torch_total_nll(hist, p[0], p[1], scale)  # noqa: E731
    hess = torch.autograd.functional.hessian(f, torch.tensor(x0, dtype=torch.float64)).numpy()
    info = fisher_information(pi, lam, scale=scale)
    np.testing.assert_allclose(info, hess, rtol=1e-9, atol=1e-12 * np.abs(hess).max())


@pytest.mark.parametrize("pi, lam", SCENARIOS)
def test_standard_errors_match_autograd_observed_information(pi, lam):
    """For the intercept-only ZIP (a full 2-parameter exponential family in (1[y=0], y)) the
    observed information at an interior MLE equals the expected information there, in any
    parametrisation, so the autograd SEs must agree to rounding."""
    hist = histogram(simulate(pi, lam, 4000, seed=5))
    fit = exact_mle(hist)
    assert not fit.boundary
    se_logit = torch_inverse_hessian_se(hist, [logit(fit.pi), np.log(fit.lam)], "logit")
    se_natural = torch_inverse_hessian_se(hist, [fit.pi, fit.lam], "natural")
    np.testing.assert_allclose([fit.se_logit_pi, fit.se_log_lam], se_logit, rtol=1e-8)
    np.testing.assert_allclose([fit.se_pi, fit.se_lam], se_natural, rtol=1e-8)


@pytest.mark.parametrize("pi, lam", SCENARIOS)
def test_standard_errors_are_inverse_information_and_delta_method(pi, lam):
    hist = histogram(simulate(pi, lam, 2000, seed=9))
    fit = exact_mle(hist)
    for scale, se in [("natural", fit[3:5]), ("logit", fit[5:7])]:
        cov = np.linalg.inv(fisher_information(fit.pi, fit.lam, scale=scale)) / fit.n
        np.testing.assert_allclose(se, np.sqrt(np.diag(cov)), rtol=1e-10)
    # The diagonal of the inverse transforms exactly with the squared (diagonal) Jacobian.
    assert fit.se_pi == pytest.approx(fit.pi * (1 - fit.pi) * fit.se_logit_pi, rel=1e-12)
    assert fit.se_lam == pytest.approx(fit.lam * fit.se_log_lam, rel=1e-12)


def test_fisher_information_vectorised_and_edges():
    pi = np.array([0.0, 0.2, 0.7])[:, None]
    lam = np.array([1e-6, 0.5, 3.0, 800.0])
    for scale in ("natural", "logit"):
        info = fisher_information(pi, lam, scale=scale)
        assert info.shape == (3, 4, 2, 2)
        for i in range(3):
            for j in range(4):
                np.testing.assert_allclose(
                    info[i, j], fisher_information(pi[i, 0], lam[j], scale=scale), rtol=1e-15
                )
    # pi = 0 with exp(-lam) underflowing: the logit-scale entries stay finite. At pi = 0 every
    # score in s vanishes (it carries a factor pi), and in eta = log lam the information is the
    # Poisson's, Var(y) = lam.
    np.testing.assert_array_equal(
        fisher_information(0.0, 800.0, scale="logit"), [[0.0, 0.0], [0.0, 800.0]]
    )
    with pytest.raises(ValueError, match="scale"):
        fisher_information(0.5, 1.0, scale="log")


# --- likelihood -------------------------------------------------------------------------------


@pytest.mark.parametrize("pi", [0.0, 1e-12, 0.4, 1 - 1e-9])
@pytest.mark.parametrize("lam", [1e-8, 0.7, 12.0, 1e4])
def test_zip_nll_against_scipy(pi, lam):
    y = np.array([0, 0, 1, 3, 7, 12, 40, 9_990, 10_000])
    hist = histogram(y)
    logp = np.log1p(-pi) + scipy.stats.poisson.logpmf(y, lam)
    # exp(-1e4) underflows in float64: take the zero probability from mpmath.
    with mpmath.workdps(30):
        logp[y == 0] = float(mpmath.log(pi + (1 - pi) * mpmath.exp(-lam)))
    assert zip_nll(hist, pi, lam) == pytest.approx(-logp.mean(), rel=1e-12)


def test_zip_nll_identities():
    hist = histogram([0, 0, 0, 2])
    zeros = histogram([0, 0])
    assert zip_nll(zeros, 1.0, 3.0) == 0.0  # gate = 1 is all zeros
    assert zip_nll(hist, 1.0, 3.0) == np.inf
    # naive log(pi + (1-pi)e^-lam) gives -inf; Poisson: 3 lam + (lam - 2 log lam + log 2), / 4
    expected = (4e5 - 2 * np.log(1e5) + np.log(2)) / 4
    assert zip_nll(hist, 0.0, 1e5) == pytest.approx(expected, rel=1e-14)
    assert zip_nll(hist, 0.0, 2.0) == pytest.approx(
        -scipy.stats.poisson.logpmf([0, 0, 0, 2], 2.0).mean(), rel=1e-14
    )
    grid = zip_nll_grid(hist, [[0.1], [0.5]], [1.0, 2.0, 3.0])
    assert grid.shape == (2, 3)
    assert grid[1, 2] == pytest.approx(zip_nll(hist, 0.5, 3.0), rel=1e-15)


def test_poisson_mle():
    y = np.random.default_rng(1).poisson(4.0, 1000)
    lam, nll = poisson_mle(histogram(y))
    assert lam == pytest.approx(y.mean(), rel=1e-15)
    assert nll == pytest.approx(-scipy.stats.poisson.logpmf(y, y.mean()).mean(), rel=1e-12)
    assert poisson_mle(histogram([0, 0])) == (0.0, 0.0)
