"""When large-sample inference holds: which interval to report, and whether n is enough.

`wald_or_profile` keeps the Wald interval estimate +- z SE only where the normal approximation
behind it is plausible. It hands over to the profile-likelihood interval, with the reason,
when the estimate sits on the edge of the parameter space (pi = 0: the estimator is not normal
there), when the SE is not finite, zero or wider than the parameter's whole range, when the
Wald interval and the likelihood-ratio test disagree about a boundary value (Wald excludes
pi = 0 while the LR test does not reject it at the report's level, or the reverse), or when the
Wald interval reaches past the edge of the parameter space (it would have to be clipped). The
profile interval stays inside the parameter space and follows the likelihood's own shape.

`sample_size_floor` is the n below which the report warns that its SEs, intervals and p-values
rest on approximations the data are too few for, and withholds Vuong's test.

Core layer: no I/O, no module state; model-agnostic (estimates, SEs and p-values in, choices out).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from scipy import stats

# n below which large-sample inference is not trusted, whatever the number of parameters: at
# n = 30 the t quantile t(29, 0.975) = 2.045 is within 4 % of the normal 1.960, and the
# intercept-only ZIP (2 parameters) has 15 counts per parameter.
MIN_N = 30
# Counts per estimated parameter: the events-per-variable rule for logistic regression
# (Peduzzi et al. 1996, J. Clin. Epidemiol. 49:1373), which the ZIP's zero part is.
PER_PARAMETER = 10


class Interval(NamedTuple):
    """The interval a report shows for one parameter, and why.

    Attributes:
        lower, upper: the interval (NaN when none is available).
        method: "wald", "profile", or "none" (no profile given and Wald not meaningful).
        wald: the Wald interval, clipped to the parameter space, or None where it is not
            meaningful.
        reason: why the Wald interval is not meaningful ("" when it is used).
    """

    lower: float
    upper: float
    method: str
    wald: tuple[float, float] | None
    reason: str


def sample_size_floor(parameters: int) -> int:
    """The least n for large-sample inference: max(`MIN_N`, `PER_PARAMETER` x parameters).

    Args:
        parameters: number of estimated parameters of the largest model in the report.

    Returns:
        The floor; a report on fewer counts warns and withholds Vuong's test.
    """
    return max(MIN_N, PER_PARAMETER * int(parameters))


def _wald_problem(estimate, se, z, lo, hi, null, null_p, alpha) -> str:
    """Why estimate +- z se is not a meaningful interval ("" when it is), in a few words."""
    if estimate in (lo, hi):
        return f"the estimate {estimate:.6g} is on the edge of [{lo:g}, {hi:g}]: not normal there"
    if not math.isfinite(se):
        return "its SE is not finite (singular information at the estimate)"
    if se <= 0:
        return "its SE is 0 (degenerate information at the estimate)"
    if math.isfinite(hi - lo) and se > hi - lo:
        return f"its SE {se:.3g} exceeds the whole range [{lo:g}, {hi:g}]"
    low, high = estimate - z * se, estimate + z * se
    if null is not None and null_p is not None and math.isfinite(null_p):
        excludes, rejects = not (low <= null <= high), null_p < alpha
        if excludes != rejects:
            return (f"Wald {'excludes' if excludes else 'includes'} {null:g} but the LR test "
                    f"{'rejects' if rejects else 'does not reject'} it at the {alpha:.2g} level "
                    f"(p = {null_p:.3g})")  # fmt: skip
    if low < lo or high > hi:
        return f"the Wald interval crosses the edge {lo if low < lo else hi:g} of [{lo:g}, {hi:g}]"
    return ""


def wald_or_profile(
    estimate: float,
    se: float,
    level: float,
    profile: tuple[float, float] | None = None,
    *,
    lo: float = -math.inf,
    hi: float = math.inf,
    null: float | None = None,
    null_p: float | None = None,
) -> Interval:
    """The Wald interval where it is meaningful, else the profile interval (module docstring).

    Args:
        estimate: the point estimate.
        se: its standard error (may be NaN, inf or 0).
        level: coverage, e.g. 0.95; the tests' level is 1 - level.
        profile: the profile-likelihood interval, or None where none is available.
        lo, hi: bounds of the parameter space.
        null: a boundary value tested by a likelihood-ratio test (pi = 0), or None.
        null_p: that test's p-value.

    Returns:
        The `Interval`: Wald (clipped to [lo, hi]) when meaningful, else the profile interval
        (or NaN limits and method "none" without one), with the reason.
    """
    estimate, se = float(estimate), float(se)
    z = float(stats.norm.ppf(0.5 + level / 2))
    if not math.isfinite(estimate):
        reason = "the estimate is not finite"
    else:
        reason = _wald_problem(estimate, se, z, lo, hi, null, null_p, 1.0 - level)
    if not reason:
        wald = (max(lo, estimate - z * se), min(hi, estimate + z * se))
        return Interval(*wald, "wald", wald, "")
    if profile is None:
        return Interval(math.nan, math.nan, "none", None, reason)
    return Interval(float(profile[0]), float(profile[1]), "profile", None, reason)
