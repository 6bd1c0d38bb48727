"""The report of `fit_counts --formula`: a ZIP regression against a Poisson regression.

`summarise` turns a design and the two Newton fits into one dict of plain numbers (what
`--json` prints and MLflow stores); `report.reg_text.render` lays it out as aligned terminal
text, `markdown_frequencies` and `metrics` give the MLflow artifacts and metrics. No I/O here.

A coefficient whose standard error is not finite (or not positive) gets no z, p-value or
interval (null in the JSON, "n/a" in the text) and a note; the frequency table's rows are
chosen from the data (`core.inference.goodness.count_bins`), each model's expected frequencies
summed
over the rows' fitted distributions, with Pearson's goodness-of-fit test per model; a sample
below `core.inference.asymptotics.sample_size_floor` (10 counts per parameter, at least 30) opens
the
text with a warning and withholds Vuong's test.

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

import numpy as np
from scipy import stats
from scipy.special import expit

from pipeline.core.inference import goodness
from pipeline.core.inference.asymptotics import wald_or_profile
from pipeline.core.inference.intercept import zip_cdf, zip_sf
from pipeline.core.model import fit_data
from pipeline.core.oracle.terms import loglik_terms
from pipeline.report import fit_checks
from pipeline.report.fit_checks import (
    frequency_rows,
    gof_entry,
    interval_entry,
    interval_note,
    misfit_warning,
    small_sample_warning,
)

LN10 = math.log(10.0)
MODELS = [("zip", "ZIP"), ("poisson", "Poisson")]  # (row key, title) of the frequency table


def coefficients(names, estimate, se, level: float) -> list[dict]:
    """One dict per coefficient: term, estimate, SE, z, two-sided p (and log10 p), interval.

    A coefficient whose SE is not finite or not positive (`asymptotics.wald_or_profile`) gets
    NaN z, p and limits, never numbers made from it, and its reason under "interval".
    """
    rows = []
    for name, b, s in zip(names, estimate, se):
        b, s = float(b), float(s)
        iv = wald_or_profile(b, s, level)
        z = b / s if iv.method == "wald" else math.nan
        log_p = (math.log(2.0) + float(stats.norm.logsf(abs(z)))) / LN10
        rows.append({"term": name, "estimate": b, "se": s, "z": z,
                     "p_value": float(2 * stats.norm.sf(abs(z))), "log10_p_value": log_p,
                     "lower": iv.lower, "upper": iv.upper,
                     "interval": interval_entry(iv)})  # fmt: skip
    return rows


def lr_test(zip_loglik: float, poisson_loglik: float, q: int) -> dict:
    """Likelihood-ratio test of the Poisson (pi = 0) against the ZIP (module docstring)."""
    stat = max(0.0, 2.0 * (zip_loglik - poisson_loglik))
    if q == 1:
        reference, note = "0.5*chi2(0) + 0.5*chi2(1)", ""
        p = 1.0 if stat == 0 else float(0.5 * stats.chi2.sf(stat, 1))
        log_p = 0.0 if stat == 0 else (goodness.chi2_logsf(stat, 1) - math.log(2.0)) / LN10
    else:
        reference = f"chi2({q})"
        p, log_p = float(stats.chi2.sf(stat, q)), goodness.chi2_logsf(stat, q) / LN10
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


def expected_rows(starts, X, Z, gamma, beta) -> np.ndarray:
    """Expected frequency of each row [starts[j], starts[j+1]) summed over the observations.

    Each observation's row probabilities are cdf (or survival-function) differences of its
    fitted ZIP (`goodness.binned_probabilities`): O(n x rows), whatever the rows span.

    Args:
        starts: lower edges of the rows (the last row open).
        X, Z, gamma, beta: designs and coefficients (Z without columns: the Poisson).

    Returns:
        (rows,) float64.
    """
    with np.errstate(over="ignore"):
        lam = np.exp(X @ np.asarray(beta, float))
    pi = expit(Z @ np.asarray(gamma, float)) if Z.shape[1] else np.zeros(len(X))
    probs = goodness.binned_probabilities(starts, lambda k: zip_cdf(k, pi, lam),
                                          lambda k: zip_sf(k, pi, lam))  # fmt: skip
    return probs.sum(axis=1)


def frequencies(design, zip_fit, poisson_fit) -> tuple[list[dict], dict]:
    """Observed against expected frequencies on rows chosen from the counts, and each model's
    Pearson goodness-of-fit test over them.

    Returns:
        (the JSON rows, {"zip": gof, "poisson": gof}).
    """
    y = np.asarray(design.y).astype(np.int64)
    values, freqs = np.unique(y, return_counts=True)
    starts = goodness.count_bins(values, freqs)
    observed = goodness.bin_observed(values, freqs, starts)
    q, p = design.Z.shape[1], design.X.shape[1]
    expected = {"zip": expected_rows(starts, design.X, design.Z, zip_fit.gamma, zip_fit.beta),
                "poisson": expected_rows(starts, design.X, design.Z[:, :0], np.zeros(0),
                                         poisson_fit.beta)}  # fmt: skip
    gof = {"zip": gof_entry(observed, expected["zip"], q + p),
           "poisson": gof_entry(observed, expected["poisson"], p)}  # fmt: skip
    return frequency_rows(starts, observed, expected), gof


def summarise(design, zip_fit, poisson_fit, level: float) -> dict:
    """Both Newton fits, tests and frequencies as one dict of numbers.

    Args:
        design: the `store.formula.Design`.
        zip_fit, poisson_fit: `oracle.fit.OracleFit` of the ZIP and the Poisson regression.
        level: interval coverage; the tests' level is 1 - level.

    Returns:
        The report without file, where, gradient descent and MLflow entries.
    """
    y, n = design.y, len(design.y)
    q, p = design.Z.shape[1], design.X.shape[1]
    data = fit_data(design.X, design.Z, y)
    terms = (loglik_terms("zip", data, zip_fit.params),
             loglik_terms("poisson", data, poisson_fit.params))  # fmt: skip
    rows, gof = frequencies(design, zip_fit, poisson_fit)

    def model(fit, k: int, parts: dict) -> dict:
        return {**parts, "loglik": fit.loglik, "nll": fit.nll, "parameters": k,
                "aic": 2 * k - 2 * fit.loglik, "bic": k * math.log(n) - 2 * fit.loglik,
                "status": fit.status, "iterations": fit.iterations}  # fmt: skip

    zip_model = model(
        zip_fit,
        q + p,
        {
            "count": coefficients(design.x_names, zip_fit.beta, zip_fit.se_beta, level),
            "zero": coefficients(design.z_names, zip_fit.gamma, zip_fit.se_gamma, level),
            "gof": gof["zip"],
        },
    )
    poisson_model = model(poisson_fit, p, {
        "count": coefficients(design.x_names, poisson_fit.beta, poisson_fit.se_beta, level),
        "gof": gof["poisson"]})  # fmt: skip
    small = small_sample_warning(n, q + p)
    warnings = [w for w in (small, misfit_warning("ZIP", gof["zip"], level)) if w]
    tests = vuong(*terms, q)
    if small:  # a mean of skewed log-likelihood ratios: its normal reference needs a large n
        tests = {k: {key: math.nan for key in t} for k, t in tests.items()}
    notes = [interval_note(f"{label}: {c['term']}", c["interval"])
             for label, part in (("ZIP count", zip_model["count"]),
                                 ("ZIP zero", zip_model["zero"]),
                                 ("Poisson", poisson_model["count"]))
             for c in part if c["interval"]["reason"]]  # fmt: skip
    zeros = int((y == 0).sum())
    return {
        "formula": design.formula, "response": design.response, "rows": design.rows,
        "dropped": design.dropped, "n": n, "level": level, "warnings": warnings,
        "data": {"zeros": zeros, "zero_share": zeros / n, "mean": float(y.mean()),
                 "variance": float(y.var(ddof=1)) if n > 1 else math.nan, "max": int(y.max())},
        "zip": zip_model,
        "poisson": poisson_model,
        "lr_test": lr_test(zip_fit.loglik, poisson_fit.loglik, q),
        "vuong": {**tests, "reported": not small, "caveat": VUONG_CAVEAT},
        "frequencies": rows,
        "notes": notes,
    }  # fmt: skip


VUONG_CAVEAT = (
    "Poisson is ZIP with pi = 0 in every row (logit pi -> -inf), a point on the boundary of the "
    "ZIP parameter space, so the models are nested and Vuong's non-nested test is not a valid "
    "test of zero inflation (Wilson 2015, Economics Letters 127:51-53); use the "
    "likelihood-ratio test above."
)


def markdown_frequencies(report: dict) -> str:
    """The frequency table as markdown."""
    return fit_checks.markdown_frequencies(report["frequencies"], MODELS)


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
