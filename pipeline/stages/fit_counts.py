"""`python -m pipeline.fit_counts FILE --column NAME`: zero-inflated Poisson against Poisson.

With `--formula "y ~ count regressors | zero regressors"` instead of `--column` it fits a ZIP
regression against a Poisson regression: `main` reads the design here (formulaic loads only
then) and hands over to `pipeline.stages.fit_regression`. The rest of this docstring is the
`--column` path.

Reads one column of counts (CSV/TSV/parquet, streamed; `--where` filters rows), fits the ZIP
exactly (closed form) and by gradient descent (the batched engine, several seeded inits, best
kept), fits a plain Poisson, tests for zero inflation (likelihood ratio against the boundary
reference 0.5 chi2(0) + 0.5 chi2(1); Vuong, with its caveat), gives Wald and profile-likelihood
intervals (the profile one where the Wald one is not meaningful), AIC/BIC, observed against
expected frequencies on rows chosen from the data with a Pearson goodness-of-fit test per model,
prints a table (or `--json`) and logs one MLflow run with the table, a hanging rootogram and the
descent paths. Too few counts for large-sample inference, or a misfitting ZIP, open the text
with a one-line warning.

Bad input gets one line on stderr and exit status 2, never a number. The heavy libraries
(torch, scipy.stats, matplotlib, MLflow) are imported inside the functions that need them,
after the counts are read: a bad file is refused in ~0.9 s instead of ~7 s (measured on the
2 cores; tests/test_layers.py allows this module's function-local imports for that reason).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.core import seeds
from pipeline.core.errors import NotIdentifiableError, UserError
from pipeline.core.histogram import Histogram
from pipeline.core.laws.families import FAMILIES
from pipeline.stages import config
from pipeline.stages.cli import logged, parser, progress
from pipeline.store import files
from pipeline.store.count_file import read_counts
from pipeline.tracking import interrupts

FAMILY_CHOICES = ("all", *FAMILIES)


def descend(hist: Histogram, params: config.Params, rng: np.random.Generator, exact: dict):
    """The ZIP fitted by gradient descent from `params.fit_counts.inits` random starts.

    Starts: pi0 ~ U(0.05, 0.95), lam0 = (mean of the positive counts) x 4^U(-1, 1), so the
    starts bracket the data's scale whatever its units.

    Args:
        hist: the counts.
        params: the validated params.
        rng: the `fit_counts` stream of the seed tree.
        exact: the exact MLE (`pi`, `lambda`) of the report.

    Returns:
        (`engine.FitResult`, index of the init with the lowest final NLL, the engine's mean
        NLL at the exact MLE). The last is the reference for the gap: both NLLs then carry
        the same rounding of the data's constant term, which is ~1e4 nats at counts ~1e18.
    """
    import torch

    from pipeline.core.descent.engine import fit_zip, histogram_nll, stack_histograms

    fc, fit = params.fit_counts, params.fit
    values, freqs = stack_histograms([hist], device=fit.device)
    scale = hist.mean / (1.0 - hist.zero_share)
    pi0 = rng.uniform(0.05, 0.95, fc.inits)
    lam0 = scale * 4.0 ** rng.uniform(-1.0, 1.0, fc.inits)
    bar = progress(fc.max_steps, "gradient descent", "step")

    def advance(report) -> None:  # returns None: a truthy value would stop the fits
        bar.update(report.step - bar.n)

    result = fit_zip(
        values, freqs, np.zeros(fc.inits, np.int64), pi0, lam0, fc.lr,
        optimizer=fc.optimizer, momentum=fit.momentum if fc.optimizer == "sgd" else 0.0,
        model=fit.model, max_steps=fc.max_steps, tol=fit.tol, window=fit.window,
        grad_tol=fit.grad_tol, record_every=fit.record_every, chunk_steps=fit.chunk_steps,
        callback=advance, device=fit.device,
    )  # fmt: skip
    bar.close()
    best = int(np.argmin(np.where(np.isfinite(result.nll), result.nll, np.inf)))
    with np.errstate(divide="ignore"):  # pi = 0 on the boundary: logit -inf, exact there
        logit = np.log(exact["pi"]) - np.log1p(-exact["pi"])
    at_mle = [torch.tensor(x, dtype=values.dtype) for x in (logit, np.log(exact["lambda"]))]
    reference = histogram_nll(values[0], freqs[0], *at_mle)
    return result, best, float(reference)


def log_run(tracker, args, params: config.Params, report: dict, text: str, result, best):
    """One MLflow run (under the invocation) with params, metrics, tables and both figures."""
    from pipeline.core.inference.intercept import FrequencyTable
    from pipeline.report.count_report import jsonable, markdown_frequencies, metrics
    from pipeline.report.rootogram import convergence_figure, rootogram_figure
    from pipeline.tracking.runs import invocation_id
    from pipeline.tracking.values import flatten, thin

    stamp = params.digest(*config.STAGE_BLOCKS["fit_counts"])
    parent = tracker.invocation(params.digest())
    tags = {
        "stage": "fit_counts",
        "file": str(args.file),
        "column": args.column,
        "where": args.where or "",
        "params_hash": stamp,
        "invocation": invocation_id(),
    }
    run_id = tracker.start(f"fit_counts-{Path(args.file).name}", "stage", parent=parent,
                           tags=tags)  # fmt: skip
    report["mlflow_run_id"] = run_id  # also in the JSON artifact
    flat = flatten({"fit": config.as_dict(params.fit),
                    "fit_counts": config.as_dict(params.fit_counts)})  # fmt: skip
    flat.update(seed=params.seed, file=str(args.file), column=args.column,
                where=args.where or "", rows=report["rows"])  # fmt: skip
    steps = result.history_step
    histories = {key: thin(steps, getattr(result, attr)[best], params.tracking.max_points)
                 for key, attr in (("gd.nll", "history_nll"), ("gd.pi", "history_pi"),
                                   ("gd.lambda", "history_lam"))}  # fmt: skip
    tracker.log(run_id, params=flat, metrics=metrics(report), histories=histories,
                tags={"boundary": report["zip"]["boundary"],
                      "gd_status": report["gradient_descent"]["status"]})  # fmt: skip
    texts = {"fit_counts.txt": text + "\n", "frequencies.md": markdown_frequencies(report),
             "fit_counts.json": json.dumps(jsonable(report), indent=2) + "\n"}  # fmt: skip
    for name, body in texts.items():
        tracker.log_text(run_id, body, name)
    rows = report["frequencies"]  # the rootogram shows the rows of the text and the JSON
    table = FrequencyTable(*(np.array([f[k] for f in rows])
                             for k in ("count", "observed", "zip", "poisson")))  # fmt: skip
    z = report["zip"]
    fig = rootogram_figure(table, f"ZIP: pi = {z['pi']:.3g}, lambda = {z['lambda']:.4g}",
                           f"Poisson: lambda = {report['poisson']['lambda']:.4g}")  # fmt: skip
    tracker.log_figure(run_id, fig, "rootogram.png")
    fig = convergence_figure(result, best, z["pi"], z["lambda"], z["nll"])
    tracker.log_figure(run_id, fig, "convergence.png")
    tracker.end(run_id)
    return run_id


def analyse(args) -> dict:
    """Read, fit, test and (unless --no-mlflow) log; returns the report (with its text)."""
    params = config.load(args.params)
    if not args.no_mlflow:  # before any work: an unusable mlruns/ is one line, not a lost fit
        files.check_writable(args.workdir.resolve() / "mlruns")
    counts = read_counts(args.file, args.column, args.where)
    # scipy.stats and torch load only now: bad input is rejected without them.
    from pipeline.report.count_report import descent_summary, summarise
    from pipeline.report.count_text import render

    try:
        report = summarise(counts.hist, params.fit_counts.level)
    except NotIdentifiableError:
        raise UserError(f"{args.file}: column {args.column!r}: all {counts.hist.n:,} counts are "
                        "zero, so pi and lambda are not identifiable") from None  # fmt: skip
    report = {"file": str(args.file), "column": args.column, "where": args.where,
              "rows": counts.rows, **report}  # fmt: skip
    from pipeline.core.descent.engine import check_device
    from pipeline.tracking.runs import Tracker  # MLflow loads only when it is used

    try:
        check_device(params.fit.device)
    except ValueError as err:
        raise UserError(f"fit.device: {err}") from None

    # The store opens before the fit: a broken one is one line, not a fit thrown away.
    tracker = None if args.no_mlflow else Tracker(params.tracking.experiment,
                                                  root=args.workdir.resolve())  # fmt: skip
    rng = seeds.generator(params.seed, "fit_counts")
    result, best, reference = descend(counts.hist, params, rng, report["zip"])
    report["gradient_descent"] = descent_summary(result, best, report, params.fit_counts,
                                                 reference)  # fmt: skip
    text = render(report)
    report["mlflow_run_id"], report["mlflow_experiment"] = None, params.tracking.experiment
    if tracker is not None:
        report["mlflow_run_id"] = logged(
            tracker, lambda: log_run(tracker, args, params, report, text, result, best)
        )
    return {**report, "text": text}


def analyse_formula(args) -> dict:
    """The `--formula` path: read the design, then fit in `stages.fit_regression`."""
    params = config.load(args.params)
    if not args.no_mlflow:  # before any work: an unusable mlruns/ is one line, not a lost fit
        files.check_writable(args.workdir.resolve() / "mlruns")
    from pipeline.store.formula import read_design  # formulaic (~1.6 s) loads only now

    design = _without_offsets(read_design(args.file, args.formula, where=args.where))
    from pipeline.stages import fit_regression  # torch, scipy, MLflow: after the input is good

    return fit_regression.analyse(args, params, design)


def _without_offsets(design):
    """`design`, refused if it has offsets: the fits do not take them yet (never drop them)."""
    if design.count_offset.any() or design.zero_offset.any():
        raise UserError(f"formula {design.formula!r}: offset() terms are read, but the fits "
                        "do not take offsets yet")  # fmt: skip
    return design


def analyse_compare(args) -> dict:
    """`--family all` (the default) or one family other than the ZIP: read the counts (as their
    histogram, frequency-weighted) or the design, then fit and compare in
    `stages.fit_families`."""
    params = config.load(args.params)
    if not args.no_mlflow:  # before any work: an unusable mlruns/ is one line, not a lost fit
        files.check_writable(args.workdir.resolve() / "mlruns")
    source = {"file": str(args.file), "where": args.where}
    if args.formula is None:
        counts = read_counts(args.file, args.column, args.where)
        hist = counts.hist
        ones = np.ones((len(hist.values), 1))
        data = (ones, ones, hist.values, hist.freqs.astype(float))
        names = {"count": ["intercept"], "zero": ["intercept"]}
        source.update(column=args.column, rows=counts.rows)
        if hist.total == 0:
            raise UserError(f"{args.file}: column {args.column!r}: all {hist.n:,} counts are "
                            "zero, so no count model is identifiable")  # fmt: skip
    else:
        from pipeline.store.formula import read_design  # formulaic (~1.6 s) loads only now

        design = _without_offsets(read_design(args.file, args.formula, where=args.where))
        data = (design.X, design.Z, design.y, None)
        names = {"count": list(design.x_names), "zero": list(design.z_names)}
        source.update(formula=design.formula, rows=design.rows, dropped=design.dropped)
    from pipeline.stages import fit_families  # torch, scipy, MLflow: after the input is good

    return fit_families.analyse_families(args, params, *data, names, args.family, source)


def main(argv: Sequence[str] | None = None) -> int:
    """Fit ZIP and Poisson to a column of counts, or regressions (`--formula`); see the
    module docstring.

    Returns:
        The exit status (0); user errors raise `UserError`.
    """
    p = parser("Fit a zero-inflated Poisson against a Poisson to a column of counts, or a ZIP "
               "regression against a Poisson regression (--formula).")  # fmt: skip
    p.add_argument("file", type=Path, help="CSV, TSV or parquet file")
    p.add_argument("--column", help="name of the column of counts (intercept-only ZIP)")
    p.add_argument("--formula", help='ZIP regression, pscl style: "y ~ count regressors | zero '
                   'regressors" (without "|" both parts use the same regressors)')  # fmt: skip
    p.add_argument("--where", help='polars SQL condition selecting rows, e.g. "camper = 1"')
    p.add_argument("--family", default="all",
                   help="all (default): fit poisson, nb, zip, zinb, hurdle_poisson and hurdle_nb "
                   "and compare them; or fit one of them (zip: the exact/Newton fit with "
                   "gradient descent beside it)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON object, nothing else")
    p.add_argument("--no-mlflow", action="store_true", help="do not log an MLflow run")
    args = p.parse_args(argv)
    if args.family not in FAMILY_CHOICES:
        raise UserError(f"--family {args.family!r}: choose one of {', '.join(FAMILY_CHOICES)}")
    if (args.column is None) == (args.formula is None):
        raise UserError("give exactly one of --column NAME (a column of counts) and --formula "
                        "'y ~ count regressors | zero regressors' (a ZIP regression)")  # fmt: skip
    with interrupts.sigterm_raises():
        if args.family != "zip":
            report = analyse_compare(args)
        else:
            report = analyse(args) if args.formula is None else analyse_formula(args)
    text = report.pop("text")
    if args.json:
        from pipeline.report.count_report import jsonable

        print(json.dumps(jsonable(report), allow_nan=False))
    else:
        print(text)
        if report["mlflow_run_id"]:
            print(f"\nMLflow run {report['mlflow_run_id']} (experiment "
                  f"{report['mlflow_experiment']!r}; browse with `make ui`)")  # fmt: skip
    return 0
