"""The report of `fit_counts --formula`: a ZIP regression against a Poisson regression.

`summarise` turns a design and the two Newton fits into one dict of plain numbers (what
`--json` prints and MLflow stores); `report.reg_text.render` lays it out as aligned terminal
text, `markdown_frequencies` and `metrics` give the MLflow artifacts and metrics. No I/O here.

A coefficient whose standard error is not finite (or not positive) gets no z, p-value or
interval (null in the JSON, "n/a" in the text) and a note; the frequency table's rows are
chosen from the data (`core.inference.goodness.count_bins`), each model's expected frequencies
summed over the rows' fitted distributions, with Pearson's goodness-of-fit test per model; a
sample below `core.inference.asymptotics.sample_size_floor` (10 counts per parameter, at least
30) opens the text with a warning and withholds Vuong's test.

Coefficients follow pscl's `zeroinfl` naming: the count part models log lambda, the zero part
logit pi (pi = P(structural zero)); statsmodels orders the zero part first, as the parameter
vectors here do.

Every statistic comes from `core.inference` (the report only assembles and formats):
coefficients' Wald z and p, the likelihood-ratio test of the Poisson (pi = 0 in every row, on
the boundary: ½χ²₀ + ½χ²₁ for an intercept-only zero part, χ²_q flagged approximate beyond)
and Vuong's z with its two-sided p are `core.inference.model_tests`', the same code as the
intercept-only and family reports.
"""

from __future__ import annotations

import math
import re

import numpy as np

from pipeline.core.inference import goodness
from pipeline.core.inference.asymptotics import wald_or_profile
from pipeline.core.inference.goodness import screen_level
from pipeline.core.inference.model_choice import information_criteria
from pipeline.core.inference.model_tests import lr_test, vuong_statistics, wald_test
from pipeline.core.laws.count_cdf import binned_expected
from pipeline.core.model import fit_data
from pipeline.core.oracle.terms import loglik_terms
from pipeline.report import fit_checks
from pipeline.report.fit_checks import (
    ZIP_VUONG_CAVEAT,
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
        z, p, log10_p = wald_test(b, s) if iv.method == "wald" else (math.nan,) * 3
        rows.append({"term": name, "estimate": b, "se": s, "z": z, "p_value": p,
                     "log10_p_value": log10_p, "lower": iv.lower, "upper": iv.upper,
                     "interval": interval_entry(iv)})  # fmt: skip
    return rows


def lr_entry(zip_loglik: float, poisson_loglik: float, q: int) -> dict:
    """The likelihood-ratio test of the Poisson (pi = 0) against the ZIP as JSON
    (`model_tests.lr_test`: ½χ²₀ + ½χ²₁ for q = 1, χ²_q flagged approximate beyond)."""
    t = lr_test("poisson", "zip", "pi = 0", poisson_loglik, zip_loglik, q)
    return {"statistic": t.statistic, "df": t.df, "p_value": t.p_value,
            "log10_p_value": t.log10_p_value, "reference": t.reference,
            "note": t.note}  # fmt: skip


def expected_rows(starts, X, Z, gamma, beta) -> np.ndarray:
    """Expected frequency of each row [starts[j], starts[j+1]) summed over the observations
    (`count_cdf.binned_expected`; Z without columns: the Poisson)."""
    if Z.shape[1]:
        return binned_expected("zip", X, Z, np.r_[gamma, beta], starts)
    return binned_expected("poisson", X, Z, np.asarray(beta, float), starts)


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
        aic, bic = information_criteria(fit.loglik, k, n)
        return {**parts, "loglik": fit.loglik, "nll": fit.nll, "parameters": k, "aic": aic,
                "bic": bic, "status": fit.status, "iterations": fit.iterations}  # fmt: skip

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
    warnings = [w for w in (small, misfit_warning("ZIP", gof["zip"], screen_level(level))) if w]
    tests = {k: t._asdict() for k, t in vuong_statistics(*terms, None, q)[0].items()}
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
        "lr_test": lr_entry(zip_fit.loglik, poisson_fit.loglik, q),
        "vuong": {**tests, "reported": not small, "caveat": ZIP_VUONG_CAVEAT},
        "frequencies": rows,
        "notes": notes,
    }  # fmt: skip


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
