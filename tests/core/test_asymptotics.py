"""Tests of `pipeline.core.inference.asymptotics`: which interval a parameter gets, and the
sample-size
floor. Every case is constructed so that the right choice is known."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from pipeline.core.inference.asymptotics import Interval, sample_size_floor, wald_or_profile

Z95 = stats.norm.ppf(0.975)
PROFILE = (0.1, 0.3)


def test_a_meaningful_wald_interval_is_kept():
    iv = wald_or_profile(0.4, 0.05, 0.95, PROFILE, lo=0.0, hi=1.0, null=0.0, null_p=1e-9)
    wald = (0.4 - Z95 * 0.05, 0.4 + Z95 * 0.05)
    assert iv == Interval(*wald, "wald", wald, "")
    # unconstrained coefficients without a profile: Wald
    assert wald_or_profile(-2.0, 0.5, 0.9).method == "wald"


@pytest.mark.parametrize(
    "estimate, se, extra, fragment",
    [
        (0.0, 0.01, {"lo": 0.0, "hi": 1.0}, "on the edge of [0, 1]"),  # pi-hat = 0
        (0.0, 0.0, {"lo": 0.0, "hi": 1.0}, "on the edge"),  # mean 1e5: SE 0, Wald [0, 0]
        (0.3, math.nan, {"lo": 0.0, "hi": 1.0}, "SE is not finite"),
        (0.3, math.inf, {}, "SE is not finite"),
        (0.3, 0.0, {"lo": 0.0, "hi": 1.0}, "SE is 0"),
        (0.3, 44.7, {"lo": 0.0, "hi": 1.0}, "SE 44.7 exceeds the whole range [0, 1]"),
        (0.001, 0.0447, {"lo": 0.0}, "crosses the edge 0 of [0, inf]"),
        (0.99, 0.02, {"lo": 0.0, "hi": 1.0}, "crosses the edge 1 of [0, 1]"),
    ],
)
def test_degenerate_cases_get_the_profile_interval_and_a_reason(estimate, se, extra, fragment):
    iv = wald_or_profile(estimate, se, 0.95, PROFILE, **extra)
    assert (iv.lower, iv.upper, iv.method, iv.wald) == (*PROFILE, "profile", None)
    assert fragment in iv.reason, iv.reason
    without = wald_or_profile(estimate, se, 0.95, None, **extra)  # nothing to hand over to
    assert without.method == "none" and math.isnan(without.lower) and without.wald is None


def test_wald_and_the_lr_test_disagreeing_about_the_boundary():
    # Wald excludes 0 (0.2 - 1.96 x 0.09 > 0) but the LR test does not reject pi = 0 at 5 %
    iv = wald_or_profile(0.2, 0.09, 0.95, PROFILE, lo=0.0, hi=1.0, null=0.0, null_p=0.08)
    assert iv.method == "profile"
    assert iv.reason == "Wald excludes 0 but the LR test does not reject it at the 0.05 level " \
        "(p = 0.08)"  # fmt: skip
    # Wald includes 0 (clipped) but the LR test rejects it: n = 2 counts {0, 5} gave this
    iv = wald_or_profile(0.4965, 0.356, 0.95, PROFILE, lo=0.0, hi=1.0, null=0.0, null_p=0.0205)
    assert iv.method == "profile" and iv.reason.startswith(
        "Wald includes 0 but the LR test rejects"
    )
    # agreement either way keeps Wald (the 90 % level tests at 0.1)
    assert wald_or_profile(0.2, 0.09, 0.9, PROFILE, lo=0.0, hi=1.0, null=0.0,
                           null_p=0.08).method == "wald"  # fmt: skip


def test_sample_size_floor():
    assert sample_size_floor(2) == 30  # the intercept-only ZIP: 30 counts
    assert sample_size_floor(3) == 30
    assert sample_size_floor(5) == 50  # 10 per parameter beyond that
