"""σ's recovery in the grouped scenarios (`analysis.mixed_recovery`) on the hand-made tables
of `sigma_frames` (their docstring gives the numbers)."""

from __future__ import annotations

import math

import polars as pl
import pytest
from sigma_frames import computed as computed_tables
from sigma_frames import tables

from pipeline.analysis import mixed_recovery as mr
from pipeline.analysis.reg_recovery import reg_best_variant, reg_optimisation_table


@pytest.fixture(scope="module")
def computed():
    return computed_tables()


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


def test_without_grouped_scenarios_there_is_nothing():
    summary, fits, coefs = tables()
    plain = summary.drop("profile_lower")
    assert mr.sigma_table(
        plain, coefs, fits, reg_best_variant(reg_optimisation_table(fits))
    ).is_empty()
