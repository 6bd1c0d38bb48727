"""Tests of `pipeline.report.count_report`: the `fit_counts` report as numbers and as text.

`summarise` is checked against references outside the core's inference code: scipy's pmfs,
normal and chi-squared quantiles and the textbook AIC/BIC; `render`, `metrics`,
`markdown_frequencies` and `jsonable` line by line and key by key. No stage runs here
(tests/stages/test_fit_counts.py runs the stage).
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.optimize
import scipy.stats

from pipeline.core.histogram import histogram
from pipeline.core.oracle.mle import exact_mle
from pipeline.report import count_report
from pipeline.report.count_report import descent_summary, summarise
from pipeline.report.count_text import render
from pipeline.report.fit_checks import GOF_HEADER
from pipeline.stages.cli import ROOT
from pipeline.stages.config import FitCountsConfig

EXAMPLE = ROOT / "examples" / "fish_caught.csv"


def example_counts() -> np.ndarray:
    return np.loadtxt(EXAMPLE, delimiter=",", skiprows=1, usecols=1).astype(int)


def zip_pmf(y: np.ndarray, pi: float, lam: float) -> np.ndarray:
    """The ZIP pmf from scipy's Poisson pmf."""
    return pi * (y == 0) + (1 - pi) * scipy.stats.poisson.pmf(y, lam)


def zip_loglik(y: np.ndarray, pi: float, lam: float) -> float:
    """Total ZIP log-likelihood from scipy's Poisson pmf."""
    return float(np.log(zip_pmf(y, pi, lam)).sum())


def descent(pi, lam, nll, status, history_pi0, steps=None):
    """A stand-in for the engine's `FitResult`: what `descent_summary` reads."""
    k = len(pi)
    return SimpleNamespace(
        pi=np.array(pi),
        lam=np.array(lam),
        nll=np.array(nll),
        status=np.array(status),
        steps=np.array(steps or [100] * k),
        history_pi=np.array(history_pi0, float)[:, None],
    )


def full_report(y, level=0.95, where=None, result=None, best=0, fc=None):
    """The report as `fit_counts` assembles it, with a hand-made descent."""
    report = {
        "file": "counts.csv",
        "column": "count",
        "where": where,
        "rows": 300,
        **summarise(histogram(y), level),
    }
    fc = fc or FitCountsConfig(inits=3, max_steps=2000)
    if result is None:
        z = report["zip"]
        result = descent(
            [z["pi"], 0.3, 0.9],
            [z["lambda"], 1.0, 5.0],
            [z["nll"] + 1e-13, 2.0, 3.0],
            ["converged", "max_steps", "diverged"],
            [0.5, 0.5, 0.5],
            steps=[412, 2000, 7],
        )
    report["gradient_descent"] = descent_summary(result, best, report, fc)
    return report


def test_summarise_against_scipy_and_textbook_formulas():
    y = example_counts()
    r = summarise(histogram(y), 0.95)
    n = len(y)
    assert r["n"] == n == 250 and r["level"] == 0.95
    assert r["data"] == {
        "zeros": int((y == 0).sum()),
        "zero_share": (y == 0).mean(),
        "mean": pytest.approx(y.mean(), rel=1e-15),
        "variance": pytest.approx(y.var(ddof=1), rel=1e-14),
        "max": int(y.max()),
    }
    z, pois = r["zip"], r["poisson"]
    mle = exact_mle(histogram(y))
    assert (z["pi"], z["lambda"], z["se_pi"], z["se_lambda"]) == (
        mle.pi,
        mle.lam,
        mle.se_pi,
        mle.se_lam,
    )
    assert z["boundary"] is False
    # log-likelihoods from scipy: float64 sums of 250 logs, ~1e-14 relative
    assert z["loglik"] == pytest.approx(zip_loglik(y, z["pi"], z["lambda"]), rel=1e-12)
    assert pois["loglik"] == pytest.approx(scipy.stats.poisson.logpmf(y, y.mean()).sum(), rel=1e-12)
    assert z["nll"] == pytest.approx(-z["loglik"] / n, rel=1e-15)
    assert (z["aic"], z["bic"]) == pytest.approx(
        (4 - 2 * z["loglik"], 2 * math.log(n) - 2 * z["loglik"]), rel=1e-14
    )
    assert (pois["aic"], pois["bic"]) == pytest.approx(
        (2 - 2 * pois["loglik"], math.log(n) - 2 * pois["loglik"]), rel=1e-14
    )
    assert pois["lambda"] == pytest.approx(y.mean(), rel=1e-15)
    assert pois["se_lambda"] == pytest.approx(math.sqrt(y.mean() / n), rel=1e-15)
    q = scipy.stats.norm.ppf(0.975)
    assert z["wald"]["pi"] == pytest.approx(
        (z["pi"] - q * z["se_pi"], z["pi"] + q * z["se_pi"]), rel=1e-14
    )
    assert pois["wald"]["lambda"] == pytest.approx(
        (y.mean() - q * pois["se_lambda"], y.mean() + q * pois["se_lambda"]), rel=1e-14
    )
    # at the profile limits for pi, twice the drop of the log-likelihood maximised over lambda
    # (scipy's bounded scalar search, xatol 1e-10) is the chi2_1 95 % quantile
    for limit in z["profile"]["pi"]:
        best = scipy.optimize.minimize_scalar(
            lambda lam, p=limit: -zip_loglik(y, p, lam),
            bounds=(1.0, 6.0),
            method="bounded",
            options={"xatol": 1e-10},
        )
        drop = 2 * (z["loglik"] + best.fun)
        assert drop == pytest.approx(scipy.stats.chi2.ppf(0.95, 1), rel=1e-6)
    # likelihood ratio against the boundary mixture 0.5 chi2(0) + 0.5 chi2(1)
    stat = 2 * (z["loglik"] - pois["loglik"])
    assert r["lr_test"]["statistic"] == pytest.approx(stat, rel=1e-12)
    assert r["lr_test"]["p_value"] == pytest.approx(0.5 * scipy.stats.chi2.sf(stat, 1), rel=1e-9)
    assert r["lr_test"]["reference"] == "0.5*chi2(0) + 0.5*chi2(1)"
    assert set(r["vuong"]) == {"raw", "aic", "bic", "reported", "caveat"}
    assert r["vuong"]["reported"] is True and r["warnings"] == []  # n = 250, the ZIP fits
    # Vuong: m_i = log f_zip(y_i) - log f_pois(y_i) over the raw counts, corrected by 0, 1
    # (AIC) or log(n) / 2 (BIC); sums of 250 terms in float64: 1e-10 relative is ample
    m = np.log(zip_pmf(y, z["pi"], z["lambda"])) - scipy.stats.poisson.logpmf(y, y.mean())
    for key, correction in (("raw", 0.0), ("aic", 1.0), ("bic", math.log(n) / 2)):
        zv = (m.sum() - correction) / (math.sqrt(n) * m.std(ddof=1))
        assert r["vuong"][key]["statistic"] == pytest.approx(zv, rel=1e-10)
        # the one Vuong convention (model_tests.VUONG_P): two-sided
        p_two = 2 * scipy.stats.norm.sf(abs(zv))
        assert r["vuong"][key]["p_value"] == pytest.approx(p_two, rel=1e-9)
        log10_p = math.log10(p_two)
        assert r["vuong"][key]["log10_p_value"] == pytest.approx(log10_p, rel=1e-9)
    # far from the boundary both intervals are meaningful: the Wald one is the interval
    for key in ("pi", "lambda"):
        assert z["interval"][key] == {"lower": z["wald"][key][0], "upper": z["wald"][key][1],
                                      "method": "wald", "reason": ""}  # fmt: skip
    assert r["notes"] == []


def test_frequencies_against_scipy():
    y = example_counts()
    r = summarise(histogram(y), 0.95)
    rows = r["frequencies"]
    tail = rows[-1]["count"]
    assert [f["count"] for f in rows] == list(range(tail + 1))
    assert [f["tail"] for f in rows] == [False] * tail + [True]
    observed = [int((y == k).sum()) for k in range(tail)] + [int((y >= tail).sum())]
    assert [f["observed"] for f in rows] == observed
    pi, lam, mean, n = r["zip"]["pi"], r["zip"]["lambda"], y.mean(), len(y)
    zip_pmf = (1 - pi) * scipy.stats.poisson.pmf(np.arange(tail), lam) + pi * (np.arange(tail) == 0)
    zip_expected = [*(n * zip_pmf), n * (1 - pi) * scipy.stats.poisson.sf(tail - 1, lam)]
    pois_expected = [
        *(n * scipy.stats.poisson.pmf(np.arange(tail), mean)),
        n * scipy.stats.poisson.sf(tail - 1, mean),
    ]
    assert [f["zip"] for f in rows] == pytest.approx(zip_expected, rel=1e-12)
    assert [f["poisson"] for f in rows] == pytest.approx(pois_expected, rel=1e-12)
    # the ZIP's expected zeros equal the observed ones at the MLE (its score in pi is zero)
    assert rows[0]["zip"] == pytest.approx(rows[0]["observed"], rel=1e-12)


def test_fewer_zeros_than_poisson_gives_the_boundary_answer():
    rng = np.random.default_rng(3)
    y = rng.poisson(3.0, 400)
    y = y[y > 0]  # no zeros at all: certainly fewer than a Poisson gives
    r = summarise(histogram(y), 0.95)
    assert r["zip"]["boundary"] is True and r["zip"]["pi"] == 0.0
    assert r["zip"]["lambda"] == pytest.approx(y.mean(), rel=1e-12)
    assert r["zip"]["nll"] == pytest.approx(r["poisson"]["nll"], rel=1e-12)
    assert r["lr_test"]["statistic"] == 0.0 and r["lr_test"]["p_value"] == 1.0
    assert r["zip"]["profile"]["pi"][0] == 0.0 and r["zip"]["wald"]["pi"] is None
    assert r["zip"]["interval"]["pi"]["method"] == "profile"
    assert all(math.isnan(r["vuong"][k]["statistic"]) for k in ("raw", "aic", "bic"))
    assert count_report.jsonable(r)["vuong"]["raw"]["statistic"] is None  # undefined: null
    expected_zeros = len(y) * math.exp(-y.mean())
    assert r["notes"] == [
        f"0 zeros observed, {expected_zeros:.1f} expected under a Poisson with the same mean: no "
        "excess zeros, so the MLE is on the boundary pi = 0, lambda = mean (the ZIP reduces to "
        "the Poisson; LR statistic 0, p = 1; the lower limits for pi are 0)"
    ]
    # descent from pi0 = 0.5 that ended at pi 0.01 < 0.25 heads for the boundary
    result = descent([0.01], [y.mean()], [r["zip"]["nll"] + 1e-6], ["max_steps"], [0.5], [3000])
    report = full_report(y, result=result, fc=FitCountsConfig(inits=1, max_steps=3000))
    assert report["gradient_descent"]["towards_boundary"] is True
    lines = render(report).splitlines()
    assert "    pi -> 0: descent drives logit(pi) towards -inf, the boundary MLE" in lines
    # the note closes the text, wrapped at 94 characters with two-space continuation lines
    start = next(i for i, line in enumerate(lines) if line.startswith("note: "))
    assert lines[start - 1] == "" and all(line.startswith("  ") for line in lines[start + 1 :])
    assert " ".join(line.strip() for line in lines[start:]) == "note: " + r["notes"][0]
    assert all(len(line) <= 94 for line in lines[start:])


def test_descent_summary_by_hand():
    fc = FitCountsConfig(inits=3, optimizer="rmsprop", lr=0.05, max_steps=900)
    report = {"zip": {"nll": 2.0, "boundary": False}}
    result = descent(
        [0.2, 0.4, 0.6],
        [1.0, 2.0, 3.0],
        [2.5, 2.0 + 1e-9, math.nan],
        ["max_steps", "converged", "diverged"],
        [0.5, 0.1, 0.9],
        [900, 321, 4],
    )
    out = descent_summary(result, 1, report, fc)
    assert out == {
        "optimizer": "rmsprop",
        "lr": 0.05,
        "inits": 3,
        "max_steps": 900,
        "pi": 0.4,
        "lambda": 2.0,
        "nll": 2.0 + 1e-9,
        "nll_gap": pytest.approx(1e-9, rel=1e-6),
        "steps": 321,
        "status": "converged",
        "converged_inits": 1,
        "diverged_inits": 1,
        "towards_boundary": False,
    }
    assert type(out["steps"]) is int and type(out["pi"]) is float
    # towards the boundary only when the exact MLE is there and pi fell below half the
    # smallest start
    boundary = {"zip": {"nll": 2.0, "boundary": True}}
    assert descent_summary(result, 0, boundary, fc)["towards_boundary"] is False  # 0.2 > 0.05
    low = descent([0.04], [1.0], [2.0], ["max_steps"], [0.1])
    assert descent_summary(low, 0, boundary, fc)["towards_boundary"] is True  # 0.04 < 0.05
    assert descent_summary(low, 0, report, fc)["towards_boundary"] is False


def test_render_lays_out_the_numbers():
    y = example_counts()
    report = full_report(y)
    text = render(report)
    lines = text.splitlines()
    z, pois = report["zip"], report["poisson"]
    assert lines[0] == "ZIP vs Poisson: counts.csv, column 'count' (250 of 300 rows)"
    assert lines[1] == (
        f"  n = 250   zeros = 126 (50.4%)   mean = 1.512   variance = "
        f"{y.var(ddof=1):.4g}   max = 11"
    )
    assert lines[3] == "Zero-inflated Poisson (exact MLE)"
    assert lines[4].split() == [
        "parameter",
        "estimate",
        "std.",
        "error",
        "95%",
        "Wald",
        "95%",
        "profile",
    ]
    # "pi (extra zeros)  estimate  se  [wald lo, hi]  [profile lo, hi]": 6 and 3 digits
    words = lines[5].replace("[", " ").replace("]", " ").replace(",", " ").split()
    assert words[:3] == ["pi", "(extra", "zeros)"]
    numbers = [float(w) for w in words[3:]]
    # estimates and limits to 6 significant digits (rounding: < 5e-6 relative), the SE to 3
    expected = [z["pi"], *z["wald"]["pi"], *z["profile"]["pi"]]
    assert [numbers[0], *numbers[2:]] == pytest.approx(expected, rel=5e-6)
    assert numbers[1] == pytest.approx(z["se_pi"], rel=5e-3)
    assert words[3:5] == [f"{z['pi']:.6g}", f"{z['se_pi']:.3g}"]
    words = lines[6].replace("[", " ").replace("]", " ").replace(",", " ").split()
    assert words[:2] == ["lambda", "(rate)"]
    numbers = [float(w) for w in words[2:]]
    expected = [z["lambda"], *z["wald"]["lambda"], *z["profile"]["lambda"]]
    assert [numbers[0], *numbers[2:]] == pytest.approx(expected, rel=5e-6)
    assert numbers[1] == pytest.approx(z["se_lambda"], rel=5e-3)
    assert lines[7] == (
        f"  gradient descent (adam, lr 0.1, best of 3 inits): pi = {z['pi']:.6g}, "
        f"lambda = {z['lambda']:.6g}"
    )
    assert lines[8] == (
        "    converged after 412 steps (1 of 3 inits converged); mean NLL above "
        "the exact MLE: 1e-13 nats"
    )
    assert lines[9:11] == ["", "Poisson"]
    assert lines[11].split()[:4] == ["lambda", "(rate)", "1.512", f"{pois['se_lambda']:.3g}"]
    i = lines.index("  model comparison             ZIP       Poisson")
    assert lines[i + 1].split() == ["log-likelihood", f"{z['loglik']:.2f}", f"{pois['loglik']:.2f}"]
    assert lines[i + 2].split() == ["AIC", f"{z['aic']:.2f}", f"{pois['aic']:.2f}"]
    assert lines[i + 3].split() == ["BIC", f"{z['bic']:.2f}", f"{pois['bic']:.2f}"]
    i = lines.index("Likelihood-ratio test for zero inflation (H0: pi = 0, Poisson)")
    lr = report["lr_test"]
    assert lines[i + 1] == (
        f"  T = {lr['statistic']:.4g}, p = {lr['p_value']:.3g}   (reference "
        "0.5*chi2(0) + 0.5*chi2(1))"
    )
    assert lines[i + 2] == (
        "Vuong test, ZIP against Poisson (two-sided p; z > 0 favours the ZIP; pscl's one-sided "
        "p is half)"
    )
    assert lines[i + 3].split()[:3] == ["raw", "z", "="]
    caveat = " ".join(line.strip() for line in lines[i + 6 : lines.index("", i + 6)])
    assert caveat == "caveat: " + report["vuong"]["caveat"]
    i = lines.index("Observed against expected frequencies")
    assert lines[i + 1].split() == ["count", "observed", "ZIP", "Poisson"]
    rows = [line.split() for line in lines[i + 2 : lines.index("", i)]]
    assert rows == [
        [
            f"{f['count']}+" if f["tail"] else str(f["count"]),
            str(f["observed"]),
            f"{f['zip']:.1f}",
            f"{f['poisson']:.1f}",
        ]
        for f in report["frequencies"]
    ]
    assert rows[-1][0] == "7+"
    # one goodness-of-fit line per model after the table (numbers: test_count_report_checks)
    i = lines.index(GOF_HEADER[0]) + len(GOF_HEADER) - 1
    for line, key in zip(lines[i + 1 : i + 3], ("zip", "poisson")):
        g = report[key]["gof"]
        assert line.split()[:7] == [
            key.replace("zip", "ZIP").replace("poisson", "Poisson"),
            "X2",
            "=",
            f"{g['statistic']:.4g}",
            "df",
            "=",
            str(g["df"]),
        ]
    assert "pi -> 0" not in text and "note:" not in text
    assert all(line == line.rstrip() and len(line) <= 100 for line in lines)


@pytest.mark.parametrize(
    ("p_value", "shown"), [(0.0342, "p = 0.0342"), (1e-301, "p < 1e-300"), (math.nan, "p = n/a")]
)
def test_render_p_values_and_the_filter(p_value, shown):
    report = full_report(example_counts(), where="camper = 1")
    report["lr_test"]["p_value"] = p_value
    lines = render(report).splitlines()
    assert (
        lines[0] == "ZIP vs Poisson: counts.csv, column 'count' (250 of 300 rows, where camper = 1)"
    )
    assert any(
        line.startswith(f"  T = {report['lr_test']['statistic']:.4g}, {shown}   (")
        for line in lines
    )


def test_jsonable_gives_strict_json():
    report = {
        "a": (1.0, math.inf),
        "b": [np.float64(math.nan), np.int64(3)],
        "c": {"d": np.float32(0.5)},
        "e": "text",
        "f": None,
        "g": True,
    }
    out = count_report.jsonable(report)
    assert out == {
        "a": [1.0, None],
        "b": [None, 3],
        "c": {"d": 0.5},
        "e": "text",
        "f": None,
        "g": True,
    }
    assert type(out["b"][1]) is int and type(out["c"]["d"]) is float
    json.dumps(out, allow_nan=False)  # raises on a NaN left behind
    full = count_report.jsonable(full_report(example_counts()))
    assert json.loads(json.dumps(full, allow_nan=False)) == full


def test_metrics_flatten_the_finite_numbers():
    report = {
        "n": 5,
        "rows": 9,
        "level": 0.95,
        "file": "x.csv",
        "zip": {
            "pi": 0.3,
            "boundary": False,
            "wald": {"pi": (0.1, 0.5), "lambda": (2.0, math.inf)},
        },
        "lr_test": {"statistic": math.nan, "p_value": np.float64(0.25), "reference": "chi2"},
        "frequencies": [{"count": 0, "observed": 3}],
        "notes": ["one", "two"],
    }
    assert count_report.metrics(report) == {
        "n": 5.0,
        "level": 0.95,
        "zip.pi": 0.3,
        "zip.boundary": 0.0,
        "zip.wald.pi.lower": 0.1,
        "zip.wald.pi.upper": 0.5,
        "zip.wald.lambda.lower": 2.0,
        "lr_test.p_value": 0.25,
    }
    full = count_report.metrics(full_report(example_counts()))
    assert full["zip.profile.pi.lower"] == full_report(example_counts())["zip"]["profile"]["pi"][0]
    assert full["gradient_descent.converged_inits"] == 1.0 and "gradient_descent.status" not in full
    assert not any(key.startswith(("frequencies", "rows")) for key in full)


def test_markdown_frequencies():
    report = {
        "frequencies": [
            {"count": 0, "tail": False, "observed": 12, "zip": 11.996, "poisson": 5.0},
            {"count": 1, "tail": True, "observed": 8, "zip": 8.004, "poisson": 15.0},
        ]
    }
    assert count_report.markdown_frequencies(report) == (
        "| count | observed | ZIP | Poisson |\n"
        "| ---: | ---: | ---: | ---: |\n"
        "| 0 | 12 | 12.00 | 5.00 |\n"
        "| 1+ | 8 | 8.00 | 15.00 |\n"
    )
