"""Unit tests of `pipeline.analysis.reg_recovery` on the hand-made tables of `reg_frames`,
every expected number worked out by hand in the comments."""

from __future__ import annotations

import math

import polars as pl
import pytest
from reg_frames import DIVERGING, MINI, RAW, STD, coefs_frame, fits_frame, summary_frame

from pipeline.analysis import reg_recovery as rr

Z = 1.959963984540054  # 95 % two-sided normal quantile


def _row(table: pl.DataFrame, variant) -> dict:
    opt, lr, std, batch = variant
    mask = (
        (pl.col("optimizer") == opt)
        & (pl.col("lr") == lr)
        & (pl.col("standardize") == std)
        & (pl.col("batch_size").is_null() if batch is None else pl.col("batch_size") == batch)
    )
    return table.filter(mask).row(0, named=True)


def test_optimisation_table_by_hand():
    table = rr.reg_optimisation_table(fits_frame())
    # sorted by optimizer, lr, then raw before standardised, full batch before mini-batches
    assert table.select("lr", "standardize", "batch_size").rows() == [
        (0.1, False, None), (0.1, True, None), (0.1, True, 10), (1.0, True, None)
    ]  # fmt: skip
    std = _row(table, STD)
    assert (std["fits"], std["datasets"], std["converged"], std["converged_se"]) == (4, 2, 1.0, 0)
    assert std["steps_median"] == 135  # median of 120, 150, 130, 140
    assert std["gap_median"] == pytest.approx(1.5e-9)  # of 1, 2, 3, 1 e-9
    assert std["err_median"] == pytest.approx(0.0035)  # of 0.01, 0.003, 0.002, 0.004
    assert std["err_max"] == 0.01
    # 0.01 is not below 0.01: 3 of 4 within, SE sqrt(0.75 0.25 / 4)
    assert std["within_0.01se"] == 0.75
    assert std["within_0.01se_se"] == pytest.approx(math.sqrt(0.75 * 0.25 / 4))
    assert std["within_1se"] == 1.0
    raw = _row(table, RAW)
    assert (raw["max_steps"], raw["converged"], raw["steps_median"]) == (1.0, 0.0, None)
    assert raw["gap_median"] == pytest.approx(0.15) and raw["gap_max"] == pytest.approx(0.2)
    assert raw["within_1se"] == 0.0


def test_diverged_fits_are_left_out_of_gaps_and_errors_but_count_in_shares():
    div = _row(rr.reg_optimisation_table(fits_frame()), DIVERGING)
    # 3 of 4 diverged with a (finite) gap of 1e6: gaps and errors are the survivor's alone
    assert div["diverged"] == 0.75
    assert div["diverged_se"] == pytest.approx(math.sqrt(0.75 * 0.25 / 4))
    assert div["gap_median"] == div["gap_max"] == pytest.approx(4e-9)
    assert div["err_median"] == div["err_max"] == pytest.approx(1e-4)
    # ... but a diverged fit is never within, and scores as infinitely far
    assert div["within_0.01se"] == div["within_1se"] == 0.25
    assert div["err_median_all"] == math.inf


def test_optimisation_table_does_not_depend_on_row_order():
    fits = fits_frame()
    shuffled = fits.sample(fraction=1.0, shuffle=True, seed=3)
    assert rr.reg_optimisation_table(shuffled).equals(rr.reg_optimisation_table(fits))


def test_best_variant_is_the_closest_counting_divergence_as_infinitely_far():
    # lr 1 has the smallest median error among its survivors (1e-4) but 3 of 4 fits diverged;
    # scores: std 0.0035, raw 5, mini 0.5, lr 1 inf
    best = rr.reg_best_variant(rr.reg_optimisation_table(fits_frame()))
    assert best.select(*rr.VARIANT).rows() == [STD]
    assert best["err_median_all"][0] == pytest.approx(0.0035)


def test_best_variant_ties_go_to_converged_then_full_batch_then_smaller_lr():
    def table(rows):
        cols = ["scenario", "optimizer", "lr", "standardize", "batch_size", "err_median_all",
                "converged", "within_0.01se"]  # fmt: skip
        return pl.DataFrame(rows, schema=cols, orient="row").with_columns(
            pl.col("batch_size").cast(pl.Int64)
        )

    more_converged = table([
        ("a", "adam", 0.1, True, None, 0.5, 0.5, 0.0),
        ("a", "adam", 0.3, False, None, 0.5, 0.9, 0.0),
        ("b", "adam", 1.0, True, 10, 0.2, 1.0, 0.0),
        ("b", "adam", 3.0, True, None, 0.2, 1.0, 0.0),
        ("b", "adam", 0.3, True, None, 0.2, 1.0, 0.0),
    ])  # fmt: skip
    best = rr.reg_best_variant(more_converged)
    assert best.select("scenario", "lr", "standardize", "batch_size").rows() == [
        ("a", 0.3, False, None),
        ("b", 0.3, True, None),
    ]


def test_recovery_table_by_hand():
    table = rr.reg_recovery_table(coefs_frame(), fits_frame(), summary_frame(), level=0.95)
    assert table.select("part", "term").rows() == [("zero", "intercept"), ("count", "intercept")]
    zero, count = table.rows(named=True)
    # replicate 2's oracle did not converge: left out and counted
    assert (zero["datasets"], zero["excluded"], zero["gd_estimates"]) == (2, 1, 2)
    assert tuple(zero[c] for c in rr.VARIANT) == STD
    # oracle, zero intercept: errors -0.9 - -1 = 0.1 and -1.3 - -1 = -0.3
    assert zero["oracle_bias"] == pytest.approx(-0.1)
    assert zero["oracle_bias_se"] == pytest.approx(math.sqrt(0.08) / math.sqrt(2))  # sd 0.283
    assert zero["oracle_rmse"] == pytest.approx(math.sqrt((0.01 + 0.09) / 2))
    # |0.1| <= 1.96 * 0.1 covers, |-0.3| does not: 1 of 2, MC SE sqrt(0.25 / 2)
    assert zero["oracle_cover"] == 0.5
    assert zero["oracle_cover_se"] == pytest.approx(math.sqrt(0.25 / 2))
    # GD: best-NLL init per dataset at lr 0.1 standardised full batch: replicate 0 init 0
    # (0.01 SE above the oracle: -0.899), replicate 1 init 1 (0.004 SE: -1.2996)
    errors = [-0.899 + 1.0, -1.2996 + 1.0]
    assert zero["gd_bias"] == pytest.approx(sum(errors) / 2)
    assert zero["gd_rmse"] == pytest.approx(math.sqrt(sum(e * e for e in errors) / 2))
    # GD's SE is 0.2: both |errors| <= 1.96 * 0.2 = 0.392
    assert (zero["gd_cover"], zero["gd_cover_se"]) == (1.0, 0.0)
    assert zero["gd_err_mean"] == pytest.approx(0.007) and zero["gd_err_max"] == 0.01
    # count intercept: GD on the oracle; errors 0.02, -0.04 against 1.96 * 0.02 = 0.0392
    assert count["oracle_bias"] == pytest.approx(-0.01) == count["gd_bias"]
    assert count["oracle_rmse"] == pytest.approx(math.sqrt(0.001)) == count["gd_rmse"]
    assert count["oracle_cover"] == count["gd_cover"] == 0.5
    assert count["gd_err_max"] == 0.0


def test_recovery_table_same_with_optimizer_and_lr_already_on_the_coefficients():
    fits, coefs = fits_frame(), coefs_frame()
    key = ["trial", "scenario", "replicate", "init", "standardize", "batch_size"]
    wide = coefs.join(fits.select(*key, "optimizer", "lr"), on=key, nulls_equal=True)
    assert rr.reg_recovery_table(wide, fits, summary_frame()).equals(
        rr.reg_recovery_table(coefs, fits, summary_frame())
    )


def test_dataset_without_a_gd_estimate_is_a_coverage_miss():
    # at lr 1 replicate 1's inits all diverged: 1 GD estimate, coverage over both datasets
    best = pl.DataFrame(
        [("s", *DIVERGING)], schema=["scenario", *rr.VARIANT], orient="row"
    ).with_columns(pl.col("batch_size").cast(pl.Int64))
    table = rr.reg_recovery_table(coefs_frame(), fits_frame(), summary_frame(), best=best)
    zero = table.row(0, named=True)
    assert (zero["datasets"], zero["gd_estimates"]) == (2, 1)
    # replicate 0 init 0, 1e-4 SE above the oracle -0.9: covered by +- 1.96 * 0.2
    assert zero["gd_bias"] == pytest.approx(-0.9 + 1e-5 + 1.0)
    assert zero["gd_cover"] == 0.5 and zero["gd_cover_se"] == pytest.approx(math.sqrt(0.25 / 2))


def test_mini_batch_best_variant_is_used_when_asked():
    best = pl.DataFrame([("s", *MINI)], schema=["scenario", *rr.VARIANT], orient="row")
    table = rr.reg_recovery_table(coefs_frame(), fits_frame(), summary_frame(), best=best)
    assert table["batch_size"].to_list() == [10, 10]
    assert table["gd_err_max"].to_list() == [0.5, 0.0]
