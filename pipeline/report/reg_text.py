"""The `fit_counts --formula` report (`reg_report.summarise` plus the descent) as terminal text.

Warnings open the text; coefficients without a finite standard error show "n/a" for z, p and
the interval, with a one-line note; p-values below 1e-300 print as that bound (the JSON keeps
log10 p). No I/O here.
"""

from __future__ import annotations

import math
import textwrap

from pipeline.report.fit_checks import frequency_lines, gof_lines, p_cell, p_text, vuong_lines
from pipeline.report.reg_report import MODELS

_STATUS = {"converged": "converged after", "max_steps": "stopped at max_steps,",
           "diverged": "diverged after", "stopped": "stopped after",
           "stalled": "stalled on the saturated zero part's plateau after"}  # fmt: skip


def _num(x, fmt=".6g") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _wrap(text: str) -> list[str]:
    return textwrap.wrap(text, 92, initial_indent="  ", subsequent_indent="    ")


def _table(title: str, rows: list[dict], pct: str) -> list[str]:
    form = "  {:<22}{:>12}{:>12}{:>9}{:>11}   {}"
    lines = [title, form.format("term", "estimate", "std. error", "z", "p", f"{pct} interval")]
    for c in rows:
        wald = c["interval"]["method"] == "wald"
        limits = f"[{_num(c['lower'])}, {_num(c['upper'])}]" if wald else "n/a (*)"
        lines.append(form.format(c["term"][:21], _num(c["estimate"]),
                                 _num(c["se"], ".4g") if wald else "n/a", _num(c["z"], ".2f"),
                                 p_cell(c["p_value"]), limits))  # fmt: skip
    return lines


def render(r: dict) -> str:
    """The report as aligned plain text for the terminal.

    Args:
        r: the full report (`summarise` plus file, where, gradient_descent).

    Returns:
        The text, lines without trailing blanks.
    """
    z, po, d, gd, lr = r["zip"], r["poisson"], r["data"], r["gradient_descent"], r["lr_test"]
    pct = f"{100 * r['level']:g}%"
    scope = f", where {r['where']}" if r.get("where") else ""
    dropped = f"; {r['dropped']:,} dropped for missing values" if r["dropped"] else ""
    lines = [
        f"ZIP regression vs Poisson regression: {r['file']} ({r['n']:,} of {r['rows']:,} rows"
        f"{scope}{dropped})",
        f"  formula: {r['formula']}   (pscl order: response ~ count part | zero part)",
        f"  n = {r['n']:,}   zeros = {d['zeros']:,} ({100 * d['zero_share']:.1f}%)   "
        f"mean = {_num(d['mean'], '.4g')}   variance = {_num(d['variance'], '.4g')}   "
        f"max = {d['max']:,}",
        *r["warnings"],
        "",
        *_table("ZIP count part: log(lambda)", z["count"], pct),
        "",
        *_table("ZIP zero part: logit(pi), pi = P(structural zero)", z["zero"], pct),
        f"  Newton oracle: {z['status']} in {z['iterations']} iterations",
        "",
        *_table("Poisson regression: log(lambda)", po["count"], pct),
        *r["notes"],
        "",
        "  {:<18}{:>14}{:>14}".format("model comparison", "ZIP", "Poisson"),
        *[f"  {name:<18}{_num(z[key], fmt):>14}{_num(po[key], fmt):>14}"
          for name, key, fmt in (("parameters", "parameters", "d"), ("log-likelihood", "loglik",
                                 ".2f"), ("AIC", "aic", ".2f"), ("BIC", "bic", ".2f"))],
        "",
        "Likelihood-ratio test for zero inflation (H0: pi = 0 in every row, the Poisson)",
        f"  T = {_num(lr['statistic'], '.4g')}, {p_text(lr['p_value'])}"
        f"   (reference {lr['reference']})",
        *(_wrap("note: " + lr["note"]) if lr["note"] else []),
        *vuong_lines(r["vuong"]),
        *_wrap("caveat: " + r["vuong"]["caveat"]),
        "",
        f"Gradient descent ({gd['optimizer']}, lr {gd['lr']:g}, best of {gd['inits']} random "
        f"starts, {'standardised' if gd['standardize'] else 'raw'} covariates)",
        f"  {_STATUS.get(gd['status'], gd['status'])} {gd['steps']:,} steps "
        f"({gd['converged_inits']} of {gd['inits']} starts converged); "
        f"mean NLL above the oracle: {_num(gd['nll_gap'], '.2g')} nats",
        f"  largest difference from the Newton oracle: {_num(gd['max_se_error'], '.2g')} "
        f"standard errors ({gd['worst_term']})",
        "",
        "Observed against expected frequencies (summed over the rows' fitted distributions)",
        *frequency_lines(r["frequencies"], MODELS),
        "",
        *gof_lines([("ZIP", z["gof"]), ("Poisson", po["gof"])]),
    ]  # fmt: skip
    return "\n".join(line.rstrip() for line in lines)
