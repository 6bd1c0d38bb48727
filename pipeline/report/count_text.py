"""The `fit_counts` report (`count_report.summarise` plus the descent) as terminal text.

Warnings open the text; each parameter shows its Wald and profile-likelihood intervals, the
Wald one marked "not meaningful" (with a one-line reason under the table) where
`asymptotics.wald_or_profile` chose the profile interval; p-values below 1e-300 print as that
bound (the JSON keeps log10 p). No I/O here.
"""

from __future__ import annotations

import math
import textwrap

from pipeline.report.count_report import MODELS
from pipeline.report.fit_checks import (
    frequency_lines,
    gof_lines,
    interval_note,
    p_text,
    vuong_lines,
)

_STATUS = {
    "converged": "converged after",
    "max_steps": "stopped at max_steps,",
    "diverged": "diverged after",
    "stopped": "stopped after",
}
_ROW = "  {:<18}{:>14}{:>12}   {:<28}{}"


def _num(x, fmt=".6g") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return "inf" if x == math.inf else format(x, fmt)


def _interval(pair) -> str:
    return "not meaningful (*)" if pair is None else f"[{_num(pair[0])}, {_num(pair[1])}]"


def _se(se, span=math.inf) -> str:
    """The SE, or n/a where it is no measure of spread (not finite, 0, wider than the range)."""
    if se is None or not math.isfinite(se) or se <= 0 or se > span:
        return "n/a"
    return _num(se, ".3g")


def _parameters(model: dict, rows: list[tuple[str, str, float]]) -> list[str]:
    """One line per parameter (name, key, range width), then the notes of non-Wald intervals."""
    lines, notes = [], []
    for name, key, span in rows:
        iv = model["interval"][key]
        lines.append(_ROW.format(name, _num(model[key]), _se(model[f"se_{key}"], span),
                                 _interval(model["wald"][key]),
                                 _interval(model["profile"][key])))  # fmt: skip
        notes += [interval_note(key, iv)] if iv["reason"] else []
    return lines + notes


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
    lines = [
        f"ZIP vs Poisson: {r['file']}, column '{r['column']}' "
        f"({r['n']:,} of {r['rows']:,} rows{scope})",
        f"  n = {r['n']:,}   zeros = {d['zeros']:,} ({100 * d['zero_share']:.1f}%)   "
        f"mean = {_num(d['mean'], '.4g')}   variance = {_num(d['variance'], '.4g')}   "
        f"max = {d['max']:,}",
        *r["warnings"],
        "",
        "Zero-inflated Poisson (exact MLE)",
        _ROW.format("parameter", "estimate", "std. error", f"{pct} Wald", f"{pct} profile"),
        *_parameters(z, [("pi (extra zeros)", "pi", 1.0), ("lambda (rate)", "lambda", math.inf)]),
        f"  gradient descent ({gd['optimizer']}, lr {gd['lr']:g}, best of {gd['inits']} inits): "
        f"pi = {_num(gd['pi'])}, lambda = {_num(gd['lambda'])}",
        f"    {_STATUS.get(gd['status'], gd['status'])} {gd['steps']:,} steps "
        f"({gd['converged_inits']} of {gd['inits']} inits converged); "
        f"mean NLL above the exact MLE: {gd['nll_gap']:.2g} nats",
    ]  # fmt: skip
    if gd["towards_boundary"]:
        lines.append("    pi -> 0: descent drives logit(pi) towards -inf, the boundary MLE")
    lr = r["lr_test"]
    lines += [
        "",
        "Poisson",
        *_parameters(po, [("lambda (rate)", "lambda", math.inf)]),
        "",
        "  {:<18}{:>14}{:>14}".format("model comparison", "ZIP", "Poisson"),
        *["  {:<18}{:>14}{:>14}".format(name, _num(z[key], ".2f"), _num(po[key], ".2f"))
          for name, key in (("log-likelihood", "loglik"), ("AIC", "aic"), ("BIC", "bic"))],
        "",
        "Likelihood-ratio test for zero inflation (H0: pi = 0, Poisson)",
        f"  T = {_num(lr['statistic'], '.4g')}, {p_text(lr['p_value'])}"
        f"   (reference {lr['reference']})",
        *vuong_lines(r["vuong"]),
        *textwrap.wrap("caveat: " + r["vuong"]["caveat"], 92, initial_indent="  ",
                       subsequent_indent="    "),
        "",
        "Observed against expected frequencies",
        *frequency_lines(r["frequencies"], MODELS),
        "",
        *gof_lines([("ZIP", z["gof"]), ("Poisson", po["gof"])]),
    ]  # fmt: skip
    for note in r["notes"]:
        lines += ["", *textwrap.wrap("note: " + note, 94, subsequent_indent="  ")]
    return "\n".join(line.rstrip() for line in lines)
