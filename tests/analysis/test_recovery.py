"""Unit tests of `pipeline.analysis.recovery` on small hand-made tables (`recovery_frames`)
with answers worked out by hand."""

import math

import numpy as np
import polars as pl
import pytest
import scipy.stats
from recovery_frames import fits_frame, summary_frame

from pipeline.analysis import recovery
from pipeline.core.histogram import histogram
from pipeline.core.mle import exact_mle


def brute_force_lambda_se(pi: float, lam: float, n: int) -> float:
    """SE of lambda-hat from the expected information summed over counts 0..199 (scipy pmf).

    Per observation I = sum_k p(k) score(k) score(k)^T with scores in (pi, lambda):
    k = 0: ((1 - e) / p0, -(1 - pi) e / p0), e = exp(-lambda); k > 0: (-1 / (1 - pi), k / lambda
    - 1). The tail beyond 199 has probability below 1e-100 for the rates used here.
    """
    k = np.arange(200)
    e = math.exp(-lam)
    p = (1 - pi) * scipy.stats.poisson.pmf(k, lam)
    p[0] += pi
    score = np.stack([np.full(200, -1 / (1 - pi)), k / lam - 1])
    score[:, 0] = [(1 - e) / p[0], -(1 - pi) * e / p[0]]
    info = (p * score) @ score.T
    return math.sqrt(np.linalg.inv(info)[1, 1] / n)


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


def test_statistics_table_bias_rmse_and_coverage_by_hand():
    stats = recovery.statistics_table(fits_frame(), summary_frame(), level=0.95)
    assert stats.select("lr", "parameter").rows() == [
        (0.1, "pi"),
        (0.1, "lambda"),
        (1.0, "pi"),
        (1.0, "lambda"),
    ]
    pi_slow = stats.filter((pl.col("lr") == 0.1) & (pl.col("parameter") == "pi")).row(0, named=True)
    est = np.array([0.49, 0.50, 0.003])
    assert pi_slow["datasets"] == 3 and pi_slow["estimates"] == 3
    assert pi_slow["bias"] == pytest.approx(est.mean() - 0.5)
    assert pi_slow["sd"] == pytest.approx(est.std(ddof=1))
    assert pi_slow["bias_se"] == pytest.approx(est.std(ddof=1) / math.sqrt(3))
    assert pi_slow["rmse"] == pytest.approx(math.sqrt(((est - 0.5) ** 2).mean()))
    mle = np.array([0.49, 0.50, 0.0])
    assert pi_slow["mle_bias"] == pytest.approx(mle.mean() - 0.5)
    assert pi_slow["mle_rmse"] == pytest.approx(math.sqrt(((mle - 0.5) ** 2).mean()))
    assert pi_slow["boundary"] == pytest.approx(1 / 3)
    # n var(pi) = (1 - pi)(pi (1 - lam e) + (1 - pi) e) / (1 - e (1 + lam)), e = exp(-lam):
    # SE at (0.49, 5) is 0.0050347, so 0.49 misses 0.5 by 0.01 > 1.96 SE = 0.00987; 0.50 hits;
    # 0.003 (and the MLE's 0) miss by far.
    e = math.exp(-5.0)
    se = math.sqrt(0.51 * (0.49 * (1 - 5 * e) + 0.51 * e) / (1 - 6 * e) / 10_000)
    assert 1.96 * se < 0.01 < 2.0 * se
    assert pi_slow["cover"] == pytest.approx(1 / 3)
    assert pi_slow["cover_se"] == pytest.approx(math.sqrt(2 / 9 / 3))
    assert pi_slow["mle_cover"] == pytest.approx(1 / 3)
    # logit scale: 0.49 misses (0.0400 > 1.96 x 0.02015); the boundary MLE (pi = 0) has no
    # logit SE and counts as a miss
    assert pi_slow["mle_cover_log"] == pytest.approx(1 / 3)
    lam_fast = stats.filter((pl.col("lr") == 1.0) & (pl.col("parameter") == "lambda")).row(
        0, named=True
    )
    assert lam_fast["datasets"] == 3 and lam_fast["estimates"] == 2
    # Dataset 0 (5.0) hits the truth 5 exactly; dataset 1 (5.1 at pi 0.5) misses by 0.1 > 1.96
    # SE (SE 0.0324); every init of dataset 2 diverged: no estimate, so it counts as a miss.
    assert 0.1 > 1.96 * brute_force_lambda_se(0.5, 5.1, 10_000) > 0.05
    assert lam_fast["cover"] == pytest.approx(1 / 3)
    assert lam_fast["cover_se"] == pytest.approx(math.sqrt(2 / 9 / 3))
    assert lam_fast["bias"] == pytest.approx((0.0 + 0.1) / 2)


def test_wald_se_matches_the_exact_mle_standard_errors():
    rng = np.random.default_rng(3)
    y = rng.binomial(1, 0.7, 5000) * rng.poisson(2.0, 5000)
    fit = exact_mle(histogram(y))
    se_pi, se_lam = recovery.wald_se([fit.pi], [fit.lam], [fit.n], "natural")
    se_s, se_eta = recovery.wald_se([fit.pi], [fit.lam], [fit.n], "logit")
    assert se_pi[0] == pytest.approx(fit.se_pi, rel=1e-10)
    assert se_lam[0] == pytest.approx(fit.se_lam, rel=1e-10)
    assert se_s[0] == pytest.approx(fit.se_logit_pi, rel=1e-10)
    assert se_eta[0] == pytest.approx(fit.se_log_lam, rel=1e-10)


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
