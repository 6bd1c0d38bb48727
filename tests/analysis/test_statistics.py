"""Unit tests of `pipeline.analysis.statistics` on hand-made tables with answers worked out by
hand, and its Wald standard errors against the exact MLE's closed form."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import scipy.stats
from recovery_frames import fits_frame, summary_frame

from pipeline.analysis import statistics
from pipeline.core.histogram import histogram
from pipeline.core.oracle.mle import exact_mle


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


def test_statistics_table_bias_rmse_and_coverage_by_hand():
    stats = statistics.statistics_table(fits_frame(), summary_frame(), level=0.95)
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
    se_pi, se_lam = statistics.wald_se([fit.pi], [fit.lam], [fit.n], "natural")
    se_s, se_eta = statistics.wald_se([fit.pi], [fit.lam], [fit.n], "logit")
    assert se_pi[0] == pytest.approx(fit.se_pi, rel=1e-10)
    assert se_lam[0] == pytest.approx(fit.se_lam, rel=1e-10)
    assert se_s[0] == pytest.approx(fit.se_logit_pi, rel=1e-10)
    assert se_eta[0] == pytest.approx(fit.se_log_lam, rel=1e-10)
