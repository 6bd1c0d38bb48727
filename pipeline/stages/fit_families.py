"""`python -m pipeline.fit_counts FILE ... --family all|NAME`: the count families compared.

The count-family path of `fit_counts` (its `main` reads the counts or the design, then hands
over here). Fits the requested family, or all six with the same regressors, by the float64
Newton oracle (`core.oracle.fit`); a family whose fit fails keeps its row with the reason and
the others are still compared. For each fitted family: per-observation log-likelihoods (Vuong),
the robust sandwich covariance, expected frequencies on rows chosen from the observed counts
(`goodness.count_bins`, the same rows for every family) and Pearson's goodness-of-fit test.
Then the comparison (AIC, BIC, likelihood-ratio and Vuong tests, `core.inference.model_choice`), the
recommendation (family "all" only), the report and its text (`report.family_report`), and
one MLflow run with the text, JSON, frequency table and one rootogram per family.

Data enter as (X, Z, y, weights): a column of counts as its histogram (X = Z = a column of
ones per distinct count, y = the distinct counts, weights = their frequencies), a formula as
its design (weights None). Every number is the same either way (frequency weights).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from pipeline.core.errors import NotIdentifiableError, UserError
from pipeline.core.inference import goodness
from pipeline.core.inference.model_choice import compare, recommend
from pipeline.core.inference.model_tests import TITLES
from pipeline.core.laws.count_cdf import binned_expected
from pipeline.core.model import FAMILIES, fit_data
from pipeline.core.oracle.fit import fit_model
from pipeline.core.oracle.terms import loglik_terms, zero_design
from pipeline.report.count_report import jsonable
from pipeline.report.family_report import render_families, rootograms_figure, summarise_families
from pipeline.report.fit_checks import frequency_rows, gof_entry, markdown_frequencies
from pipeline.report.reg_report import metrics
from pipeline.stages import config
from pipeline.stages.cli import logged
from pipeline.tracking.runs import Tracker, invocation_id
from pipeline.tracking.values import flatten

CHOICES = ("all", *FAMILIES)


def data_summary(y: np.ndarray, w: np.ndarray) -> dict:
    """n, zeros, their share, mean, variance (n − 1) and max of weighted counts."""
    n = float(w.sum())
    mean = float(w @ y) / n
    var = float(w @ (y - mean) ** 2) / (n - 1) if n > 1 else math.nan
    zeros = int(w[y == 0].sum())
    return {"n": int(n), "zeros": zeros, "zero_share": zeros / n, "mean": mean, "variance": var,
            "max": int(y[w > 0].max())}  # fmt: skip


def frequency_bins(y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The table's row edges (`goodness.count_bins`) and observed frequency per row."""
    values, inverse = np.unique(y, return_inverse=True)
    freqs = np.bincount(inverse, weights=w).round().astype(np.int64)
    keep = freqs > 0
    starts = goodness.count_bins(values[keep], freqs[keep])
    return starts, goodness.bin_observed(values[keep], freqs[keep], starts)


def fit_family(family: str, X, Z, y, weights, starts, observed) -> dict:
    """One family: its fit, per-row log-likelihoods, sandwich covariance, expected rows, GOF.

    Returns:
        {"fit", "ll", "robust", "expected", "gof"}, or {"error": why} when the fit or one of
        its summaries failed (a bad design for this family, a numerical failure).

    Raises:
        UserError: every count is zero (no family is identifiable then).
    """
    try:
        data = fit_data(X, Z, y, weights=weights)
        fit = fit_model(family, data)
        ll = loglik_terms(family, data, fit.params)
        robust = fit.robust_cov
        expected = binned_expected(family, X, zero_design(fit.family, data), fit.params, starts,
                                   weights)  # fmt: skip
    except NotIdentifiableError:
        raise UserError("all counts are zero: no count model is identifiable") from None
    except (ValueError, ArithmeticError, np.linalg.LinAlgError) as err:
        return {"error": f"{type(err).__name__}: {err}"}
    gof = gof_entry(observed, expected, fit.n_params)
    return {"fit": fit, "ll": ll, "robust": robust, "expected": expected, "gof": gof}


def _intercept_only(X: np.ndarray, Z: np.ndarray) -> bool:
    """Both parts one constant column (a column of counts): hurdles then nest the others."""
    return all(M.shape[1] == 1 and np.ptp(M) == 0 and M[0, 0] != 0 for M in (X, Z))


def log_families(tracker: Tracker, args, params: config.Params, report: dict, text: str) -> str:
    """One MLflow run (under the invocation): params, metrics, text, JSON, frequency table and
    the rootograms of every fitted family; returns its id."""
    stamp = params.digest(*config.STAGE_BLOCKS["fit_counts"])
    parent = tracker.invocation(params.digest())
    source = report["source"]
    tags = {"stage": "fit_counts", "file": str(args.file), "family": report["family"],
            "formula": source.get("formula") or "", "column": source.get("column") or "",
            "where": getattr(args, "where", None) or "", "params_hash": stamp,
            "invocation": invocation_id()}  # fmt: skip
    run_id = tracker.start(f"fit_counts-{Path(args.file).name}-{report['family']}", "stage",
                           parent=parent, tags=tags)  # fmt: skip
    report["mlflow_run_id"] = run_id  # also in the JSON artifact
    flat = flatten({"fit_counts": config.as_dict(params.fit_counts)})
    flat.update(seed=params.seed, family=report["family"], n=report["n"],
                **{f"source.{k}": v for k, v in source.items() if v is not None})  # fmt: skip
    rec = report["recommendation"] or {}
    run_tags = {"recommended": rec.get("family") or "", "detail": report["detail"] or ""}
    tracker.log(run_id, params=flat, metrics=metrics(report), tags=run_tags)
    fitted = [(f, m["title"]) for f, m in report["models"].items() if m["status"] != "failed"]
    texts = {"fit_counts.txt": text + "\n",
             "frequencies.md": markdown_frequencies(report["frequencies"], fitted),
             "fit_counts.json": json.dumps(jsonable(report), indent=2) + "\n"}  # fmt: skip
    for name, body in texts.items():
        tracker.log_text(run_id, body, name)
    if fitted:
        tracker.log_figure(run_id, rootograms_figure(report["frequencies"], fitted),
                           "rootogram.png")  # fmt: skip
    tracker.end(run_id)
    return run_id


def analyse_families(args, params: config.Params, X, Z, y, weights, names: dict, family: str,
                     source: dict) -> dict:  # fmt: skip
    """Fit, compare, recommend and (unless args.no_mlflow) log; returns the report with "text".

    Args:
        args: `fit_counts`' parsed arguments (file, where, no_mlflow, workdir).
        params: the validated params (`fit_counts.level`, tracking).
        X: (rows, p) count design; Z: (rows, q >= 1) zero design (used by the families with a
            zero part); y: (rows,) counts.
        weights: (rows,) frequency weights, or None (each row once).
        names: {"count": p names, "zero": q names}.
        family: "all" or one of `core.model.FAMILIES`.
        source: what was read, for the header and JSON (file, column or formula, where, rows).

    Returns:
        The report dict (`family_report.summarise_families`), its rendering under "text",
        "mlflow_run_id" and "mlflow_experiment".

    Raises:
        UserError: an unknown family, all counts zero, or no family could be fitted.
    """
    if family not in CHOICES:
        raise UserError(f"--family {family!r}: choose one of {', '.join(CHOICES)}")
    X, Z = np.asarray(X, float), np.asarray(Z, float)
    y = np.asarray(y, float)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, float)
    level = params.fit_counts.level
    if not args.no_mlflow:  # the store opens before the fits: a broken one is one line
        tracker = Tracker(params.tracking.experiment, root=args.workdir.resolve())
    starts, observed = frequency_bins(y, w)
    families = FAMILIES if family == "all" else (family,)
    results = {f: fit_family(f, X, Z, y, weights, starts, observed) for f in families}
    ok = {f: r for f, r in results.items() if "error" not in r}
    if not ok:
        why = "; ".join(f"{TITLES[f]}: {r['error']}" for f, r in results.items())
        raise UserError(f"{source.get('file')}: no count family could be fitted ({why})")
    comparison = compare({f: r["fit"] for f, r in ok.items()}, {f: r["ll"] for f, r in ok.items()},
                         weights, float(w.sum()), Z.shape[1],
                         intercept_only=_intercept_only(X, Z))  # fmt: skip
    gof = {f: r["gof"] for f, r in ok.items()}
    rec = recommend(comparison, gof, level) if family == "all" else None
    rows = frequency_rows(starts, observed, {f: r["expected"] for f, r in ok.items()})
    fits = {f: r.get("fit", r.get("error")) for f, r in results.items()}
    report = summarise_families(fits, {f: r["robust"] for f, r in ok.items()}, gof, comparison,
                                rec, rows, names, level=level, data=data_summary(y, w),
                                source=source, family=family)  # fmt: skip
    text = render_families(report)
    report["mlflow_run_id"], report["mlflow_experiment"] = None, params.tracking.experiment
    if not args.no_mlflow:
        report["mlflow_run_id"] = logged(
            tracker, lambda: log_families(tracker, args, params, report, text)
        )
    return {**report, "text": text}
