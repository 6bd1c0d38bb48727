"""`python -m pipeline.fit_counts FILE --formula "y ~ x1 + x2 | z1"`: ZIP regression vs Poisson.

The formula path of `fit_counts` (its `main` reads the design, then hands over here, so a bad
file or formula is refused before torch loads). Fits the ZIP regression by the float64 Newton
oracle (`core.oracle.fit`) and by gradient descent (`core.descent.design_engine`,
`fit_counts.inits` seeded
random starts, best kept) beside it, fits the Poisson regression with the same count
regressors, tests for zero inflation (likelihood ratio, Vuong with its caveat; the references
are in `report.reg_report`), gives AIC/BIC, observed against expected frequencies on rows
chosen from the data with a Pearson goodness-of-fit test per model, and logs one MLflow run
with the text, the JSON and a hanging rootogram. Too few counts for the number of parameters,
or a misfitting ZIP, open the text with a one-line warning.

Standardisation (`fit_counts.standardize`, on by default): the descent runs on the design
with every non-constant column scaled to unit SD and centred where its part has an intercept
(`scaling`); estimates and paths are mapped back to the original scale. The same transform
as `design_engine.fit_designs(standardize=True)`, done here because the starts below are
drawn on the standardised scale and need its matrix too.

Random starts (the oracle's estimate is never one): every coefficient is drawn on the fitting
scale as N(guess, 0.5^2), guess = log(mean of the positive counts) for the count intercept and
0 for every other coefficient (zero-part intercept 0: pi = 1/2). On the standardised scale a
slope of 0.5 moves log lambda or logit pi by 0.5 per SD of its column, so the starts have the
data's scale whatever the covariates' units.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import scipy.linalg

from pipeline.core import seeds
from pipeline.core.descent.design_engine import fit_designs
from pipeline.core.descent.designs import stack_designs
from pipeline.core.descent.engine import check_device
from pipeline.core.descent.outcome import FitResult
from pipeline.core.errors import NotIdentifiableError, UserError
from pipeline.core.inference.intercept import FrequencyTable
from pipeline.core.model import fit_data
from pipeline.core.oracle.fit import OracleFit, fit_model
from pipeline.report.count_report import jsonable
from pipeline.report.reg_report import markdown_frequencies, metrics, summarise
from pipeline.report.reg_text import render
from pipeline.report.rootogram import rootogram_figure
from pipeline.stages import config
from pipeline.stages.cli import logged, progress
from pipeline.store.formula import Design
from pipeline.tracking.runs import Tracker, invocation_id
from pipeline.tracking.values import flatten, thin

START_SD = 0.5  # spread of the random starts per coefficient, on the standardised scale


def oracle_fits(design: Design, where: str) -> tuple[OracleFit, OracleFit]:
    """The Newton fits of the ZIP and the Poisson regression, problems as one line.

    Args:
        design: the design read from the user's file.
        where: the file (and formula) for messages.

    Returns:
        (ZIP fit, Poisson fit).

    Raises:
        UserError: all counts zero, or the ZIP fit is separated or singular.
    """
    try:
        zip_fit = fit_model("zip", fit_data(design.X, design.Z, design.y))
        poisson_fit = fit_model("poisson", fit_data(design.X, None, design.y))
    except NotIdentifiableError:
        raise UserError(f"{where}: all {len(design.y):,} counts of {design.response!r} are zero, "
                        "so the regression is not identifiable") from None  # fmt: skip
    hint = {"separated": "some regressor (or level) predicts the zeros or the counts perfectly; "
                         "drop or merge it",
            "singular": "the information matrix is singular at the estimate; "
                        "simplify the formula"}  # fmt: skip
    if zip_fit.status in hint:
        raise UserError(f"{where}: the ZIP regression has no finite maximum ({zip_fit.message}): "
                        f"{hint[zip_fit.status]}")  # fmt: skip
    for name, fit in (("ZIP", zip_fit), ("Poisson", poisson_fit)):
        if fit.status != "converged":
            print(f"warning: {where}: the {name} regression's Newton fit did not converge "
                  f"({fit.message}); its numbers are the last iterate",
                  file=sys.stderr)  # fmt: skip
    return zip_fit, poisson_fit


def scaling(M: np.ndarray, standardize: bool) -> np.ndarray:
    """(k, k) T such that M T has standardised columns and M beta = (M T) T^-1 beta.

    Non-constant columns are scaled to unit SD and, when M has an all-ones column, centred
    (the intercept absorbs the means); an original-scale coefficient vector is T times the
    fitting-scale one. Identity when `standardize` is False.
    """
    T = np.eye(M.shape[1])
    if not standardize:
        return T
    ones, sd = (M == 1).all(0), M.std(0)
    slope = np.flatnonzero(~ones & (sd > 0))
    T[slope, slope] = 1.0 / sd[slope]
    if ones.any():
        T[int(np.argmax(ones)), slope] = -M.mean(0)[slope] / sd[slope]
    return T


def starts(design: Design, rng: np.random.Generator, inits: int) -> np.ndarray:
    """`inits` random starts [gamma, beta] on the fitting scale (see the module docstring).

    Args:
        design: the design (y has a positive count: the oracle checked).
        rng: the `fit_counts` stream of the seed tree.
        inits: number of starts.

    Returns:
        (inits, q + p) array.
    """
    y = design.y
    parts = []
    for M, guess in ((design.Z, 0.0), (design.X, float(np.log(y[y > 0].mean())))):
        centre = np.zeros(M.shape[1])
        centre[(M == 1).all(0)] = guess  # the intercept, if the part has one
        parts.append(rng.normal(centre, START_SD, (inits, M.shape[1])))
    return np.concatenate(parts, axis=1)


def descend(design: Design, params: config.Params, rng: np.random.Generator) -> FitResult:
    """The ZIP regression fitted by the batched engine from `starts` (one dataset, B inits),
    on the standardised design when `fit_counts.standardize`; results on the original scale."""
    fc, fit = params.fit_counts, params.fit
    Tz, Tx = (scaling(M, fc.standardize) for M in (design.Z, design.X))
    T = scipy.linalg.block_diag(Tz, Tx)
    data = stack_designs([design.X @ Tx], [design.Z @ Tz], [design.y], device=fit.device)
    bar = progress(fc.max_steps, "gradient descent", "step")

    def advance(report) -> None:  # returns None: a truthy value would stop the fits
        bar.update(report.step - bar.n)

    result = fit_designs(
        data, np.zeros(fc.inits, np.int64), starts(design, rng, fc.inits), fc.lr,
        optimizer=fc.optimizer, momentum=fit.momentum if fc.optimizer == "sgd" else 0.0,
        max_steps=fc.max_steps, tol=fit.tol, window=fit.window, grad_tol=fit.grad_tol,
        record_every=fit.record_every, chunk_steps=fit.chunk_steps, callback=advance,
    )  # fmt: skip
    bar.close()
    paths = np.einsum("ij,bjt->bit", T, result.history_params)
    return dataclasses.replace(result, params=result.params @ T.T, history_params=paths)


def descent_summary(result: FitResult, zip_fit, design: Design, fc) -> dict:
    """The kept start (lowest final NLL) against the Newton oracle, in its standard errors."""
    best = int(np.argmin(np.where(np.isfinite(result.nll), result.nll, np.inf)))
    theta = result.params[best]
    oracle = np.concatenate([zip_fit.gamma, zip_fit.beta])
    se = np.concatenate([zip_fit.se_gamma, zip_fit.se_beta])
    names = [f"zero: {n}" for n in design.z_names] + [f"count: {n}" for n in design.x_names]
    errors = np.abs(theta - oracle) / se
    worst = int(np.nanargmax(np.where(np.isfinite(errors), errors, np.inf)))
    q = design.Z.shape[1]
    status = [str(s) for s in result.status]
    return {
        "optimizer": fc.optimizer, "lr": fc.lr, "inits": fc.inits, "max_steps": fc.max_steps,
        "standardize": fc.standardize, "best": best, "status": status[best],
        "steps": int(result.steps[best]), "nll": float(result.nll[best]),
        "nll_gap": float(result.nll[best] - zip_fit.nll),
        "max_se_error": float(errors[worst]), "worst_term": names[worst],
        "converged_inits": status.count("converged"), "diverged_inits": status.count("diverged"),
        "zero": dict(zip(design.z_names, map(float, theta[:q]))),
        "count": dict(zip(design.x_names, map(float, theta[q:]))),
    }  # fmt: skip


def log_run(tracker: Tracker, args, params: config.Params, report: dict, text: str,
            result: FitResult) -> str:  # fmt: skip
    """One MLflow run (under the invocation): params, metrics, the descent's NLL path, the
    text, JSON and frequency table, and a hanging rootogram of both models."""
    stamp = params.digest(*config.STAGE_BLOCKS["fit_counts"])
    parent = tracker.invocation(params.digest())
    tags = {"stage": "fit_counts", "file": str(args.file), "formula": args.formula,
            "column": "", "where": args.where or "", "params_hash": stamp,
            "invocation": invocation_id()}  # fmt: skip
    run_id = tracker.start(f"fit_counts-{Path(args.file).name}", "stage", parent=parent,
                           tags=tags)  # fmt: skip
    report["mlflow_run_id"] = run_id  # also in the JSON artifact
    flat = flatten({"fit": config.as_dict(params.fit),
                    "fit_counts": config.as_dict(params.fit_counts)})  # fmt: skip
    flat.update(seed=params.seed, file=str(args.file), formula=args.formula,
                where=args.where or "", rows=report["rows"])  # fmt: skip
    best = report["gradient_descent"]["best"]
    path = thin(result.history_step, result.history_nll[best], params.tracking.max_points)
    tracker.log(run_id, params=flat, metrics=metrics(report), histories={"gd.nll": path},
                tags={"gd_status": report["gradient_descent"]["status"],
                      "oracle_status": report["zip"]["status"]})  # fmt: skip
    texts = {"fit_counts.txt": text + "\n", "frequencies.md": markdown_frequencies(report),
             "fit_counts.json": json.dumps(jsonable(report), indent=2) + "\n"}  # fmt: skip
    for name, body in texts.items():
        tracker.log_text(run_id, body, name)
    rows = report["frequencies"]
    table = FrequencyTable(*(np.array([f[k] for f in rows])
                             for k in ("count", "observed", "zip", "poisson")))  # fmt: skip
    fig = rootogram_figure(table, f"ZIP regression: {report['formula']}",
                           "Poisson regression (count part)")  # fmt: skip
    tracker.log_figure(run_id, fig, "rootogram.png")
    tracker.end(run_id)
    return run_id


def analyse(args, params: config.Params, design: Design) -> dict:
    """Fit, test and (unless --no-mlflow) log the regression; returns the report (with text).

    Args:
        args: `fit_counts`' parsed arguments (file, formula, where, no_mlflow, workdir).
        params: the validated params.
        design: the design `store.formula.read_design` built from the file.

    Returns:
        The report dict, its rendering under "text".
    """
    try:
        check_device(params.fit.device)
    except ValueError as err:
        raise UserError(f"fit.device: {err}") from None
    zip_fit, poisson_fit = oracle_fits(design, f"{args.file}: formula {args.formula!r}")
    report = {"file": str(args.file), "where": args.where,
              **summarise(design, zip_fit, poisson_fit, params.fit_counts.level)}  # fmt: skip
    # The store opens before the descent: a broken one is one line, not a fit thrown away.
    tracker = None if args.no_mlflow else Tracker(params.tracking.experiment,
                                                  root=args.workdir.resolve())  # fmt: skip
    result = descend(design, params, seeds.generator(params.seed, "fit_counts"))
    report["gradient_descent"] = descent_summary(result, zip_fit, design, params.fit_counts)
    text = render(report)
    report["mlflow_run_id"], report["mlflow_experiment"] = None, params.tracking.experiment
    if tracker is not None:
        report["mlflow_run_id"] = logged(
            tracker, lambda: log_run(tracker, args, params, report, text, result)
        )
    return {**report, "text": text}
