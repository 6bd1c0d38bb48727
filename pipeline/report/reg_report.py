"""The report of `fit_counts --formula`: a ZIP regression against a Poisson regression.

`summarise` turns a design and the two Newton fits into one dict of plain numbers (what
`--json` prints and MLflow stores); `render` lays it out as aligned terminal text,
`markdown_frequencies` and `metrics` give the MLflow artifacts and metrics. No I/O here.

Coefficients follow pscl's `zeroinfl` naming: the count part models log lambda, the zero part
logit pi (pi = P(structural zero)); statsmodels orders the zero part first, as the parameter
vectors here do.

Likelihood-ratio test, ZIP against Poisson: the Poisson is the ZIP with pi = 0 in every row,
i.e. logit pi -> -inf, on the boundary of the parameter space. With an intercept-only zero
part (q = 1) the statistic is asymptotically 0.5 chi2(0) + 0.5 chi2(1) (Self & Liang 1987), the
reference used. With q > 1 the null leaves the zero part's other coefficients unidentified
(they multiply a vanishing pi: Davies' problem), so no standard reference is exact. We use
chi2(q), the customary choice: it is conservative against the chi-bar-squared mixture of
chi2(0..q) that boundary theory gives when the nuisance coefficients are identified, but with
them unidentified the true law is that of a supremum over them and is not bounded by chi2(q)
in general, so the report calls its p-value approximate.
"""

from __future__ import annotations

import math
import re
import textwrap

import numpy as np
from scipy import stats

from pipeline.core.zipreg_terms import expected_frequencies, loglik_terms

LN10 = math.log(10.0)
MAX_ROWS = 20  # frequency rows before the tail is pooled


def coefficients(names, estimate, se, level: float) -> list[dict]:
    """One dict per coefficient: term, estimate, SE, z, two-sided p (and log10 p), interval."""
    crit = float(stats.norm.ppf(0.5 + level / 2))
    rows = []
    for name, b, s in zip(names, estimate, se):
        z = float(b / s) if s > 0 else math.nan
        log_p = (math.log(2.0) + float(stats.norm.logsf(abs(z)))) / LN10
        rows.append({"term": name, "estimate": float(b), "se": float(s), "z": z,
                     "p_value": float(2 * stats.norm.sf(abs(z))), "log10_p_value": log_p,
                     "lower": float(b - crit * s), "upper": float(b + crit * s)})  # fmt: skip
    return rows


def lr_test(zip_loglik: float, poisson_loglik: float, q: int) -> dict:
    """Likelihood-ratio test of the Poisson (pi = 0) against the ZIP (module docstring)."""
    stat = max(0.0, 2.0 * (zip_loglik - poisson_loglik))
    if q == 1:
        reference, note = "0.5*chi2(0) + 0.5*chi2(1)", ""
        p = 1.0 if stat == 0 else float(0.5 * stats.chi2.sf(stat, 1))
        log_p = 0.0 if stat == 0 else (float(stats.chi2.logsf(stat, 1)) - math.log(2.0)) / LN10
    else:
        reference = f"chi2({q})"
        p, log_p = float(stats.chi2.sf(stat, q)), float(stats.chi2.logsf(stat, q)) / LN10
        note = (f"with {q} zero-part coefficients the null pi = 0 (logit pi -> -inf) leaves the "
                f"others unidentified, so no reference is exact; chi2({q}) is the usual choice, "
                "conservative where the boundary mixture of chi2(0..q) applies: read the p-value "
                "as approximate")  # fmt: skip
    return {"statistic": stat, "df": q, "p_value": p, "log10_p_value": log_p,
            "reference": reference, "note": note}  # fmt: skip


def vuong(terms_zip: np.ndarray, terms_poisson: np.ndarray, extra: int) -> dict:
    """Vuong's z for ZIP against Poisson, raw and AIC/BIC-corrected as pscl (one-sided p).

    z = (sum m_i - correction) / (sqrt(n) sd(m)), m_i the per-row log-likelihood difference;
    corrections 0, `extra` (AIC) and `extra` log(n) / 2 (BIC), `extra` = q extra parameters.
    """
    m = terms_zip - terms_poisson
    n = len(m)
    sd = float(np.std(m, ddof=1)) if n > 1 else math.nan
    out = {}
    for name, corr in (("raw", 0.0), ("aic", float(extra)), ("bic", extra * math.log(n) / 2)):
        z = (float(m.sum()) - corr) / (math.sqrt(n) * sd) if sd > 0 else math.nan
        p, log_p = float(stats.norm.sf(z)), float(stats.norm.logsf(z)) / LN10
        out[name] = {"statistic": z, "p_value": p, "log10_p_value": log_p}
    return out


def frequencies(design, zip_fit, poisson_fit) -> list[dict]:
    """Observed against expected frequencies (summed over rows) for 0..K-1 and a tail "K+".

    K is the first count where the observed and both expected tail counts drop below 5, at
    most the largest count and `MAX_ROWS` (as the intercept-only report).
    """
    y, n = design.y, len(design.y)
    top = max(1, int(min(y.max(), MAX_ROWS)))
    values = np.arange(top + 1)
    e_zip = expected_frequencies(design.X, design.Z, zip_fit.gamma, zip_fit.beta, values)
    e_pois = expected_frequencies(design.X, design.Z[:, :0], np.zeros(0), poisson_fit.beta,
                                  values)  # fmt: skip
    observed = np.bincount(np.minimum(y, top + 1), minlength=top + 2)
    tail = next((k for k in range(1, top + 1)
                 if max(n - observed[:k].sum(), n - e_zip[:k].sum(), n - e_pois[:k].sum()) < 5),
                top)  # fmt: skip
    rows = [{"count": k, "tail": False, "observed": int(observed[k]), "zip": float(e_zip[k]),
             "poisson": float(e_pois[k])} for k in range(tail)]  # fmt: skip
    rows.append({"count": tail, "tail": True, "observed": int(n - observed[:tail].sum()),
                 "zip": float(n - e_zip[:tail].sum()),
                 "poisson": float(n - e_pois[:tail].sum())})  # fmt: skip
    return rows


def summarise(design, zip_fit, poisson_fit, level: float) -> dict:
    """Both Newton fits, tests and frequencies as one dict of numbers.

    Args:
        design: the `store.formula.Design`.
        zip_fit, poisson_fit: `zipreg.RegFit` of the ZIP and the Poisson regression.
        level: interval coverage.

    Returns:
        The report without file, where, gradient descent and MLflow entries.
    """
    y, n = design.y, len(design.y)
    q, p = design.Z.shape[1], design.X.shape[1]
    no_zero = design.Z[:, :0]  # the Poisson: a zero part without columns
    terms = (loglik_terms(design.X, design.Z, y, zip_fit.gamma, zip_fit.beta),
             loglik_terms(design.X, no_zero, y, np.zeros(0), poisson_fit.beta))  # fmt: skip

    def model(fit, k: int, parts: dict) -> dict:
        return {**parts, "loglik": fit.loglik, "nll": fit.nll, "parameters": k,
                "aic": 2 * k - 2 * fit.loglik, "bic": k * math.log(n) - 2 * fit.loglik,
                "status": fit.status, "iterations": fit.iterations}  # fmt: skip

    zeros = int((y == 0).sum())
    return {
        "formula": design.formula, "response": design.response, "rows": design.rows,
        "dropped": design.dropped, "n": n, "level": level,
        "data": {"zeros": zeros, "zero_share": zeros / n, "mean": float(y.mean()),
                 "variance": float(y.var(ddof=1)) if n > 1 else math.nan, "max": int(y.max())},
        "zip": model(zip_fit, q + p, {
            "count": coefficients(design.x_names, zip_fit.beta, zip_fit.se_beta, level),
            "zero": coefficients(design.z_names, zip_fit.gamma, zip_fit.se_gamma, level)}),
        "poisson": model(poisson_fit, p, {
            "count": coefficients(design.x_names, poisson_fit.beta, poisson_fit.se_beta, level)}),
        "lr_test": lr_test(zip_fit.loglik, poisson_fit.loglik, q),
        "vuong": {**vuong(*terms, q), "caveat": VUONG_CAVEAT},
        "frequencies": frequencies(design, zip_fit, poisson_fit),
    }  # fmt: skip


VUONG_CAVEAT = (
    "Poisson is ZIP with pi = 0 in every row (logit pi -> -inf), a point on the boundary of the "
    "ZIP parameter space, so the models are nested and Vuong's non-nested test is not a valid "
    "test of zero inflation (Wilson 2015, Economics Letters 127:51-53); use the "
    "likelihood-ratio test above."
)
_STATUS = {"converged": "converged after", "max_steps": "stopped at max_steps,",
           "diverged": "diverged after", "stopped": "stopped after"}  # fmt: skip


def _num(x, fmt=".6g") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _p(p, log10_p) -> str:
    """p to 3 digits; below the float range from its log10 (as '10^-412.3')."""
    if p is None or log10_p is None or math.isnan(log10_p):
        return "n/a"
    return f"{p:.3g}" if p > 1e-300 else f"10^{log10_p:.1f}"


def _wrap(text: str) -> list[str]:
    return textwrap.wrap(text, 92, initial_indent="  ", subsequent_indent="    ")


def _table(title: str, rows: list[dict], pct: str) -> list[str]:
    form = "  {:<22}{:>12}{:>12}{:>9}{:>11}   {}"
    lines = [title, form.format("term", "estimate", "std. error", "z", "p", f"{pct} interval")]
    for c in rows:
        lines.append(form.format(c["term"][:21], _num(c["estimate"]), _num(c["se"], ".4g"),
                                 _num(c["z"], ".2f"), _p(c["p_value"], c["log10_p_value"]),
                                 f"[{_num(c['lower'])}, {_num(c['upper'])}]"))  # fmt: skip
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
        "",
        *_table("ZIP count part: log(lambda)", z["count"], pct),
        "",
        *_table("ZIP zero part: logit(pi), pi = P(structural zero)", z["zero"], pct),
        f"  Newton oracle: {z['status']} in {z['iterations']} iterations",
        "",
        *_table("Poisson regression: log(lambda)", po["count"], pct),
        "",
        "  {:<18}{:>14}{:>14}".format("model comparison", "ZIP", "Poisson"),
        *[f"  {name:<18}{_num(z[key], fmt):>14}{_num(po[key], fmt):>14}"
          for name, key, fmt in (("parameters", "parameters", "d"), ("log-likelihood", "loglik",
                                 ".2f"), ("AIC", "aic", ".2f"), ("BIC", "bic", ".2f"))],
        "",
        "Likelihood-ratio test for zero inflation (H0: pi = 0 in every row, the Poisson)",
        f"  T = {_num(lr['statistic'], '.4g')}, p = {_p(lr['p_value'], lr['log10_p_value'])}"
        f"   (reference {lr['reference']})",
        *(_wrap("note: " + lr["note"]) if lr["note"] else []),
        "Vuong test, ZIP against Poisson (one-sided p for 'ZIP is closer')",
        *["  {:<18}z = {:<10}p = {}".format(name, _num(r["vuong"][key]["statistic"], ".4g"),
                                            _p(r["vuong"][key]["p_value"],
                                               r["vuong"][key]["log10_p_value"]))
          for name, key in (("raw", "raw"), ("AIC-corrected", "aic"), ("BIC-corrected", "bic"))],
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
        "  {:>7}{:>12}{:>12}{:>12}".format("count", "observed", "ZIP", "Poisson"),
        *["  {:>7}{:>12,}{:>12.1f}{:>12.1f}".format(
            f"{f['count']}+" if f["tail"] else f["count"], f["observed"], f["zip"], f["poisson"])
          for f in r["frequencies"]],
    ]  # fmt: skip
    return "\n".join(line.rstrip() for line in lines)


def markdown_frequencies(report: dict) -> str:
    """The frequency table as markdown."""
    lines = ["| count | observed | ZIP | Poisson |", "| ---: | ---: | ---: | ---: |"]
    for f in report["frequencies"]:
        label = f"{f['count']}+" if f["tail"] else str(f["count"])
        lines.append(f"| {label} | {f['observed']} | {f['zip']:.2f} | {f['poisson']:.2f} |")
    return "\n".join(lines) + "\n"


def metrics(report: dict) -> dict[str, float]:
    """The report's finite numbers as flat MLflow metrics; coefficients under their term name
    (characters MLflow refuses in a key, e.g. the brackets of `C(g)[T.b]`, become '_')."""
    out: dict[str, float] = {}

    def clean(key) -> str:  # every segment: terms appear as dict keys and in rows
        return re.sub(r"[^0-9A-Za-z_. /-]", "_", str(key))

    def walk(prefix: str, obj) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(f"{prefix}{clean(k)}.", v)
        elif isinstance(obj, list) and obj and isinstance(obj[0], dict) and "term" in obj[0]:
            for row in obj:
                walk(f"{prefix}{clean(row['term'])}.",
                     {k: v for k, v in row.items() if k != "term"})  # fmt: skip
        elif isinstance(obj, (bool, int, float, np.number)) and math.isfinite(float(obj)):
            out[prefix[:-1]] = float(obj)

    walk("", {k: v for k, v in report.items() if k not in ("frequencies", "rows")})
    return out
