"""Tests of pipeline/core/inference/model_tests.py: LR references against scipy, Vuong's z against
its
formula and against expanded rows, underflow, and which pairs are nested."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from pipeline.core.inference.model_tests import (
    INTERCEPT_NESTED,
    NESTED,
    NON_NESTED,
    boundary_p,
    chi2_logsf,
    lr_test,
    pairs,
    vuong_test,
)


@pytest.mark.parametrize("stat", [1e-6, 0.5, 2.706, 3.84, 10.0, 50.0])
def test_boundary_mixture_matches_scipy(stat):
    p, log10_p = boundary_p(stat)
    assert p == pytest.approx(0.5 * stats.chi2.sf(stat, 1), rel=1e-12)
    assert log10_p == pytest.approx(math.log10(0.5 * stats.chi2.sf(stat, 1)), rel=1e-12)


def test_boundary_mixture_at_zero_is_one():
    assert boundary_p(0.0) == (1.0, 0.0)


@pytest.mark.parametrize("null", ["alpha = 0", "pi = 0", "P(0) >= f(0)"])
def test_boundary_nulls_use_the_mixture(null):
    t = lr_test("poisson", "nb", null, -1000.0, -998.0, q_zero=1)
    assert t.statistic == pytest.approx(4.0)
    assert t.reference == "0.5*chi2(0) + 0.5*chi2(1)"
    assert t.p_value == pytest.approx(0.5 * stats.chi2.sf(4.0, 1))
    assert not t.approximate and t.note == ""


def test_interior_null_uses_chi2_1():
    t = lr_test("poisson", "hurdle_poisson", "P(0) = f(0)", -1000.0, -998.0, q_zero=1)
    assert t.reference == "chi2(1)"
    assert t.p_value == pytest.approx(stats.chi2.sf(4.0, 1))


def test_zero_inflation_with_covariates_is_chi2_q_and_approximate():
    t = lr_test("poisson", "zip", "pi = 0", -1000.0, -995.0, q_zero=3)
    assert (t.df, t.reference, t.approximate) == (3, "chi2(3)", True)
    assert t.p_value == pytest.approx(stats.chi2.sf(10.0, 3))
    assert "approximate" in t.note


def test_log10_p_is_finite_where_p_underflows():
    t = lr_test("poisson", "nb", "alpha = 0", -1e5, -1e5 + 2500.0, q_zero=1)
    assert t.p_value == 0.0  # below the float range
    # chi2(1) tail = 2 P(N > sqrt(x)), and norm.logsf stays finite where chi2.logsf is -inf.
    expected = stats.norm.logsf(math.sqrt(5000.0)) / math.log(10)
    assert math.isfinite(t.log10_p_value) and t.log10_p_value == pytest.approx(expected)
    assert t.log10_p_value < -1000


@pytest.mark.parametrize("x", [10.0, 1000.0, 1500.0, 5000.0, 1e6])
def test_chi2_logsf_in_the_far_tail(x):
    """Closed forms: chi2(1) through the normal tail, chi2(2) = exp(-x/2)."""
    assert chi2_logsf(x, 1) == pytest.approx(math.log(2) + stats.norm.logsf(math.sqrt(x)))
    assert chi2_logsf(x, 2) == pytest.approx(-x / 2, rel=1e-12)
    assert chi2_logsf(x, 7) < chi2_logsf(x, 8)  # heavier tail with more df


def test_rounding_is_zero_and_a_short_fit_is_noted():
    same = lr_test("zip", "hurdle_poisson", "P(0) >= f(0)", -401.19, -401.19 + 5e-14, 1)
    assert (same.statistic, same.p_value) == (0.0, 1.0)
    short = lr_test("poisson", "nb", "alpha = 0", -400.0, -401.0, 1, status="max_iter")
    assert short.statistic == 0.0
    assert "not reached" in short.note and "max_iter" in short.note


def _vuong_by_hand(m, k_diff, n):
    sd = np.std(m, ddof=1)
    return m.sum() / (math.sqrt(n) * sd), (m.sum() - k_diff * math.log(n) / 2) / (math.sqrt(n) * sd)


def test_vuong_matches_its_formula():
    rng = np.random.default_rng(0)
    a, b = rng.normal(-2, 1, 400), rng.normal(-2.1, 1, 400)
    v = vuong_test("nb", "zip", a, b, None, 3, 2)
    raw, bic = _vuong_by_hand(a - b, 1, 400)
    assert v.statistic == pytest.approx(raw) and v.bic_statistic == pytest.approx(bic)
    assert v.p_value == pytest.approx(2 * stats.norm.sf(abs(raw)))
    assert v.favoured == ("nb" if raw > 0 else "zip") and not v.identical


def test_vuong_with_frequency_weights_equals_expanded_rows():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=7), rng.normal(size=7)
    w = rng.integers(1, 20, 7)
    weighted = vuong_test("nb", "zip", a, b, w, 3, 2)
    expanded = vuong_test("nb", "zip", np.repeat(a, w), np.repeat(b, w), None, 3, 2)
    for got, want in zip(weighted[2:8], expanded[2:8]):
        assert got == pytest.approx(want, rel=1e-12)


def test_vuong_identical_fits_and_underflow():
    a = np.linspace(-3, -1, 50)
    same = vuong_test("zip", "hurdle_poisson", a, a + 1e-13, None, 2, 2)
    assert same.identical and same.favoured is None and math.isnan(same.statistic)
    far = vuong_test("nb", "zip", a + 50 + np.sin(np.arange(50)), a, None, 2, 2)
    assert far.statistic > 38 and far.p_value < 1e-300  # 0.0 included
    assert math.isfinite(far.log10_p_value) and far.log10_p_value < -300


def test_pairs_nest_the_hurdles_only_without_covariates():
    nested, non_nested = pairs(intercept_only=True)
    assert set(nested) == set(NESTED + INTERCEPT_NESTED) and non_nested == NON_NESTED
    nested, non_nested = pairs(intercept_only=False)
    assert nested == NESTED
    assert ("zinb", "hurdle_nb") in non_nested and ("nb", "zip") in non_nested
    every = [frozenset(p[:2]) for p in nested + non_nested]
    assert len(every) == len(set(every))  # no pair tested twice
