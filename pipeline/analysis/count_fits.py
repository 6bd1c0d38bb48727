"""`fit_counts`' fits of users' counts: pure functions of one `FitData` and its fits.

One path for every input: a column of counts is its histogram (the ones-design, K distinct
values with their frequencies as weights), a formula is its design with its offsets; either
may carry the user's frequency weights. `fit_families` fits the requested family (for the ZIP
also its Poisson, so the likelihood-ratio and Vuong comparison stays) or all six by the
float64 Newton oracle (`core.oracle.fit`), with per-row log-likelihoods, expected frequencies
on rows chosen from the counts, Pearson's goodness-of-fit test, the comparison and (family
"all") the recommendation. For the ZIP, `closed_form` adds the exact closed form with
profile-likelihood intervals where the model is intercept-only, and `descend` fits it by
gradient descent from seeded random starts (best kept), judged against the oracle in its
standard errors (`descent_summary`). With random intercepts, `fit_mixed_families` fits the
families by the quadrature oracle and `mixed_descent` the one asked for by gradient descent
on the same likelihood (`mixed_descent_summary`).

Descent. The intercept-only ZIP on a histogram runs on the sufficient-statistics engine
(`core.descent.engine.fit_zip`, its fast path): starts π₀ ~ U(0.05, 0.95), λ₀ = (mean of
the positive counts) × 4^U(−1, 1). Any other design runs on the design engine
(`core.descent.design_engine.fit_designs`) with weights and offsets; with
`fit_counts.standardize` every non-constant column is scaled to unit SD and centred where its
part has an intercept (`scaling`), and every coefficient starts at N(guess, 0.5²) on that
scale: guess = log(mean of the positive counts) − their mean count offset for the count
intercept, 0 for every other coefficient (zero-part intercept 0: π = 1/2). A slope of 0.5 then
moves log λ or logit π by 0.5 per SD of its column, whatever the covariates' units.
Core and numpy only; no I/O.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from pipeline.core.descent.mixed_engine import fit_mixed_gd
from pipeline.core.descent.outcome import StopRule
from pipeline.core.errors import NotIdentifiableError
from pipeline.core.histogram import Histogram
from pipeline.core.inference import goodness, profile
from pipeline.core.inference import intercept as intercept_tests
from pipeline.core.inference.asymptotics import Interval, wald_or_profile
from pipeline.core.inference.model_choice import (
    Comparison,
    Recommendation,
    compare,
    information_criteria,
    recommend,
)
from pipeline.core.inference.model_tests import TITLES, vuong_statistics
from pipeline.core.laws.count_cdf import binned_expected
from pipeline.core.model import FAMILIES, FitData
from pipeline.core.model import family as family_of
from pipeline.core.oracle.fit import OracleFit, fit_model
from pipeline.core.oracle.mixed import (
    MixedFit,
    default_nodes,
    fit_mixed,
    mixed_problem,
    sigma_profile,
    sigma_test,
)
from pipeline.core.oracle.mle import exact_mle
from pipeline.core.oracle.terms import loglik_terms, zero_design

START_SD = 0.5  # spread of the random starts per coefficient, on the standardised scale


@dataclasses.dataclass(frozen=True)
class FamilyFits:
    """The fits of one `fit_families` call.

    Attributes:
        fits: family -> its `OracleFit`, or the reason its fit failed (a string).
        ll: family -> (rows,) per-row log-likelihoods (fitted families).
        expected: family -> expected frequency per frequency row (fitted families).
        gof: family -> `gof_entry` (fitted families).
        starts, observed: the frequency rows' lower edges and observed frequencies.
        comparison: `model_choice.Comparison` of the fitted families.
        recommendation: `model_choice.Recommendation` (family "all"), else None.
    """

    fits: dict
    ll: dict
    expected: dict
    gof: dict
    starts: np.ndarray
    observed: np.ndarray
    comparison: Comparison
    recommendation: Recommendation | None

    def fitted(self) -> dict[str, OracleFit]:
        return {f: fit for f, fit in self.fits.items() if not isinstance(fit, str)}


def data_summary(data: FitData) -> dict:
    """n, zeros, their share, mean, variance (n − 1) and max of the weighted counts."""
    y, w = data.y, data.weights
    n = float(w.sum())
    mean = float(w @ y) / n
    var = float(w @ (y - mean) ** 2) / (n - 1) if n > 1 else math.nan
    zeros = float(w[y == 0].sum())
    whole = float(n).is_integer() and float(zeros).is_integer()
    return {"n": int(n) if whole else n, "zeros": int(zeros) if whole else zeros,
            "zero_share": zeros / n, "mean": mean, "variance": var,
            "max": int(y[w > 0].max())}  # fmt: skip


def frequency_bins(data: FitData) -> tuple[np.ndarray, np.ndarray]:
    """The table's row edges (`goodness.count_bins`) and the weighted frequency per row."""
    values, inverse = np.unique(data.y, return_inverse=True)
    freqs = np.bincount(inverse, weights=data.weights)
    keep = freqs > 0
    rounded = freqs.round()
    # Whole frequencies stay integers (the table prints them so); fractional weights stay.
    freqs = rounded.astype(np.int64) if np.allclose(freqs, rounded, rtol=0, atol=1e-9) else freqs
    starts = goodness.count_bins(values[keep], freqs[keep])
    return starts, goodness.bin_observed(values[keep], freqs[keep], starts)


def gof_entry(observed, expected, parameters: int) -> dict:
    """Pearson's test of one model over the frequency rows (`goodness.pearson_test`) as a dict:
    statistic, df, p_value, log10_p_value, groups, parameters, poor_reference, reference."""
    test = goodness.pearson_test(observed, expected, parameters)
    return {**test._asdict(), "reference": f"chi2({test.df})"}


def fit_family(family: str, data: FitData, starts, observed) -> dict:
    """One family: its fit, per-row log-likelihoods, expected rows and Pearson's test.

    Returns:
        {"fit", "ll", "expected", "gof"}, or {"error": why} when the fit or one of its
        summaries failed (a bad design for this family, a numerical failure).

    Raises:
        NotIdentifiableError: every count is zero (no family is identifiable then).
    """
    try:
        fit = fit_model(family, data)
        ll = loglik_terms(family, data, fit.params)
        expected = binned_expected(family, *_offset_columns(fit, data), starts, data.weights)
    except NotIdentifiableError:
        raise
    except (ValueError, ArithmeticError, np.linalg.LinAlgError) as err:
        return {"error": f"{type(err).__name__}: {err}"}
    return {"fit": fit, "ll": ll, "expected": expected,
            "gof": gof_entry(observed, expected, fit.n_params)}  # fmt: skip


def _offset_columns(fit: OracleFit, data: FitData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, Z, params) with each part's offset as one more column whose coefficient is 1: the
    same linear predictors, so every law of `core.laws` takes offsets unchanged."""
    X, Z = data.X, zero_design(fit.family, data)
    gamma, rest = fit.params[: fit.q], fit.params[fit.q + X.shape[1] :]
    beta = fit.params[fit.q : fit.q + X.shape[1]]
    if Z.shape[1] and data.offset_z.any():
        Z, gamma = np.column_stack([Z, data.offset_z]), np.r_[gamma, 1.0]
    if data.offset_x.any():
        X, beta = np.column_stack([X, data.offset_x]), np.r_[beta, 1.0]
    return X, Z, np.concatenate([gamma, beta, rest])


def families_for(family: str) -> tuple[str, ...]:
    """The families fitted for `--family family`: all six, the ZIP with its Poisson, or one."""
    if family == "all":
        return FAMILIES
    return ("zip", "poisson") if family == "zip" else (family,)


# Seconds of the Newton fits per row and squared parameter count, summed over families: on
# these 2 cores `fit_counts` of 200,000 rows x 20 normal covariates in both parts, FAMILY=all
# (sum of k^2 = 8,151), took 27.5 s with ~2.5 s of start-up; 20,000 rows took 6.5 s. A
# factor of 2 either way is what the cost line claims (iterations vary with the data).
SECONDS_PER_ROW_K2 = 1.6e-8


def parameter_count(family: str, data: FitData) -> int:
    """How many parameters `family` has on `data`'s designs."""
    fam = family_of(family)
    return data.X.shape[1] + (data.Z.shape[1] if fam.zero else 0) + int(fam.dispersion)


def fit_seconds(data: FitData, families: tuple[str, ...]) -> float:
    """A rough estimate of the seconds `fit_families` takes (each Newton iteration costs
    rows x parameters^2; about a dozen iterations per family), for the cost line."""
    k2 = sum(parameter_count(f, data) ** 2 for f in families)
    return SECONDS_PER_ROW_K2 * len(data.y) * k2


def fit_families(data: FitData, family: str, level: float,
                 on_family: Callable[[str], None] | None = None) -> FamilyFits:  # fmt: skip
    """Fit, compare and (family "all") recommend.

    Args:
        data: the rows, designs, weights and offsets.
        family: "all" or one of `core.model.FAMILIES`.
        level: coverage; tests at 1 − level.
        on_family: called with each family's name once it is fitted (progress).

    Returns:
        The `FamilyFits`; `fits` holds a reason string for a family whose fit failed.

    Raises:
        NotIdentifiableError: every count is zero.
        ValueError: no family could be fitted (its message names each reason).
    """
    starts, observed = frequency_bins(data)
    results = {}
    for f in families_for(family):
        results[f] = fit_family(f, data, starts, observed)
        if on_family is not None:
            on_family(f)
    ok = {f: r for f, r in results.items() if "error" not in r}
    if not ok:
        why = "; ".join(f"{TITLES[f]}: {r['error']}" for f, r in results.items())
        raise ValueError(f"no count family could be fitted ({why})")
    comparison = compare({f: r["fit"] for f, r in ok.items()}, {f: r["ll"] for f, r in ok.items()},
                         data.weights, float(data.weights.sum()), data.Z.shape[1],
                         intercept_only=data.intercept_only)  # fmt: skip
    gof = {f: r["gof"] for f, r in ok.items()}
    rec = recommend(comparison, gof, level) if family == "all" else None
    return FamilyFits(
        fits={f: r.get("fit", r.get("error")) for f, r in results.items()},
        ll={f: r["ll"] for f, r in ok.items()},
        expected={f: r["expected"] for f, r in ok.items()},
        gof=gof, starts=starts, observed=observed, comparison=comparison, recommendation=rec,
    )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class MixedFits:
    """The fits of one `fit_mixed_families` call (families in `families_for` order).

    Attributes:
        fits: family -> its `MixedFit`, or why it was not fitted (a string).
        fixed: family -> the same family without random intercepts (`OracleFit`) or why not.
        tests: family -> part -> the LR test of σ = 0 (`model_tests.Test`).
        criteria: family -> (AIC, BIC) of the mixed fit.
        best: the family of lowest BIC among the usable mixed fits, or None.
        profiles: family -> part -> the profile-likelihood interval (lower, upper) of σ
            (`oracle.mixed.sigma_profile`), for the family the report details (the best,
            or the one asked for); the others' σ, and a σ whose profile fits did not
            converge, get Wald intervals on log σ.
    """

    fits: dict[str, MixedFit | str]
    fixed: dict[str, OracleFit | str]
    tests: dict[str, dict]
    criteria: dict[str, tuple[float, float]]
    best: str | None
    profiles: dict[str, dict[str, tuple[float, float]]] = dataclasses.field(default_factory=dict)


# Seconds per quadrature point (row x K^d) of one mixed fit, Newton to convergence with its
# Hessians: on these cores Salamanders' ZIP (644 rows) took 0.21 s at 25 points (1.3e-5) and
# 2.0 s at 30 x 30 (3.4e-6). A factor of 3 either way is what the cost line claims.
SECONDS_PER_POINT = 1e-5
# A profile interval of σ costs ~6 fits' worth per part (12 warm-started fits of 1-4 Newton
# steps: 1.0-1.1 s on Salamanders' ZIP against 0.21 s for its fit).
PROFILE_FITS = 6
# Gradient descent on the quadrature likelihood (a family asked for by name): ~1e-7 s per
# row x point x step x start (Salamanders' ZIP: 0.48 s per start at 25 points and 294 steps,
# benchmarks/README.md), and ~400 steps to converge.
DESCENT_POINT_STEP = 1e-7
DESCENT_STEPS = 400


def mixed_seconds(data: FitData, parts: tuple[str, ...], family: str, inits: int = 8) -> float:
    """A rough estimate of the seconds `fit_mixed_families` takes (for the cost line)."""
    total, profiled = 0.0, 0.0
    for fam in families_for(family):
        own = [p for p in parts if p == "count" or family_of(fam).zero is not None]
        if own:
            points = data.n * default_nodes(data.n, len(own)) ** len(own)
            one = data.n * default_nodes(data.n, 1)
            total += points + (len(own) > 1) * len(own) * one  # the σ tests refit each part
            profiled = max(profiled, PROFILE_FITS * len(own) * points)  # one family's
            if family != "all":  # its descent: fit_counts.inits starts, ~DESCENT_STEPS each
                total += DESCENT_POINT_STEP / SECONDS_PER_POINT * DESCENT_STEPS * points * inits
    return SECONDS_PER_POINT * (total + profiled)


def check_groups(data: FitData, groups) -> None:
    """Refuse groups that cannot carry a random intercept (one level, every level one row).

    Raises:
        ValueError: from `oracle.mixed.mixed_problem`'s checks.
    """
    mixed_problem("poisson", data, groups, ("count",))


def fit_mixed_families(data: FitData, groups, parts: tuple[str, ...], family: str,
                       on_family: Callable[[str], None] | None = None,
                       level: float = 0.95) -> MixedFits:  # fmt: skip
    """The requested families with Gaussian random intercepts per level of `groups`
    (`core.oracle.mixed`, exact adaptive quadrature), each beside its fit without them and
    the LR test of σ = 0 per random part (½χ²₀ + ½χ²₁), and the profile interval of each σ
    at `level` for the family the report details (`MixedFits.profiles`). A family without a
    zero part takes only the count part's random intercept (none if only the zero part has
    one: not fitted).

    Raises:
        ValueError: groups that cannot carry a random intercept (one level, every level one
            row), before any fit.
    """
    check_groups(data, groups)
    fits, fixed, tests, criteria = {}, {}, {}, {}
    n = float(data.weights.sum())
    for fam in families_for(family):
        own = tuple(p for p in parts if p == "count" or family_of(fam).zero is not None)
        if not own:
            fits[fam] = fixed[fam] = "it has no zero part for the zero part's random intercept"
            continue
        try:
            fit = fit_mixed(fam, data, groups, own)
            base = fit_model(fam, data)
        except (ValueError, NotIdentifiableError) as err:
            fits[fam] = fixed[fam] = str(err)
            continue
        fits[fam], fixed[fam] = fit, base
        criteria[fam] = information_criteria(fit.loglik, fit.n_params, n)
        # With one part the model without it is the fixed-effects fit, already here.
        without = base.loglik if len(own) == 1 else None
        tests[fam] = {part: sigma_test(fit, data, groups, part, without) for part in own}
        if on_family is not None:
            on_family(fam)
    usable = [f for f, fit in fits.items() if not isinstance(fit, str)
              and fit.status in ("converged", "boundary")]  # fmt: skip
    best = min(usable, key=lambda f: criteria[f][1]) if usable else None
    detail = best if family == "all" else family
    profiles = {}
    if detail in usable:
        profiles[detail] = {}
        for part in fits[detail].parts:
            try:
                profiles[detail][part] = sigma_profile(fits[detail], data, groups, part, level)
            except RuntimeError:  # a profile fit that did not converge: Wald instead
                continue
    return MixedFits(fits, fixed, tests, criteria, best, profiles)


def zip_vuong(fits: FamilyFits, data: FitData) -> tuple[dict, bool]:
    """Vuong's z of the ZIP against its Poisson, raw and AIC/BIC-corrected (pscl's `vuong`),
    shown with its caveat: the pair is nested on the boundary π = 0, where the test is not
    valid (`model_choice.compare` never runs it on such a pair).

    Returns:
        ({"raw", "aic", "bic"} -> `Test` as dicts, identical).
    """
    extra = fits.fits["zip"].n_params - fits.fits["poisson"].n_params
    tests, identical = vuong_statistics(fits.ll["zip"], fits.ll["poisson"], data.weights, extra)
    return {k: t._asdict() for k, t in tests.items()}, identical


def histogram_of(data: FitData) -> Histogram | None:
    """The histogram of intercept-only data whose weights are whole numbers, else None."""
    if not data.intercept_only:
        return None
    w = data.weights
    if not np.allclose(w, w.round(), rtol=0, atol=1e-9):
        return None
    values, inverse = np.unique(data.y.astype(np.int64), return_inverse=True)
    freqs = np.bincount(inverse, weights=w).round().astype(np.int64)
    keep = freqs > 0
    return Histogram(values[keep], freqs[keep])


def interval_entry(iv: Interval) -> dict:
    """The interval a parameter gets: limits, method and why not Wald."""
    return {"lower": iv.lower, "upper": iv.upper, "method": iv.method, "reason": iv.reason}


def closed_form(hist: Histogram, level: float, lr_p: float) -> dict:
    """The intercept-only ZIP and Poisson in closed form, with Wald and profile intervals.

    Each parameter gets the interval `asymptotics.wald_or_profile` chooses ("interval", with
    the reason when it is not Wald; "wald" is None then).

    Args:
        hist: the counts.
        level: interval coverage.
        lr_p: the likelihood-ratio p-value of π = 0 (decides the π interval at the boundary).

    Returns:
        {"zip": π̂, λ̂, SEs on both scales, boundary, wald, profile, interval;
         "poisson": λ̂ and the same; "notes": [...]}.
    """
    mle, pois, n = exact_mle(hist), intercept_tests.fit_poisson(hist), hist.n
    prof = profile.profile_intervals(hist, mle, level)
    prof_pois = profile.poisson_interval(n, float(hist.total), level)
    ivs = {
        "pi": wald_or_profile(
            mle.pi, mle.se_pi, level, prof["pi"], lo=0.0, hi=1.0, null=0.0, null_p=lr_p
        ),  # fmt: skip
        "lambda": wald_or_profile(mle.lam, mle.se_lam, level, prof["lambda"], lo=0.0),
    }
    iv_pois = wald_or_profile(pois.lam, pois.se_lam, level, prof_pois, lo=0.0)
    notes = []
    if mle.boundary:
        zeros = int(hist.freqs[hist.values == 0].sum())
        expected = n * math.exp(-pois.lam)
        notes.append(
            f"{zeros} zeros observed, {expected:.1f} expected under a Poisson with the same "
            "mean: no excess zeros, so the MLE is on the boundary pi = 0, lambda = mean (the "
            "ZIP reduces to the Poisson; LR statistic 0, p = 1; the lower limits for pi are 0)"
        )  # fmt: skip
    return {
        "zip": {"pi": mle.pi, "lambda": mle.lam, "se_pi": mle.se_pi, "se_lambda": mle.se_lam,
                "se_logit_pi": mle.se_logit_pi, "se_log_lambda": mle.se_log_lam,
                "boundary": mle.boundary, "nll": mle.nll,
                "wald": {key: iv.wald for key, iv in ivs.items()}, "profile": prof,
                "interval": {key: interval_entry(iv) for key, iv in ivs.items()}},
        "poisson": {"lambda": pois.lam, "se_lambda": pois.se_lam, "nll": pois.nll,
                    "wald": {"lambda": iv_pois.wald}, "profile": {"lambda": prof_pois},
                    "interval": {"lambda": interval_entry(iv_pois)}},
        "notes": notes,
    }  # fmt: skip


def scaling(M: np.ndarray, standardize: bool) -> np.ndarray:
    """(k, k) T such that M T has standardised columns and M beta = (M T) T^-1 beta.

    Non-constant columns are scaled to unit SD and, when M has an all-ones column, centred
    (the intercept absorbs the means); an original-scale coefficient vector is T times the
    fitting-scale one. Identity when `standardize` is False.
    """
    T = np.eye(M.shape[1])
    if not standardize:
        return T
    ones, sd = (M == 1).all(0), M.std(0)
    slope = np.flatnonzero(~ones & (sd > 0))
    T[slope, slope] = 1.0 / sd[slope]
    if ones.any():
        T[int(np.argmax(ones)), slope] = -M.mean(0)[slope] / sd[slope]
    return T


def design_starts(data: FitData, rng: np.random.Generator, inits: int) -> np.ndarray:
    """`inits` random starts [gamma, beta] on the fitting scale (see the module docstring).

    Args:
        data: the data (a positive count among the rows with weight: the oracle checked).
        rng: the `fit_counts` stream of the seed tree.
        inits: number of starts.

    Returns:
        (inits, q + p) array.
    """
    pos = (data.y > 0) & (data.weights > 0)
    w = data.weights[pos]
    guess = float(np.log(w @ data.y[pos] / w.sum()) - w @ data.offset_x[pos] / w.sum())
    parts = []
    for M, centre_value in ((data.Z, 0.0), (data.X, guess)):
        centre = np.zeros(M.shape[1])
        centre[(M == 1).all(0)] = centre_value  # the intercept, if the part has one
        parts.append(rng.normal(centre, START_SD, (inits, M.shape[1])))
    return np.concatenate(parts, axis=1)


def mixed_descent(data: FitData, groups, fit, fc, rule: StopRule, rng: np.random.Generator,
                  callback: Callable | None = None):  # fmt: skip
    """A family with random intercepts fitted by gradient descent on the oracle's quadrature
    likelihood (`core.descent.mixed_engine`, the oracle's nodes), from `fc.inits` random
    starts: the fixed effects as `design_starts` (on the `scaling` scale), log α and each
    log σ ~ N(0, START_SD²), drawn in that order.

    Args:
        data, groups: the rows and their group labels; fit: the family's `MixedFit`.
        fc: the `fit_counts` settings (inits, lr, optimizer, standardize); rule: the stop rule.
        rng: the `fit_counts` stream of the seed tree; callback: the engine's chunk callback.

    Returns:
        The `FitResult` on the original scale, one row per start.
    """
    zero = fit.family.zero is not None
    Tz = scaling(data.Z, fc.standardize) if zero else np.eye(0)
    Tx = scaling(data.X, fc.standardize)
    scaled = dataclasses.replace(data, X=data.X @ Tx, Z=data.Z @ Tz if zero else data.Z[:, :0])
    mp = mixed_problem(fit.family, scaled, groups, fit.parts)
    starts = design_starts(scaled, rng, fc.inits)
    q_data = scaled.Z.shape[1]
    extra = int(fit.family.dispersion) + len(fit.parts)
    starts = np.hstack([starts, rng.normal(0.0, START_SD, (fc.inits, extra))])
    k = len(fit.params)
    T = np.eye(k)
    T[:q_data, :q_data], T[q_data : q_data + Tx.shape[0], q_data : q_data + Tx.shape[0]] = Tz, Tx
    result = fit_mixed_gd(mp, starts, fc.lr, optimizer=fc.optimizer, rule=rule,
                          nodes=fit.nodes, callback=callback)  # fmt: skip
    paths = np.einsum("ij,bjt->bit", T, result.history_params)
    return dataclasses.replace(result, params=result.params @ T.T, history_params=paths)


def _kept_start(result, params, se, labels: list[str], fc) -> tuple[dict, int]:
    """What every descent summary says of the kept start (lowest final NLL) against an
    oracle's estimates `params` in its standard errors `se`: the settings, the kept start's
    status and steps, its largest error and on which of `labels`, the starts' outcomes.

    Returns:
        (that dict, the kept start's index).
    """
    best = int(np.argmin(np.where(np.isfinite(result.nll), result.nll, np.inf)))
    theta = np.asarray(result.params[best], float)
    with np.errstate(divide="ignore", invalid="ignore"):
        errors = np.abs(theta - params) / se
    finite = np.where(np.isfinite(errors), errors, -np.inf)
    worst = int(np.argmax(finite))
    status = [str(s) for s in result.status]
    return {
        "optimizer": fc.optimizer, "lr": fc.lr, "inits": fc.inits, "max_steps": fc.max_steps,
        "standardize": fc.standardize, "best": best, "status": status[best],
        "steps": int(result.steps[best]),
        "max_se_error": float(errors[worst]) if np.isfinite(finite[worst]) else math.nan,
        "worst_term": labels[worst],
        "converged_inits": status.count("converged"), "diverged_inits": status.count("diverged"),
    }, best  # fmt: skip


def mixed_descent_summary(result, fit, names: dict, fc, n: float) -> dict:
    """The kept start of `mixed_descent` against the quadrature oracle's fit, in its standard
    errors (log σ included where it has one): `descent_summary`'s keys, the kept start's
    parameters by label and which oracle judged it."""
    q = fit.q
    labels = ([f"zero: {t}" for t in names["zero"][:q]] + [f"count: {t}" for t in names["count"]]
              + ["log(alpha)"] * int(fit.family.dispersion)
              + [f"log(sigma) {part}" for part in fit.parts])  # fmt: skip
    kept, best = _kept_start(result, fit.params, fit.se, labels, fc)
    return {**kept, "nll": float(result.nll[best]),
            "nll_gap": float(result.nll[best] + fit.loglik / n),
            "params": dict(zip(labels, map(float, result.params[best]))),
            "oracle": "the quadrature oracle",
            # σ̂ = 0: log σ = −inf, which descent can only approach.
            "towards_boundary": bool(np.isinf(fit.params).any())}  # fmt: skip


def descent_summary(result, reference: float | None, oracle: OracleFit, names: dict,
                    fc) -> dict:  # fmt: skip
    """The kept start (lowest final NLL) against the Newton oracle, in its standard errors.

    Args:
        result: `descend`'s `FitResult`.
        reference: the engine's mean NLL at the oracle's estimate, or None (the oracle's).
        oracle: the ZIP's `OracleFit`.
        names: {"zero": q names, "count": p names} of the oracle's parameters.
        fc: the `fit_counts` settings.

    Returns:
        A dict of numbers and words: status, steps, nll_gap, max_se_error and its term, the
        kept start's estimates per part.
    """
    q = oracle.q
    zero, count = list(names["zero"][:q]), list(names["count"])
    labels = [f"zero: {n}" for n in zero] + [f"count: {n}" for n in count]
    kept, best = _kept_start(result, oracle.params, oracle.se, labels, fc)
    theta = np.asarray(result.params[best], float)
    reference = oracle.nll if reference is None else reference
    gap = float(result.nll[best] - reference)
    pi = float(result.pi[best]) if q == 1 else math.nan
    whole = {"pi": pi, "lambda": float(result.lam[best])} if len(theta) == 2 else {}
    # Intercept-only, the oracle's pi -> 0 (separation of the zero part) is the boundary MLE.
    boundary = oracle.status == "separated" or not np.isfinite(oracle.gamma).all()
    return {**whole, **kept, "nll": oracle.nll + gap, "nll_gap": gap,
        "zero": dict(zip(zero, map(float, theta[:q]))),
        "count": dict(zip(count, map(float, theta[q:]))),
        # On the boundary the optimum is logit(pi) = -inf: descent can only approach it.
        "towards_boundary": bool(whole and boundary
                                 and pi < 0.5 * float(np.min(result.history_pi[:, 0]))),
    }  # fmt: skip
