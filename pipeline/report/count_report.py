"""The report of `fit_counts`: exact fits, tests and intervals as a dict, and its renderings.

`summarise` turns a histogram into one dict of plain numbers (what `--json` prints and MLflow
stores); `report.count_text.render` lays it out as an aligned terminal table,
`markdown_frequencies` and `metrics` give the MLflow artifacts and metrics. No I/O here.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.core.histogram import Histogram
from pipeline.core.inference import intercept as inference
from pipeline.core.inference import profile
from pipeline.core.inference.asymptotics import wald_or_profile
from pipeline.core.inference.goodness import screen_level
from pipeline.core.inference.model_choice import information_criteria
from pipeline.core.oracle.mle import exact_mle
from pipeline.report import fit_checks
from pipeline.report.fit_checks import (
    ZIP_VUONG_CAVEAT,
    frequency_rows,
    gof_entry,
    interval_entry,
    misfit_warning,
    small_sample_warning,
)

MODELS = [("zip", "ZIP"), ("poisson", "Poisson")]  # (row key, title) of the frequency table


def summarise(hist: Histogram, level: float) -> dict:
    """Exact ZIP and Poisson fits, tests, intervals and frequencies as one dict of numbers.

    Each parameter gets the interval `asymptotics.wald_or_profile` chooses ("interval", with
    the reason when it is not Wald; "wald" is None then); each model a Pearson goodness-of-fit
    test over the frequency rows ("gof"); "warnings" holds the one-line warnings the text
    opens with (a sample too small for large-sample inference, a misfitting ZIP).

    Args:
        hist: histogram of the counts.
        level: interval coverage; the tests' level is 1 - level.

    Returns:
        The report without the gradient-descent part (see `main`).

    Raises:
        NotIdentifiableError: every count is zero.
    """
    mle, pois, n = exact_mle(hist), inference.fit_poisson(hist), hist.n
    zip_ic, pois_ic = information_criteria(-n * mle.nll, 2, n), \
        information_criteria(-n * pois.nll, 1, n)  # fmt: skip
    lr, vuong = inference.zip_poisson_tests(hist, mle)
    table = inference.frequency_table(hist, mle.pi, mle.lam, pois.lam)
    zeros = int(hist.freqs[hist.values == 0].sum())
    prof = profile.profile_intervals(hist, mle, level)
    prof_pois = profile.poisson_interval(n, float(hist.total), level)
    ivs = {
        "pi": wald_or_profile(
            mle.pi, mle.se_pi, level, prof["pi"], lo=0.0, hi=1.0, null=0.0, null_p=lr.p_value
        ),
        "lambda": wald_or_profile(mle.lam, mle.se_lam, level, prof["lambda"], lo=0.0),
    }
    iv_pois = wald_or_profile(pois.lam, pois.se_lam, level, prof_pois, lo=0.0)
    gof = {"zip": gof_entry(table.observed, table.zip, 2),
           "poisson": gof_entry(table.observed, table.poisson, 1)}  # fmt: skip
    small = small_sample_warning(n, 2)
    warnings = [w for w in (small, misfit_warning("ZIP", gof["zip"], screen_level(level))) if w]
    vuong = {k: t._asdict() for k, t in vuong.items()}
    if small:  # a mean of skewed log-likelihood ratios: its normal reference needs a large n
        vuong = {k: {key: math.nan for key in t} for k, t in vuong.items()}
    notes = []
    if mle.boundary:
        notes.append(
            f"{zeros} zeros observed, {table.poisson[0]:.1f} expected under a Poisson with the "
            "same mean: no excess zeros, so the MLE is on the boundary pi = 0, lambda = mean "
            "(the ZIP reduces to the Poisson; LR statistic 0, p = 1; the lower limits for pi "
            "are 0)"
        )  # fmt: skip
    return {
        "n": n,
        "data": {
            "zeros": zeros,
            "zero_share": zeros / n,
            "mean": hist.mean,
            "variance": hist.variance,
            "max": int(hist.values.max()),
        },  # fmt: skip
        "level": level,
        "warnings": warnings,
        "zip": {
            "pi": mle.pi,
            "lambda": mle.lam,
            "se_pi": mle.se_pi,
            "se_lambda": mle.se_lam,
            "se_logit_pi": mle.se_logit_pi,
            "se_log_lambda": mle.se_log_lam,
            "boundary": mle.boundary,
            "nll": mle.nll,
            "loglik": -n * mle.nll,
            "aic": zip_ic[0],
            "bic": zip_ic[1],
            "wald": {key: iv.wald for key, iv in ivs.items()},
            "profile": prof,
            "interval": {key: interval_entry(iv) for key, iv in ivs.items()},
            "gof": gof["zip"],
        },  # fmt: skip
        "poisson": {
            "lambda": pois.lam,
            "se_lambda": pois.se_lam,
            "nll": pois.nll,
            "loglik": -n * pois.nll,
            "aic": pois_ic[0],
            "bic": pois_ic[1],
            "wald": {"lambda": iv_pois.wald},
            "profile": {"lambda": prof_pois},
            "interval": {"lambda": interval_entry(iv_pois)},
            "gof": gof["poisson"],
        },  # fmt: skip
        "lr_test": {
            "statistic": lr.statistic,
            "p_value": lr.p_value,
            "log10_p_value": lr.log10_p_value,
            "reference": lr.reference,
        },  # fmt: skip
        "vuong": {**vuong, "reported": not small, "caveat": ZIP_VUONG_CAVEAT},
        "frequencies": frequency_rows(table.counts, table.observed,
                                      {"zip": table.zip, "poisson": table.poisson}),
        "notes": notes,
    }  # fmt: skip


def descent_summary(result, best: int, report: dict, fc, reference: float | None = None) -> dict:
    """The gradient-descent part of the report: the kept init against the exact MLE.

    Args:
        result: the engine's `FitResult`, one row per init.
        best: the init kept.
        report: the report from `summarise` (its exact MLE).
        fc: the `fit_counts` settings (`config.FitCountsConfig`).
        reference: the engine's mean NLL at the exact MLE (default: the report's exact NLL);
            the gap is measured against it.

    Returns:
        A dict of numbers (and the status string).
    """
    exact = report["zip"]
    status = [str(s) for s in result.status]
    reference = exact["nll"] if reference is None else reference
    pi, gap = float(result.pi[best]), float(result.nll[best] - reference)
    return {
        "optimizer": fc.optimizer, "lr": fc.lr, "inits": fc.inits, "max_steps": fc.max_steps,
        "pi": pi, "lambda": float(result.lam[best]), "nll": exact["nll"] + gap,
        "nll_gap": gap, "steps": int(result.steps[best]), "status": status[best],
        "converged_inits": status.count("converged"), "diverged_inits": status.count("diverged"),
        # On the boundary the optimum is logit(pi) = -inf: descent can only approach it.
        "towards_boundary": bool(exact["boundary"] and pi < 0.5 * min(result.history_pi[:, 0])),
    }  # fmt: skip


def jsonable(obj):
    """The report with tuples as lists and NaN/inf as null (strict JSON)."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def metrics(report: dict) -> dict[str, float]:
    """Every finite number of the report (but the frequency rows) as flat MLflow metrics."""
    out = {}

    def walk(prefix, obj):
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(f"{prefix}{k}.", v)
        elif isinstance(obj, (list, tuple)) and len(obj) == 2 and prefix.count(".") > 1:
            walk(f"{prefix}lower.", obj[0])
            walk(f"{prefix}upper.", obj[1])
        elif isinstance(obj, (bool, int, float, np.number)) and math.isfinite(float(obj)):
            out[prefix[:-1]] = float(obj)

    walk("", {k: v for k, v in report.items() if k not in ("frequencies", "rows")})
    return out


def markdown_frequencies(report: dict) -> str:
    """The frequency table as markdown."""
    return fit_checks.markdown_frequencies(report["frequencies"], MODELS)
