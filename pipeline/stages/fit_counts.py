"""`python -m pipeline.fit_counts FILE (--column NAME | --formula F) [--family F]`: count models
fitted to users' data, through one path.

A column of counts is read as its histogram (streamed; the ones-design with the frequencies as
weights), a formula as its design with its offsets (`offset(log(x))` in either part); `--where`
selects rows, `--weights COLUMN` weights them (frequency weights: a row of weight w counts as w
rows, so a weighted file and its expanded rows give the same fits). Then one path for every
input (`analysis.count_fits`): the requested family by the float64 Newton oracle — for `--family
zip` also its Poisson, so the likelihood-ratio and Vuong comparison stays —, or all six (`all`,
the default) compared and one recommended; one report and text (`report.count_report`). For the
ZIP the report adds the closed form with profile-likelihood intervals where the model is
intercept-only, and the gradient-descent section (`descend`: the sufficient-statistics engine on
a histogram, the design engine otherwise, seeded random starts, best kept, judged against the
oracle in its standard errors). `--json` prints the report as one JSON object; one MLflow run
(`log_run`, named by `run_name`) holds the text, JSON, frequency table, rootograms and, for the
ZIP, the descent's path.

Bad input gets one line on stderr and exit status 2, never a number. The heavy libraries
(torch, scipy.stats, matplotlib, MLflow) are imported inside the functions that need them,
after the counts are read: a bad file is refused in ~0.9 s instead of ~7 s (measured on the
2 cores; tests/test_layers.py allows this module's function-local imports for that reason).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from pipeline.core import seeds
from pipeline.core.errors import NotIdentifiableError, UserError
from pipeline.core.laws.families import FAMILIES
from pipeline.stages import config
from pipeline.stages.cli import logged, parser, progress
from pipeline.store import files
from pipeline.store.count_file import read_counts
from pipeline.tracking import interrupts

FAMILY_CHOICES = ("all", *FAMILIES)


def run_name(args) -> str:
    """The MLflow run's name: file, column or formula, weights and rows if given, family (each
    user text cut to 60 characters: the name tells runs apart, the tags hold the full text)."""

    def cut(text: str) -> str:
        return text if len(text) <= 60 else text[:59] + "…"

    what = args.formula if args.formula is not None else args.column
    parts = [Path(args.file).name, what]
    parts += [f"weights:{args.weights}"] * bool(args.weights)
    parts += [f"where:{args.where}"] * bool(args.where)
    return "-".join(["fit_counts", *map(cut, parts), args.family])


def read_data(args):
    """The user's data as one `FitData`, its term names, what was read (for the header and
    the JSON) and the grouping column's values per row (None without a random intercept).

    A column of counts is its histogram (the ones-design with frequencies as weights), a
    formula its design with its offsets (and its random intercepts' groups).
    """
    from pipeline.core.model import fit_data, histogram_data

    source = {"file": str(args.file), "where": args.where, "weights": args.weights}
    if args.formula is None:
        counts = read_counts(args.file, args.column, args.where, weights=args.weights)
        hist = counts.hist
        if hist.total == 0:
            raise UserError(f"{args.file}: column {args.column!r}: all {hist.n:,} counts are "
                            "zero, so the count models are not identifiable")  # fmt: skip
        data = histogram_data(hist.values, hist.freqs.astype(float))
        names = {"count": ["intercept"], "zero": ["intercept"]}
        source.update(column=args.column, rows=counts.rows)
        return data, names, source, None
    from pipeline.store.formula import read_design  # formulaic (~1.6 s) loads only now

    design = read_design(args.file, args.formula, where=args.where, weights=args.weights)
    data = fit_data(design.X, design.Z, design.y, weights=design.weights.astype(float),
                    offset_x=design.count_offset,
                    offset_z=design.zero_offset if design.Z.shape[1] else None)  # fmt: skip
    names = {"count": list(design.x_names), "zero": list(design.z_names)}
    source.update(formula=design.formula, rows=design.rows, dropped=design.dropped)
    if args.weights:
        source.update(zero_weight=design.zero_weight)
    if design.random:
        source.update(group_column=design.group_column, random=list(design.random))
    return data, names, source, design.groups


def descend(data, fc, fit, rng: np.random.Generator,
            callback: Callable | None = None) -> tuple[object, float]:  # fmt: skip
    """The ZIP fitted by gradient descent from `fc.inits` seeded random starts (the starts and
    the engine each path takes: `analysis.count_fits`' docstring).

    Args:
        data: the rows (intercept-only on whole weights: the sufficient-statistics engine).
        fc: the `fit_counts` settings (inits, lr, optimizer, max_steps, standardize).
        fit: the `fit` settings (device, model, tol, window, grad_tol, record_every, ...).
        rng: the `fit_counts` stream of the seed tree.
        callback: the engines' chunk callback (progress), returning None.

    Returns:
        (`FitResult` on the original scale, one row per start; the engine's mean NLL at the
        oracle's estimate where the engine has its own rounding of the data's constant term,
        else None).
    """
    from pipeline.analysis import count_fits

    common = dict(optimizer=fc.optimizer, momentum=fit.momentum if fc.optimizer == "sgd" else 0.0,
                  max_steps=fc.max_steps, tol=fit.tol, window=fit.window, grad_tol=fit.grad_tol,
                  record_every=fit.record_every, chunk_steps=fit.chunk_steps, callback=callback,
                  device=fit.device)  # fmt: skip
    hist = count_fits.histogram_of(data)
    if hist is not None:
        return _descend_histogram(hist, fc, fit, rng, common)
    from pipeline.core.descent.design_engine import fit_designs
    from pipeline.core.descent.designs import stack_designs

    Tz, Tx = (count_fits.scaling(M, fc.standardize) for M in (data.Z, data.X))
    q = Tz.shape[0]
    T = np.zeros((q + Tx.shape[0],) * 2)
    T[:q, :q], T[q:, q:] = Tz, Tx
    weighted = not np.all(data.weights == 1)
    stacked = stack_designs(
        [data.X @ Tx], [data.Z @ Tz], [data.y], device=common.pop("device"),
        weights=[data.weights] if weighted else None,
        count_offsets=[data.offset_x] if data.offset_x.any() else None,
        zero_offsets=[data.offset_z] if data.offset_z.any() else None,
    )  # fmt: skip
    starts = count_fits.design_starts(data, rng, fc.inits)
    result = fit_designs(stacked, np.zeros(fc.inits, np.int64), starts, fc.lr, **common)
    paths = np.einsum("ij,bjt->bit", T, result.history_params)
    return dataclasses.replace(result, params=result.params @ T.T, history_params=paths), None


def _descend_histogram(hist, fc, fit, rng, common: dict):
    import torch

    from pipeline.core.descent.engine import fit_zip, histogram_nll, stack_histograms

    values, freqs = stack_histograms([hist], device=fit.device)
    scale = hist.mean / (1.0 - hist.zero_share)
    pi0 = rng.uniform(0.05, 0.95, fc.inits)
    lam0 = scale * 4.0 ** rng.uniform(-1.0, 1.0, fc.inits)
    result = fit_zip(values, freqs, np.zeros(fc.inits, np.int64), pi0, lam0, fc.lr,
                     model=fit.model, **common)  # fmt: skip
    from pipeline.core.oracle.mle import exact_mle

    mle = exact_mle(hist)
    with np.errstate(divide="ignore"):  # pi = 0 on the boundary: logit -inf, exact there
        logit = np.log(mle.pi) - np.log1p(-mle.pi)
    at_mle = [torch.tensor(x, dtype=values.dtype) for x in (logit, np.log(mle.lam))]
    # Both NLLs then carry the same rounding of the data's constant term (~1e4 nats at 1e18).
    return result, float(histogram_nll(values[0], freqs[0], *at_mle))


def log_run(tracker, args, params: config.Params, report: dict, text: str, result) -> str:
    """One top-level MLflow run in `tracking.fit_counts_experiment` for every path: params,
    metrics, the text, JSON and frequency table, the rootograms of every fitted family and, for
    the ZIP, the descent's NLL path and its convergence figure; returns its id."""
    from pipeline.report.count_report import jsonable, markdown_frequencies, metrics
    from pipeline.report.rootogram import rootograms_figure
    from pipeline.tracking.values import flatten, thin

    stamp = params.digest(*config.STAGE_BLOCKS["fit_counts"])
    source = report["source"]
    tags = {"stage": "fit_counts", "file": str(args.file), "family": report["family"],
            "formula": source.get("formula") or "", "column": source.get("column") or "",
            "where": args.where or "", "weights": args.weights or "",
            "params_hash": stamp}  # fmt: skip
    # Its own experiment, one top-level run per analysis: users' analyses never push the
    # study's invocation runs off the runs table's first page.
    run_id = tracker.start(run_name(args), "analysis", tags=tags)
    report["mlflow_run_id"] = run_id  # also in the JSON artifact
    flat = flatten({"fit": config.as_dict(params.fit),
                    "fit_counts": config.as_dict(params.fit_counts)})  # fmt: skip
    flat.update(seed=params.seed, family=report["family"], n=report["n"],
                **{f"source.{k}": v for k, v in source.items() if v is not None})  # fmt: skip
    rec = report["recommendation"] or {}
    run_tags = {"recommended": rec.get("family") or "", "detail": report["detail"] or ""}
    histories = {}
    if result is not None:
        gd = report["gradient_descent"]
        run_tags["gd_status"] = gd["status"]
        histories["gd.nll"] = thin(result.history_step, result.history_nll[gd["best"]],
                                   params.tracking.max_points)  # fmt: skip
    tracker.log(run_id, params=flat, metrics=metrics(report), histories=histories,
                tags=run_tags)  # fmt: skip
    fitted = [(f, m["title"]) for f, m in report["models"].items() if m["status"] != "failed"]
    texts = {"fit_counts.txt": text + "\n",
             "frequencies.md": markdown_frequencies(report["frequencies"], fitted),
             "fit_counts.json": json.dumps(jsonable(report), indent=2) + "\n"}  # fmt: skip
    for name, body in texts.items():
        tracker.log_text(run_id, body, name)
    if fitted:
        tracker.log_figure(run_id, rootograms_figure(report["frequencies"], fitted),
                           "rootogram.png")  # fmt: skip
    if result is not None and report.get("closed_form"):
        from pipeline.report.rootogram import convergence_figure

        z = report["closed_form"]["zip"]
        fig = convergence_figure(result, report["gradient_descent"]["best"], z["pi"],
                                 z["lambda"], z["nll"])  # fmt: skip
        tracker.log_figure(run_id, fig, "convergence.png")
    tracker.end(run_id)
    return run_id


LONG_FIT_S = 20.0  # an estimate above this is announced before the fits start


def announce_cost(data, families: tuple[str, ...]) -> None:
    """Say on stderr what the Newton fits will cost when that is long (before any work)."""
    from pipeline.analysis import count_fits

    seconds = count_fits.fit_seconds(data, families)
    if seconds < LONG_FIT_S:
        return
    k = max(count_fits.parameter_count(f, data) for f in families)
    took = f"~{seconds / 60:.0f} min" if seconds >= 90 else f"~{seconds:.0f} s"
    what = f"{len(families)} families" if len(families) > 1 else "1 family"
    print(f"fit_counts: {len(data.y):,} rows, {what} of up to {k} parameters: {took} of Newton "
          "fits on these cores (Ctrl-C stops)", file=sys.stderr)  # fmt: skip


def analyse(args, show: Callable[[str], None] | None = None) -> dict:
    """Read, fit, compare, (ZIP) descend and (unless --no-mlflow) log; returns the report with
    its text under "text".

    `show` (the terminal's printer) gets the text before MLflow is imported or called: the
    answer does not wait for the tracking (~3 s of a 6 s run on the fish example). Without it
    (`--json`, whose object holds the run id) the store opens before the descent, so that a
    broken one is one line, not a fit thrown away."""
    params = config.load(args.params)
    if not args.no_mlflow:  # before any work: an unusable mlruns/ is one line, not a lost fit
        files.check_writable(args.workdir.resolve() / "mlruns")
    data, names, source, groups = read_data(args)
    # torch, scipy.stats and MLflow load only now: bad input is rejected without them.
    from pipeline.analysis import count_fits
    from pipeline.core.descent.allocator import keep_heap
    from pipeline.core.descent.engine import check_device
    from pipeline.report.count_report import render, summarise
    from pipeline.tracking.runs import Tracker

    keep_heap()  # the fits' temporaries stay in the heap: no page faults per step
    if groups is not None:
        return analyse_mixed(args, params, data, names, source, groups, show)

    if args.family == "zip":  # the descent's device: refused before any fit or store
        try:
            check_device(params.fit.device)
        except ValueError as err:
            raise UserError(f"fit.device: {err}") from None
    level = params.fit_counts.level
    families = count_fits.families_for(args.family)
    announce_cost(data, families)
    bar = progress(len(families), "Newton fits", "family")

    def fitted(family: str) -> None:
        bar.set_postfix_str(family, refresh=False)
        bar.update(1)

    try:
        fits = count_fits.fit_families(data, args.family, level, on_family=fitted)
    except NotIdentifiableError:
        why = "all counts are zero, so the count models are not identifiable"
        raise UserError(f"{args.file}: {why}") from None
    except ValueError as err:
        raise UserError(f"{args.file}: {err}") from None
    finally:
        bar.close()
    extra, result = {}, None
    if args.family == "zip":
        extra, result = zip_sections(args, params, data, names, fits)
    root = args.workdir.resolve()
    tracker = None
    if not args.no_mlflow and show is None:
        tracker = Tracker.fit_counts(params.tracking, root)
    if args.family == "zip":
        fc = params.fit_counts
        bar = progress(fc.max_steps, "gradient descent", "step")

        def advance(report) -> None:  # returns None: a truthy value would stop the fits
            bar.update(report.step - bar.n)

        rng = seeds.generator(params.seed, "fit_counts")
        result, reference = descend(data, fc, params.fit, rng, advance)
        bar.close()
        extra["gradient_descent"] = count_fits.descent_summary(
            result, reference, fits.fits["zip"], names, fc
        )
    report = summarise(fits, names, level=level, data=count_fits.data_summary(data),
                       source=source, family=args.family, **extra)  # fmt: skip
    text = render(report)
    return answer(args, params, report, text, show, tracker,
                  lambda t: log_run(t, args, params, report, text, result))  # fmt: skip


def answer(args, params, report: dict, text: str, show, tracker, log) -> dict:
    """Show the answer (`show`), then log it unless --no-mlflow (`log(tracker)` returns the
    run id; the tracker opens now if the caller has none); returns the report with its text."""
    from pipeline.tracking.runs import Tracker

    report["mlflow_run_id"] = None
    report["mlflow_experiment"] = params.tracking.fit_counts_experiment
    if show is not None:
        show(text)
    if not args.no_mlflow:
        tracker = tracker or Tracker.fit_counts(params.tracking, args.workdir.resolve())
        report["mlflow_run_id"] = logged(tracker, lambda: log(tracker))
    return {**report, "text": text}


def analyse_mixed(args, params, data, names, source, groups, show) -> dict:
    """`analyse` for a formula with random intercepts: the families with them by the exact
    quadrature oracle, each against itself without them (`count_fits.fit_mixed_families`,
    `report.mixed_report`), logged as one run with the conditional modes as modes.csv."""
    from pipeline.analysis import count_fits
    from pipeline.report.mixed_report import render_mixed, summarise_mixed

    families = count_fits.families_for(args.family)
    try:  # bad groups are one line before the cost line or any fit
        count_fits.check_groups(data, groups)
    except ValueError as err:
        raise UserError(f"{args.file}: {source['group_column']!r}: {err}") from None
    seconds = count_fits.mixed_seconds(data, tuple(source["random"]), args.family,
                                       params.fit_counts.inits)  # fmt: skip
    if seconds >= LONG_FIT_S:
        took = f"~{seconds / 60:.0f} min" if seconds >= 90 else f"~{seconds:.0f} s"
        print(f"fit_counts: {len(data.y):,} rows in {len(np.unique(groups)):,} groups, "
              f"{len(families)} famil{'ies' if len(families) > 1 else 'y'} with random "
              f"intercepts: {took} of quadrature fits on these cores (Ctrl-C stops)",
              file=sys.stderr)  # fmt: skip
    bar = progress(len(families), "mixed-model fits", "family")

    def fitted(family: str) -> None:
        bar.set_postfix_str(family, refresh=False)
        bar.update(1)

    try:
        fits = count_fits.fit_mixed_families(data, groups, tuple(source["random"]), args.family,
                                             on_family=fitted,
                                             level=params.fit_counts.level)  # fmt: skip
    except ValueError as err:
        raise UserError(f"{args.file}: {source['group_column']!r}: {err}") from None
    finally:
        bar.close()
    if all(isinstance(f, str) for f in fits.fits.values()):
        why = "; ".join(f"{f}: {m}" for f, m in fits.fits.items())
        raise UserError(f"{args.file}: no family could be fitted with random intercepts ({why})")
    gd = mixed_descent(args, params, data, names, groups, fits.fits.get(args.family))
    report = summarise_mixed(fits, names, level=params.fit_counts.level,
                             data=count_fits.data_summary(data), source=source,
                             family=args.family, group_labels=groups,
                             gradient_descent=gd)  # fmt: skip
    text = render_mixed(report)
    return answer(args, params, report, text, show, None,
                  lambda t: log_mixed_run(t, args, params, report, text))  # fmt: skip


def mixed_descent(args, params, data, names, groups, fit) -> dict | None:
    """The family asked for (not "all"), with its random intercepts, by gradient descent
    beside its quadrature oracle (`count_fits.mixed_descent`, `fit_counts`' settings and
    stream of the seed tree): `count_fits.mixed_descent_summary`, or None."""
    from pipeline.analysis import count_fits
    from pipeline.core.descent.outcome import StopRule

    if args.family == "all" or fit is None or isinstance(fit, str):
        return None
    if fit.status not in ("converged", "boundary"):
        return None
    fc, f = params.fit_counts, params.fit
    rule = StopRule(max_steps=fc.max_steps, tol=f.tol, window=f.window, grad_tol=f.grad_tol,
                    record_every=f.record_every, chunk_steps=f.chunk_steps)  # fmt: skip
    bar = progress(fc.max_steps, "gradient descent", "step")

    def advance(report) -> None:  # returns None: a truthy value would stop the fits
        bar.update(report.step - bar.n)

    try:
        rng = seeds.generator(params.seed, "fit_counts")
        result = count_fits.mixed_descent(data, groups, fit, fc, rule, rng, advance)
    finally:
        bar.close()
    return count_fits.mixed_descent_summary(result, fit, names, fc, float(data.weights.sum()))


def log_mixed_run(tracker, args, params: config.Params, report: dict, text: str) -> str:
    """The mixed analysis' MLflow run (as `log_run`'s: its params, metrics, text and JSON, and
    the conditional modes as modes.csv); returns its id."""
    from pipeline.report.count_report import jsonable, metrics
    from pipeline.report.mixed_report import modes_table
    from pipeline.tracking.values import flatten

    source = report["source"]
    tags = {"stage": "fit_counts", "file": str(args.file), "family": report["family"],
            "formula": source.get("formula") or "", "where": args.where or "",
            "weights": args.weights or "", "random": ",".join(report["random"]),
            "group_column": report["group_column"],
            "params_hash": params.digest(*config.STAGE_BLOCKS["fit_counts"])}  # fmt: skip
    run_id = tracker.start(run_name(args), "analysis", tags=tags)
    report["mlflow_run_id"] = run_id
    flat = flatten({"fit_counts": config.as_dict(params.fit_counts)})
    flat.update(seed=params.seed, family=report["family"], n=report["n"],
                groups=report["groups"],
                **{f"source.{k}": v for k, v in source.items() if v is not None})  # fmt: skip
    rec = report["recommendation"] or {}
    tracker.log(run_id, params=flat,
                metrics=metrics({k: v for k, v in report.items() if k != "modes"}),
                tags={"recommended": rec.get("family") or "",
                      "detail": report["detail"] or ""})  # fmt: skip
    for name, body in {
        "fit_counts.txt": text + "\n",
        "modes.csv": modes_table(report),
        "fit_counts.json": json.dumps(jsonable(report), indent=2) + "\n",
    }.items():
        tracker.log_text(run_id, body, name)
    tracker.end(run_id)
    return run_id


def zip_sections(args, params, data, names, fits) -> tuple[dict, None]:
    """The ZIP's own sections: its Vuong test against the Poisson (with its caveat) and,
    intercept-only, the closed form with profile intervals."""
    from pipeline.analysis import count_fits

    zip_fit = fits.fits["zip"]
    if isinstance(zip_fit, str) or isinstance(fits.fits["poisson"], str):
        why = zip_fit if isinstance(zip_fit, str) else fits.fits["poisson"]
        raise UserError(f"{args.file}: the ZIP or its Poisson could not be fitted ({why})")
    hint = {"separated": "some regressor (or level) predicts the zeros or the counts perfectly; "
                         "drop or merge it",
            "singular": "the information matrix is singular at the estimate; "
                        "simplify the formula"}  # fmt: skip
    hist = count_fits.histogram_of(data)
    # Intercept-only, pi running off to 0 is the boundary MLE the closed form gives exactly.
    if zip_fit.status in hint and hist is None:
        raise UserError(f"{args.file}: the ZIP has no finite maximum ({zip_fit.message}): "
                        f"{hint[zip_fit.status]}")  # fmt: skip
    vuong, identical = count_fits.zip_vuong(fits, data)
    extra = {"zip_vuong": {**vuong, "identical": identical}}
    if hist is not None:
        lr = next(t for t in fits.comparison.lr_tests if t.larger == "zip")
        extra["closed_form"] = count_fits.closed_form(hist, params.fit_counts.level, lr.p_value)
    return extra, None


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
                   'regressors" (without "|" both parts use the same regressors); "+ (1 | g)" '
                   "in a part adds a random intercept per level of column g")  # fmt: skip
    p.add_argument("--where", help='polars SQL condition selecting rows, e.g. "camper = 1"')
    p.add_argument("--weights", metavar="COLUMN",
                   help="column of frequency weights (non-negative integers): a row of weight w "
                   "counts as w rows")  # fmt: skip
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
    show = None if args.json else (lambda text: print(text, flush=True))
    with interrupts.sigterm_raises():
        report = analyse(args, show)
    report.pop("text")
    if args.json:
        from pipeline.report.count_report import jsonable

        print(json.dumps(jsonable(report), allow_nan=False))
    else:
        if report["mlflow_run_id"]:
            print(f"\nMLflow run {report['mlflow_run_id']} (experiment "
                  f"{report['mlflow_experiment']!r}; browse with `make ui`)")  # fmt: skip
    return 0
