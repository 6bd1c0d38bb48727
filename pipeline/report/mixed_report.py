"""`fit_counts`' report of count models with random intercepts (`count_fits.MixedFits`): the
comparison of the families with the random intercept, each family's fixed-effect tables and
σ̂ per random part (profile-likelihood interval for the detailed family, Wald on the log
scale for the others), the LR tests of σ = 0 against the same
family without random intercepts, the conditional modes of the chosen family per group and,
for a family asked for by name, its gradient-descent fit beside the oracle.

The coefficient rows are `count_report.coefficients`' (one table format for every fit); the
SEs are model-based (the inverse observed information of the exact marginal likelihood), no
sandwich: rows of one group are not independent, and a cluster-robust SE with few groups is
its own study. Pure functions of the fits: numbers in, dict and text out.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.core.inference.asymptotics import wald_or_profile
from pipeline.core.inference.model_tests import TITLES
from pipeline.report.count_report import (
    _descent_lines,
    _detail_lines,
    _num,
    _p,
    _wrap,
    coefficients,
)
from pipeline.report.count_wording import num_cell

SIGMA_REFERENCE = "0.5*chi2(0) + 0.5*chi2(1)"  # σ = 0 is on the boundary of σ >= 0
SIGMA_INTERVAL = "Wald on log(sigma), exponentiated"
SIGMA_PROFILE = "profile likelihood, chi2(1) cutoff"
SE_NOTE = ("model-based SEs (inverse observed information of the exact marginal likelihood, "
           "adaptive Gauss-Hermite quadrature); no sandwich: rows of a group are not "
           "independent")  # fmt: skip


def _sigma_rows(fit, level: float, profiles: dict | None = None) -> list[dict]:
    """σ per random part with its interval: the profile likelihood's where `profiles` has
    it (the detailed family; lower limit 0 where σ = 0 is inside, so also at σ̂ = 0), else
    Wald on log σ (none at σ̂ = 0, where log σ has no SE)."""
    k = fit.n_params - len(fit.parts)
    rows = []
    for r, part in enumerate(fit.parts):
        log_s, se = float(fit.params[k + r]), float(fit.se[k + r])
        ok = math.isfinite(log_s) and math.isfinite(se) and se > 0
        row = {"part": part, "sigma": math.exp(log_s), "log_sigma": log_s,
               "se_log_sigma": se if ok else math.nan}  # fmt: skip
        if part in (profiles or {}):
            lower, upper = profiles[part]
            row.update(lower=lower, upper=upper, interval=SIGMA_PROFILE)
        elif ok:
            iv = wald_or_profile(log_s, se, level)
            row.update(lower=math.exp(iv.lower), upper=math.exp(iv.upper), interval=SIGMA_INTERVAL)
        else:
            why = "sigma = 0 on the boundary" if log_s == -math.inf else "no finite SE"
            row.update(lower=math.nan, upper=math.nan, interval=why)
        rows.append(row)
    return rows


def _model(fam, fit, fixed, tests, criteria, names, level: float, profiles=None) -> dict:
    if isinstance(fit, str):
        return {"title": TITLES[fam], "status": "failed", "message": fit}
    q, k = fit.q, fit.n_params - len(fit.parts)
    p = k - q - int(fit.family.dispersion)
    est, se = fit.params, fit.se
    entry = {"title": TITLES[fam], "status": fit.status, "message": fit.message,
             "loglik": fit.loglik, "parameters": fit.n_params, "nodes": fit.nodes,
             "random": list(fit.parts), "aic": criteria[0], "bic": criteria[1],
             "alpha": math.exp(est[q + p]) if fit.family.dispersion else None,
             "fixed_loglik": fixed.loglik, "fixed_status": fixed.status,
             "sigma": _sigma_rows(fit, level, profiles),
             "sigma_tests": {part: {"statistic": t.statistic, "p_value": t.p_value,
                                    "log10_p_value": t.log10_p_value,
                                    "reference": SIGMA_REFERENCE}
                             for part, t in tests.items()}}  # fmt: skip
    spans = {"zero": (slice(0, q), names["zero"][:q]), "count": (slice(q, q + p), names["count"]),
             "dispersion": (slice(q + p, k), ["log(alpha)"])}  # fmt: skip
    for part, (span, terms) in spans.items():
        rows = coefficients(terms, est[span], se[span], level) if est[span].size else []
        for row in rows:  # one SE convention here: no robust column (SE_NOTE)
            row.update(robust_se=math.nan, se_ratio=math.nan)
        entry[part] = rows
    entry["se_warning"] = ""
    return entry


def summarise_mixed(fits, names: dict, *, level: float, data: dict, source: dict,
                    family: str, group_labels,
                    gradient_descent: dict | None = None) -> dict:  # fmt: skip
    """The mixed fits as one dict of numbers (`count_report.summarise`'s keys where they mean
    the same: source, family, n, level, data, models, detail).

    Args:
        fits: `count_fits.MixedFits`; names: {"count": [...], "zero": [...]} term names.
        level: interval coverage; data: `count_fits.data_summary`; source: what was read
            (with "group_column" and "random"); family: "all" or the one asked for.
        group_labels: (n,) the grouping column's values per row (modes are per level, in
            the order levels first appear).
        gradient_descent: `count_fits.mixed_descent_summary` of the family asked for, or
            None (family "all").
    """
    models = {fam: _model(fam, fit, fits.fixed.get(fam), fits.tests.get(fam, {}),
                          fits.criteria.get(fam, (math.nan, math.nan)), names, level,
                          fits.profiles.get(fam))
              for fam, fit in fits.fits.items()}  # fmt: skip
    if gradient_descent is not None:
        models[family]["gradient_descent"] = gradient_descent
    bics = [m["bic"] for m in models.values() if m["status"] != "failed"]
    for m in models.values():
        if m["status"] != "failed":
            m["delta_bic"] = m["bic"] - min(bics)
    detail = fits.best if family == "all" else family
    _, first = np.unique(np.asarray(group_labels), return_index=True)
    labels = [str(v) for v in np.asarray(group_labels)[np.sort(first)]]
    modes = None
    chosen = fits.fits.get(detail)
    if chosen is not None and not isinstance(chosen, str):
        modes = {
            "group": labels,
            **{part: chosen.modes[:, r].tolist() for r, part in enumerate(chosen.parts)},
        }
    return {"source": source, "family": family, "n": data["n"], "level": level, "data": data,
            "groups": len(labels), "group_column": source.get("group_column"),
            "random": source.get("random"), "models": models, "detail": detail,
            "recommendation": None if family != "all" or fits.best is None else
            {"family": fits.best, "rule": "lowest BIC among the converged mixed fits"},
            "modes": modes, "se_conventions": SE_NOTE}  # fmt: skip


def modes_table(r: dict) -> str:
    """The conditional modes as CSV: group, then one column per random part."""
    m = r["modes"] or {"group": []}
    parts = [k for k in m if k != "group"]
    lines = [",".join(["group", *parts])]
    for i, label in enumerate(m["group"]):
        lines.append(",".join([_csv(label), *[repr(float(m[p][i])) for p in parts]]))
    return "\n".join(lines) + "\n"


def _csv(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


def render_mixed(r: dict) -> str:
    """The mixed report as aligned plain text."""
    pct = f"{100 * r['level']:g}%"
    s = r["source"]
    lines = [f"{s['file']}: {s.get('formula')}  ({r['n']:,} observations, {r['groups']} groups "
             f"of {r['group_column']!r}; random intercepts in the {' and '.join(r['random'])} "
             "part)", ""]  # fmt: skip
    form = "  {:<16}{:>14}{:>5}{:>13}{:>13}{:>10}   {}"
    lines.append(form.format("family", "log-lik", "k", "AIC", "BIC", "dBIC", "status"))
    for m in r["models"].values():
        if m["status"] == "failed":
            lines += _wrap(f"{m['title']:<16}not fitted: {m['message']}")
            continue
        lines.append(form.format(m["title"], num_cell(m["loglik"], ".2f", 14), m["parameters"],
                                 num_cell(m["aic"], ".2f", 13), num_cell(m["bic"], ".2f", 13),
                                 num_cell(m["delta_bic"], ".2f", 10), m["status"]))  # fmt: skip
    lines += ["", f"Random intercepts: sigma with a {pct} interval (profile: {SIGMA_PROFILE}, "
              "for the detailed family; Wald: on log(sigma), exponentiated) and the LR test of "
              f"sigma = 0 against the family without them ({SIGMA_REFERENCE})"]  # fmt: skip
    for m in r["models"].values():
        if m["status"] == "failed":
            continue
        for row in m["sigma"]:
            t = m["sigma_tests"][row["part"]]
            how = "profile" if row["interval"] == SIGMA_PROFILE else "Wald"
            interval = (f"[{_num(row['lower'], '.4g')}, {_num(row['upper'], '.4g')}] {how}"
                        if math.isfinite(row["lower"]) else f"({row['interval']})")  # fmt: skip
            lines.append(f"  {m['title']:<16}{row['part']:<6}sigma = "
                         f"{_num(row['sigma'], '.4g'):<10}{interval:<26} T = "
                         f"{_num(t['statistic'], '.4g'):<10}p = "
                         f"{_p(t['p_value'], t['log10_p_value'])}")  # fmt: skip
    if r["recommendation"]:
        lines += ["", f"Lowest BIC: {TITLES[r['recommendation']['family']]}"]
    detail = r["models"].get(r["detail"]) if r["detail"] else None
    if detail and detail["status"] != "failed":
        lines += ["", *(_detail_lines(detail, pct))]
        if "gradient_descent" in detail:
            lines += [*_descent_lines(detail["gradient_descent"]), ""]
        lines += _wrap(f"SEs: {SE_NOTE}", "")
        lines += _wrap(f"Conditional modes of the random intercepts per {r['group_column']!r}: "
                       "in the JSON (\"modes\") and the MLflow run (modes.csv)", "")  # fmt: skip
    return "\n".join(lines)
