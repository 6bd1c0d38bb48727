"""Counts near the 2**62 cap: exact totals, finite oracles, bounded searches, stable losses.

The audit's item 1: three counts of 4e18 made the int64 total wrap negative, the MLE of
lambda negative and the profile interval's outward search endless.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.core.descent.engine import histogram_nll
from pipeline.core.descent.likelihood import closed_form, sufficient_stats
from pipeline.core.histogram import Histogram
from pipeline.core.inference.profile import profile_intervals
from pipeline.core.oracle.mle import exact_mle

HUGE = 4 * 10**18  # below the 2**62 cap; three of them overflow int64 when summed


def _hist(values, freqs) -> Histogram:
    return Histogram(np.array(values, np.int64), np.array(freqs, np.int64))


def test_total_and_mean_are_exact_past_int64():
    hist = _hist([0, HUGE], [1, 3])
    assert hist.total == 3 * HUGE  # 1.2e19 > 2**63: int64 would wrap
    assert np.dot(hist.values, hist.freqs) < 0  # what the old arithmetic computed
    assert hist.mean == 3 * HUGE / 4
    assert hist.variance == pytest.approx(HUGE**2 / 4, rel=1e-12)  # (0.75² + 3·0.25²) H² / 3


def test_oracle_and_profile_are_finite_and_bounded_at_huge_counts():
    hist = _hist([0, HUGE], [1, 3])
    fit = exact_mle(hist)
    # one zero and three equal positives: lambda = the positive value, pi = 1/4 exactly
    # (P(0 | Poisson(4e18)) underflows, so every zero is structural)
    # Newton in log lambda stops within a few ulps: 1e-14 relative
    assert fit.lam == pytest.approx(HUGE, rel=1e-14) and fit.pi == pytest.approx(0.25)
    intervals = profile_intervals(hist, fit, 0.95)  # returns: the searches are bounded
    lo, hi = intervals["lambda"]
    assert lo < HUGE < hi and math.isfinite(hi)
    assert 0 < intervals["pi"][0] < 0.25 < intervals["pi"][1] < 1


def test_profile_refuses_a_non_finite_lambda():
    hist = _hist([0, 3], [1, 3])
    fit = exact_mle(hist)._replace(lam=float("nan"))
    with pytest.raises(ValueError, match="finite"):
        profile_intervals(hist, fit, 0.95)


@pytest.mark.parametrize("scale", [1.0, 1e6, 1e12, 1e18])
def test_closed_form_differences_keep_precision_at_any_scale(scale):
    """L(theta) - L(theta_ref) from the closed form equals the difference of per-value
    log-pmfs (each O(1) in Loader's form), to ~1e-9 relative of the difference itself."""
    values = torch.tensor([0.0, round(scale), round(1.5 * scale) + 1], dtype=torch.float64)
    freqs = torch.tensor([2.0, 3.0, 1.0], dtype=torch.float64)
    stats = sufficient_stats(values, freqs).unbind(-1)
    s = torch.tensor([0.0, 0.1], dtype=torch.float64)
    eta = torch.log(torch.tensor([1.2 * scale, 1.25 * scale], dtype=torch.float64))
    loss = closed_form(s, eta, stats)[0]
    reference = histogram_nll(values, freqs, s, eta, model="zip_autograd")
    diff, ref_diff = float(loss[1] - loss[0]), float(reference[1] - reference[0])
    assert diff == pytest.approx(ref_diff, rel=1e-9, abs=1e-12)
