"""The `fit_counts` report's honesty checks on data where the right answer is known: the
interval each parameter gets near a boundary, frequency rows chosen from the data, the
goodness-of-fit lines, the small-sample warning and p-values below the float range.
(The report's layout in general: test_count_report.py.)"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats
from scipy.special import log_ndtr
from test_count_report import full_report

from pipeline.core.histogram import histogram
from pipeline.report.count_report import jsonable, summarise
from pipeline.report.count_text import render

Q95 = stats.chi2.ppf(0.95, 1)


def test_counts_of_mean_1e5_without_zeros_get_the_profile_interval_for_pi():
    """Used to print the Wald interval [0, 0] (SE 0). With no zeros the profile upper limit
    is 1 - exp(-q / 2n) exactly (tests/core/test_profile.py)."""
    y = np.random.default_rng(0).poisson(1e5, 200)
    report = full_report(y)
    pi = report["zip"]["interval"]["pi"]
    assert pi["method"] == "profile" and report["zip"]["wald"]["pi"] is None
    assert (pi["lower"], pi["upper"]) == (0.0, pytest.approx(-math.expm1(-Q95 / 400), rel=1e-9))
    assert "on the edge of [0, 1]" in pi["reason"]
    assert report["zip"]["interval"]["lambda"]["method"] == "wald"  # far from its edge
    lines = render(report).splitlines()
    row = next(line for line in lines if line.startswith("  pi (extra zeros)"))
    assert row.split()[3:7] == ["0", "n/a", "not", "meaningful"]  # SE 0 is no spread
    assert f"  * pi: profile interval used: {pi['reason']}" in lines


def test_one_count_among_999_zeros_gets_no_interval_from_a_degenerate_se():
    """Used to give se_pi = 44.7 and a Wald interval spanning everything. pi-hat = 0 is on
    the edge; lambda's Wald interval crosses 0; so does the Poisson's, whose profile interval
    is the exact likelihood-ratio interval of S = 1 count in n = 1000."""
    y = np.r_[np.zeros(999, int), 1]
    r = summarise(histogram(y), 0.95)
    z, po = r["zip"], r["poisson"]
    assert z["se_pi"] > 1 and z["wald"]["pi"] is None and z["wald"]["lambda"] is None
    assert z["interval"]["pi"]["method"] == z["interval"]["lambda"]["method"] == "profile"
    assert (z["interval"]["pi"]["lower"], z["interval"]["pi"]["upper"]) == z["profile"]["pi"]
    assert 0.0 == z["profile"]["pi"][0] < z["profile"]["pi"][1] < 1.0
    assert z["interval"]["lambda"]["reason"] == "the Wald interval crosses the edge 0 of [0, inf]"
    lo, hi = po["interval"]["lambda"]["lower"], po["interval"]["lambda"]["upper"]
    assert po["interval"]["lambda"]["method"] == "profile"
    for limit in (lo, hi):  # 2 (l(0.001) - l(limit)) with l(lam) = log(lam) - 1000 lam
        drop = 2 * (math.log(0.001) - 1 - math.log(limit) + 1000 * limit)
        assert drop == pytest.approx(Q95, rel=1e-9)


def test_wald_and_lr_disagreeing_about_pi_0_hands_over_to_the_profile_interval():
    """Counts {0, 5}: the LR test rejects pi = 0 (p = 0.0205) while the Wald interval for pi
    reaches 0; with n = 2 the text also opens with the small-sample warning."""
    r = full_report([0, 5])
    pi = r["zip"]["interval"]["pi"]
    assert r["lr_test"]["p_value"] == pytest.approx(0.0205, abs=1e-4)
    assert pi["method"] == "profile" and pi["reason"].startswith("Wald includes 0 but the LR test")
    assert r["warnings"][0].startswith("warning: only n = 2 counts (< 30)")
    lines = render(r).splitlines()
    assert lines[2] == r["warnings"][0] and len(lines[2]) <= 100


@pytest.mark.parametrize("n, warned", [(29, True), (30, False)])
def test_small_samples_warn_and_withhold_vuong(n, warned):
    y = np.r_[np.zeros(n // 2, int), np.arange(1, n - n // 2 + 1) % 5 + 1]
    r = full_report(y)
    assert bool(r["warnings"] and "only n =" in r["warnings"][0]) is warned
    assert r["vuong"]["reported"] is not warned
    text = render(r)
    out = jsonable(r)
    if warned:
        assert all(out["vuong"][k]["statistic"] is None for k in ("raw", "aic", "bic"))
        assert "  withheld: too few counts for its normal reference" in text
    else:
        assert all(isinstance(out["vuong"][k]["statistic"], float) for k in ("raw", "aic", "bic"))


def test_wide_counts_fill_rows_chosen_from_the_data():
    """Mean 216, no zeros: every count used to land in one "20+" row."""
    y = np.random.default_rng(1).poisson(216, 500)
    r = full_report(y)
    rows = r["frequencies"]
    assert 10 <= len(rows) <= 20 and rows[0]["label"] == "0" and rows[-1]["tail"]
    assert sum(f["observed"] for f in rows) == 500
    assert sum(f["zip"] for f in rows) == pytest.approx(500, rel=1e-12)
    for f, nxt in zip(rows[:-1], rows[1:]):  # contiguous rows: each ends where the next starts
        assert f["upper"] == nxt["count"] - 1
    lam = r["poisson"]["lambda"]
    for f in rows[1:-1]:  # a row's expected frequency is the pmf summed over its counts
        k = np.arange(f["count"], f["upper"] + 1)
        assert f["poisson"] == pytest.approx(500 * stats.poisson.pmf(k, lam).sum(), rel=1e-9)
    lines = render(r).splitlines()
    i = lines.index("Observed against expected frequencies")
    shown = [line.split()[0] for line in lines[i + 2 : i + 2 + len(rows)]]
    assert shown == [f["label"] for f in rows] and shown[-1] == f"{rows[-1]['count']}+"
    assert shown[1] == f"1-{rows[1]['upper']}"  # a range of counts


def test_goodness_of_fit_lines_and_a_misfit_warning():
    """NB counts (variance ~5x the mean): the ZIP misfits (X2 in the thousands on ~10 df: a
    p-value above 0.05 would need X2 < 18.3), so the text opens with a one-line warning."""
    y = np.random.default_rng(1).negative_binomial(2, 0.2, 2000)
    r = full_report(y)
    g = r["zip"]["gof"]
    assert g["p_value"] < 1e-100 and g["parameters"] == 2 and r["poisson"]["gof"]["parameters"] == 1
    assert g["df"] == g["groups"] - 3 and g["reference"] == f"chi2({g['df']})"
    # by hand: adjacent rows pooled until each group expects >= 5, a short last group pooled
    # with the one before
    groups, o, e = [], 0.0, 0.0
    for f in r["frequencies"]:
        o, e = o + f["observed"], e + f["zip"]
        if e >= 5:
            groups.append([o, e])
            o = e = 0.0
    if e:
        groups[-1] = [groups[-1][0] + o, groups[-1][1] + e]
    obs, exp = np.array(groups).T
    assert g["groups"] == len(groups) and (exp >= 5).all()
    assert g["statistic"] == pytest.approx(((obs - exp) ** 2 / exp).sum(), rel=1e-12)
    warning = r["warnings"][0]
    assert warning.startswith("warning: the ZIP misfits (Pearson X2 = ") and len(warning) <= 110
    assert render(r).splitlines()[2] == warning
    assert full_report(np.random.default_rng(2).poisson(3.0, 300))["warnings"] == []


def test_p_values_below_the_float_range_keep_their_log10():
    """ZIP(0.3, 216), n = 1000: the LR statistic is ~1e5, its p-value underflows to 0; the
    JSON's log10 p is the chi2(1) tail by the normal's log tail (log_ndtr), halved."""
    rng = np.random.default_rng(1)
    y = rng.binomial(1, 0.7, 1000) * rng.poisson(216, 1000)
    r = full_report(y)
    lr = r["lr_test"]
    assert lr["p_value"] == 0.0 and lr["statistic"] > 1e4
    reference = log_ndtr(-math.sqrt(lr["statistic"])) / math.log(10.0)  # 2 Phi(-sqrt T) / 2
    assert lr["log10_p_value"] == pytest.approx(reference, rel=1e-12)
    out = json.loads(json.dumps(jsonable(r), allow_nan=False))
    assert out["lr_test"]["log10_p_value"] == pytest.approx(reference, rel=1e-12)
    assert math.isfinite(out["poisson"]["gof"]["log10_p_value"])  # the Poisson misfits hugely
    assert all(math.isfinite(out["vuong"][k]["log10_p_value"]) for k in ("raw", "aic", "bic"))
    lines = render(r).splitlines()
    assert any(line.startswith("  T = ") and "p < 1e-300" in line for line in lines)


def test_goodness_of_fit_text_says_what_was_done():
    """Three rows for three parameters: merging would leave no df, so the rows stay unmerged
    (one expects < 5) and the df 3 - 1 - 3 = -1 is raised to 1: the text says both, and its
    header no longer claims every group expects >= 5."""
    from pipeline.report.fit_checks import gof_entry, gof_lines

    g = gof_entry([40, 50, 10], [45.0, 52.0, 3.0], 3)
    assert (g["df"], g["raw_df"], g["small_groups"], g["groups"]) == (1, -1, 1, 3)
    text = "\n".join(gof_lines([("ZINB", g)]))
    assert "left unmerged where merging would leave no df" in text
    assert "ZINB: 3 groups - 1 - 3 parameters = -1 df, raised to 1" in text
    assert "ZINB: 1 of 3 groups expect < 5" in text
