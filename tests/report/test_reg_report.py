"""Tests of `pipeline.report.reg_report` and `reg_text` (the `--formula` report) on constructed
designs where the right answer is known: no numbers from a non-finite SE, frequency rows chosen
from the data with expected frequencies summed over the rows' fitted distributions, Pearson's
test per model, the small-sample warning and p-values below the float range."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from scipy import stats
from scipy.special import expit, log_ndtr

from pipeline.core.model import fit_data
from pipeline.core.oracle.fit import fit_model
from pipeline.report.count_report import jsonable
from pipeline.report.reg_report import coefficients, expected_rows, summarise
from pipeline.report.reg_text import render
from pipeline.store.formula import Design

GD = {"optimizer": "adam", "lr": 0.1, "inits": 2, "max_steps": 100, "standardize": True,
      "best": 0, "status": "converged", "steps": 50, "nll": 1.0, "nll_gap": 0.0,
      "max_se_error": 0.0, "worst_term": "count: x", "converged_inits": 2,
      "diverged_inits": 0}  # fmt: skip


def design(n: int, seed: int, rate: float = 5.0, pi: float = 0.3) -> Design:
    """y = Bernoulli(1 - pi) x Poisson(exp(log(rate) + 0.3 x)); both parts: 1 + x."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = rng.binomial(1, 1 - pi, n) * rng.poisson(np.exp(np.log(rate) + 0.3 * x))
    M = np.c_[np.ones(n), x]
    return Design("y ~ x", "y", y.astype(np.int64), M, ("intercept", "x"), M,
                  ("intercept", "x"), n, 0)  # fmt: skip


def report(d: Design, zip_fit=None, poisson_fit=None, level=0.95) -> dict:
    zip_fit = zip_fit or fit_model("zip", fit_data(d.X, d.Z, d.y))
    poisson_fit = poisson_fit or fit_model("poisson", fit_data(d.X, None, d.y))
    r = summarise(d, zip_fit, poisson_fit, level)
    return {"file": "data.csv", "where": None, **r, "gradient_descent": GD}


def test_coefficients_without_a_finite_se_get_no_numbers_made_from_it():
    rows = coefficients(["a", "b", "c", "d"], [1.0, 2.0, 3.0, 0.5], [math.nan, math.inf, 0.0, 0.25],
                        0.95)  # fmt: skip
    for row in rows[:3]:
        assert all(math.isnan(row[k]) for k in ("z", "p_value", "log10_p_value", "lower", "upper"))
        assert row["interval"]["method"] == "none" and row["interval"]["reason"]
    assert rows[1]["interval"]["reason"].startswith("its SE is not finite")  # inf: z was 0, p 1
    assert rows[2]["interval"]["reason"].startswith("its SE is 0")
    good = rows[3]
    assert good["z"] == 2.0 and good["p_value"] == pytest.approx(2 * stats.norm.sf(2.0))
    assert good["log10_p_value"] == pytest.approx(math.log10(good["p_value"]), rel=1e-12)
    z = stats.norm.ppf(0.975)
    assert (good["lower"], good["upper"]) == pytest.approx((0.5 - z * 0.25, 0.5 + z * 0.25))


def test_a_fit_with_nan_standard_errors_says_so_in_text_and_json():
    d = design(400, 1)
    fit = fit_model("zip", fit_data(d.X, d.Z, d.y))
    cov = fit.cov.copy()
    cov[:2], cov[:, :2] = math.nan, math.nan  # the zero part's SEs NaN
    broken = dataclasses.replace(fit, cov=cov)
    r = report(d, zip_fit=broken)
    assert r["notes"] == [
        f"  * ZIP zero: {t}: no interval or z-test: its SE is not finite "
        "(singular information at the estimate)"
        for t in ("intercept", "x")
    ]
    out = json.loads(json.dumps(jsonable(r), allow_nan=False))
    for c in out["zip"]["zero"]:
        assert [c[k] for k in ("se", "z", "p_value", "lower", "upper")] == [None] * 5
    lines = render(r).splitlines()
    i = lines.index("ZIP zero part: logit(pi), pi = P(structural zero)")
    assert lines[i + 2].split()[2:] == ["n/a", "n/a", "n/a", "n/a", "(*)"]
    assert r["notes"][0] in lines


def test_expected_rows_sum_each_observations_pmf_over_the_row():
    """Against scipy's ZIP pmf summed over each row's counts for every observation (brute
    force, n x 600 values), on rows a mean of ~200 spreads over the positive counts."""
    d = design(300, 2, rate=200.0)
    fit = fit_model("zip", fit_data(d.X, d.Z, d.y))
    r = report(d, zip_fit=fit)
    rows = r["frequencies"]
    assert 10 <= len(rows) <= 20 and rows[0]["label"] == "0" and "-" in rows[1]["label"]
    starts = np.array([f["count"] for f in rows])
    lam, pi = np.exp(d.X @ fit.beta), expit(d.Z @ fit.gamma)
    k = np.arange(601)
    pmf = (1 - pi[:, None]) * stats.poisson.pmf(k, lam[:, None]) + pi[:, None] * (k == 0)
    edges = [*starts.tolist(), 601]
    brute = np.array([pmf[:, a:b].sum() for a, b in zip(edges[:-1], edges[1:])])
    np.testing.assert_allclose([f["zip"] for f in rows], brute, rtol=1e-9)
    np.testing.assert_allclose(expected_rows(starts, d.X, d.Z, fit.gamma, fit.beta), brute,
                               rtol=1e-9)  # fmt: skip
    assert sum(f["observed"] for f in rows) == 300
    # the ZIP fits data it generated (Pearson p = 0.41 on 14 df, this seed); the Poisson,
    # which has no extra zeros to give, misfits (X2 = 838 on 8 df)
    g, gp = r["zip"]["gof"], r["poisson"]["gof"]
    assert g["parameters"] == 4 and gp["parameters"] == 2 and g["p_value"] > 0.05
    assert gp["p_value"] < 1e-100 and r["warnings"] == []
    text = render(r)
    assert "  ZIP       X2 = " in text and "  Poisson   X2 = " in text


def test_small_samples_warn_and_withhold_vuong():
    """4 parameters need 40 counts (10 per parameter)."""
    small, enough = report(design(39, 3)), report(design(40, 3))
    assert small["warnings"][0] == ("warning: only n = 39 counts (< 40): SEs, intervals and "
                                    "p-values rely on a large n; Vuong withheld")  # fmt: skip
    assert small["vuong"]["reported"] is False
    assert all(math.isnan(small["vuong"][k]["statistic"]) for k in ("raw", "aic", "bic"))
    assert "  withheld: too few counts for its normal reference" in render(small)
    assert enough["vuong"]["reported"] is True and not any("only n" in w for w in
                                                            enough["warnings"])  # fmt: skip


def test_p_values_below_the_float_range_keep_their_log10():
    """A zero part with an intercept only (q = 1): the LR statistic is referred to the mixture
    0.5 chi2(0) + 0.5 chi2(1); ~40 % extra zeros at a mean of 200 put it near 1e5, where p
    underflows; log10 p is checked against the normal's log tail."""
    d = design(500, 4, rate=200.0, pi=0.4)
    d = dataclasses.replace(d, Z=d.Z[:, :1], z_names=("intercept",))
    r = report(d)
    lr = r["lr_test"]
    assert lr["reference"] == "0.5*chi2(0) + 0.5*chi2(1)" and lr["p_value"] == 0.0
    reference = log_ndtr(-math.sqrt(lr["statistic"])) / math.log(10.0)
    assert lr["log10_p_value"] == pytest.approx(reference, rel=1e-12)
    intercept = r["zip"]["count"][0]
    assert intercept["p_value"] == 0.0 and math.isfinite(intercept["log10_p_value"])
    text = render(r)
    assert "p < 1e-300   (reference 0.5*chi2(0) + 0.5*chi2(1))" in text
    row = next(line for line in text.splitlines() if line.startswith("  intercept"))
    assert "< 1e-300" in row


def test_one_vuong_convention_through_every_path():
    """The same counts through the intercept-only report (exact MLE, histogram), the regression
    report (ones-designs, Newton) and the family comparison's test give one Vuong p: two-sided
    (`model_tests.VUONG_P`). Before, the first two printed P(N >= z), the third twice that."""
    from pipeline.core.histogram import histogram
    from pipeline.core.inference.model_tests import vuong_test
    from pipeline.core.laws.distributions import zip_log_pmf
    from pipeline.report.count_report import summarise as summarise_column

    y = design(400, 11).y
    ones = np.ones((len(y), 1))
    d = Design("y ~ 1", "y", y, ones, ("intercept",), ones, ("intercept",), len(y), 0)
    column, formula = summarise_column(histogram(y), 0.95), report(d)
    z = column["zip"]
    family = vuong_test("zip", "poisson", zip_log_pmf(y, z["pi"], z["lambda"]),
                        zip_log_pmf(y, 0.0, y.mean()), None, 2, 1)  # fmt: skip
    # Newton and the closed form agree to ~1e-10 in the estimates: z to far better than 1e-6.
    assert formula["vuong"]["raw"]["statistic"] == pytest.approx(family.statistic, rel=1e-6)
    for key in ("raw", "aic", "bic"):
        assert formula["vuong"][key]["p_value"] == pytest.approx(
            column["vuong"][key]["p_value"], rel=1e-6
        )
    zv = family.statistic
    assert column["vuong"]["raw"]["p_value"] == pytest.approx(family.p_value, rel=1e-6)
    assert family.p_value == pytest.approx(2 * stats.norm.sf(abs(zv)), rel=1e-9)
