"""ZIP-regression scenarios (core.simulation.covariates, core.simulation.design): covariate checks
and draws, design
matrices, predictor checks, counts.

Statistical assertions use 5-sigma bounds (normal approximation): a false alarm of ~5.7e-7 per
assertion for a correct implementation; the seeds are fixed, so the outcome is deterministic.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import expit

from pipeline.core.simulation import design
from pipeline.core.simulation.covariates import (
    Covariate,
    check_covariates,
    columns,
    draw_covariates,
)

SIGMA = 5.0  # two-sided 5-sigma: P(false alarm) ~ 5.7e-7 per assertion
N = 100_000


def _close(observed: float, expected: float, se: float) -> None:
    assert abs(observed - expected) < SIGMA * se, (observed, expected, se)


def _cat(name="c", levels=("a", "b", "c3"), probs=()):
    return Covariate(name, "categorical", levels=levels, probs=probs)


ALL_KINDS = [
    Covariate("x", "normal", mean=2.0, sd=3.0),
    Covariate("b", "bernoulli", p=0.3),
    Covariate("k", "poisson", mean=4.0),
    Covariate("u", "uniform", low=-1.0, high=3.0),
    _cat("c", probs=(0.2, 0.3, 0.5)),
]


# --- columns and check_covariates ---------------------------------------------------------------


def test_columns_expand_categoricals_with_the_first_level_as_reference():
    assert columns(ALL_KINDS) == ("x", "b", "k", "u", "c[b]", "c[c3]")
    assert columns([_cat("g", levels=("lo", "hi"))]) == ("g[hi]",)
    assert columns([]) == ()
    assert "intercept" not in columns(ALL_KINDS)


def test_good_covariates_pass():
    good = [
        *ALL_KINDS,
        Covariate("z1", "normal"),
        Covariate("z2", "normal", corr_with="z1", rho=-0.99),
        _cat("e", levels=("p", "q"), probs=(0.5, 0.5 + 1e-10)),  # within the 1e-9 tolerance
        _cat("zero_level", levels=("p", "q", "r"), probs=(0.5, 0.0, 0.5)),
    ]
    check_covariates(good)
    check_covariates([])


BAD = {
    "unknown dist": ([Covariate("x", "gamma")], "dist"),
    "duplicate name": ([Covariate("x", "normal"), Covariate("x", "bernoulli")], "duplicate"),
    "intercept name": ([Covariate("intercept", "normal")], "intercept"),
    "empty name": ([Covariate("", "normal")], "name"),
    "clash with a later column": ([Covariate("c[b]", "normal"), _cat("c")], "'c[b]'"),
    "clash with an earlier column": ([_cat("c"), Covariate("c[b]", "normal")], "'c[b]'"),
    "sd zero": ([Covariate("x", "normal", sd=0.0)], "sd"),
    "sd negative": ([Covariate("x", "normal", sd=-1.0)], "sd"),
    "sd nan": ([Covariate("x", "normal", sd=math.nan)], "sd"),
    "normal mean inf": ([Covariate("x", "normal", mean=math.inf)], "mean"),
    "p zero": ([Covariate("x", "bernoulli", p=0.0)], "p must"),
    "p one": ([Covariate("x", "bernoulli", p=1.0)], "p must"),
    "p above one": ([Covariate("x", "bernoulli", p=1.5)], "p must"),
    "poisson mean zero": ([Covariate("x", "poisson")], "mean"),
    "poisson mean negative": ([Covariate("x", "poisson", mean=-2.0)], "mean"),
    "uniform low = high": ([Covariate("x", "uniform", low=1.0, high=1.0)], "low"),
    "uniform low > high": ([Covariate("x", "uniform", low=2.0, high=1.0)], "low"),
    "no levels": ([_cat("x", levels=())], "levels"),
    "one level": ([_cat("x", levels=("a",))], "levels"),
    "duplicate levels": ([_cat("x", levels=("a", "b", "a"))], "levels"),
    "probs wrong length": ([_cat("x", probs=(0.5, 0.5))], "probs"),
    "probs negative": ([_cat("x", levels=("a", "b"), probs=(1.5, -0.5))], "probs"),
    "probs sum below 1": ([_cat("x", probs=(0.3, 0.3, 0.3))], "probs"),
    "probs sum off by 1e-8": ([_cat("x", levels=("a", "b"), probs=(0.5, 0.5 + 1e-8))], "probs"),
    "corr_with unknown": ([Covariate("x", "normal", corr_with="w", rho=0.5)], "corr_with"),
    "corr_with itself": ([Covariate("x", "normal", corr_with="x", rho=0.5)], "corr_with"),
    "corr_with a later normal": (
        [Covariate("x", "normal", corr_with="w", rho=0.5), Covariate("w", "normal")],
        "corr_with",
    ),
    "corr_with a non-normal": (
        [Covariate("w", "bernoulli"), Covariate("x", "normal", corr_with="w", rho=0.5)],
        "corr_with",
    ),
    "corr_with on a non-normal": (
        [Covariate("w", "normal"), Covariate("x", "uniform", corr_with="w")],
        "corr_with",
    ),
    "rho one": (
        [Covariate("w", "normal"), Covariate("x", "normal", corr_with="w", rho=1.0)],
        "rho",
    ),
    "rho below -1": (
        [Covariate("w", "normal"), Covariate("x", "normal", corr_with="w", rho=-1.2)],
        "rho",
    ),
    "rho without corr_with": ([Covariate("x", "normal", rho=0.3)], "rho"),
}


@pytest.mark.parametrize("covariates, field", BAD.values(), ids=BAD.keys())
def test_check_covariates_names_the_covariate_and_the_field(covariates, field):
    with pytest.raises(ValueError) as err:
        check_covariates(covariates)
    message = str(err.value)
    assert repr(covariates[-1].name) in message and field in message, message
    assert "\n" not in message
    with pytest.raises(ValueError):  # draw_covariates checks first
        draw_covariates(covariates, 10, np.random.default_rng(0))


@pytest.mark.parametrize("n", [0, -3, 2.5, True])
def test_draw_covariates_rejects_bad_n(n):
    with pytest.raises(ValueError, match="n must"):
        draw_covariates(ALL_KINDS, n, np.random.default_rng(0))


# --- draw_covariates ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def drawn():
    return draw_covariates(ALL_KINDS, N, np.random.default_rng(20240601))


def test_draws_are_float64_columns_in_design_order(drawn):
    assert tuple(drawn) == columns(ALL_KINDS)
    for values in drawn.values():
        assert values.dtype == np.float64 and values.shape == (N,)


def test_normal_moments(drawn):
    x = drawn["x"]
    _close(x.mean(), 2.0, 3.0 / math.sqrt(N))
    _close(x.var(ddof=1), 9.0, 9.0 * math.sqrt(2 / (N - 1)))  # Var(s^2) = 2 sd^4 / (n - 1)


def test_bernoulli_moments(drawn):
    b = drawn["b"]
    assert set(np.unique(b)) == {0.0, 1.0}
    _close(b.mean(), 0.3, math.sqrt(0.3 * 0.7 / N))


def test_poisson_moments(drawn):
    k, lam = drawn["k"], 4.0
    assert np.all(k == np.round(k)) and k.min() >= 0
    _close(k.mean(), lam, math.sqrt(lam / N))
    _close(k.var(ddof=1), lam, math.sqrt((lam + 2 * lam**2) / N))  # mu4 - sd^4 = lam + 2 lam^2


def test_uniform_moments(drawn):
    u, width = drawn["u"], 4.0
    assert u.min() >= -1.0 and u.max() < 3.0
    _close(u.mean(), 1.0, width / math.sqrt(12 * N))
    var = width**2 / 12
    _close(u.var(ddof=1), var, math.sqrt((width**4 / 80 - var**2) / N))  # mu4 = w^4 / 80


def test_categorical_shares_and_dummies(drawn):
    b, c3 = drawn["c[b]"], drawn["c[c3]"]
    assert set(np.unique(b)) <= {0.0, 1.0} and np.all(b + c3 <= 1)
    for share, p in [((1 - b - c3).mean(), 0.2), (b.mean(), 0.3), (c3.mean(), 0.5)]:
        _close(share, p, math.sqrt(p * (1 - p) / N))


def test_categorical_equal_probs_by_default():
    cols = draw_covariates([_cat("g", levels=tuple("pqrs"))], N, np.random.default_rng(3))
    for values in cols.values():
        _close(values.mean(), 0.25, math.sqrt(0.25 * 0.75 / N))


def test_a_level_of_probability_zero_is_never_drawn():
    cov = _cat("g", levels=("p", "q", "r"), probs=(0.5, 0.0, 0.5))
    cols = draw_covariates([cov], 10_000, np.random.default_rng(2))
    assert not cols["g[q]"].any() and 0 < cols["g[r]"].mean() < 1


def test_correlated_normals_have_the_requested_correlation():
    chain = [
        Covariate("z1", "normal"),
        Covariate("z2", "normal", corr_with="z1", rho=0.6),
        Covariate("z3", "normal", mean=1.0, sd=2.0, corr_with="z2", rho=-0.4),
    ]
    cols = draw_covariates(chain, N, np.random.default_rng(7))
    se_z = 1 / math.sqrt(N - 3)  # Fisher z = atanh(r) ~ N(atanh(rho), 1 / (n - 3))
    for a, c, rho in [("z1", "z2", 0.6), ("z2", "z3", -0.4), ("z1", "z3", -0.24)]:
        r = np.corrcoef(cols[a], cols[c])[0, 1]
        _close(math.atanh(r), math.atanh(rho), se_z)
    _close(cols["z3"].mean(), 1.0, 2.0 / math.sqrt(N))  # the margin keeps its mean and sd
    _close(cols["z3"].var(ddof=1), 4.0, 4.0 * math.sqrt(2 / (N - 1)))


def test_draws_are_deterministic_and_earlier_columns_ignore_later_covariates():
    first = draw_covariates(ALL_KINDS, 1000, np.random.default_rng(11))
    again = draw_covariates(ALL_KINDS, 1000, np.random.default_rng(11))
    longer = draw_covariates(
        [*ALL_KINDS, Covariate("extra", "normal")], 1000, np.random.default_rng(11)
    )
    other = draw_covariates(ALL_KINDS, 1000, np.random.default_rng(12))
    for name, values in first.items():
        np.testing.assert_array_equal(values, again[name])
        np.testing.assert_array_equal(values, longer[name])
    assert not np.array_equal(first["x"], other["x"])


# --- design_matrix --------------------------------------------------------------------------------


def test_design_matrix_puts_the_intercept_first_and_follows_the_column_order():
    cols = {"x": np.array([1.0, 2.0, 3.0]), "b": np.array([0.0, 1.0, 0.0]), "u": np.zeros(3)}
    matrix, names, coef = design.design_matrix(cols, {"b": -1.0, "x": 0.5, "intercept": 2.0})
    assert names == ("intercept", "x", "b")
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [1, 2, 1], [1, 3, 0]])
    np.testing.assert_array_equal(coef, [2.0, 0.5, -1.0])
    assert matrix.dtype == np.float64 and coef.dtype == np.float64
    matrix, names, coef = design.design_matrix(cols, {"x": 0.5})  # no intercept
    assert names == ("x",) and matrix.shape == (3, 1)


def test_design_matrix_intercept_only():
    matrix, names, coef = design.design_matrix({}, {"intercept": 1.5}, n=4)
    assert names == ("intercept",) and matrix.shape == (4, 1) and np.all(matrix == 1)
    with pytest.raises(ValueError, match="n"):
        design.design_matrix({}, {"intercept": 1.5})


@pytest.mark.parametrize(
    "coefficients, match",
    [
        ({"intercept": 1.0, "w": 1.0, "v": 2.0}, "'w', 'v'"),
        ({}, "at least one"),
        ({"x": math.nan}, "not finite"),
    ],
)
def test_design_matrix_rejects_bad_coefficients(coefficients, match):
    with pytest.raises(ValueError, match=match):
        design.design_matrix({"x": np.zeros(3)}, coefficients)


def test_design_matrix_rejects_ragged_columns():
    with pytest.raises(ValueError, match="rows"):
        design.design_matrix({"x": np.zeros(3), "y": np.zeros(4)}, {"x": 1.0})


# --- linear_predictor_problem ---------------------------------------------------------------------


def test_sane_predictors_have_no_problem():
    eta = np.array([math.log(design.MAX_RATE) - 1e-9, math.log(design.MIN_RATE) + 1e-9, 0.0])
    s = np.array([design.MAX_LOGIT, -design.MAX_LOGIT, 0.0])
    assert design.linear_predictor_problem(eta, s) is None


@pytest.mark.parametrize(
    "eta, s, words",
    [
        ([0.0, math.log(3.2e7), 1.0], [0.0] * 3, ["count part", "3.2e+07", "row 1", "above"]),
        ([0.0, 800.0], [0.0] * 2, ["count part", "exp(800)", "above"]),
        ([math.log(1e-9), 0.0], [0.0] * 2, ["count part", "1e-09", "row 0", "below"]),
        ([0.0, 0.0], [0.0, 31.0], ["zero part", "31", "row 1", "of 0 or 1"]),
        ([0.0, 0.0], [-45.0, 0.0], ["zero part", "-45", "row 0"]),
        ([0.0, math.nan], [0.0] * 2, ["count part", "nan", "row 1"]),
        ([0.0, 0.0], [math.inf, 0.0], ["zero part", "inf", "row 0"]),
        ([20.0, -20.0], [0.0, 40.0], ["above", "below", "zero part"]),
    ],
)
def test_predictor_problems_are_flagged(eta, s, words):
    problem = design.linear_predictor_problem(np.array(eta), np.array(s))
    assert problem is not None and "\n" not in problem
    for word in words:
        assert word in problem, (word, problem)


# --- simulate_counts ------------------------------------------------------------------------------

COVS = [Covariate("x", "normal", sd=0.7), Covariate("g", "bernoulli", p=0.4)]


@pytest.fixture(scope="module")
def parts():
    cols = draw_covariates(COVS, N, np.random.default_rng(99))
    X, _, beta = design.design_matrix(cols, {"intercept": 0.5, "x": 0.4})
    Z, _, gamma = design.design_matrix(cols, {"intercept": -0.5, "g": 1.0, "x": -0.3})
    return X, Z, beta, gamma


def test_counts_have_the_zip_regression_law(parts):
    X, Z, beta, gamma = parts
    assert design.linear_predictor_problem(X @ beta, Z @ gamma) is None
    y = design.simulate_counts(X, Z, beta, gamma, np.random.default_rng(5))
    assert y.dtype == np.int64 and y.shape == (N,) and y.min() >= 0
    lam, pi = np.exp(X @ beta), expit(Z @ gamma)
    p0 = pi + (1 - pi) * np.exp(-lam)  # rows independent given the design: exact variances
    _close((y == 0).mean(), p0.mean(), math.sqrt((p0 * (1 - p0)).sum()) / N)
    mean, var = (1 - pi) * lam, (1 - pi) * lam * (1 + pi * lam)
    _close(y.mean(), mean.mean(), math.sqrt(var.sum()) / N)


def test_stream_layout_gates_first_then_one_poisson_per_row(parts):
    X, Z, beta, gamma = parts
    y = design.simulate_counts(X, Z, beta, gamma, np.random.default_rng(8))
    rng = np.random.default_rng(8)
    gated = rng.random(N) < expit(Z @ gamma)
    expected = np.where(gated, 0, rng.poisson(np.exp(X @ beta)))
    np.testing.assert_array_equal(y, expected)


def test_gate_never_open_gives_poisson_and_always_open_gives_zeros(parts):
    X, Z, beta, _ = parts
    never = np.array([-40.0, 0.0, 0.0])  # pi ~ 4e-18: no row is gated at this n
    y = design.simulate_counts(X, Z, beta, never, np.random.default_rng(4))
    rng = np.random.default_rng(4)
    rng.random(N)  # the gates' uniforms
    np.testing.assert_array_equal(y, rng.poisson(np.exp(X @ beta)))
    lam = np.exp(X @ beta)
    _close(y.mean(), lam.mean(), math.sqrt(lam.sum()) / N)
    always = np.array([40.0, 0.0, 0.0])  # 1 - pi ~ 4e-18
    assert not design.simulate_counts(X, Z, beta, always, np.random.default_rng(4)).any()


def test_counts_are_deterministic(parts):
    X, Z, beta, gamma = (a[:500] if a.ndim == 2 else a for a in parts)
    a = design.simulate_counts(X, Z, beta, gamma, np.random.default_rng(1))
    b = design.simulate_counts(X, Z, beta, gamma, np.random.default_rng(1))
    c = design.simulate_counts(X, Z, beta, gamma, np.random.default_rng(2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_simulate_counts_rejects_mismatched_shapes(parts):
    X, Z, beta, gamma = parts
    with pytest.raises(ValueError, match="coefficients"):
        design.simulate_counts(X, Z, beta[:1], gamma, np.random.default_rng(0))
    with pytest.raises(ValueError, match="rows"):
        design.simulate_counts(X[:10], Z, beta, gamma, np.random.default_rng(0))
