"""Every test and p-value of the `fit_counts` reports: χ² and normal tails in log space, Wald's z,
likelihood-ratio tests with their boundary references, Vuong's test; and which pairs of count
families are nested. The intercept-only ZIP report, the regression report and the comparison of
families (`model_choice`) all take their p-values from here.

Which pairs are nested (`pairs`): Poisson in NB, ZIP in ZINB, hurdle Poisson in hurdle NB
(α = 0); Poisson in ZIP, NB in ZINB (π = 0). When both parts are an intercept only (a column of
counts), the plain model is also the hurdle with P(0) = f(0), an interior point, and the
zero-inflated model is the hurdle with P(0) >= f(0) (the hurdle also allows fewer zeros): those
pairs are nested then, and non-nested (Vuong) only with covariates.

Likelihood ratio, T = 2(ℓ_larger − ℓ_smaller), references (Self & Liang 1987, JASA 82:605):
- α = 0 is on the boundary of α >= 0: T → ½χ²₀ + ½χ²₁, p = ½ P(χ²₁ >= T) (p = 1 at T = 0).
- π = 0 (logit π → −∞) likewise when the zero part is an intercept only (q = 1). With q > 1
  the null leaves the other zero-part coefficients unidentified (they multiply a vanishing π:
  Davies' problem): no exact reference. χ²_q is the customary one, conservative where the
  boundary mixture of χ²(0..q) applies, but with the nuisance coefficients unidentified the
  true law is that of a supremum over them: the test is flagged approximate.
- P(0) = f(0): interior, χ²₁. P(0) >= f(0): an inequality, ½χ²₀ + ½χ²₁ at its edge.

Vuong (1989, Econometrica 57:307): m_i = ℓ_1(y_i) − ℓ_2(y_i) with frequency weights w_i (a
histogram gives the same numbers as its expanded rows), z = Σ w m / (√n · sd_w(m)), z > 0
favours the first. One convention everywhere (`VUONG_P`): the p-value is two-sided,
P(|N(0,1)| >= |z|), Vuong's own test of H0 "equally close" with the direction read from the
sign of z; no direction is assumed beforehand, and p < level is then a test at that level.
pscl's `vuong()` prints, per line, the one-sided p in the direction z points to,
min(Φ(z), 1 − Φ(z)): half of ours. The AIC- and BIC-corrected z (Σ w m − (k₁ − k₂) or
− (k₁ − k₂) log(n)/2 in the numerator, as pscl) are kept beside it but not used to decide: when
two fits nearly coincide sd_w(m) → 0 and the correction alone drives z to absurd sizes (z = 12
for NB against a hurdle NB differing by 0.04 nats in all). Vuong's test is not valid for nested
or boundary pairs (Wilson 2015, Economics Letters 127:51), so the comparison of families never
runs it on them (the ZIP report shows it, with that caveat, as pscl does). Where m is 0 up to
rounding the pair is "identical".

log10 p comes from `chi2_logsf` / `norm.logsf`, finite where p underflows (scipy's
`chi2.logsf` is not: it turns -inf past x ≈ 1450). Core layer: numpy/scipy, pure functions,
no I/O.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import stats

TITLES = {"poisson": "Poisson", "nb": "NB", "zip": "ZIP", "zinb": "ZINB",
          "hurdle_poisson": "hurdle Poisson", "hurdle_nb": "hurdle NB"}  # fmt: skip
# (smaller, larger, the restriction the smaller one is): nested whatever the designs.
NESTED = (("poisson", "nb", "alpha = 0"), ("zip", "zinb", "alpha = 0"),
          ("hurdle_poisson", "hurdle_nb", "alpha = 0"), ("poisson", "zip", "pi = 0"),
          ("nb", "zinb", "pi = 0"))  # fmt: skip
# Nested only when both parts are an intercept (module docstring); else non-nested.
INTERCEPT_NESTED = (("poisson", "hurdle_poisson", "P(0) = f(0)"),
                    ("nb", "hurdle_nb", "P(0) = f(0)"), ("zip", "hurdle_poisson", "P(0) >= f(0)"),
                    ("zinb", "hurdle_nb", "P(0) >= f(0)"))  # fmt: skip
NON_NESTED = (("nb", "zip"),)  # overdispersion against excess zeros: never nested
USABLE = ("converged", "boundary")  # statuses a recommendation may rest on
_IDENTICAL = 1e-8  # weighted SD of m (nats) below which two fits are the same distribution
_ROUNDING = 1e-10  # relative size of a log-likelihood difference that is only rounding
_LN10 = math.log(10.0)
# The Vuong p convention in words, for every report ({first}: the model z > 0 favours).
VUONG_P = "two-sided p; z > 0 favours the {first}; pscl's one-sided p is half"


class Test(NamedTuple):
    """A test statistic, its p-value and log10 p-value (NaN when undefined); the log stays
    finite where p underflows to 0."""

    statistic: float
    p_value: float
    log10_p_value: float


class LRTest(NamedTuple):
    """Likelihood-ratio test of `smaller` (the restriction `null` holds) against `larger`."""

    smaller: str
    larger: str
    null: str
    statistic: float
    df: int
    reference: str
    p_value: float
    log10_p_value: float
    approximate: bool
    note: str


class VuongTest(NamedTuple):
    """Vuong's test of `first` against `second` (z > 0 favours `first`); NaN when withheld."""

    first: str
    second: str
    statistic: float  # z, uncorrected
    p_value: float  # two-sided (`VUONG_P`)
    log10_p_value: float
    bic_statistic: float  # z with the BIC correction, for reference
    bic_p_value: float
    bic_log10_p_value: float
    favoured: str | None  # by the sign of z; None when identical or withheld
    identical: bool


def pairs(intercept_only: bool) -> tuple[tuple, tuple]:
    """(nested pairs (smaller, larger, null), non-nested pairs (first, second))."""
    if intercept_only:
        return NESTED + INTERCEPT_NESTED, NON_NESTED
    return NESTED, NON_NESTED + tuple(p[:2] for p in INTERCEPT_NESTED)


def log_p_value(log_p: float) -> tuple[float, float]:
    """(p, log10 p) from the natural log of a p-value; the log stays finite far below the float
    range, where p itself underflows to 0 (NaN stays NaN)."""
    log_p = float(log_p)
    return (math.exp(log_p) if not math.isnan(log_p) else math.nan), log_p / _LN10


def chi2_logsf(x: float, df: float) -> float:
    """log P(chi2(df) >= x), finite far below the float range.

    scipy's `chi2.logsf` is log(sf): -inf once sf underflows (x > ~1450 at df = 1), and it
    loses digits where sf is subnormal. Below log p = -700 the upper incomplete gamma
    Γ(a, z), a = df/2, z = x/2, is evaluated in log space by its continued fraction (modified
    Lentz; Numerical Recipes 3rd ed. §6.2), which converges for z > a + 1.

    Args:
        x: the statistic (>= 0).
        df: degrees of freedom (> 0).

    Returns:
        The natural log of the p-value.
    """
    log_p = float(stats.chi2.logsf(x, df))
    a, z = df / 2.0, x / 2.0
    if log_p > -700.0 or not math.isfinite(x) or z <= a + 1:  # scipy is accurate there
        return log_p
    tiny = 1e-300
    b, c, d = z + 1.0 - a, 1.0 / tiny, 1.0 / (z + 1.0 - a)
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = b + an / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return -z + a * math.log(z) - math.lgamma(a) + math.log(h)


def chi2_p(statistic: float, df: float) -> tuple[float, float]:
    """(p, log10 p) of P(chi2(df) >= statistic) (`chi2_logsf`)."""
    return log_p_value(chi2_logsf(statistic, df))


def normal_two_sided(z: float) -> tuple[float, float]:
    """(p, log10 p) of P(|N(0, 1)| >= |z|); NaN for a z that is not finite."""
    if not math.isfinite(z):
        return math.nan, math.nan
    return log_p_value(math.log(2.0) + float(stats.norm.logsf(abs(z))))


def wald_test(estimate: float, se: float) -> Test:
    """Wald's z = estimate / SE with its two-sided normal p; NaN where the SE is not finite
    and positive (no numbers are made from such an SE)."""
    if not (math.isfinite(se) and se > 0 and math.isfinite(estimate)):
        return Test(math.nan, math.nan, math.nan)
    z = estimate / se
    return Test(z, *normal_two_sided(z))


def boundary_p(statistic: float, df: int = 1) -> tuple[float, float]:
    """(p, log10 p) of T against ½χ²₀ + ½χ²_df: ½ P(χ²_df >= T) for T > 0, 1 at T = 0."""
    if not statistic > 0:
        return 1.0, 0.0
    return log_p_value(chi2_logsf(statistic, df) - math.log(2.0))


def lr_test(smaller: str, larger: str, null: str, ll_small: float, ll_large: float,
            q_zero: int, status: str = "converged") -> LRTest:  # fmt: skip
    """The likelihood-ratio test of one nested pair (module docstring for the references).

    Args:
        smaller, larger: the families; null: the restriction (one of those in `pairs`).
        ll_small, ll_large: their maximised log-likelihoods.
        q_zero: zero-part coefficients (the df of the π = 0 test when > 1).
        status: the larger fit's status (a note when it is not usable).

    Returns:
        The `LRTest`; T is floored at 0 (a larger fit below the smaller one is noted).
    """
    diff = 2.0 * (ll_large - ll_small)
    # Below the rounding of the log-likelihoods, T is 0 (e.g. identical fits).
    stat, notes = (diff if diff > _ROUNDING * max(1.0, abs(ll_small)) else 0.0), []
    if diff < -1e-6 * max(1.0, abs(ll_small)):  # more than rounding: the fit fell short
        notes.append(f"the {TITLES[larger]} fit is below the {TITLES[smaller]} one "
                     f"(2 x difference {diff:.3g}): its optimum was not reached")  # fmt: skip
    if status not in USABLE:
        notes.append(f"the {TITLES[larger]} fit is {status}: T uses its last iterate")
    approximate = null == "pi = 0" and q_zero > 1
    if approximate:
        df, reference = q_zero, f"chi2({q_zero})"
        p, log10_p = chi2_p(stat, df)
        notes.append(f"with {q_zero} zero-part coefficients the null pi = 0 (logit pi -> -inf) "
                     "leaves the others unidentified, so no reference is exact; "
                     f"chi2({q_zero}) is the usual choice, conservative where the boundary "
                     f"mixture of chi2(0..{q_zero}) applies: read the p-value as "
                     "approximate")  # fmt: skip
    elif null == "P(0) = f(0)":
        df, reference = 1, "chi2(1)"
        p, log10_p = chi2_p(stat, 1)
    else:
        df, reference = 1, "0.5*chi2(0) + 0.5*chi2(1)"
        p, log10_p = boundary_p(stat)
    return LRTest(smaller, larger, null, stat, df, reference, p, log10_p, approximate,
                  "; ".join(notes))  # fmt: skip


def vuong_statistics(ll_first, ll_second, weights, extra: int) -> tuple[dict[str, Test], bool]:
    """Vuong's z, raw and AIC/BIC-corrected as pscl, each with its two-sided p (`VUONG_P`).

    z = (Σ w m − correction) / (√n · sd_w(m)), m_i = ℓ_1(y_i) − ℓ_2(y_i), n = Σ w, corrections
    0 (raw), `extra` (AIC) and `extra` · log(n)/2 (BIC), `extra` = k_1 − k_2.

    Args:
        ll_first, ll_second: (rows,) log P(Y_i = y_i) under each fit.
        weights: (rows,) frequency weights (None: ones): a histogram gives its expanded rows'.
        extra: parameters of the first fit minus those of the second.

    Returns:
        ({"raw", "aic", "bic"} -> `Test`, identical): all NaN when sd_w(m) < 1e-8 nats (the
        fits give every observation the same probability: `identical` True) or n < 2.
    """
    m = np.asarray(ll_first, float) - np.asarray(ll_second, float)
    w = np.ones_like(m) if weights is None else np.asarray(weights, float)
    n = float(w.sum())
    mean = float(w @ m) / n
    sd = math.sqrt(max(float(w @ (m - mean) ** 2) / (n - 1), 0.0)) if n > 1 else math.nan
    corrections = {"raw": 0.0, "aic": float(extra), "bic": extra * math.log(n) / 2}
    if not sd >= _IDENTICAL:  # NaN too
        return {k: Test(math.nan, math.nan, math.nan) for k in corrections}, sd < _IDENTICAL
    out = {}
    for key, corr in corrections.items():
        z = (n * mean - corr) / (math.sqrt(n) * sd)
        out[key] = Test(z, *normal_two_sided(z))
    return out, False


def vuong_test(first: str, second: str, ll_first, ll_second, weights, k_first: int,
               k_second: int) -> VuongTest:  # fmt: skip
    """Vuong's test of two non-nested fits from per-observation log-likelihoods.

    Args:
        first, second: the families.
        ll_first, ll_second: (rows,) log P(Y_i = y_i) under each fit.
        weights: (rows,) frequency weights (None: ones); n = their sum.
        k_first, k_second: parameters of each (the BIC-corrected z).

    Returns:
        The `VuongTest` (`vuong_statistics`); `identical` when sd_w(m) < 1e-8 nats.
    """
    z, identical = vuong_statistics(ll_first, ll_second, weights, k_first - k_second)
    raw, bic = z["raw"], z["bic"]
    favoured = first if raw.statistic > 0 else second if raw.statistic < 0 else None
    return VuongTest(first, second, *raw, *bic, favoured, identical)
