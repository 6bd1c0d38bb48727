"""Aggregate stage: the sweep's fits → recovery tables, figures and a report (polars).

`python -m pipeline.aggregate --params P --workdir W` (`make report`) reads parquet only: the
sweep's per-fit table `data/fits.parquet`, its fits' paths `data/histories.parquet`, the blog's
refits `data/blog.parquet` and the data stage's `data/summary.parquet` (truth, exact MLEs).
MLflow is a sink: the stage logs its outputs there but never reads runs back, so the report is
the same with `tracking.log_fits: false` or a remote tracking server. It writes under
`W/reports/`:
- `recovery.parquet`: optimisation per scenario × optimizer × lr (`recovery.optimisation_table`);
- `statistics.parquet`: GD vs exact MLE as estimators (`statistics.statistics_table`);
- `blog_table.parquet`: the blog's ten fits reproduced beside our tuned lr (`blog_table`);
- `recovery.md` and `figures/*.png`;
- with regression scenarios and `data/reg_fits.parquet`, `reg_optimisation.parquet`,
  `reg_recovery.parquet`, `figures/regression_error_vs_lr.png` and a "Regression scenarios"
  part of `recovery.md` (`aggregate_regression`);
all stamped or written atomically, logged to the stage's MLflow run. The tables hold no run ids
or timestamps, so the same params give byte-identical files.
"""

from __future__ import annotations

import datetime
import platform
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import polars as pl

from pipeline.analysis import recovery as rc
from pipeline.analysis.reach import reach_steps, reach_table
from pipeline.analysis.statistics import statistics_table
from pipeline.core.errors import UserError
from pipeline.report import figures as rp
from pipeline.report import markdown as report_md
from pipeline.stages import aggregate_regression as reg_stage
from pipeline.stages import config
from pipeline.stages.cli import parser
from pipeline.store import files
from pipeline.tracking import interrupts
from pipeline.tracking.runs import Tracker, git_commit
from pipeline.tracking.values import flatten

FIGURES = ("convergence_vs_lr.png", "error_vs_lr.png", "sampling_distribution.png")
REACH_FIGURE = "reach_mle.png"
REACH_SE = 0.1  # "reached the MLE": within this many standard errors in both parameters


def load_inputs(params: config.Params, workdir: Path) -> dict[str, pl.DataFrame]:
    """The sweep's tables and the data summary, each checked against the current params.

    Returns:
        {"summary", "fits", "histories", "blog"} frames (`blog` may have no rows: the blog
        scenario's replicate 0 was not identifiable) and "regression"
        (`aggregate_regression.load_regression`, None without regression fits).

    Raises:
        UserError: a missing, foreign or stale input, or a sweep without fits.
    """
    layout = files.Layout(workdir)
    summary = files.read(layout.summary, params.digest(*config.STAGE_BLOCKS["generate"]))
    stamp = params.digest(*config.STAGE_BLOCKS["sweep"])
    fits = files.read(layout.fits(), stamp)
    if fits.height == 0:
        raise UserError(f"{layout.fits().path}: holds no fits; rerun `make sweep`")
    histories = files.read(layout.histories(), stamp)
    return {"summary": summary, "fits": fits, "histories": histories,
            "blog": files.read(layout.blog, stamp),
            "regression": reg_stage.load_regression(params, workdir)}  # fmt: skip


def sampling_best(fits: pl.DataFrame, best: pl.DataFrame) -> pl.DataFrame:
    """The best-NLL init per dataset at each scenario's best (optimizer, lr)."""
    return rc.best_fits(fits).join(
        best.select("scenario", "optimizer", "lr"), on=["scenario", "optimizer", "lr"], how="semi"
    )


def blog_caption(blog: pl.DataFrame, settings, summary: pl.DataFrame) -> str:
    """The caption of the blog table (`settings`: `config.BlogConfig`)."""
    n = summary.filter((pl.col("scenario") == settings.scenario) & (pl.col("replicate") == 0))["n"][
        0
    ]
    lr = blog["lr_tuned"][0] if "lr_tuned" in blog.columns else None
    opt = blog["optimizer_tuned"][0] if "optimizer_tuned" in blog.columns else "adam"
    return (
        f"Scenario `{settings.scenario}`, replicate 0 (n = {n:,}); {settings.inits} starts "
        f"π₀ ~ U(0, 1), λ₀ ~ U(0, 10). Blog settings: Adam, lr = {settings.lr:g}, exactly "
        f"{settings.steps} steps of the mixture model; `*_tuned`: {opt} at the best lr "
        f"{lr if lr is None else f'{lr:g}'} with the sweep's stopping rule. `*_dev_se`: "
        "distance to the exact MLE in its standard errors. Last row: the exact MLE."
    )


def figures(out: Path, params, recovery, statistics, sampled, summary, reach) -> list[str]:
    """Draw and save the report's figures under `out`; returns their file names."""
    names = [s.name for s in params.data.scenarios]
    drawn = {
        FIGURES[0]: rp.convergence_vs_lr(recovery, names, params.fit.max_steps),
        FIGURES[1]: rp.error_vs_lr(recovery, statistics, names),
        FIGURES[2]: rp.sampling_distribution(sampled, summary, names),
    }
    drawn[REACH_FIGURE] = rp.reach_curves(reach, names, params.fit.max_steps, REACH_SE)
    for name, fig in drawn.items():
        rp.save(fig, out / name)
    return list(drawn)


HEADLINE = (
    "scenario optimizer lr objective recovered converged diverged steps_median gap_median "
    "err_pi_max err_lambda_max"
).split()


def headline(recovery: pl.DataFrame) -> str:
    """The terminal's table: one line per scenario × optimizer × lr, 3 significant digits."""
    with pl.Config(
        tbl_rows=-1,
        tbl_cols=-1,
        tbl_width_chars=200,
        tbl_hide_column_data_types=True,
        tbl_hide_dataframe_shape=True,
        tbl_cell_alignment="RIGHT",
    ):
        return str(report_md.as_text(recovery.select(HEADLINE)))


def aggregate(params: config.Params, workdir: Path, inputs=None) -> dict:
    """Compute and write every output of the stage from the sweep's parquet tables.

    Args:
        params: validated params.
        workdir: folder holding `data/` and `reports/`.
        inputs: `load_inputs(params, workdir)` when already loaded.

    Returns:
        A dict with the tables (`recovery`, `statistics`, `blog`, `best`, `objective`: the
        study's objective per optimizer × lr over every fit, best first), the file paths
        written (`files`), `fits` (their number) and `regression`
        (`aggregate_regression.aggregate_regression`, None without regression fits).
    """
    inputs = inputs or load_inputs(params, workdir)
    summary, fits, blog = inputs["summary"], inputs["fits"], inputs["blog"]
    order = [s.name for s in params.data.scenarios]
    recovery = rc.optimisation_table(fits, max_steps=params.fit.max_steps, order=order)
    statistics = statistics_table(fits, summary, level=params.report.level, order=order)
    best = rc.best_lr(recovery)
    reg_fits = (inputs.get("regression") or {}).get("fits")
    tables = [fits] if reg_fits is None else [fits, reg_fits]
    objective = rc.objective_table(tables, params.fit.max_steps)
    reach = reach_steps(inputs["histories"], fits, REACH_SE)

    layout = files.Layout(workdir)
    stamp = params.digest(*config.STAGE_BLOCKS["aggregate"])
    written = [layout.report("statistics").path]
    files.write(statistics, layout.report("statistics"), stamp)
    blog_mle = summary.filter(
        (pl.col("scenario") == params.blog.scenario) & (pl.col("replicate") == 0)
    )
    if blog.height:
        written.append(layout.report("blog_table").path)
        files.write(blog, layout.report("blog_table"), stamp)
    drawn = figures(layout.figures, params, recovery, statistics, sampling_best(fits, best),
                    summary, reach)  # fmt: skip
    written += [layout.figures / name for name in drawn]
    text = report_md.report(
        title="Does gradient descent recover the zero-inflated Poisson?",
        preamble=[
            f"{fits.height:,} fits of {summary.height} datasets "
            f"(n = {params.data.n:,} each), {recovery.height} scenario × optimizer × lr "
            f"groups; params hash `{stamp}`.",
            f"Source: data/fits.parquet and data/histories.parquet "
            f"({inputs['histories'].height:,} recorded steps).",
            provenance(),
        ],
        recovery=recovery,
        statistics=statistics,
        blog=report_md.with_mle_row(blog, blog_mle.row(0, named=True)) if blog.height else None,
        blog_caption=blog_caption(blog, params.blog, summary) if blog.height else "",
        figures=drawn,
        max_steps=params.fit.max_steps,
        level=params.report.level,
        reach=reach_table(reach),
        objective=objective,
    )
    reg = reg_stage.aggregate_regression(params, workdir, inputs.get("regression"), stamp)
    if reg is not None:
        text = text.rstrip("\n") + "\n\n" + reg["text"]
        written += reg["files"]
    written.append(layout.report_text)
    files.write_text(layout.report_text, text)
    # The make target: written last, so it is never newer than the other outputs.
    written.append(layout.report("recovery").path)
    files.write(recovery, layout.report("recovery"), stamp)
    return {
        "recovery": recovery,
        "statistics": statistics,
        "blog": blog,
        "best": best,
        "objective": objective,
        "files": written,
        "fits": fits.height,
        "regression": reg,
    }


def log_stage(
    tracker, run_id: str, params: config.Params, result: dict, workdir: Path, seconds: float
) -> None:
    """Log the report block, per-scenario best lr and every output file to the stage run."""
    flat = flatten({"report": config.as_dict(params.report)})
    metrics = {"fits": result["fits"], "groups": result["recovery"].height, "seconds": seconds}
    if result["objective"].height:  # the study's best by the objective: Optuna's best trial
        metrics["best_lr"] = result["objective"]["lr"][0]
        metrics["best_objective"] = result["objective"]["objective"][0]
    for row in result["best"].iter_rows(named=True):
        metrics[f"{row['scenario']}.best_lr"] = row["lr"]
        metrics[f"{row['scenario']}.best_objective"] = row["objective"]
        metrics[f"{row['scenario']}.best_recovered"] = row["recovered"]
    metrics.update(reg_stage.metrics(result.get("regression")))
    tracker.log(run_id, params=flat, metrics=metrics)
    out = files.Layout(workdir).reports
    for path in result["files"]:
        folder = path.parent.relative_to(out).as_posix()
        tracker.log_artifact(run_id, path, "reports" if folder == "." else f"reports/{folder}")
    layout = files.Layout(workdir)
    inputs = {"fits": layout.fits("sweep").path, "histories": layout.histories("sweep").path,
              "blog": layout.blog.path, "summary": layout.summary.path}  # fmt: skip
    if result.get("regression") is not None:
        inputs.update(reg_fits=layout.reg("fits").path, reg_coefs=layout.reg("coefs").path,
                      reg_summary=layout.reg_summary.path)  # fmt: skip
    tracker.log_inputs(run_id, inputs)
    if tracker.invocation_run is not None:  # the invocation shows the report it produced
        tracker.log_artifact(tracker.invocation_run, layout.report_text)
    tracker.summary["fits"] = result["fits"]


CITED_PACKAGES = ("torch", "numpy", "scipy", "polars", "optuna", "mlflow")


def provenance() -> str:
    """The report's citation line: commit, date (UTC) and the versions that shape its numbers."""
    versions = []
    for name in CITED_PACKAGES:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    return (f"Made by commit `{git_commit()[:12]}` on {today} (UTC) with Python "
            f"{platform.python_version()}, {', '.join(versions)}.")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Aggregate the sweep into reports/; see the module docstring. Returns 0."""
    args = parser(
        "Aggregate the sweep's fits into recovery tables, figures and a report."
    ).parse_args(argv)
    params = config.load(args.params)
    workdir = args.workdir.resolve()
    stamp = params.digest(*config.STAGE_BLOCKS["aggregate"])
    inputs = load_inputs(params, workdir)  # fail early, before opening the store
    files.check_writable(files.Layout(workdir).reports, workdir / "mlruns")
    tracker = Tracker(params.tracking.experiment, root=workdir)
    with (
        interrupts.sigterm_raises(),
        tracker.stage_run("aggregate", stamp, params.digest()) as run_id,
    ):
        start = time.perf_counter()
        result = aggregate(params, workdir, inputs)
        seconds = time.perf_counter() - start
        log_stage(tracker, run_id, params, result, workdir, seconds)
    print(headline(result["recovery"]))
    best = ", ".join(f"{r['scenario']} {r['lr']:g}" for r in result["best"].iter_rows(named=True))
    if result["objective"].height:
        top = result["objective"].row(0, named=True)
        print(f"best: {top['optimizer']} lr={top['lr']:g}, objective {top['objective']:.4g} "
              f"({rc.BEST_RULE}, over all {top['fits']:,} fits); per scenario: {best}")  # fmt: skip
    else:
        print(f"best lr by the objective ({rc.BEST_RULE}), per scenario: {best}")
    if result["regression"] is not None:
        print(f"regression, closest to the oracle: {reg_stage.best_line(result['regression'])}")
    print(
        f"aggregate: {result['fits']:,} fits in {seconds:.1f} s -> "
        f"{files.Layout(workdir).report_text}; MLflow run {run_id}"
    )
    return 0
