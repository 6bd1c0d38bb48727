"""Tests of pipeline/analysis/count_fits.py: a histogram and its expanded rows give the same
report, one family alone, a failing family keeps its row, all zeros, the offset columns, the
descent's starts and summary. The recommendation rule: tests/core/test_model_choice.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.analysis import count_fits
from pipeline.core.errors import NotIdentifiableError
from pipeline.core.model import FAMILIES, fit_data, histogram_data
from pipeline.report.count_report import render, summarise

ONE = {"count": ["intercept"], "zero": ["intercept"]}


def counts(seed=0, n=600):
    rng = np.random.default_rng(seed)
    mu = 2.0
    return rng.negative_binomial(1 / 0.7, 1 / (1 + 0.7 * mu), n) * (rng.random(n) > 0.3)


def report(data, family="all"):
    """The report as `stages.fit_counts` builds it from `data`."""
    fits = count_fits.fit_families(data, family, 0.95)
    source = {"file": "counts.csv", "column": "count", "where": None}
    r = summarise(fits, ONE, level=0.95, data=count_fits.data_summary(data), source=source,
                  family=family)  # fmt: skip
    return {**r, "text": render(r)}


def run_hist(y, family="all"):
    values, freqs = np.unique(y, return_counts=True)
    return report(histogram_data(values, freqs), family)


def test_histogram_equals_expanded_rows():
    y = counts()
    hist = run_hist(y)
    ones = np.ones((len(y), 1))
    full = report(fit_data(ones, ones, y))
    for a, b in zip(hist["frequencies"], full["frequencies"], strict=True):
        assert a["label"] == b["label"] and a["observed"] == b["observed"]
        assert [a[f] for f in FAMILIES] == pytest.approx([b[f] for f in FAMILIES])
    for f, m in hist["models"].items():
        other = full["models"][f]
        for key in ("loglik", "aic", "bic", "parameters"):
            assert m[key] == pytest.approx(other[key], rel=1e-9)
        assert m["gof"]["statistic"] == pytest.approx(other["gof"]["statistic"], rel=1e-6)
        for a, b in zip(m["count"], other["count"]):  # sandwich SEs: weighted = expanded
            assert a["robust_se"] == pytest.approx(b["robust_se"], rel=1e-6)
    for key, t in hist["lr_tests"].items():
        assert t["statistic"] == pytest.approx(full["lr_tests"][key]["statistic"], abs=1e-6)
    assert hist["recommendation"]["family"] == full["recommendation"]["family"]
    assert hist["data"] == pytest.approx(full["data"])
    assert hist["text"].startswith("Count families (all): counts.csv, column 'count'")


def test_one_family():
    r = run_hist(counts(), family="zinb")
    assert list(r["models"]) == ["zinb"] and r["recommendation"] is None
    assert r["detail"] == "zinb" and "Recommendation" not in r["text"]
    assert "dispersion: log(alpha)" in r["text"]


def test_zip_comes_with_its_poisson():
    r = run_hist(counts(), family="zip")
    assert list(r["models"]) == ["zip", "poisson"] and "poisson_vs_zip" in r["lr_tests"]


def test_a_failing_family_keeps_its_row(monkeypatch):
    real = count_fits.fit_model

    def flaky(family, *a, **kw):
        if family == "hurdle_nb":
            raise np.linalg.LinAlgError("singular matrix")
        return real(family, *a, **kw)

    monkeypatch.setattr(count_fits, "fit_model", flaky)
    r = run_hist(counts())
    assert r["models"]["hurdle_nb"]["status"] == "failed"
    assert "hurdle NB       fit failed: LinAlgError: singular matrix" in r["text"]
    assert r["recommendation"]["family"] in ("zinb", "nb", "zip", "hurdle_poisson")
    assert "hurdle_nb" not in {k for t in r["lr_tests"] for k in t.split("_vs_")}


def test_all_zeros_are_not_identifiable():
    with pytest.raises(NotIdentifiableError):
        run_hist(np.zeros(50, np.int64))


def test_offset_columns_give_the_same_predictors():
    """An offset as one more column with coefficient 1: X' b' = X b + o for both parts."""
    rng = np.random.default_rng(2)
    n = 300
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    t = rng.uniform(0.5, 3.0, n)
    y = rng.poisson(t * np.exp(0.3 + 0.2 * X[:, 1])) * (rng.random(n) > 0.3)
    data = fit_data(X, X[:, :1], y, offset_x=np.log(t))
    fit = count_fits.fit_model("zip", data)
    Xo, Zo, params = count_fits._offset_columns(fit, data)
    assert Xo @ params[1:] == pytest.approx(X @ fit.beta + np.log(t), rel=1e-12)
    assert Zo @ params[:1] == pytest.approx(X[:, :1] @ fit.gamma, rel=1e-12)
    # expected frequencies with the offset sum to n, as any fitted law must
    fits = count_fits.fit_families(data, "zip", 0.95)
    assert fits.expected["zip"].sum() == pytest.approx(n, rel=1e-9)


def test_frequency_weights_equal_expanded_rows_for_a_regression():
    """Integer frequency weights give the expanded rows' fits to 1e-10."""
    rng = np.random.default_rng(3)
    n = 200
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    y = rng.poisson(np.exp(0.5 + 0.3 * X[:, 1])) * (rng.random(n) > 0.25)
    w = rng.integers(0, 4, n).astype(float)
    idx = np.repeat(np.arange(n), w.astype(int))
    weighted = count_fits.fit_families(fit_data(X, X, y, weights=w), "all", 0.95)
    expanded = count_fits.fit_families(fit_data(X[idx], X[idx], y[idx]), "all", 0.95)
    for f, fit in weighted.fitted().items():
        other = expanded.fits[f]
        assert fit.loglik == pytest.approx(other.loglik, rel=1e-10)
        assert fit.params == pytest.approx(other.params, rel=1e-8, abs=1e-8)


@pytest.mark.parametrize("formula", [False, True])
def test_a_recommendation_never_cites_a_test_against_an_excluded_fit(formula):
    """The fish example: the Poisson and the NB misfit (screened out); no reason may quote an
    LR test with either of them (the NB in ZINB, the Poisson in ZIP ...)."""
    import polars as pl

    from pipeline.core.inference.goodness import misfits
    from pipeline.core.inference.model_choice import _lr_text
    from pipeline.stages.cli import ROOT

    frame = pl.read_csv(ROOT / "examples" / "fish_caught.csv")
    y = frame["count"].to_numpy()
    ones = np.ones((len(y), 1))
    X = np.c_[ones, frame["persons"], frame["camper"]] if formula else ones
    Z = np.c_[ones, frame["persons"]] if formula else ones
    fits = count_fits.fit_families(fit_data(X, Z, y), "all", 0.95)
    rec = fits.recommendation
    excluded = {f for f, g in fits.gof.items() if misfits(g["statistic"], g["groups"], rec.screen)}
    assert {"poisson", "nb"} <= excluded and rec.family not in excluded
    text = " ".join(rec.reasons)
    for t in fits.comparison.lr_tests:
        if {t.smaller, t.larger} & excluded:
            assert _lr_text(t) not in text, t
