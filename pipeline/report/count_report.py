"""The report of `fit_counts`, for every input and family: the families side by side, or one.

`summarise` turns the fits (`analysis.count_fits.FamilyFits`), tests and recommendation into
one dict of plain numbers (what `--json` prints and MLflow stores), `render` lays it out for
the terminal (comparison table, tests, recommendation, the chosen family's coefficients; for
the ZIP its Vuong test against the Poisson, the closed form with profile intervals where the
model is intercept-only, and the gradient-descent section). Its figures are
`report.rootogram`'s: the text needs no plotting library, so the answer prints before
matplotlib loads. No I/O here.

Standard errors (`SE_CONVENTIONS`, printed under the coefficients): the model-based SE is the
inverse *observed* information over every parameter, log α included (the Newton oracle's
Hessian at the estimate); the robust SE is the full-parameter HC0 sandwich
H⁻¹ (Σ w s sᵀ) H⁻¹, the score of log α in the meat. R's `glm.nb` reports the expected
information with θ = 1/α held fixed (its SEs of β ignore θ's uncertainty), and pscl's
`sandwich` on a `zeroinfl` fit leaves θ's score out of the meat: both differ from ours by
a few per cent on overdispersed data, the estimates not at all. Each coefficient gets both
SEs side by side. Their ratio is itself noisy: the sandwich variance is an
average of squared scores, whose relative sampling error at moderate n (a few hundred) is
some ±20-30 % on the SE scale even when the model is right (Kauermann & Carroll 2001, JASA
96:1387). A ratio outside [1/1.5, 1.5] (`SE_RATIO`) is more than that noise and points to
misspecification (e.g. overdispersion a Poisson ignores): the report says so.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np

from pipeline.core.inference.asymptotics import wald_or_profile
from pipeline.core.inference.goodness import gof_bound_p, screen_level
from pipeline.core.inference.model_tests import TITLES, VUONG_P, wald_test
from pipeline.report.count_wording import (
    GOF_HEADER,
    ZIP_VUONG_CAVEAT,
    frequency_lines,
    frequency_rows,
    gof_notes,
    interval_note,
    jsonable,
    markdown_frequencies,
    metrics,
    misfit_warning,
    num_cell,
    p_cell,
    p_text,
    small_sample_warning,
    vuong_lines,
)

__all__ = ["jsonable", "markdown_frequencies", "metrics", "render", "summarise"]

SE_RATIO = 1.5  # robust/model SE ratio beyond which (either way) misspecification is flagged
# Column titles of the frequency table (`count_wording.frequency_lines` gives each 12 characters).
COLUMNS = {**TITLES, "hurdle_poisson": "hurdle P"}
PARTS = {"inflation": "zero part: logit(pi), pi = P(structural zero)",
         "hurdle": "zero part: logit P(Y > 0)", "count": "count part: log(mean)",
         "dispersion": "dispersion: log(alpha), variance = mean + alpha mean^2"}  # fmt: skip
SE_CONVENTIONS = (
    "SEs: model = inverse observed information over every parameter, log(alpha) included; "
    "robust = full-parameter HC0 sandwich (log(alpha)'s score in the meat). R's glm.nb uses "
    "the expected information with theta = 1/alpha fixed; pscl + sandwich leaves theta's "
    "score out of the meat."
)
VUONG_CAVEAT = (
    "Vuong's test is run only on non-nested pairs: where one model is a boundary point of the "
    "other (Poisson in NB or ZIP, ZIP in ZINB, ...) it is not a valid test (Wilson 2015, "
    "Economics Letters 127:51-53), and the likelihood-ratio tests above answer instead."
)


def coefficients(names, estimate, se, level: float) -> list[dict]:
    """One dict per coefficient: term, estimate, SE, z, two-sided p (and log10 p), interval.

    A coefficient whose SE is not finite or not positive (`asymptotics.wald_or_profile`) gets
    NaN z, p and limits, never numbers made from it, and its reason under "interval".
    """
    rows = []
    for name, b, s in zip(names, estimate, se):
        b, s = float(b), float(s)
        iv = wald_or_profile(b, s, level)
        z, p, log10_p = wald_test(b, s) if iv.method == "wald" else (math.nan,) * 3
        rows.append({"term": name, "estimate": b, "se": s, "z": z, "p_value": p,
                     "log10_p_value": log10_p, "lower": iv.lower, "upper": iv.upper,
                     "interval": {"lower": iv.lower, "upper": iv.upper, "method": iv.method,
                                  "reason": iv.reason}})  # fmt: skip
    return rows


def _se_check(title: str, rows: list[dict]) -> tuple[float, str]:
    """The largest robust/model SE ratio (by its log) and a warning beyond `SE_RATIO`."""
    ratios = [(r["se_ratio"], r["term"]) for r in rows if math.isfinite(r["se_ratio"])]
    if not ratios:
        return math.nan, ""
    ratio, term = max(ratios, key=lambda t: abs(math.log(t[0])) if t[0] > 0 else math.inf)
    if 1 / SE_RATIO <= ratio <= SE_RATIO:
        return ratio, ""
    return ratio, (
        f"warning: the {title}'s robust (sandwich) SE is {ratio:.2f} x its model-based SE for "
        f"{term}: sampling error alone moves this ratio by some 20-30 % at moderate n, so a "
        f"factor beyond {SE_RATIO:g} points to misspecification; prefer the robust SEs (or "
        "another family)"
    )


def model_entry(fit, robust_cov, names: dict, gof: dict | None, level: float) -> dict:
    """One family's fit as JSON: fit statistics, coefficient tables (model and robust SE), GOF.

    Args:
        fit: its `oracle.fit.OracleFit`.
        robust_cov: its `OracleFit.robust_cov`.
        names: {"count": count-part term names, "zero": zero-part term names}.
        gof: its `count_wording.gof_entry`, or None.
        level: interval coverage.

    Returns:
        The dict (coefficient rows per part: "zero", "count", "dispersion").
    """
    q, p = len(fit.gamma), len(fit.beta)
    est, se = fit.params, fit.se
    with np.errstate(invalid="ignore"):
        robust = np.sqrt(np.diag(robust_cov))
    title = TITLES[fit.family.name]
    if gof is not None:
        bound = gof_bound_p(gof["statistic"], gof["groups"])
        gof = {**gof, "p_value_bound": bound[0], "log10_p_value_bound": bound[1]}
    entry = {"title": title, "status": fit.status, "message": fit.message,
             "loglik": fit.loglik, "nll": fit.nll, "parameters": fit.n_params, "alpha": fit.alpha,
             "iterations": fit.iterations, "gof": gof}  # fmt: skip
    spans = {"zero": (slice(0, q), names["zero"][:q]), "count": (slice(q, q + p), names["count"]),
             "dispersion": (slice(q + p, len(est)), ["log(alpha)"])}  # fmt: skip
    every = []
    for part, (span, terms) in spans.items():
        rows = coefficients(terms, est[span], se[span], level) if est[span].size else []
        for row, r_se in zip(rows, robust[span]):
            with np.errstate(divide="ignore", invalid="ignore"):
                row.update(robust_se=float(r_se), se_ratio=float(r_se / row["se"]))
        entry[part] = rows
        every += rows
    entry["se_ratio_max"], entry["se_warning"] = _se_check(title, every)
    return entry


def summarise(fits, names: dict, *, level: float, data: dict, source: dict, family: str,
              zip_vuong: dict | None = None, closed_form: dict | None = None,
              gradient_descent: dict | None = None) -> dict:  # fmt: skip
    """The fits, tests and choice as one dict of numbers (and a few lines of text).

    Args:
        fits: `analysis.count_fits.FamilyFits` (a failed family's fit is its reason).
        names: {"count": [...], "zero": [...]} term names.
        level: coverage; tests at 1 - level.
        data: n, zeros, zero_share, mean, variance, max of the counts.
        source: what was read (file, column or formula, where, rows ...).
        family: "all" or the one family asked for.
        zip_vuong: the ZIP's Vuong test against its Poisson (`count_fits.zip_vuong` with
            "identical"), family "zip" only.
        closed_form: `count_fits.closed_form` (family "zip", intercept-only).
        gradient_descent: `count_fits.descent_summary` (family "zip").

    Returns:
        The report; "detail" names the family whose coefficients the text shows.
    """
    comparison, recommendation = fits.comparison, fits.recommendation
    gof = fits.gof
    rows = frequency_rows(fits.starts, fits.observed, fits.expected)
    models = {}
    for fam, fit in fits.fits.items():
        if isinstance(fit, str):
            models[fam] = {"title": TITLES[fam], "status": "failed", "message": fit}
        else:
            models[fam] = model_entry(fit, fit.robust_cov, names, gof.get(fam), level)
    if comparison is not None:
        best_bic = min((r.bic for r in comparison.rows.values()), default=math.nan)
        for fam, r in comparison.rows.items():
            models[fam].update(aic=r.aic, bic=r.bic, delta_bic=r.bic - best_bic)
    chosen = recommendation.family if recommendation is not None else None
    detail = chosen or (family if family != "all" else None)
    fitted = [m for m in models.values() if m["status"] != "failed"]
    small = small_sample_warning(int(data["n"]), max((m["parameters"] for m in fitted), default=1))
    warnings = [small] if small else []
    if detail in models and models[detail]["status"] != "failed":
        shown = models[detail]
        # The choice's own rule and level: a family it recommends is warned about only when
        # the screen rejected it too (every family misfitting).
        screen = recommendation.screen if recommendation is not None else screen_level(level)
        g = shown["gof"]
        misfit = misfit_warning(shown["title"], g, screen) if g else ""
        warnings += [w for w in (misfit, shown["se_warning"]) if w]
    small_n = bool(small)
    zip_part = {}
    if zip_vuong is not None:
        identical = zip_vuong.pop("identical", False)
        if small_n:  # a mean of skewed log-likelihood ratios: its normal reference needs a large n
            zip_vuong = {k: {key: math.nan for key in t} for k, t in zip_vuong.items()}
        zip_part["zip_vuong"] = {**zip_vuong, "identical": identical, "reported": not small_n,
                                 "caveat": ZIP_VUONG_CAVEAT}  # fmt: skip
    if closed_form is not None:
        zip_part["closed_form"] = closed_form
    if gradient_descent is not None:
        zip_part["gradient_descent"] = gradient_descent
    return {
        "source": source, "family": family, "n": data["n"], "level": level, "data": data,
        "warnings": warnings, "models": models, "detail": detail,
        "lr_tests": {} if comparison is None else
        {f"{t.smaller}_vs_{t.larger}": t._asdict() for t in comparison.lr_tests},
        "vuong": {} if comparison is None else
        {f"{v.first}_vs_{v.second}": v._asdict() for v in comparison.vuong_tests},
        "vuong_withheld": bool(comparison is not None and comparison.vuong_withheld),
        "vuong_caveat": VUONG_CAVEAT,
        "recommendation": None if recommendation is None else recommendation._asdict(),
        "frequencies": rows, "se_conventions": SE_CONVENTIONS, **zip_part,
    }  # fmt: skip


def _num(x, fmt: str = ".6g") -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, fmt)


def _p(p, log10_p) -> str:
    """p to 3 digits; below the float range from its log10 ('4.6e-413'): `count_wording.p_cell`."""
    return p_cell(p, log10_p)


def _wrap(text: str, indent: str = "  ") -> list[str]:
    return textwrap.wrap(text, 92, initial_indent=indent, subsequent_indent=indent + "  ")


def _comparison_lines(r: dict) -> list[str]:
    form = "  {:<16}{:>14}{:>5}{:>13}{:>13}{:>10}{:>12}   {}"
    lines = [form.format("family", "log-lik", "k", "AIC", "BIC", "dBIC", "GOF p*", "status")]
    for m in r["models"].values():
        if m["status"] == "failed":
            lines += _wrap(f"{m['title']:<16}fit failed: {m['message']}")
            continue
        g = m["gof"] or {}
        gof_p = _p(g.get("p_value_bound"), g.get("log10_p_value_bound"))
        lines.append(form.format(m["title"], num_cell(m["loglik"], ".2f", 14), m["parameters"],
                                 num_cell(m.get("aic"), ".2f", 13),
                                 num_cell(m.get("bic"), ".2f", 13),
                                 num_cell(m.get("delta_bic"), ".2f", 10), gof_p,
                                 m["status"]))  # fmt: skip
    return [*lines, "  * Pearson's p against chi2(G-1), the lenient end of its null law (below)"]


def _test_lines(r: dict) -> list[str]:
    lines = ["", "Likelihood-ratio tests (nested pairs; H0: the smaller model's restriction)"]
    for t in r["lr_tests"].values():
        pair = f"{TITLES[t['smaller']]} in {TITLES[t['larger']]}"
        p = _p(t["p_value"], t["log10_p_value"])
        lines.append(f"  {pair:<28}{t['null']:<14}T = {_num(t['statistic'], '.4g'):<11}"
                     f"p = {p:<12}{t['reference']}")  # fmt: skip
        lines += _wrap(f"note: {t['note']}", "    ") if t["note"] else []
    if r["vuong"]:
        lines += [f"Vuong tests (non-nested pairs; {VUONG_P.format(first='first')})"]
    for v in r["vuong"].values():
        pair = f"{TITLES[v['first']]} vs {TITLES[v['second']]}"
        if v["identical"]:
            lines.append(f"  {pair:<28}identical fits: the same probability for every count")
        elif r["vuong_withheld"]:
            lines.append(f"  {pair:<28}withheld: too few counts for its normal reference")
        else:
            lines.append(f"  {pair:<28}z = {_num(v['statistic'], '.3g'):<11}p = "
                         f"{_p(v['p_value'], v['log10_p_value']):<12}(BIC-corrected z = "
                         f"{_num(v['bic_statistic'], '.3g')})")  # fmt: skip
    return lines + _wrap("caveat: " + r["vuong_caveat"])


def _detail_lines(m: dict, pct: str) -> list[str]:
    form = "  {:<20}{:>12}{:>10}{:>10}{:>8}{:>10}{:>11}   {}"
    part = "hurdle" if m["title"].startswith("hurdle") else "inflation"
    lines = _wrap(f"{m['title']}: {m['status']} ({m['message']})", "")
    for key in ("count", "zero", "dispersion"):
        if not m[key]:
            continue
        lines += ["", PARTS[part if key == "zero" else key],
                  form.format("term", "estimate", "model SE", "robust SE", "ratio", "z", "p",
                              f"{pct} interval")]  # fmt: skip
        for c in m[key]:
            lines.append(form.format(c["term"][:19], num_cell(c["estimate"], ".6g", 12),
                                     num_cell(c["se"], ".4g", 10),
                                     num_cell(c["robust_se"], ".4g", 10),
                                     num_cell(c["se_ratio"], ".2f", 8), num_cell(c["z"], ".2f", 10),
                                     _p(c["p_value"], c["log10_p_value"]),
                                     f"[{_num(c['lower'])}, {_num(c['upper'])}]"))  # fmt: skip
    if m["alpha"] is not None:
        lines.append(f"  alpha = {_num(m['alpha'])}" + ("  (on the boundary: the Poisson limit)"
                                                       if m["alpha"] == 0 else ""))  # fmt: skip
    return lines + (_wrap(m["se_warning"]) if m["se_warning"] else [])


def render(r: dict) -> str:
    """The report as aligned plain text: comparison, tests, recommendation, detail, tables.

    Args:
        r: the report from `summarise`.

    Returns:
        The text, lines without trailing blanks.
    """
    d, s, pct = r["data"], r["source"], f"{100 * r['level']:g}%"
    what = s.get("formula") or f"column {s.get('column')!r}"
    scope = (f" of {s['rows']:,} rows" if s.get("rows") else "") + (
        f", where {s['where']}" if s.get("where") else "") + (
        f", frequency weights {s['weights']!r}" if s.get("weights") else "")  # fmt: skip
    lines = [f"Count families ({r['family']}): {s.get('file')}, {what} ({d['n']:,} counts{scope})",
             f"  zeros = {d['zeros']:,} ({100 * d['zero_share']:.1f}%)   mean = "
             f"{_num(d['mean'], '.4g')}   variance = {_num(d['variance'], '.4g')}   "
             f"max = {d['max']:,}", *r["warnings"], "", *_comparison_lines(r)]  # fmt: skip
    if len(r["models"]) > 1:
        lines += _test_lines(r)
    rec = r["recommendation"]
    if rec is not None:
        lines += ["", f"Recommendation: {TITLES.get(rec['family'], 'none')}"]
        lines += [x for reason in rec["reasons"] for x in _wrap("- " + reason)]
    fitted = [(f, m) for f, m in r["models"].items() if m["status"] != "failed"]
    if r["detail"] in r["models"] and r["models"][r["detail"]]["status"] != "failed":
        lines += ["", *_detail_lines(r["models"][r["detail"]], pct)]
    lines += _zip_lines(r, pct)
    lines += ["", *GOF_HEADER, "  G groups, k parameters: its null law lies between chi2(G-1-k) "
              "and chi2(G-1)", "  (Chernoff & Lehmann 1954): p for both"]  # fmt: skip
    for _, m in fitted:
        g = m["gof"]
        poor = "; poor chi-square reference" if g["poor_reference"] else ""
        bound = p_cell(g["p_value_bound"], g["log10_p_value_bound"])
        lines.append(f"  {m['title']:<16}X2 = {g['statistic']:<10.4g}G = {g['groups']:<4d}"
                     f"{p_text(g['p_value'], g['log10_p_value']):<14}.. {bound:<11}"
                     f"(df {g['df']} .. {max(1, g['groups'] - 1)}{poor})")  # fmt: skip
    for _, m in fitted:
        lines += gof_notes(m["title"], m["gof"])
    lines += ["", "Observed against expected frequencies (summed over the rows' fitted laws)",
              *frequency_lines(r["frequencies"], [(f, COLUMNS[f]) for f, _ in fitted])]  # fmt: skip
    lines += ["", *_wrap(r["se_conventions"], "")]
    return "\n".join(line.rstrip() for line in lines)


_STATUS = {"converged": "converged after", "max_steps": "stopped at max_steps,",
           "diverged": "diverged after", "stopped": "stopped after",
           "stalled": "stalled on the saturated zero part's plateau after"}  # fmt: skip
_ROW = "  {:<18}{:>14}{:>12}   {:<28}{}"


def _interval(pair) -> str:
    return "not meaningful (*)" if pair is None else f"[{_num(pair[0])}, {_num(pair[1])}]"


def _se(se, span=math.inf) -> str:
    """The SE, or n/a where it is no measure of spread (not finite, 0, wider than the range)."""
    if se is None or not math.isfinite(se) or se <= 0 or se > span:
        return "n/a"
    return _num(se, ".3g")


def _closed_form_lines(c: dict, pct: str) -> list[str]:
    """The intercept-only ZIP and Poisson in closed form: Wald and profile intervals."""
    lines = [
        "",
        "Closed form (intercept-only): exact MLE with Wald and profile-likelihood intervals",
        _ROW.format("parameter", "estimate", "std. error", f"{pct} Wald", f"{pct} profile"),
    ]
    rows = [
        ("ZIP pi (extra zeros)", c["zip"], "pi", 1.0),
        ("ZIP lambda (rate)", c["zip"], "lambda", math.inf),
        ("Poisson lambda", c["poisson"], "lambda", math.inf),
    ]
    notes = []
    for name, model, key, span in rows:
        iv = model["interval"][key]
        lines.append(_ROW.format(name, _num(model[key]), _se(model[f"se_{key}"], span),
                                 _interval(model["wald"][key]),
                                 _interval(model["profile"][key])))  # fmt: skip
        notes += [interval_note(key, iv)] if iv["reason"] else []
    lines += notes
    for note in c["notes"]:
        lines += _wrap("note: " + note)
    return lines


def _gap(gap: float, nll: float) -> str:
    """A mean-NLL gap; within the rounding of a mean NLL (64 ulps of it) it is "0 nats (to
    rounding)": a descent point can sit a few ulps below the oracle's, and a signed 1e-16 reads
    as a finding."""
    if abs(gap) <= 64 * np.finfo(float).eps * max(abs(nll), 1.0):
        return "0 nats (to rounding)"
    return f"{_num(gap, '.2g')} nats"


def _descent_lines(gd: dict) -> list[str]:
    """The gradient-descent section: the kept start against the Newton oracle."""
    scale = "standardised" if gd["standardize"] else "raw"
    lines = ["", f"Gradient descent ({gd['optimizer']}, lr {gd['lr']:g}, best of {gd['inits']} "
             f"random starts, {scale} covariates)",
             f"  {_STATUS.get(gd['status'], gd['status'])} {gd['steps']:,} steps "
             f"({gd['converged_inits']} of {gd['inits']} starts converged); mean NLL above the "
             f"oracle: {_gap(gd['nll_gap'], gd['nll'])}",
             f"  largest difference from {gd.get('oracle', 'the Newton oracle')}: "
             f"{_num(gd['max_se_error'], '.2g')} standard errors ({gd['worst_term']})"]  # fmt: skip
    if gd.get("towards_boundary"):
        boundary = ("sigma -> 0: descent drives log(sigma)" if "oracle" in gd
                    else "pi -> 0: descent drives logit(pi)")  # fmt: skip
        lines.append(f"  {boundary} towards -inf, the boundary MLE")
    return lines


def _zip_lines(r: dict, pct: str) -> list[str]:
    """The ZIP's own sections (family "zip"): Vuong against its Poisson, closed form, descent."""
    lines = []
    if "zip_vuong" in r:
        v = r["zip_vuong"]
        lines += ["", *vuong_lines(v), *_wrap("caveat: " + v["caveat"])]
    if r.get("closed_form"):
        lines += _closed_form_lines(r["closed_form"], pct)
    if "gradient_descent" in r:
        lines += _descent_lines(r["gradient_descent"])
    return lines
