"""The report of `fit_counts`: exact fits, tests and intervals as a dict, and its renderings.

`summarise` turns a histogram into one dict of plain numbers (what `--json` prints and MLflow
stores); `render` lays it out as an aligned terminal table, `markdown_frequencies` and `metrics`
give the MLflow artifacts and metrics. No I/O here.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np

from pipeline.core import inference, profile
from pipeline.core.histogram import Histogram
from pipeline.core.mle import exact_mle


def summarise(hist: Histogram, level: float) -> dict:
    """Exact ZIP and Poisson fits, tests, intervals and frequencies as one dict of numbers.

    Args:
        hist: histogram of the counts.
        level: interval coverage.

    Returns:
        The report without the gradient-descent part (see `main`).

    Raises:
        NotIdentifiableError: every count is zero.
    """
    mle, pois, n = exact_mle(hist), inference.fit_poisson(hist), hist.n
    zip_ic, pois_ic = inference.information_criteria(mle.nll, n, 2), \
        inference.information_criteria(pois.nll, n, 1)  # fmt: skip
    lr = inference.lr_test(hist, mle)
    table = inference.frequency_table(hist, mle.pi, mle.lam, pois.lam)
    zeros = int(table.observed[0])
    notes = []
    if mle.boundary:
        notes.append(
            f"{zeros} zeros observed, {table.poisson[0]:.1f} expected under a Poisson with the "
            "same mean: no excess zeros, so the MLE is on the boundary pi = 0, lambda = mean "
            "(the ZIP reduces to the Poisson; LR statistic 0, p = 1; the lower limits for pi "
            "are 0, and the Wald interval for pi is not valid there: use the profile one)"
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
            "wald": {
                "pi": inference.wald_interval(mle.pi, mle.se_pi, level, 0.0, 1.0),
                "lambda": inference.wald_interval(mle.lam, mle.se_lam, level),
            },
            "profile": profile.profile_intervals(hist, mle, level),
        },  # fmt: skip
        "poisson": {
            "lambda": pois.lam,
            "se_lambda": pois.se_lam,
            "nll": pois.nll,
            "loglik": -n * pois.nll,
            "aic": pois_ic[0],
            "bic": pois_ic[1],
            "wald": {"lambda": inference.wald_interval(pois.lam, pois.se_lam, level)},
        },  # fmt: skip
        "lr_test": {
            "statistic": lr.statistic,
            "p_value": lr.p_value,
            "reference": inference.LR_REFERENCE,
        },  # fmt: skip
        "vuong": {
            **{k: t._asdict() for k, t in inference.vuong_tests(hist, mle).items()},
            "caveat": inference.VUONG_CAVEAT,
        },  # fmt: skip
        "frequencies": [
            {
                "count": int(k),
                "tail": i == len(table.counts) - 1,
                "observed": int(o),
                "zip": float(z),
                "poisson": float(p),
            }
            for i, (k, o, z, p) in enumerate(zip(*table))
        ],  # fmt: skip
        "notes": notes,
    }


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


_STATUS = {
    "converged": "converged after",
    "max_steps": "stopped at max_steps,",
    "diverged": "diverged after",
    "stopped": "stopped after",
}


def _num(x, fmt=".6g") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return "inf" if x == math.inf else format(x, fmt)


def _interval(pair) -> str:
    return f"[{_num(pair[0])}, {_num(pair[1])}]"


def _p(p) -> str:
    """'p = 0.034', 'p < 1e-300' (below float resolution of a tail) or 'p = n/a'."""
    if p is None or math.isnan(p):
        return "p = n/a"
    return "p < 1e-300" if p < 1e-300 else f"p = {p:.3g}"


def render(r: dict) -> str:
    """The report as an aligned plain-text table for the terminal.

    Args:
        r: the full report (`summarise` plus file, column, where, rows, gradient_descent).

    Returns:
        The text, lines without trailing blanks.
    """
    z, po, d, gd = r["zip"], r["poisson"], r["data"], r["gradient_descent"]
    pct = f"{100 * r['level']:g}%"
    scope = f", where {r['where']}" if r["where"] else ""
    row = "  {:<18}{:>14}{:>12}   {:<28}{}"
    lines = [
        f"ZIP vs Poisson: {r['file']}, column '{r['column']}' "
        f"({r['n']:,} of {r['rows']:,} rows{scope})",
        f"  n = {r['n']:,}   zeros = {d['zeros']:,} ({100 * d['zero_share']:.1f}%)   "
        f"mean = {_num(d['mean'], '.4g')}   variance = {_num(d['variance'], '.4g')}   "
        f"max = {d['max']:,}",
        "",
        "Zero-inflated Poisson (exact MLE)",
        row.format("parameter", "estimate", "std. error", f"{pct} Wald", f"{pct} profile"),
        row.format("pi (extra zeros)", _num(z["pi"]), _num(z["se_pi"], ".3g"),
                   _interval(z["wald"]["pi"]), _interval(z["profile"]["pi"])),
        row.format("lambda (rate)", _num(z["lambda"]), _num(z["se_lambda"], ".3g"),
                   _interval(z["wald"]["lambda"]), _interval(z["profile"]["lambda"])),
        f"  gradient descent ({gd['optimizer']}, lr {gd['lr']:g}, best of {gd['inits']} inits): "
        f"pi = {_num(gd['pi'])}, lambda = {_num(gd['lambda'])}",
        f"    {_STATUS.get(gd['status'], gd['status'])} {gd['steps']:,} steps "
        f"({gd['converged_inits']} of {gd['inits']} inits converged); "
        f"mean NLL above the exact MLE: {gd['nll_gap']:.2g} nats",
    ]  # fmt: skip
    if gd["towards_boundary"]:
        lines.append("    pi -> 0: descent drives logit(pi) towards -inf, the boundary MLE")
    lines += [
        "",
        "Poisson",
        row.format("lambda (rate)", _num(po["lambda"]), _num(po["se_lambda"], ".3g"),
                   _interval(po["wald"]["lambda"]), ""),
        "",
        "  {:<18}{:>14}{:>14}".format("model comparison", "ZIP", "Poisson"),
        *["  {:<18}{:>14}{:>14}".format(name, _num(z[key], ".2f"), _num(po[key], ".2f"))
          for name, key in (("log-likelihood", "loglik"), ("AIC", "aic"), ("BIC", "bic"))],
        "",
        "Likelihood-ratio test for zero inflation (H0: pi = 0, Poisson)",
        f"  T = {_num(r['lr_test']['statistic'], '.4g')}, {_p(r['lr_test']['p_value'])}"
        f"   (reference {r['lr_test']['reference']})",
        "Vuong test, ZIP against Poisson (one-sided p for 'ZIP is closer')",
        *["  {:<18}z = {:<10}{}".format(name, _num(r["vuong"][key]["statistic"], ".4g"),
                                           _p(r["vuong"][key]["p_value"]))
          for name, key in (("raw", "raw"), ("AIC-corrected", "aic"), ("BIC-corrected", "bic"))],
        *textwrap.wrap("caveat: " + r["vuong"]["caveat"], 92, initial_indent="  ",
                       subsequent_indent="    "),
        "",
        "Observed against expected frequencies",
        "  {:>7}{:>12}{:>12}{:>12}".format("count", "observed", "ZIP", "Poisson"),
        *["  {:>7}{:>12,}{:>12.1f}{:>12.1f}".format(
            f"{f['count']}+" if f["tail"] else f["count"], f["observed"], f["zip"], f["poisson"])
          for f in r["frequencies"]],
    ]  # fmt: skip
    for note in r["notes"]:
        lines += ["", *textwrap.wrap("note: " + note, 94, subsequent_indent="  ")]
    return "\n".join(line.rstrip() for line in lines)


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
    lines = ["| count | observed | ZIP | Poisson |", "| ---: | ---: | ---: | ---: |"]
    for f in report["frequencies"]:
        label = f"{f['count']}+" if f["tail"] else str(f["count"])
        lines.append(f"| {label} | {f['observed']} | {f['zip']:.2f} | {f['poisson']:.2f} |")
    return "\n".join(line.rstrip() for line in lines) + "\n"
