"""Tests of pipeline/core/inference/model_choice.py: the comparison table, the recommendation rule
on
constructed comparisons, and the rule on simulated counts whose family is known.

The simulated cases fit all six families with the oracle (~0.2-1 s each). False-alarm rate of
the rule on Poisson counts (n = 500, lambda = 2, seeds 0-199, measured when written): Poisson
recommended 195 of 200 times without covariates (2.5 %), 198 of 200 with one covariate in both
parts (1 %); the fixed seeds below are among the correct ones.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats

from pipeline.core.inference import goodness
from pipeline.core.inference.model_choice import (
    Comparison,
    ModelRow,
    compare,
    gof_bound_p,
    recommend,
)
from pipeline.core.inference.model_tests import LRTest, VuongTest
from pipeline.core.laws.count_cdf import binned_expected
from pipeline.core.laws.count_terms import FAMILIES, zero_part
from pipeline.core.model import fit_data
from pipeline.core.oracle.fit import fit_model
from pipeline.core.oracle.terms import loglik_terms


def fake(loglik, k, status="converged"):
    return SimpleNamespace(loglik=loglik, n_params=k, status=status)


def row(family, bic, k=2, status="converged"):
    return ModelRow(family, -bic / 2, k, bic, bic, status, status in ("converged", "boundary"))


def lr(smaller, larger, p, null="alpha = 0", stat=5.0):
    return LRTest(smaller, larger, null, stat, 1, "ref", p, math.log10(p), False, "")


def gof_dict(p_bound, groups=8):
    """A GOF entry whose lenient p (chi2(groups - 1)) is `p_bound`."""
    return {"statistic": float(stats.chi2.isf(p_bound, groups - 1)), "groups": groups,
            "p_value": p_bound / 10}  # fmt: skip


def test_compare_table_and_tests_present():
    fits = {"poisson": fake(-500.0, 1), "nb": fake(-480.0, 2), "zip": fake(-470.0, 2)}
    ll = {f: np.full(100, fit.loglik / 100) for f, fit in fits.items()}
    c = compare(fits, ll, None, 100.0, 1)
    assert list(c.rows) == ["poisson", "nb", "zip"]
    assert c.rows["nb"].aic == pytest.approx(964.0)
    assert c.rows["nb"].bic == pytest.approx(2 * math.log(100) + 960.0)
    pairs = {(t.smaller, t.larger) for t in c.lr_tests}
    assert pairs == {("poisson", "nb"), ("poisson", "zip")}  # only pairs with both fits
    assert [(v.first, v.second) for v in c.vuong_tests] == [("nb", "zip")]
    assert not c.vuong_withheld


def test_vuong_withheld_below_the_sample_size_floor():
    fits = {"nb": fake(-50.0, 2), "zip": fake(-49.0, 2)}
    rng = np.random.default_rng(0)
    ll = {"nb": rng.normal(-2, 1, 20), "zip": rng.normal(-2, 1, 20)}
    c = compare(fits, ll, None, 20.0, 1)
    assert c.vuong_withheld and math.isnan(c.vuong_tests[0].statistic)


def test_gof_bound_p_against_scipy_and_underflow():
    p, log10_p = gof_bound_p(12.0, 6)
    assert p == pytest.approx(stats.chi2.sf(12.0, 5)) and log10_p == pytest.approx(math.log10(p))
    p, log10_p = gof_bound_p(1e5, 10)
    assert p == 0.0 and math.isfinite(log10_p) and log10_p < -10000


def test_every_family_misfits_names_the_least_bad():
    c = Comparison(
        {"poisson": row("poisson", 900.0, 1), "nb": row("nb", 800.0)}, [], [], 500, False
    )
    r = recommend(c, {"poisson": gof_dict(1e-30), "nb": gof_dict(1e-6)}, 0.95)
    assert r.family == "nb" and r.all_misfit
    assert "every family misfits" in r.reasons[0] and "least bad" in r.reasons[0]


def test_screen_is_lenient_and_bonferroni():
    """p = 0.02 passes when two families share the 0.05 (0.025 each); 1e-4 does not."""
    rows = {"poisson": row("poisson", 800.0, 1), "nb": row("nb", 805.0)}
    c = Comparison(rows, [lr("poisson", "nb", 0.5)], [], 500, False)
    assert recommend(c, {"poisson": gof_dict(0.03), "nb": gof_dict(0.5)}, 0.95).family == "poisson"
    r = recommend(c, {"poisson": gof_dict(1e-4), "nb": gof_dict(0.5)}, 0.95)
    assert r.family == "nb" and not r.all_misfit
    assert any("lower BIC but misfitting: Poisson" in x for x in r.reasons)


def test_unusable_fits_are_not_recommended():
    rows = {"zip": row("zip", 700.0, status="separated"), "nb": row("nb", 800.0)}
    r = recommend(Comparison(rows, [], [], 500, False), {}, 0.95)
    assert r.family == "nb" and "ZIP not considered: its fit is separated" in r.reasons[0]
    none = recommend(Comparison({"zip": rows["zip"]}, [], [], 500, False), {}, 0.95)
    assert none.family is None


def test_step_down_when_the_lr_test_does_not_confirm():
    rows = {"poisson": row("poisson", 801.0, 1), "nb": row("nb", 800.0)}
    r = recommend(Comparison(rows, [lr("poisson", "nb", 0.2)], [], 500, False), {}, 0.95)
    assert r.family == "poisson" and "does not confirm" in " ".join(r.reasons)
    assert r.tied == ("nb",)  # and within |dBIC| < 2


def test_confirmed_parameters_and_ties():
    rows = {"nb": row("nb", 800.0), "zip": row("zip", 801.5), "zinb": row("zinb", 790.0, 3),
            "hurdle_nb": row("hurdle_nb", 795.0, 3)}  # fmt: skip
    tests = [lr("zip", "zinb", 1e-9), lr("nb", "zinb", 1e-4, null="pi = 0")]
    vuong = [VuongTest("zinb", "hurdle_nb", 1.1, 0.27, -0.57, 1.1, 0.27, -0.57, "zinb", False)]
    r = recommend(Comparison(rows, tests, vuong, 3000, False), {}, 0.95)
    assert r.family == "zinb" and r.tied == ("hurdle_nb",)
    text = " ".join(r.reasons)
    assert text.count("what the ZINB adds is needed") == 2
    assert "cannot tell ZINB and hurdle NB apart" in text and "BIC still prefers" in text


# -- simulated counts -----------------------------------------------------------------------


def choose(X, Z, y, weights=None, intercept_only=False):
    """All six families fitted, screened and compared, as `count_fits.fit_families` does."""
    w = np.ones(len(y)) if weights is None else np.asarray(weights, float)
    values, inverse = np.unique(y, return_inverse=True)
    freqs = np.bincount(inverse, weights=w).astype(np.int64)
    starts = goodness.count_bins(values, freqs)
    observed = goodness.bin_observed(values, freqs, starts)
    fits, ll, gof = {}, {}, {}
    for f in FAMILIES:
        Zf = Z if zero_part(f) else Z[:, :0]
        fits[f] = fit_model(f, fit_data(X, Zf, y, weights=weights))
        ll[f] = loglik_terms(f, fit_data(X, Zf, y), fits[f].params)
        expected = binned_expected(f, X, Zf, fits[f].params, starts, weights)
        gof[f] = goodness.pearson_test(observed, expected, fits[f].n_params)
    c = compare(fits, ll, weights, float(w.sum()), Z.shape[1], intercept_only=intercept_only)
    return c, recommend(c, gof, 0.95)


def nb_draw(rng, mu, alpha):
    return rng.negative_binomial(1 / alpha, 1 / (1 + alpha * mu))


def test_poisson_counts_recommend_the_poisson():
    rng = np.random.default_rng(0)
    y = rng.poisson(2.0, 500)
    ones = np.ones((500, 1))
    c, r = choose(ones, ones, y, intercept_only=True)
    assert r.family == "poisson"
    tests = {(t.smaller, t.larger): t for t in c.lr_tests}
    assert tests[("poisson", "nb")].p_value > 0.05 and tests[("poisson", "zip")].p_value > 0.05
    assert any("finds nothing to add" in x and "NB" in x for x in r.reasons)


def test_nb_counts_recommend_the_nb_with_a_huge_lr():
    rng = np.random.default_rng(0)
    x = rng.normal(size=1000)
    X = np.c_[np.ones(1000), x]
    c, r = choose(X, X, nb_draw(rng, np.exp(0.7 + 0.3 * x), 0.8))
    assert r.family == "nb"
    t = next(t for t in c.lr_tests if (t.smaller, t.larger) == ("poisson", "nb"))
    assert t.p_value < 1e-50 and math.isfinite(t.log10_p_value)


def test_zinb_counts_recommend_the_zinb():
    rng = np.random.default_rng(1)
    n = 3000
    x, z = rng.normal(size=n), rng.normal(size=n)
    X, Z = np.c_[np.ones(n), x], np.c_[np.ones(n), z]
    gate = rng.random(n) < 1 / (1 + np.exp(0.5 - 0.8 * z))
    _, r = choose(X, Z, nb_draw(rng, np.exp(1.0 + 0.4 * x), 0.5) * ~gate)
    assert r.family == "zinb" and not r.all_misfit


def _hurdle_nb(rng, n, x, z):
    mu = np.exp(0.8 + 0.4 * x)
    positive = np.zeros(n, np.int64)
    todo = np.arange(n)
    while len(todo):  # zero-truncated NB by rejection
        draw = nb_draw(rng, mu[todo], 0.5)
        positive[todo] = draw
        todo = todo[draw == 0]
    return np.where(rng.random(n) < 1 / (1 + np.exp(-(0.3 + 0.8 * z))), positive, 0)


def test_hurdle_nb_counts_recommend_the_hurdle_or_a_tie_with_the_zinb():
    rng = np.random.default_rng(2)
    n = 3000
    x, z = rng.normal(size=n), rng.normal(size=n)
    X, Z = np.c_[np.ones(n), x], np.c_[np.ones(n), z]
    _, r = choose(X, Z, _hurdle_nb(rng, n, x, z))
    assert r.family == "hurdle_nb" or (r.family == "zinb" and "hurdle_nb" in r.tied)


def test_intercept_only_zinb_and_hurdle_nb_are_one_distribution():
    rng = np.random.default_rng(3)
    n = 2000
    y = _hurdle_nb(rng, n, np.zeros(n), np.zeros(n))
    values, freqs = np.unique(y, return_counts=True)
    ones = np.ones((len(values), 1))
    c, r = choose(ones, ones, values, freqs, intercept_only=True)
    assert r.family in ("zinb", "hurdle_nb") and set(r.tied) & {"zinb", "hurdle_nb"}
    assert any("same fitted distribution" in x for x in r.reasons)


def test_histogram_weights_give_the_expanded_table():
    rng = np.random.default_rng(4)
    y = nb_draw(rng, np.full(600, 2.0), 0.7) * (rng.random(600) > 0.3)
    values, freqs = np.unique(y, return_counts=True)
    ones = np.ones((len(values), 1))
    hist, r_hist = choose(ones, ones, values, freqs, intercept_only=True)
    full, r_full = choose(np.ones((600, 1)), np.ones((600, 1)), y, intercept_only=True)
    for f in hist.rows:
        assert hist.rows[f].bic == pytest.approx(full.rows[f].bic, rel=1e-9)
    for a, b in zip(hist.lr_tests, full.lr_tests):
        assert a.statistic == pytest.approx(b.statistic, rel=1e-6, abs=1e-6)
    for a, b in zip(hist.vuong_tests, full.vuong_tests):
        assert a.statistic == pytest.approx(b.statistic, rel=1e-6)
    assert r_hist.family == r_full.family


def test_no_test_is_cited_against_a_fit_the_screen_excluded():
    """The ZINB misfits and is screened out: the NB is recommended and no reason cites the LR
    test of the NB against the ZINB (before, "rejects it, but the ZINB misfits or failed")."""
    rows = {"nb": row("nb", 800.0), "zinb": row("zinb", 805.0, 3)}
    c = Comparison(rows, [lr("nb", "zinb", 1e-9, null="pi = 0")], [], 500, False)
    r = recommend(c, {"nb": gof_dict(0.5), "zinb": gof_dict(1e-6)}, 0.95)
    assert r.family == "nb" and r.screen == pytest.approx(0.05 / 2)
    assert not any("LR test" in x and "ZINB" in x for x in r.reasons)
    assert any("rejects" in x and "ZINB" in x for x in r.reasons)  # the screen says why
