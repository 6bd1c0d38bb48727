"""Choosing among the count families: the comparison table and a recommendation with reasons.

`compare` puts the fitted families side by side (log-likelihood, parameters k, AIC = 2k − 2ℓ,
BIC = k log n − 2ℓ) with a likelihood-ratio test per nested pair and Vuong's test per
non-nested pair (`model_tests`, where the references are); `recommend` turns that, and each
family's goodness of fit, into one choice with its reasons (rule in its docstring). Core layer:
numpy/scipy, pure functions, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from pipeline.core.inference.asymptotics import sample_size_floor
from pipeline.core.inference.goodness import gof_bound_p, screen_level
from pipeline.core.inference.model_tests import (
    TITLES,
    USABLE,
    LRTest,
    VuongTest,
    lr_test,
    pairs,
    vuong_test,
)
from pipeline.core.laws.count_terms import FAMILIES

TIE_BIC = 2.0  # |ΔBIC| below this is "not worth more than a bare mention" (Kass & Raftery 1995)


class ModelRow(NamedTuple):
    """One family in the comparison table (usable: its status is in `USABLE`)."""

    family: str
    loglik: float
    parameters: int
    aic: float
    bic: float
    status: str
    usable: bool


class Comparison(NamedTuple):
    """Rows in `FAMILIES` order, the tests, n, and whether Vuong's test was withheld (n below
    `asymptotics.sample_size_floor` of the largest model)."""

    rows: dict[str, ModelRow]
    lr_tests: list[LRTest]
    vuong_tests: list[VuongTest]
    n: float
    vuong_withheld: bool


class Recommendation(NamedTuple):
    """The chosen family (None when nothing is usable), why, the families it cannot be told
    apart from, whether every family misfits, and the level of the goodness-of-fit screen
    (`goodness.screen_level`; the report's misfit warning uses the same)."""

    family: str | None
    reasons: list[str]
    tied: tuple[str, ...] = ()
    all_misfit: bool = False
    screen: float = math.nan


def information_criteria(loglik: float, k: int, n: float) -> tuple[float, float]:
    """(AIC, BIC) = (2k − 2ℓ, k log n − 2ℓ) of a fit with k parameters on n observations."""
    return 2 * k - 2 * loglik, k * math.log(n) - 2 * loglik


def compare(fits: Mapping, per_obs_ll: Mapping[str, np.ndarray], weights, n: float,
            q_zero: int, *, intercept_only: bool = False) -> Comparison:  # fmt: skip
    """The comparison table and tests of the fitted families.

    Args:
        fits: family -> fit with `loglik`, `n_params` and `status` (an `oracle.fit.OracleFit`);
            families that failed are simply absent.
        per_obs_ll: family -> (rows,) per-row log-likelihoods (Vuong's test).
        weights: (rows,) frequency weights, or None.
        n: number of observations (the sum of the weights).
        q_zero: zero-part coefficients of the zero-inflated and hurdle families.
        intercept_only: both parts are an intercept only (a column of counts): the plain and
            zero-inflated models are then nested in the hurdles (`model_tests.pairs`).

    Returns:
        The `Comparison`; Vuong's test is withheld (NaN) below the sample-size floor.
    """
    rows = {}
    for family in FAMILIES:
        if family in fits:
            fit = fits[family]
            k, ll = int(fit.n_params), float(fit.loglik)
            rows[family] = ModelRow(family, ll, k, *information_criteria(ll, k, n), fit.status,
                                    fit.status in USABLE)  # fmt: skip
    nested, non_nested = pairs(intercept_only)
    lr = [lr_test(s, b, null, rows[s].loglik, rows[b].loglik, q_zero, rows[b].status)
          for s, b, null in nested if s in rows and b in rows]  # fmt: skip
    withheld = bool(rows) and n < sample_size_floor(max(r.parameters for r in rows.values()))
    vuong = []
    for a, b in non_nested:
        if a in rows and b in rows:
            test = vuong_test(a, b, per_obs_ll[a], per_obs_ll[b], weights, rows[a].parameters,
                              rows[b].parameters)  # fmt: skip
            if withheld and not test.identical:
                test = VuongTest(a, b, *[math.nan] * 6, None, False)
            vuong.append(test)
    return Comparison(rows, lr, vuong, float(n), withheld)


def _gof_p(gof: Mapping, family: str) -> float:
    """The lenient goodness-of-fit p of a family (`gof_bound_p`; a GofTest or its dict;
    just `p_value` when it has no statistic and groups; NaN when missing)."""
    g = gof.get(family)
    if g is None:
        return math.nan
    get = g.get if isinstance(g, Mapping) else lambda key: getattr(g, key, None)
    if get("statistic") is not None and get("groups") is not None:
        return gof_bound_p(get("statistic"), get("groups"))[0]
    return math.nan if get("p_value") is None else float(get("p_value"))


def _p(p: float) -> str:
    return "p < 1e-300" if p < 1e-300 else f"p = {p:.3g}"


def _lr_text(t: LRTest) -> str:
    return f"T = {t.statistic:.3g}, {_p(t.p_value)}, reference {t.reference}"


def _parsimony(c: Comparison, best: str, pool: list[str], alpha: float, reasons: list[str]):
    """Step down from `best` while an LR test does not confirm its extra parameters."""
    while True:
        below = [t for t in c.lr_tests if t.larger == best and t.smaller in pool]
        weak = [t for t in below if not t.p_value < alpha]
        if not weak:
            break
        t = min(weak, key=lambda t: c.rows[t.smaller].bic)
        reasons.append(f"the LR test does not confirm what the {TITLES[best]} adds to the "
                       f"{TITLES[t.smaller]} (H0 {t.null}: {_lr_text(t)}): the "
                       f"{TITLES[t.smaller]} is kept")  # fmt: skip
        best = t.smaller
    for t in below:
        reasons.append(f"LR test of the {TITLES[t.smaller]} (H0 {t.null}) against the "
                       f"{TITLES[best]}: {_lr_text(t)}: what the {TITLES[best]} adds is "
                       "needed")  # fmt: skip
    for t in c.lr_tests:  # never a test against a fit the screen has just excluded
        if t.smaller == best and t.larger in pool:
            verdict = "finds nothing to add"
            if t.p_value < alpha:
                verdict = ("rejects it, but BIC, at log(n) per parameter, still prefers the "
                           f"{TITLES[best]}")  # fmt: skip
            reasons.append(f"LR test of the {TITLES[best]} (H0 {t.null}) against the "
                           f"{TITLES[t.larger]}: {_lr_text(t)}: {verdict}")  # fmt: skip
    return best


def recommend(comparison: Comparison, gof: Mapping, level: float) -> Recommendation:
    """The family the numbers support, with its reasons.

    1. Screen: a usable family misfits when Pearson's X2 rejects even against chi2(G − 1)
       (`goodness.misfits`) at (1 − level)/m (`goodness.screen_level`), m the usable
       families (Bonferroni: the several families that contain the truth, e.g. NB, ZINB and
       hurdle NB on NB counts, are all screened out by chance with probability <= 1 − level,
       not each at that rate).
    2. The lowest BIC among the families that pass (among all usable ones when none passes:
       the least bad, said so).
    3. Stepped down while an LR test does not confirm what it adds to a nested family. Only
       tests between families that passed the screen are cited.
    4. Ties: families within |ΔBIC| < 2 of it, or that Vuong's test cannot tell from it.

    Args:
        comparison: from `compare`.
        gof: family -> Pearson test (`goodness.GofTest` or its dict): statistic and groups
            give the lenient p; with only `p_value`, that is used.
        level: e.g. 0.95; tests at 1 − level.

    Returns:
        The `Recommendation`, its reasons in the order they were applied.
    """
    alpha, rows = 1.0 - level, comparison.rows
    usable = [f for f, r in rows.items() if r.usable]
    reasons = [f"{TITLES[f]} not considered: its fit is {r.status}"
               for f, r in rows.items() if not r.usable]  # fmt: skip
    if not usable:
        return Recommendation(None, [*reasons, "no family has a usable fit"])
    screen = screen_level(level, len(usable))
    fitting = [f for f in usable if not _gof_p(gof, f) < screen]
    pool = fitting or usable
    low = min(rows[f].bic for f in pool)  # ties up to rounding go to the first in FAMILIES
    best = next(f for f in pool if rows[f].bic <= low + 1e-9 * max(1.0, abs(low)))
    rejected = ", ".join(f"{TITLES[f]} ({_p(_gof_p(gof, f))})" for f in usable
                         if f not in fitting)  # fmt: skip
    if not fitting:
        reasons.append(f"every family misfits at the {screen:.2g} level ({alpha:.2g}/"
                       f"{len(usable)}; Pearson, even against chi2(G - 1): {rejected}): "
                       f"none describes these counts; the least bad, by BIC, is the "
                       f"{TITLES[best]}")  # fmt: skip
    else:
        if rejected:
            reasons.append(f"goodness of fit rejects at the {screen:.2g} level ({alpha:.2g}/"
                           f"{len(usable)}), even against chi2(G - 1): {rejected}")  # fmt: skip
        reasons.append(f"lowest BIC among the families that fit: {TITLES[best]} "
                       f"({rows[best].bic:.2f})")  # fmt: skip
        lower = [f for f in usable if f not in fitting and rows[f].bic < rows[best].bic]
        if lower:
            reasons.append(f"lower BIC but misfitting: {', '.join(TITLES[f] for f in lower)}")
    best = _parsimony(comparison, best, pool, alpha, reasons)
    tied = []
    for f in pool:
        gap = abs(rows[f].bic - rows[best].bic)
        if f != best and gap < TIE_BIC:
            tied.append(f)
            same = any(t.statistic == 0 and {t.smaller, t.larger} == {f, best}
                       and rows[f].parameters == rows[best].parameters
                       for t in comparison.lr_tests)  # fmt: skip
            reasons.append(f"{TITLES[best]} and {TITLES[f]} are indistinguishable by BIC "
                           f"(|dBIC| = {gap:.2f} < {TIE_BIC:g})" + (
                           ": the same fitted distribution, parametrised differently"
                           if same else ""))  # fmt: skip
    for v in comparison.vuong_tests:
        other = v.second if v.first == best else v.first if v.second == best else None
        if other is None or other not in pool:
            continue
        pair = f"{TITLES[best]} and {TITLES[other]}"
        if v.identical:
            reasons.append(f"{pair} give the same probability to every observation: "
                           "the same distributions, parametrised differently")  # fmt: skip
        elif math.isnan(v.p_value):
            continue  # withheld
        elif not v.p_value < alpha:
            gap = rows[other].bic - rows[best].bic
            reasons.append(f"Vuong's test cannot tell {pair} apart (z = {v.statistic:.3g}, "
                           f"{_p(v.p_value)}): the data do not discriminate between their fits"
                           + (f"; BIC still prefers the {TITLES[best]} (by {gap:.1f})"
                              if gap >= TIE_BIC else ""))  # fmt: skip
        else:
            conflict = (f"; BIC still prefers the {TITLES[best]}: the closer fit does not pay "
                        "for its extra parameters") if v.favoured != best else ""  # fmt: skip
            reasons.append(f"Vuong's test favours the {TITLES[v.favoured]} (z = "
                           f"{v.statistic:.3g}, {_p(v.p_value)}, {pair}){conflict}")  # fmt: skip
            continue
        if other not in tied:
            tied.append(other)
    return Recommendation(best, reasons, tuple(f for f in FAMILIES if f in tied),
                          not fitting, screen)  # fmt: skip
