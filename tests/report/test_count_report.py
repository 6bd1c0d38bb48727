"""Tests of pipeline/report/count_report.py: the JSON of the family comparison, the robust SE
warning, the terminal text's order and edge cases, and the rootogram figure."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pipeline.analysis.count_fits import FamilyFits, gof_entry
from pipeline.core.inference import goodness
from pipeline.core.inference.model_choice import compare, recommend
from pipeline.core.laws.count_cdf import binned_expected
from pipeline.core.laws.count_terms import FAMILIES, zero_part
from pipeline.core.model import fit_data
from pipeline.core.oracle.fit import fit_model
from pipeline.core.oracle.terms import loglik_terms
from pipeline.report.count_report import (
    jsonable,
    model_entry,
    render,
    summarise,
)
from pipeline.report.rootogram import rootograms_figure

NAMES = {"count": ["intercept", "x"], "zero": ["intercept", "x"]}


def report_of(y, X, families=FAMILIES, family="all", failed=(), gof_edit=None):
    """The report as `stages.fit_counts` builds it (families in `failed` fail; `gof_edit`
    changes the goodness-of-fit entries before the choice)."""
    values, freqs = np.unique(y, return_counts=True)
    starts = goodness.count_bins(values, freqs)
    observed = goodness.bin_observed(values, freqs, starts)
    fits, ll, robust, gof, expected = {}, {}, {}, {}, {}
    for f in families:
        if f in failed:
            fits[f] = "LinAlgError: singular matrix"
            continue
        Zf = X if zero_part(f) else X[:, :0]
        fit = fits[f] = fit_model(f, fit_data(X, Zf, y))
        ll[f] = loglik_terms(f, fit_data(X, Zf, y), fit.params)
        robust[f] = fit.robust_cov
        expected[f] = binned_expected(f, X, Zf, fit.params, starts)
        gof[f] = gof_entry(observed, expected[f], fit.n_params)
    if gof_edit is not None:
        gof_edit(gof)
    ok = {f: v for f, v in fits.items() if not isinstance(v, str)}
    c = compare(ok, ll, None, float(len(y)), X.shape[1])
    rec = recommend(c, gof, 0.95) if family == "all" else None
    zeros = int((y == 0).sum())
    data = {"n": len(y), "zeros": zeros, "zero_share": zeros / len(y), "mean": float(y.mean()),
            "variance": float(y.var(ddof=1)), "max": int(y.max())}  # fmt: skip
    source = {"file": "f.csv", "formula": "y ~ x"}
    fam = FamilyFits(fits, ll, expected, gof, starts, observed, c, rec)
    return summarise(fam, NAMES, level=0.95, data=data, source=source, family=family)


def design(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return rng, x, np.c_[np.ones(n), x]


@pytest.fixture(scope="module")
def nb_report():
    rng, x, X = design(800, 0)
    mu = np.exp(0.7 + 0.3 * x)
    return report_of(rng.negative_binomial(1.25, 1 / (1 + 0.8 * mu)), X)


def test_report_is_strict_json_with_both_standard_errors(nb_report):
    text = json.dumps(jsonable(nb_report), allow_nan=False)
    assert json.loads(text)["recommendation"]["family"] == "nb"
    nb = nb_report["models"]["nb"]
    assert [c["term"] for c in nb["count"]] == ["intercept", "x"] and nb["zero"] == []
    assert nb["dispersion"][0]["term"] == "log(alpha)" and nb["alpha"] > 0
    for c in nb["count"]:
        assert c["robust_se"] > 0 and c["se_ratio"] == pytest.approx(c["robust_se"] / c["se"])
    assert set(nb_report["lr_tests"]) >= {"poisson_vs_nb", "zip_vs_zinb", "nb_vs_zinb"}
    assert "zinb_vs_hurdle_nb" in nb_report["vuong"]
    assert all(m["gof"]["p_value_bound"] >= m["gof"]["p_value"]
               for m in nb_report["models"].values())  # fmt: skip


def test_robust_se_warning_flags_the_overdispersed_poisson(nb_report):
    poisson = nb_report["models"]["poisson"]
    assert poisson["se_ratio_max"] > 1.5 and "factor beyond 1.5" in poisson["se_warning"]
    assert nb_report["models"]["nb"]["se_warning"] == ""
    assert nb_report["warnings"] == []  # the NB is shown, and its SEs agree


def test_no_warning_on_a_fitting_poisson():
    rng, x, X = design(800, 1)
    y = rng.poisson(np.exp(0.5 + 0.3 * x))
    fit = fit_model("poisson", fit_data(X, None, y))
    entry = model_entry(fit, fit.robust_cov, NAMES, None,
                        0.95)  # fmt: skip
    assert 1 / 1.5 < entry["se_ratio_max"] < 1.5 and entry["se_warning"] == ""


def test_text_order_comparison_tests_recommendation_detail(nb_report):
    text = render(nb_report)
    marks = ["log-lik", "Likelihood-ratio tests", "Vuong tests", "caveat:", "Recommendation: NB",
             "count part: log(mean)", "Goodness of fit", "Observed against expected"]  # fmt: skip
    where = [text.index(m) for m in marks]
    assert where == sorted(where)
    table, footer = text.split("\n\nSEs: ")
    assert "hurdle P " in table.splitlines()[-len(nb_report["frequencies"]) - 1]
    assert all(line == line.rstrip() for line in text.splitlines())


def test_se_conventions_are_stated_in_the_text_and_json(nb_report):
    """The footer names our conventions and how glm.nb and pscl's sandwich differ."""
    footer = " ".join(render(nb_report).split("\n\nSEs: ")[1].split())
    for words in ("inverse observed information", "log(alpha) included", "HC0 sandwich",
                  "glm.nb uses the expected information with theta = 1/alpha fixed",
                  "leaves theta's score out of the meat"):  # fmt: skip
        assert words in footer
    assert nb_report["se_conventions"].startswith("SEs: model = inverse observed information")


def test_single_family_and_a_failed_family():
    rng, x, X = design(400, 2)
    y = rng.poisson(np.exp(0.4 + 0.2 * x))
    one = report_of(y, X, families=("zip",), family="zip")
    text = render(one)
    assert one["recommendation"] is None and one["detail"] == "zip"
    assert "Likelihood-ratio" not in text and "zero part: logit(pi)" in text
    broken = report_of(y, X, families=("poisson", "nb", "zip"), failed=("nb",))
    assert broken["models"]["nb"] == {"title": "NB", "status": "failed",
                                      "message": "LinAlgError: singular matrix"}  # fmt: skip
    text = render(broken)
    assert "fit failed: LinAlgError" in text and "Recommendation:" in text
    json.dumps(jsonable(broken), allow_nan=False)


def test_underflowing_p_prints_from_its_log(nb_report):
    report = json.loads(json.dumps(jsonable(nb_report)))
    t = report["lr_tests"]["poisson_vs_nb"]
    t["p_value"], t["log10_p_value"] = 0.0, -412.34
    assert "p = 4.6e-413" in render(report)  # 10^-412.34 = 4.57e-413


@pytest.mark.parametrize("count", [6, 4, 1])
def test_rootograms_one_panel_per_model(nb_report, tmp_path, count):
    models = [(f, m["title"]) for f, m in nb_report["models"].items()][:count]
    fig = rootograms_figure(nb_report["frequencies"], models)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == [title for _, title in models]
    low, high = visible[0].get_ylim()
    top = max(math.sqrt(r[f]) for r in nb_report["frequencies"] for f, _ in models)
    assert high > top  # the shared axis shows every panel's curve
    fig.savefig(tmp_path / "rootograms.png")


def test_every_cell_stays_a_readable_number_in_its_column(nb_report):
    """A dBIC of 16641.57 beside a GOF p of 10^-17800.8 once printed '16641.5710^-17800.8';
    each cell is now a number of its own, p from its log10 (at most `P_WIDTH` characters)."""
    report = json.loads(json.dumps(jsonable(nb_report)))
    m = report["models"]["poisson"]
    m["delta_bic"], m["gof"]["p_value_bound"], m["gof"]["log10_p_value_bound"] = (
        16641.57, 0.0, -17800.8)  # fmt: skip
    detail = report["models"][report["detail"]]
    c = detail["count"][0]
    c["estimate"], c["z"], c["p_value"], c["log10_p_value"] = -1.5e7, -16641.57, 0.0, -6.1e7
    t = report["lr_tests"]["poisson_vs_nb"]
    t["statistic"], t["p_value"], t["log10_p_value"] = 81967.3, 0.0, -17800.8
    lines = render(report).splitlines()
    row = next(line for line in lines if line.startswith("  Poisson    "))
    assert row.split()[1:8] == [f"{m['loglik']:.2f}", str(m["parameters"]),
                                f"{m['aic']:.2f}", f"{m['bic']:.2f}", "16641.57", "1.6e-17801",
                                m["status"]]  # fmt: skip
    lr_row = next(line for line in lines if line.startswith("  Poisson in NB"))
    assert lr_row.split()[8:12] == ["8.197e+04", "p", "=", "1.6e-17801"]
    coef = next(line for line in lines if line.startswith(f"  {c['term']}  "))
    cells = coef.split()[1:7]
    assert cells[0] == "-1.5e+07" and cells[4] == "-16641.57" and cells[5] == "<1e-99999"
    [float(x.lstrip("<")) for x in cells]  # every cell parses as a number (else ValueError)


def test_the_recommended_family_is_warned_about_by_the_choice_s_own_rule():
    """The chosen family's lenient GOF p set to 0.02: above the screen (0.05 over the usable
    families), so it passes and is recommended; the warning uses the same rule (before, it
    used 0.05 and flagged the family it had just recommended)."""
    from scipy import stats

    def edit(gof):
        g = gof["nb"]
        g["statistic"] = float(stats.chi2.isf(0.02, g["groups"] - 1))

    rng, x, X = design(800, 0)
    mu = np.exp(0.7 + 0.3 * x)
    r = report_of(rng.negative_binomial(1.25, 1 / (1 + 0.8 * mu)), X, gof_edit=edit)
    assert r["recommendation"]["family"] == r["detail"] == "nb"
    assert r["recommendation"]["screen"] < 0.02  # 0.05 / (the usable families)
    assert r["models"]["nb"]["gof"]["p_value_bound"] == pytest.approx(0.02)
    assert not any("misfits" in w for w in r["warnings"])
    assert r["recommendation"]["all_misfit"] is False


def test_a_descent_gap_within_rounding_of_the_nll_reads_as_zero_and_a_real_gap_keeps_its_sign():
    from pipeline.report.count_report import _gap

    assert _gap(-2.2e-16, 1.58) == "0 nats (to rounding)"
    assert _gap(2.2e-16, 1.58) == "0 nats (to rounding)"
    # 64 ulps of an NLL of 1e3 is 1.4e-11: a gap of 1e-10 there is not rounding.
    assert _gap(1e-10, 1e3) == "1e-10 nats"
    assert _gap(-3e-9, 1.58) == "-3e-09 nats"
