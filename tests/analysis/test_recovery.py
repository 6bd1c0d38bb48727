"""Unit tests of `pipeline.analysis.recovery` on small hand-made tables (`recovery_frames`)
with answers worked out by hand."""

import math

import numpy as np
import polars as pl
import pytest
from recovery_frames import fits_frame

from pipeline.analysis import recovery


def test_optimisation_table_shares_steps_gaps_and_spread():
    table = recovery.optimisation_table(fits_frame(), max_steps=500)
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
    # objective: 3 fits not recovered (1 each), 3 recovered in 100, 300, 200 of 500 steps
    assert slow["recovered"] == pytest.approx(3 / 6)
    assert slow["objective"] == pytest.approx((3 + 1e-6 * (100 + 300 + 200) / 500) / 6, rel=1e-12)
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

    assert fast["converged"] == pytest.approx(2 / 6) and fast["diverged"] == pytest.approx(3 / 6)
    assert fast["steps_median"] == 15.0
    # 3 diverged and 1 at max_steps (on the MLE, but not converged) cost 1 each
    assert fast["recovered"] == pytest.approx(2 / 6)
    assert fast["objective"] == pytest.approx((4 + 1e-6 * (10 + 20) / 500) / 6, rel=1e-12)
    assert fast["gap_max"] == 0.0  # over the three fits that did not diverge
    # only dataset 1 has two usable inits at lr 1, with zero spread
    assert fast["spread_pi_se"] == 0.0
    assert fast["max_steps_on_boundary"] == 0.0


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
    table = recovery.optimisation_table(both, max_steps=500, order=["zeta", "s"])
    assert table["scenario"].to_list() == ["zeta", "zeta", "s", "s"]


def test_best_lr_by_objective_and_by_share_recovered():
    table = recovery.optimisation_table(fits_frame(), max_steps=500)
    best = recovery.best_lr(table)
    assert best.height == 1
    row = best.row(0, named=True)
    # recovered (converged and within 1 SE in both): lr 0.1 fits (0,0), (0,1), (1,1); lr 1 fits
    # (0,0), (1,0): 3 of 6 against 2 of 6, so lr 0.1 by the objective and by share recovered
    assert (row["scenario"], row["optimizer"], row["lr"]) == ("s", "adam", 0.1)
    assert row["objective"] == pytest.approx(0.5 + 1e-6 * 1.2 / 6, rel=1e-12)
    assert row["steps_median"] == 200.0
    assert row["recovered"] == pytest.approx(0.5)
    assert (row["optimizer_recovered"], row["lr_recovered"]) == ("adam", 0.1)
    assert row["recovered_best"] == pytest.approx(0.5) and row["steps_median_best"] == 200.0


def test_fewer_steps_break_a_tie_in_share_recovered():
    # lr 1 with its max_steps fit converged in 30 steps: 3 of 6 recovered at either lr, lr 1
    # in fewer steps (10, 20, 30 against 100, 300, 200), whatever lr 1's divergences
    fits = fits_frame().with_columns(
        pl.when((pl.col("lr") == 1.0) & (pl.col("status") == "max_steps"))
        .then(pl.struct(status=pl.lit("converged"), steps=pl.lit(30, pl.Int64)))
        .otherwise(pl.struct("status", "steps"))
        .struct.unnest()
    )
    best = recovery.best_lr(recovery.optimisation_table(fits, max_steps=500)).row(0, named=True)
    assert best["lr"] == best["lr_recovered"] == 1.0
    assert best["objective"] == pytest.approx(0.5 + 1e-6 * 0.12 / 6, rel=1e-12)


def test_a_fit_costs_one_unless_recovered_however_far_off():
    status = np.array(["converged", "converged", "max_steps", "diverged", "converged", "stopped"])
    errors = np.array([[0.5, -1.0], [0.5, 1.5], [0.0, 0.0], [np.nan, np.nan], [np.nan, 0.0],
                       [0.1, 0.1]])  # fmt: skip
    done = recovery.recovered(status, errors)
    # a fit stopped by the pruner is judged where it stopped (a pruned trial's last report)
    assert done.tolist() == [True, False, False, False, False, True]
    steps = np.array([250, 10, 500, 3, 1, 40])
    np.testing.assert_array_equal(
        recovery.charge(done, steps, 500),
        [0.5 * recovery.STEP_WEIGHT, 1, 1, 1, 1, 0.08 * recovery.STEP_WEIGHT],
    )
    # A running fit within 1 SE counts as recovered so far (pruning's intermediate values).
    running = np.array(["running", "running"])
    assert recovery.recovered(running, errors[:2], so_far=True).tolist() == [True, False]
    assert not recovery.recovered(running, errors[:2]).any()


def test_charges_are_bounded_whatever_the_gap():
    # The defect this replaced: a fit stopped at max_steps 6.7e34 nats above the MLE was
    # charged its gap (objective 1.7e32). Now every charge is in [0, 1 + STEP_WEIGHT].
    fits = fits_frame().with_columns(
        nll_gap=pl.when(pl.col("status") == "max_steps").then(6.7e34).otherwise("nll_gap")
    )
    charges = recovery.fit_charges(fits, max_steps=500)
    assert ((charges >= 0) & (charges <= 1 + recovery.STEP_WEIGHT)).all()
    assert (
        recovery.fit_charges(fits, 500).tolist() == recovery.fit_charges(fits_frame(), 500).tolist()
    )


def test_regression_fits_are_judged_by_their_largest_error():
    reg = pl.DataFrame({"optimizer": ["adam"] * 3, "lr": [0.1] * 3,
                        "status": ["converged", "converged", "diverged"], "steps": [100, 50, 9],
                        "max_err_se": [0.9, 1.1, None]})  # fmt: skip
    np.testing.assert_allclose(recovery.fit_charges(reg, 500), [0.2e-6, 1, 1])


def test_objective_table_is_the_mean_charge_over_every_table():
    reg = pl.DataFrame({"optimizer": ["adam"] * 2, "lr": [1.0, 0.1],
                        "status": ["converged", "max_steps"], "steps": [100, 500],
                        "max_err_se": [0.5, 0.5]})  # fmt: skip
    table = recovery.objective_table([fits_frame(), reg, reg.clear()], max_steps=500)
    # 3 of 7 recovered at either lr: lr 1 in 10, 20, 100 steps beats lr 0.1 in 100, 300, 200
    assert table.select("lr", "fits").rows() == [(1.0, 7), (0.1, 7)]
    assert table["objective"][0] == pytest.approx((4 + 1e-6 * 130 / 500) / 7, rel=1e-12)
    assert table["objective"][1] == pytest.approx((4 + 1e-6 * 600 / 500) / 7, rel=1e-12)
    assert table["recovered"].to_list() == pytest.approx([3 / 7, 3 / 7])
