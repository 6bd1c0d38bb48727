"""σ's recovery in the grouped scenarios (`analysis.mixed_recovery`) and its report section
(`report.sigma_sections`), on hand-made tables whose answers are worked out by hand.

Scenario "g" (σ = 0.5) has four datasets: σ̂ = 0.4, 0.6, 0.5 and 1.0 (log scale SE 0.2),
profile intervals (0.3, 0.55), (0.45, 0.8), (0.2, 0.45) and (0.7, 1.5); LR p-values 1e-6,
1e-4, 0.2, 1e-9. Scenario "z" (σ = 0) has three: σ̂ = 0 twice (boundary, profile (0, 0.2))
and σ̂ = 0.1 once (profile (0, 0.3)), p 1, 1 and 0.3. One variant (adam lr 0.1, full batch),
one init per dataset: g's fits all converge; z's two boundary fits stop at max_steps with σ
0.01 and 0.03, the third converges.
"""

from __future__ import annotations

import math

import polars as pl
import pytest

from pipeline.analysis import mixed_recovery as mr
from pipeline.analysis.reg_recovery import reg_best_variant, reg_optimisation_table
from pipeline.report.sigma_sections import sigma_section

G = {  # replicate: (sigma_hat, se, profile lower, upper, p, gd sigma, err_se)
    0: (0.4, 0.2, 0.3, 0.55, 1e-6, 0.4, 1e-6),
    1: (0.6, 0.2, 0.45, 0.8, 1e-4, 0.6, -2e-6),
    2: (0.5, 0.2, 0.2, 0.45, 0.2, 0.5, 3e-6),
    3: (1.0, 0.2, 0.7, 1.5, 1e-9, 1.0, 1e-6),
}
Z = {  # at the boundary the oracle's log σ is -inf with no SE, and GD creeps
    0: (0.0, math.nan, 0.0, 0.2, 1.0, 0.01, math.nan),
    1: (0.0, math.nan, 0.0, 0.2, 1.0, 0.03, math.nan),
    2: (0.1, 0.9, 0.0, 0.3, 0.3, 0.1, 5e-6),
}
VARIANT = {"optimizer": "adam", "lr": 0.1, "standardize": False, "batch_size": None}


def _log(v: float) -> float:
    return -math.inf if v == 0 else math.log(v)


def tables():
    summary, fits, coefs = [], [], []
    for name, truth, rows in (("g", 0.5, G), ("z", 0.0, Z)):
        for rep, (s_hat, se, lo, hi, p, gd, err) in rows.items():
            status = "boundary" if s_hat == 0 else "converged"
            base = {"scenario": name, "replicate": rep, "oracle_status": status}
            summary += [
                {**base, "part": "count", "term": "intercept", "truth": 1.0, "estimate": 1.1,
                 "se": 0.1, "sigma_p": None, "profile_lower": None, "profile_upper": None,
                 "profile_level": None},
                {**base, "part": "random", "term": "log_sigma_count", "truth": _log(truth),
                 "estimate": _log(s_hat), "se": se, "sigma_p": p, "profile_lower": _log(lo),
                 "profile_upper": _log(hi), "profile_level": 0.95},
            ]  # fmt: skip
            creeping = s_hat == 0
            fit_err = 1e-5 if not creeping else 1e-3  # log σ not judged at the boundary
            fits.append({"study": "s", "trial": 0, "scenario": name, "replicate": rep, "init": 0,
                         **VARIANT, "status": "max_steps" if creeping else "converged",
                         "steps": 500 if creeping else 300, "nll_final": 1.0,
                         "nll_gap": 1e-5 if creeping else 0.0,
                         "max_err_se": fit_err})  # fmt: skip
            key = {"study": "s", "trial": 0, "scenario": name, "replicate": rep, "init": 0,
                   "standardize": False, "batch_size": None}  # fmt: skip
            coefs += [
                {**key, "part": "count", "term": "intercept", "estimate": 1.1, "err_se": 1e-6},
                {**key, "part": "random", "term": "log_sigma_count", "estimate": math.log(gd),
                 "err_se": err},
            ]  # fmt: skip
    schema = {"batch_size": pl.Int64}
    return (pl.DataFrame(summary), pl.DataFrame(fits, schema_overrides=schema),
            pl.DataFrame(coefs, schema_overrides=schema))  # fmt: skip


@pytest.fixture(scope="module")
def computed():
    summary, fits, coefs = tables()
    best = reg_best_variant(reg_optimisation_table(fits))
    return (mr.sigma_table(summary, coefs, fits, best, ["g", "z"]),
            mr.boundary_table(summary, coefs, fits, best, ["g", "z"]))  # fmt: skip


def test_sigma_recovery_by_hand(computed):
    sigma, _ = computed
    g, z = sigma.row(0, named=True), sigma.row(1, named=True)
    assert (g["scenario"], g["part"], g["sigma"], g["datasets"]) == ("g", "count", 0.5, 4)
    errors = [-0.1, 0.1, 0.0, 0.5]
    assert g["bias"] == pytest.approx(sum(errors) / 4)
    assert g["rmse"] == pytest.approx(math.sqrt(sum(e * e for e in errors) / 4))
    # Wald on log σ: exp(log σ̂ ± 1.96·0.2) covers 0.5 for σ̂ = 0.4, 0.6, 0.5, not 1.0
    # (1.0·e^-0.392 = 0.676); the profile intervals cover it in datasets 0 and 1 only.
    assert g["wald_cover"] == 0.75 and g["wald_cover_se"] == pytest.approx(
        math.sqrt(0.75 * 0.25 / 4)
    )
    assert g["profile_cover"] == 0.5 and g["at_zero"] == 0 and g["reject"] == 0.75
    assert g["gd_estimates"] == 4 and g["gd_bias"] == pytest.approx(g["bias"])
    assert g["gd_err_max"] == pytest.approx(3e-6)
    assert g["converged_fits"] == 4 and g["converged_err_max"] == pytest.approx(1e-5)
    # σ = 0: the profile intervals (lower limit 0) always cover, a Wald interval never can.
    assert z["at_zero"] == pytest.approx(2 / 3) and z["bias"] == pytest.approx(0.1 / 3)
    assert z["wald_cover"] == 0 and z["profile_cover"] == 1 and z["reject"] == 0
    assert z["gd_err_max"] == pytest.approx(5e-6)  # only where the oracle has an SE
    assert z["converged_fits"] == 1 and z["level"] == 0.95


def test_gradient_descent_near_the_boundary(computed):
    _, boundary = computed
    z = boundary.filter(pl.col("scenario") == "z")
    assert z["band"].to_list() == [mr.BANDS[0], mr.BANDS[1]]
    at_zero = z.row(0, named=True)
    assert at_zero["datasets"] == 2 and at_zero["converged"] == 0
    assert at_zero["gd_sigma_median"] == pytest.approx(0.02)
    assert at_zero["gd_sigma_max"] == pytest.approx(0.03) and at_zero["steps_median"] == 500
    assert z.row(1, named=True)["converged"] == 1
    assert boundary.filter(pl.col("scenario") == "g")["band"].to_list() == [mr.BANDS[2]]


def test_the_report_section_states_the_numbers(computed):
    text = sigma_section(*computed)
    assert text.startswith("## Random intercepts: σ")
    assert "95 % profile intervals covered σ on 50 ± 25 %" in text
    assert "Wald intervals on the log scale on 0 % (a Wald interval on the log scale never" in text
    assert "rejected on 75 ± 22 % (power at 0.05)" in text
    assert "rejected on 0 % (its size at 0.05)" in text
    assert "the 2 datasets whose oracle has σ̂ = 0: after a median 500 steps (0 % met" in text
    assert "all 4 converged fits of every trial ended within 1e-05 oracle SE" in text
    assert "### z: σ" in text and "| count | sigma_hat = 0 | 2 | 0 % | 500 |" in text


def test_without_grouped_scenarios_there_is_nothing():
    summary, fits, coefs = tables()
    plain = summary.drop("profile_lower")
    assert mr.sigma_table(
        plain, coefs, fits, reg_best_variant(reg_optimisation_table(fits))
    ).is_empty()
    assert sigma_section(pl.DataFrame(), pl.DataFrame()) == ""
