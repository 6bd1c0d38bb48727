"""The mixed models' oracle (issue 20): the adaptive Gauss–Hermite marginal likelihood against
brute-force integration (scipy, with scipy's own pmfs), its convergence in the number of
nodes, K = 1 against glmmTMB's Laplace fits, many nodes against lme4's adaptive quadrature,
exact derivatives, the σ = 0 boundary and bad input.

References (computed once; tests never need R). Data: glmmTMB's `Salamanders` (Price et al.
2016), written by `write.csv(data.frame(site = as.character(d$site), mined =
as.character(d$mined), cover = d$cover, spp = as.character(d$spp), count = d$count), ...)` to
examples/salamanders.csv. R 4, glmmTMB 1.1.5, lme4 1.1.31 (Debian r-cran-glmmtmb):

    m <- glmmTMB(count ~ mined + (1|site), zi = ~mined, family = poisson, data = d)
    m$fit$objective; m$fit$par; sqrt(diag(m$sdr$cov.fixed))

and the same for the models in `TMB` below (`family = nbinom2` reports log θ = −log α;
`truncated_poisson` with `zi` is the hurdle, whose zi predictor is logit P(Y = 0) = −s), and

    glmer(count ~ mined + (1|site), family = poisson, data = d, nAGQ = 25,
          control = glmerControl(optimizer = "bobyqa", tolPwrss = 1e-12))
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from scipy import integrate, optimize, special, stats

from pipeline.core.model import fit_data
from pipeline.core.oracle import mixed
from pipeline.core.oracle.fit import fit_model

DATA = Path(__file__).parents[2] / "examples" / "salamanders.csv"
SPECIES = ["PR", "DM", "EC-A", "EC-L", "DES-L", "DF"]  # GP is the reference level


def _salamanders(species: bool = False):
    d = pl.read_csv(DATA)
    ones = np.ones(d.height)
    mined = (d["mined"] == "no").to_numpy().astype(float)  # reference level "yes", as in R
    X = np.c_[ones, mined]
    spp = d["spp"].to_numpy()
    Xc = np.c_[X, *[(spp == s).astype(float) for s in SPECIES]] if species else X
    return fit_data(Xc, X, d["count"].to_numpy()), d["site"].to_numpy()


# glmmTMB's Laplace fits: (family, species in the count part, parts, nll, params in our
# order [γ, β, (log α), log σ...], SEs). Our γ of a hurdle is −(glmmTMB's zi coefficients).
TMB = {
    "zip count": ("zip", False, ("count",), 949.234760264272,
                  [1.139304386957775, -1.736066927273545, 0.087896503355489, 1.141923220546377,
                   -1.272791071126503],
                  [0.235087486985766, 0.262000337643952, 0.232879662448071, 0.246149530819576,
                   0.344463422110805]),
    "zip zero": ("zip", False, ("zero",), 949.978766082405,
                 [1.494162808172643, -2.101949514264492, 0.349454016831584, 0.917711473880093,
                  -0.389988595775140],
                 [0.289872406200696, 0.372872206234221, 0.139533755851320, 0.144693274814286,
                  0.248068268544887]),
    "zip both": ("zip", False, ("count", "zero"), 941.591503551658,
                 [1.416898745745089, -2.055406935973455, 0.243415096350031, 0.991414392596416,
                  -1.477160383525047, -0.434312922438873],
                 [0.294248816825679, 0.372476944469085, 0.179384087690237, 0.193405930652040,
                  0.295865311546291, 0.257714390454528]),
    "hurdle": ("hurdle_poisson", False, ("count",), 951.164042892745,
               [-1.66501020536716, 2.150518874505619, 0.279325450183018, 0.959719753129221,
                -1.548110921020782],
               [0.15578577192010, 0.192066140892755, 0.167165767054407, 0.181568990402519,
                0.286505451412415]),
    "zinb": ("zinb", True, ("count",), 822.418350540812,
             [-0.0766864988833297, -3.48278823537166, -0.892552277806822, 1.556267237141669,
              -1.373115702540118, 0.300626410604499, -0.745939465068243, 0.547181779890646,
              0.716021281018738, 0.175492005094160, -0.146183568246433, -0.861333204070124],
             [0.5334413865841876, 3.01437301750241, 0.401476059645753, 0.363437711704918,
              0.285309777493348, 0.222486550164223, 0.252725915793189, 0.218797227021929,
              0.216612789508844, 0.233406448283693, 0.300452722632976, 0.342230675350714]),
    "poisson": ("poisson", False, ("count",), 1104.84930979061,
                [-1.505325085953761, 2.264413417829433, -0.551900375270574],
                [0.223032467425018, 0.280255807368997, 0.213281462333180]),
}  # fmt: skip


def _problem(name):
    fam, species, parts, nll, params, se = TMB[name]
    data, site = _salamanders(species)
    return fam, data, site, parts, nll, np.array(params), np.array(se)


@pytest.mark.parametrize("name", list(TMB))
def test_one_node_is_glmmtmbs_laplace_approximation(name):
    """At glmmTMB's estimates, K = 1 gives its log-likelihood to 1e-8 (the two codes share no
    arithmetic: glmmTMB finds the modes with TMB's inner Newton and differentiates by CppAD);
    the Laplace fit lands on glmmTMB's estimates and SEs within its optimiser's tolerance
    (nlminb's relative 1e-10 on the objective moves estimates by ~1e-5 SE here)."""
    fam, data, site, parts, nll, params, se = _problem(name)
    mp = mixed.mixed_problem(fam, data, site, parts)
    ll = mixed.marginal_loglik(mp, torch.tensor(params), nodes=1)[0]
    assert float(ll) == pytest.approx(-nll, abs=1e-8)
    fit = mixed.fit_mixed(fam, data, site, parts, nodes=1)
    assert fit.status == "converged", fit.message
    assert fit.loglik >= -nll - 1e-8  # at or above glmmTMB's own optimum
    np.testing.assert_allclose((fit.params - params) / se, 0, atol=2e-4)
    np.testing.assert_allclose(fit.se, se, rtol=2e-4)


def test_exact_likelihood_is_above_laplace_and_the_estimates_move_within_its_error():
    """The ZIP with a site intercept in the count part: the exact marginal log-likelihood
    (default K, converged below) is above glmmTMB's Laplace value, and the estimates differ from
    the Laplace ones by what the Laplace error itself is: at most 0.02 SE here (measured:
    0.016 SE on log σ, the parameter the approximation touches most)."""
    fam, data, site, parts, nll, params, se = _problem("zip count")
    exact = mixed.fit_mixed(fam, data, site, parts)
    assert exact.status == "converged" and exact.nodes == mixed.NODES[1]
    assert exact.loglik > -nll + 5e-3  # measured: +0.00582 nats
    shift = np.abs(exact.params - params) / se
    assert shift.max() < 0.02 and shift.argmax() == len(params) - 1


def test_many_nodes_agree_with_lme4_adaptive_quadrature():
    """The Poisson GLMM against glmer(nAGQ = 25) (an independent AGHQ, lme4's PIRLS): the
    estimates agree to glmer's bobyqa tolerance (~1e-6)."""
    data, site = _salamanders()
    fit = mixed.fit_mixed("poisson", data, site, ("count",), nodes=25)
    lme4 = [-1.50559046775433, 2.26463610460270, math.log(0.577361119860071)]
    np.testing.assert_allclose(fit.params, lme4, atol=5e-6)


@pytest.mark.parametrize("name", ["zip count", "zip both", "zinb"])
def test_log_likelihood_converges_in_the_number_of_nodes(name):
    """At the Laplace estimates (where the integrands are those of the fit), the AGHQ value is
    stable to 1e-8 from the default K on (measured on "zip both": 1.1e-12 at K = 30 against
    K = 40, 1.3e-9 at K = 20, 5.9e-8 at K = 15); K = 1 is off by far more (the Laplace error)."""
    fam, data, site, parts, nll, params, se = _problem(name)
    mp = mixed.mixed_problem(fam, data, site, parts)
    theta = torch.tensor(params)
    default = mixed.NODES[len(parts)]
    values = {k: float(mixed.marginal_loglik(mp, theta, nodes=k)[0])
              for k in (1, default, default + 5, 40)}  # fmt: skip
    assert abs(values[default] - values[40]) < 1e-8
    assert abs(values[default + 5] - values[40]) < 1e-8
    assert abs(values[1] - values[40]) > 1e-3


# -- brute force ----------------------------------------------------------------------------


def _scipy_loglik(fam: str, y, s, eta, alpha):
    """log f(y) of `fam` from scipy's pmfs (independent of `count_terms`)."""
    mu = np.exp(eta)
    if fam.endswith("nb"):
        size = 1 / alpha
        count = stats.nbinom.logpmf(y, size, size / (size + mu))
        zero = stats.nbinom.logpmf(0, size, size / (size + mu))
    else:
        count, zero = stats.poisson.logpmf(y, mu), -mu
    if fam in ("poisson", "nb"):
        return count
    if fam.startswith("zi"):
        pi = special.expit(s)
        return np.where(y == 0, np.log(pi + (1 - pi) * np.exp(zero)), np.log1p(-pi) + count)
    positive = special.expit(s)
    return np.where(y == 0, np.log1p(-positive), np.log(positive) + count - np.log(-np.expm1(zero)))


def _brute_force(fam, X, Z, y, groups, parts, theta):
    """Σ_i log ∫ Π_j f(y_ij | u) N(u; 0, σ²) du by scipy quadrature (1 or 2 dimensions)."""
    q = Z.shape[1] if fam not in ("poisson", "nb") else 0
    p = X.shape[1]
    gamma, beta = theta[:q], theta[q : q + p]
    alpha = math.exp(theta[q + p]) if fam.endswith("nb") else None
    sigma = dict(zip(parts, np.exp(theta[-len(parts) :]), strict=True))
    total = 0.0
    for g in np.unique(groups):
        rows = groups == g
        s0 = Z[rows, :q] @ gamma if q else np.zeros(rows.sum())
        e0 = X[rows] @ beta

        def log_f(b, c, rows=rows, s0=s0, e0=e0):
            ll = _scipy_loglik(fam, y[rows], s0 + c, e0 + b, alpha).sum()
            prior = sum(stats.norm.logpdf(v, 0, sigma[part])
                        for part, v in (("count", b), ("zero", c)) if part in sigma)  # fmt: skip
            return ll + prior

        if len(parts) == 1:
            part = parts[0]
            one = (lambda v: log_f(v, 0.0)) if part == "count" else (lambda v: log_f(0.0, v))
            grid = np.linspace(-8 * sigma[part], 8 * sigma[part], 801)
            top = max(one(v) for v in grid)
            span = 12 * sigma[part]
            value, _ = integrate.quad(lambda v, f=one, top=top: math.exp(f(v) - top), -span,
                                      span, epsabs=0, epsrel=1e-13, limit=500)  # fmt: skip
        else:
            sb, sc = sigma["count"], sigma["zero"]
            top = max(log_f(b, c) for b in np.linspace(-6 * sb, 6 * sb, 61)
                      for c in np.linspace(-6 * sc, 6 * sc, 61))  # fmt: skip
            value, _ = integrate.dblquad(lambda c, b, top=top: math.exp(log_f(b, c) - top),
                                         -10 * sb, 10 * sb, -10 * sc, 10 * sc,
                                         epsabs=0, epsrel=1e-11)  # fmt: skip
        total += top + math.log(value)
    return total


SMALL = [
    ("poisson", ("count",), [0.3, 0.4, -0.3]),
    ("nb", ("count",), [0.3, 0.4, math.log(0.7), -0.3]),
    ("zip", ("count",), [-0.4, 0.5, 0.6, 0.3, -0.2]),
    ("zip", ("zero",), [-0.4, 0.5, 0.6, 0.3, 0.2]),
    ("zinb", ("count",), [-0.4, 0.5, 0.6, 0.3, math.log(0.5), -0.2]),
    ("hurdle_poisson", ("count",), [0.4, -0.5, 0.6, 0.3, -0.1]),
    ("hurdle_nb", ("zero",), [0.4, -0.5, 0.6, 0.3, math.log(0.5), 0.1]),
    ("zip", ("count", "zero"), [-0.4, 0.5, 0.6, 0.3, -0.2, -0.1]),
]


@pytest.mark.parametrize(("fam", "parts", "theta"), SMALL, ids=lambda v: str(v))
def test_quadrature_matches_brute_force_integration(fam, parts, theta):
    """Three groups of unequal sizes (3, 5, 7 rows), every family: the AGHQ log-likelihood at
    the default K equals scipy's adaptive integration of scipy's pmfs to 1e-8 (measured: at
    most 1e-10 apart; the same integrals by a 200,001-point trapezoid agree with scipy's)."""
    rng = np.random.default_rng(20)
    sizes = [3, 5, 7]
    groups = np.repeat(np.array(["a", "b", "c"]), sizes)
    n = len(groups)
    X = np.c_[np.ones(n), rng.normal(size=n)]
    y = rng.poisson(2.0, size=n) * (rng.uniform(size=n) > 0.3)
    data = fit_data(X, X, y)
    mp = mixed.mixed_problem(fam, data, groups, parts)
    got = float(mixed.marginal_loglik(mp, theta)[0])
    want = _brute_force(fam, X, X, y.astype(float), groups, parts, np.array(theta))
    assert got == pytest.approx(want, abs=1e-8)


# -- derivatives, modes, boundary, input ------------------------------------------------------


def test_gradient_and_hessian_are_those_of_the_quadrature_likelihood():
    """Autograd through the two graph-carrying Newton steps gives the derivatives of the
    quadrature likelihood itself (its nodes move with the modes): central differences of the
    value agree to their own error (~1e-7 for the Hessian at h = 1e-4)."""
    fam, data, site, parts, _, params, _ = _problem("zip both")
    mp = mixed.mixed_problem(fam, data, site, parts)
    theta = params + 0.05

    def value(t):
        return float(mixed.marginal_loglik(mp, torch.tensor(t), nodes=5)[0])

    t = torch.tensor(theta, requires_grad=True)
    (grad,) = torch.autograd.grad(mixed.marginal_loglik(mp, t, nodes=5)[0], t)
    hess = mixed.hessian(mp, theta, nodes=5)
    h = 1e-5
    eye = np.eye(len(theta))
    fd_grad = [(value(theta + h * e) - value(theta - h * e)) / (2 * h) for e in eye]
    np.testing.assert_allclose(grad.numpy(), fd_grad, atol=1e-5)
    h = 1e-4
    fd_hess = np.array([[(value(theta + h * a + h * b) - value(theta + h * a - h * b)
                          - value(theta - h * a + h * b) + value(theta - h * a - h * b))
                         / (4 * h * h) for b in eye] for a in eye])  # fmt: skip
    np.testing.assert_allclose(hess, fd_hess, atol=2e-4 * np.abs(hess).max())
    np.testing.assert_allclose(hess, hess.T, atol=1e-9 * np.abs(hess).max())


def test_value_does_not_depend_on_where_the_modes_are_searched_from():
    fam, data, site, parts, _, params, _ = _problem("zip both")
    mp = mixed.mixed_problem(fam, data, site, parts)
    theta = torch.tensor(params)
    base, u = mixed.marginal_loglik(mp, theta)
    far = mixed.marginal_loglik(mp, theta, start=u + torch.linspace(-2, 2, mp.G)[:, None])[0]
    assert float(far) == pytest.approx(float(base), abs=1e-10)
    # The modes solve each group's score equation.
    s, eta, a, log_sigma = mixed._predictors(mp, theta[None])
    grad = mixed._inner(mp, s, eta, a, log_sigma, u[None], 2)[1]
    assert float(grad.abs().max()) < 1e-9


def test_no_between_group_variation_is_the_sigma_zero_boundary():
    """Every site given the same counts (the data repeated per group): σ̂ = 0, the fit is the
    fixed-effects model's (same log-likelihood and estimates), log σ = −inf with NaN SE."""
    rng = np.random.default_rng(7)
    block = rng.poisson(3.0, 12) * (rng.uniform(size=12) > 0.35)
    xs = np.linspace(-1, 1, 12)
    y = np.tile(block, 8)
    X = np.c_[np.ones(96), np.tile(xs, 8)]
    groups = np.repeat(np.arange(8), 12)
    data = fit_data(X, X, y)
    fit = mixed.fit_mixed("zip", data, groups, ("count",))
    fixed = fit_model("zip", data)
    assert fit.status == "boundary", fit.message
    assert fit.params[-1] == -np.inf and np.isnan(fit.se[-1])
    assert fit.loglik == pytest.approx(fixed.loglik, abs=1e-9)
    np.testing.assert_allclose(fit.params[:-1], fixed.params, atol=1e-7)
    np.testing.assert_allclose(fit.se[:-1], fixed.se, rtol=1e-6)
    test = mixed.sigma_test(fit, data, groups, "count")
    assert (test.statistic, test.p_value) == (0.0, 1.0)


def test_conditional_modes_solve_each_groups_equation():
    """The modes, per group in the order the groups first appear: for the Poisson GLMM each
    solves Σ_j (y_ij − μ_ij e^b) = b/σ² (one equation per site, solved here by brentq)."""
    data, site = _salamanders()
    fit = mixed.fit_mixed("poisson", data, site, ("count",))
    assert fit.modes.shape == (23, 1)
    mu = np.exp(data.X @ fit.params[:2])
    var = math.exp(2 * fit.params[2])
    _, first = np.unique(site, return_index=True)
    for g, label in enumerate(site[np.sort(first)]):
        rows = site == label
        y, m = data.y[rows].sum(), mu[rows].sum()
        want = optimize.brentq(lambda b, y=y, m=m: y - m * math.exp(b) - b / var, -20, 20,
                               xtol=1e-14)  # fmt: skip
        assert fit.modes[g, 0] == pytest.approx(want, abs=1e-9)


def test_sigma_zero_test_uses_the_boundary_mixture():
    """T = 2(ℓ with − ℓ without) against ½χ²₀ + ½χ²₁; at σ̂ = 0 T is 0 and p is 1."""
    fam, data, site, parts, *_ = _problem("zip both")
    fit = mixed.fit_mixed(fam, data, site, parts)
    test = mixed.sigma_test(fit, data, site, "zero")
    without = mixed.fit_mixed(fam, data, site, ("count",))
    assert test.statistic == pytest.approx(2 * (fit.loglik - without.loglik), rel=1e-12)
    assert test.statistic > 0
    assert test.p_value == pytest.approx(0.5 * stats.chi2.sf(test.statistic, 1), rel=1e-10)
    one = mixed.fit_mixed(fam, data, site, ("count",))
    vs_fixed = mixed.sigma_test(one, data, site, "count")
    want = 2 * (one.loglik - fit_model(fam, data).loglik)
    assert vs_fixed.statistic == pytest.approx(want, rel=1e-12)
    with pytest.raises(ValueError, match="no random intercept in the zero part"):
        mixed.sigma_test(one, data, site, "zero")


@pytest.mark.parametrize(
    ("fam", "groups", "parts", "match"),
    [
        ("zip", np.zeros(10), ("count",), "at least two groups"),
        ("zip", np.arange(10), ("count",), "every group has one row"),
        ("poisson", np.repeat([0, 1], 5), ("zero",), "no zero part"),
        ("zip", np.repeat([0, 1], 5), ("slope",), "random parts must be"),
        ("zip", np.repeat([0, 1], 4), ("count",), "groups must have shape"),
    ],
)
def test_bad_input_is_one_clear_error(fam, groups, parts, match):
    X = np.c_[np.ones(10), np.arange(10.0)]
    data = fit_data(X, X, np.arange(10) % 3)
    with pytest.raises(ValueError, match=match):
        mixed.mixed_problem(fam, data, groups, parts)


def test_default_nodes_shrink_only_where_the_points_would_not_fit():
    """Rows x K^d is held under `MAX_POINTS` (the double backward keeps ~20 float64 tensors of
    that size), never below `MIN_NODES`; small data get the stable default."""
    assert mixed.default_nodes(644, 1) == mixed.NODES[1]
    assert mixed.default_nodes(644, 2) == mixed.NODES[2]
    assert mixed.default_nodes(100_000, 2) == 14  # 100,000 x 14^2 = 1.96e7
    assert mixed.default_nodes(10**9, 1) == mixed.MIN_NODES
    for rows in (10**4, 10**5, 10**6):
        for d in (1, 2):
            k = mixed.default_nodes(rows, d)
            assert rows * k**d <= mixed.MAX_POINTS or k == mixed.MIN_NODES
