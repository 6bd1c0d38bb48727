"""Aggregate stage: the sweep's fits → recovery tables, figures and a report (polars).

`python -m pipeline.aggregate --params P --workdir W` (`make report`) reads the per-fit table
`data/fits.parquet` and, when fits were tracked (`tracking.log_fits`), the same fits from the
MLflow store — runs through the tracking API, metric histories straight from the SQLite store's
`metrics` table (DESIGN §6) — and checks that both agree. It writes under `W/reports/`:
- `recovery.parquet`: optimisation per scenario × optimizer × lr (`recovery.optimisation_table`);
- `statistics.parquet`: GD vs exact MLE as estimators (`recovery.statistics_table`);
- `blog_table.parquet`: the blog's ten fits reproduced beside our tuned lr (`blog_table`);
- `recovery.md` and `figures/*.png`;
all stamped or written atomically, logged to the stage's MLflow run. The tables hold no run ids
or timestamps, so the same params give byte-identical files.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from pipeline import config, datasets, interrupts
from pipeline.cli import parser, quiet_libraries, run
from pipeline.errors import UserError

FIGURES = ("convergence_vs_lr.png", "error_vs_lr.png", "sampling_distribution.png")
REACH_FIGURE = "reach_mle.png"
REACH_SE = 0.1  # "reached the MLE": within this many standard errors in both parameters


def load_inputs(params: config.Params, workdir: Path) -> tuple[pl.DataFrame, dict, pl.DataFrame]:
    """(summary, histograms, per-fit table), each checked against the current params.

    Raises:
        UserError: a missing, foreign or stale input, or a sweep without fits.
    """
    summary, hists = datasets.load_study(workdir, params.digest(*config.STAGE_BLOCKS["generate"]))
    path = datasets.data_dir(workdir) / "fits.parquet"
    fits = datasets.read(path, "fits", params.digest(*config.STAGE_BLOCKS["sweep"]))
    if fits.height == 0:
        raise UserError(f"{path}: holds no fits; rerun `make sweep`")
    return summary, hists, fits


def sampling_best(fits: pl.DataFrame, best: pl.DataFrame) -> pl.DataFrame:
    """The best-NLL init per dataset at each scenario's best (optimizer, lr)."""
    from pipeline.recovery import best_fits

    return best_fits(fits).join(
        best.select("scenario", "optimizer", "lr"), on=["scenario", "optimizer", "lr"], how="semi"
    )


def blog_section(params: config.Params, hists: dict, best: pl.DataFrame):
    """The blog table (or None when its scenario has no replicate 0) and its caption."""
    from pipeline.blog_table import blog_table

    blog = params.report.blog
    hist = hists.get((blog.scenario, 0))
    if hist is None:
        return None, ""
    choice = best.filter(pl.col("scenario") == blog.scenario)
    lr = choice["lr"][0] if choice.height else None
    opt = choice["optimizer"][0] if choice.height else "adam"
    table = blog_table(
        hist, blog, seed=params.seed, tuned_lr=lr, tuned_optimizer=opt, fit=params.fit
    )
    caption = (
        f"Scenario `{blog.scenario}`, replicate 0 (n = {hist.n:,}); {blog.inits} starts "
        f"π₀ ~ U(0, 1), λ₀ ~ U(0, 10). Blog settings: Adam, lr = {blog.lr:g}, exactly "
        f"{blog.steps} steps of the mixture model; `*_tuned`: {opt} at the best lr "
        f"{lr if lr is None else f'{lr:g}'} with the sweep's stopping rule. `*_dev_se`: "
        "distance to the exact MLE in its standard errors. Last row: the exact MLE."
    )
    return table, caption


def write_text(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def figures(out: Path, params, recovery, statistics, sampled, summary, reach) -> list[str]:
    """Draw and save the report's figures; returns their file names."""
    from pipeline import report_plots as rp

    names = [s.name for s in params.data.scenarios]
    drawn = {
        FIGURES[0]: rp.convergence_vs_lr(recovery, names, params.fit.max_steps),
        FIGURES[1]: rp.error_vs_lr(recovery, statistics, names),
        FIGURES[2]: rp.sampling_distribution(sampled, summary, names),
    }
    if reach is not None:
        drawn[REACH_FIGURE] = rp.reach_curves(reach, names, params.fit.max_steps, REACH_SE)
    for name, fig in drawn.items():
        rp.save(fig, out / "figures" / name)
    if reach is None:  # not left over from a run that had histories
        (out / "figures" / REACH_FIGURE).unlink(missing_ok=True)
    return list(drawn)


HEADLINE = (
    "scenario optimizer lr objective recovered converged diverged steps_median gap_median "
    "err_pi_max err_lambda_max"
).split()


def headline(recovery: pl.DataFrame) -> str:
    """The terminal's table: one line per scenario × optimizer × lr, 3 significant digits."""
    from pipeline.report_md import as_text

    with pl.Config(
        tbl_rows=-1,
        tbl_cols=-1,
        tbl_width_chars=200,
        tbl_hide_column_data_types=True,
        tbl_hide_dataframe_shape=True,
        tbl_cell_alignment="RIGHT",
    ):
        return str(as_text(recovery.select(HEADLINE)))


def aggregate(params: config.Params, workdir: Path, inputs=None, tracker=None) -> dict:
    """Compute and write every output of the stage.

    Args:
        params: validated params.
        workdir: folder holding `data/` and `reports/`.
        inputs: `load_inputs(params, workdir)` when already loaded.
        tracker: a `Tracker` on the study's store, or None to use `data/fits.parquet` alone.

    Returns:
        A dict with the tables (`recovery`, `statistics`, `blog`, `best`), the file paths
        written (`files`), `source` (one line: where the fits came from) and `fits` (their
        number).
    """
    from pipeline import recovery as rc
    from pipeline import report_md
    from pipeline.blog_table import with_mle_row
    from pipeline.fit_store import reach_steps, reach_table, store_view

    summary, hists, fits = inputs or load_inputs(params, workdir)
    order = [s.name for s in params.data.scenarios]
    source, histories = "data/fits.parquet (tracking.log_fits is false: no MLflow fit runs)", None
    if tracker is not None:
        source, histories = store_view(tracker, fits)
    recovery = rc.optimisation_table(
        fits, diverged_penalty=params.sweep.diverged_penalty, order=order
    )
    statistics = rc.statistics_table(fits, summary, level=params.report.level, order=order)
    best = report_md.best_lr(recovery)
    blog, caption = blog_section(params, hists, best)
    reach = None if histories is None else reach_steps(histories, fits, REACH_SE)

    out = datasets.reports_dir(workdir)
    stamp = params.digest(*config.STAGE_BLOCKS["aggregate"])
    files = [out / "statistics.parquet"]
    datasets.write(statistics, files[0], "statistics", stamp)
    if blog is not None:
        files.append(out / "blog_table.parquet")
        datasets.write(blog, files[-1], "blog_table", stamp)
    drawn = figures(out, params, recovery, statistics, sampling_best(fits, best), summary, reach)
    files += [out / "figures" / name for name in drawn]
    text = report_md.report(
        title="Does gradient descent recover the zero-inflated Poisson?",
        preamble=[
            f"{fits.height:,} fits of {summary.height} datasets "
            f"(n = {params.data.n:,} each), {recovery.height} scenario × optimizer × lr "
            f"groups; params hash `{stamp}`.",
            f"Source: {source}.",
        ],
        recovery=recovery,
        statistics=statistics,
        blog=None if blog is None else with_mle_row(blog, hists[(params.report.blog.scenario, 0)]),
        blog_caption=caption,
        figures=drawn,
        max_steps=params.fit.max_steps,
        level=params.report.level,
        reach=None if reach is None else reach_table(reach),
    )
    files.append(out / "recovery.md")
    write_text(files[-1], text)
    # The make target: written last, so it is never newer than the other outputs.
    files.append(out / "recovery.parquet")
    datasets.write(recovery, files[-1], "recovery", stamp)
    return {
        "recovery": recovery,
        "statistics": statistics,
        "blog": blog,
        "best": best,
        "files": files,
        "source": source,
        "fits": fits.height,
    }


def log_stage(
    tracker, run_id: str, params: config.Params, result: dict, workdir: Path, seconds: float
) -> None:
    """Log the report block, per-scenario best lr and every output file to the stage run."""
    from pipeline.tracking import flatten

    flat = flatten({"report": config.as_dict(params.report)})
    metrics = {"fits": result["fits"], "groups": result["recovery"].height, "seconds": seconds}
    for row in result["best"].iter_rows(named=True):
        metrics[f"{row['scenario']}.best_lr"] = row["lr"]
        metrics[f"{row['scenario']}.best_objective"] = row["objective"]
        metrics[f"{row['scenario']}.best_recovered"] = row["recovered"]
    tracker.log(run_id, params=flat, metrics=metrics)
    out = datasets.reports_dir(workdir)
    for path in result["files"]:
        folder = path.parent.relative_to(out).as_posix()
        tracker.log_artifact(run_id, path, "reports" if folder == "." else f"reports/{folder}")


def main(argv: Sequence[str] | None = None) -> int:
    """Aggregate the sweep into reports/; see the module docstring. Returns 0."""
    args = parser(
        "Aggregate the sweep's fits into recovery tables, figures and a report."
    ).parse_args(argv)
    params = config.load(args.params)
    workdir = args.workdir.resolve()
    stamp = params.digest(*config.STAGE_BLOCKS["aggregate"])
    inputs = load_inputs(params, workdir)  # fail early, before opening the store
    from pipeline.tracking import Tracker

    tracker = Tracker(params.tracking.experiment, root=workdir)
    with (
        interrupts.sigterm_raises(),
        tracker.stage_run("aggregate", stamp, params.digest()) as run_id,
    ):
        start = time.perf_counter()
        result = aggregate(params, workdir, inputs, tracker if params.tracking.log_fits else None)
        seconds = time.perf_counter() - start
        log_stage(tracker, run_id, params, result, workdir, seconds)
    print(headline(result["recovery"]))
    best = ", ".join(f"{r['scenario']} {r['lr']:g}" for r in result["best"].iter_rows(named=True))
    print(f"best lr by objective: {best}")
    print(
        f"aggregate: {result['fits']:,} fits in {seconds:.1f} s from {result['source']} -> "
        f"{datasets.reports_dir(workdir) / 'recovery.md'}; MLflow run {run_id}"
    )
    return 0


if __name__ == "__main__":
    quiet_libraries()
    run(main)
