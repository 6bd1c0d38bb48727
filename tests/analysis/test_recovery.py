"""Unit tests of `pipeline.analysis.recovery` on small hand-made tables (`recovery_frames`)
with answers worked out by hand."""

import math

import polars as pl
import pytest
from recovery_frames import fits_frame

from pipeline.analysis import recovery


def test_optimisation_table_shares_steps_gaps_and_spread():
    table = recovery.optimisation_table(fits_frame(), diverged_penalty=1.0)
    assert table.select("lr").to_series().to_list() == [0.1, 1.0]
    slow, fast = table.row(0, named=True), table.row(1, named=True)
    assert slow["fits"] == 6 and slow["datasets"] == 3
    assert slow["converged"] == pytest.approx(3 / 6)
    assert slow["converged_se"] == pytest.approx(math.sqrt(0.5 * 0.5 / 6))
    assert slow["max_steps"] == pytest.approx(3 / 6) and slow["diverged"] == 0.0
    assert slow["steps_median"] == 200.0
    assert slow["steps_p90"] == pytest.approx(280.0)  # linear between 200 and 300 at 0.8
    assert slow["gap_max"] == pytest.approx(1e-3)
    assert slow["gap_median"] == pytest.approx((2e-9 + 1e-5) / 2)
    assert slow["objective"] == pytest.approx((1e-9 + 2e-9 + 1e-3 + 0 + 1e-5 + 2e-5) / 6)
    # |pi_hat - mle_pi| / SE: 0, 0.2, 5, 0, 0.3, 0.4 -> median 0.25, max 5
    assert slow["err_pi_median"] == pytest.approx(0.25)
    assert slow["err_pi_max"] == pytest.approx(5.0)
    # |lambda_hat - mle_lambda| / SE: 0, 0.2, 2, 0, 0, 0 -> median 0, max 2
    assert slow["err_lambda_median"] == pytest.approx(0.0, abs=1e-12)
    assert slow["err_lambda_max"] == pytest.approx(2.0)
    # spread per dataset (pi): 0.2, 5, 0.1 SE -> mean 1.7667; lambda: 0.2, 2, 0 -> 0.7333
    assert slow["spread_pi_se"] == pytest.approx((0.2 + 5 + 0.1) / 3)
    assert slow["spread_lambda_se"] == pytest.approx(2.2 / 3)
    assert slow["max_steps_on_boundary"] == pytest.approx(2 / 3)

    assert fast["converged"] == pytest.approx(3 / 6) and fast["diverged"] == pytest.approx(3 / 6)
    assert fast["steps_median"] == 20.0
    assert fast["objective"] == pytest.approx(3 * 1.0 / 6)
    assert fast["gap_max"] == 0.0  # over the three fits that did not diverge
    # only dataset 1 has two usable inits at lr 1, with zero spread
    assert fast["spread_pi_se"] == 0.0
    assert fast["max_steps_on_boundary"] is None


def test_best_fits_take_the_lowest_nll_init_and_skip_diverged():
    best = recovery.best_fits(fits_frame()).sort("lr", "replicate")
    assert best.select("lr", "replicate", "init").rows() == [
        (0.1, 0, 0),
        (0.1, 1, 1),
        (0.1, 2, 0),
        (1.0, 0, 0),
        (1.0, 1, 0),
    ]


def test_rows_follow_the_given_scenario_order():
    a = fits_frame()
    both = pl.concat([a.with_columns(pl.lit("zeta").alias("scenario")), a])
    table = recovery.optimisation_table(both, diverged_penalty=1.0, order=["zeta", "s"])
    assert table["scenario"].to_list() == ["zeta", "zeta", "s", "s"]


def test_best_lr_by_objective_and_by_share_recovered():
    table = recovery.optimisation_table(fits_frame(), diverged_penalty=1.0)
    best = recovery.best_lr(table)
    assert best.height == 1
    row = best.row(0, named=True)
    # objective: lr 0.1 ~ 1.7e-4 beats lr 1 = 3 diverged x 1.0 / 6 = 0.5
    assert (row["scenario"], row["optimizer"], row["lr"]) == ("s", "adam", 0.1)
    assert row["objective"] == pytest.approx((1e-9 + 2e-9 + 1e-3 + 0 + 1e-5 + 2e-5) / 6)
    assert row["steps_median"] == 200.0
    # recovered (converged and within 1 SE in both): lr 0.1 fits (0,0), (0,1), (1,1); lr 1 fits
    # (0,0), (1,0), (1,1): a tie at 3 of 6, broken by fewer median steps (20 against 200)
    assert row["recovered"] == pytest.approx(0.5)
    assert (row["optimizer_recovered"], row["lr_recovered"]) == ("adam", 1.0)
    assert row["recovered_best"] == pytest.approx(0.5) and row["steps_median_best"] == 20.0
