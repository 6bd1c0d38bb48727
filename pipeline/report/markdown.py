"""The report's words: best learning rates, generated findings and markdown tables.

Pure functions of the aggregate tables (`recovery.optimisation_table`,
`statistics.statistics_table`, the blog table): every sentence is derived from the numbers, so
the summary changes when the study does.
"""

from __future__ import annotations

import polars as pl

from pipeline.analysis.recovery import OFF_SE, best_lr
from pipeline.report.findings import blog_finding, findings, pct, sig, study_finding


def with_mle_row(table: pl.DataFrame, mle: dict) -> pl.DataFrame:
    """The table for reading: `init` as text and a last row "exact MLE" with its estimates.

    Args:
        table: from `blog_table`.
        mle: the same dataset's summary row (mle_pi, mle_lambda, mle_nll).

    Returns:
        The rows of `table` plus the exact MLE (its NLL in every `err*` column, its estimates
        in every `mixture*` / `lambda*` estimate column, zero deviations, no init).
    """
    row: dict[str, object] = {"init": "exact MLE"}
    for col in table.columns:
        if col == "init":
            continue
        if col.startswith("err"):
            row[col] = mle["mle_nll"]
        elif col in ("mixture", "mixture_tuned"):
            row[col] = mle["mle_pi"]
        elif col in ("lambda", "lambda_tuned"):
            row[col] = mle["mle_lambda"]
        elif "_dev_se" in col:
            row[col] = 0.0
        else:
            row[col] = None
    shown = table.with_columns(pl.col("init").cast(pl.String))
    extra = pl.DataFrame([row], schema=shown.schema)
    return pl.concat([shown, extra])


def _cell(value, digits: int) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return sig(value, digits)
    return str(value).replace("|", "\\|")


def as_text(df: pl.DataFrame, digits: int = 3) -> pl.DataFrame:
    """Float columns as text with `digits` significant digits (tiny NLL gaps stay visible)."""
    return df.with_columns(
        pl.col(c).map_elements(lambda v: sig(v, digits), return_dtype=pl.String)
        for c, t in df.schema.items()
        if t.is_float()
    )


def markdown_table(df: pl.DataFrame, digits: int = 3) -> str:
    """A frame as a GitHub markdown table: every row and column, floats to `digits` digits."""
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * df.width]
    for row in df.iter_rows():
        lines.append("| " + " | ".join(_cell(v, digits) for v in row) + " |")
    return "\n".join(lines)


OPTIMISATION_COLUMNS = (
    "scenario optimizer lr fits objective recovered converged max_steps diverged off_mle "
    "steps_median steps_p90 gap_median gap_max err_pi_median err_pi_max err_lambda_median "
    "err_lambda_max spread_pi_se spread_lambda_se"
).split()
STATISTICS_COLUMNS = (
    "scenario optimizer lr parameter truth datasets bias bias_se sd rmse cover cover_log "
    "mle_bias mle_bias_se mle_sd mle_rmse mle_cover mle_cover_log boundary"
).split()


FIGURE_CAPTIONS = {
    "convergence_vs_lr.png": "Share of fits recovered (solid: converged and within "
    f"{OFF_SE:g} SE of "
    "the exact MLE in π and λ, what the objective counts) and converged (dashed), ± MC SE, "
    "the diverged share (dotted) only when some fit diverged; below, median / 90th-percentile "
    "steps to convergence (grey line: the step budget), against the learning rate.",
    "error_vs_lr.png": "Top: |θ̂ − θ̂_MLE| in standard errors, median (solid) and max (dashed) "
    "over fits that did not diverge; errors below 1e-4 SE are drawn on the dotted floor. "
    "Bottom: RMSE against the truth of the best-NLL init per dataset, relative to the exact "
    "MLE's (1 = as good as the MLE).",
    "sampling_distribution.png": "Estimates over replicates at each scenario's best learning "
    "rate (in the panel title; best-NLL init) against the exact MLE's; the black line is the "
    "truth.",
    "reach_mle.png": "Share of fits within 0.1 SE of the exact MLE (in both π and λ) by "
    "optimizer step, from the MLflow metric histories (exact to the recording cadence).",
}


def report(
    *,
    title: str,
    preamble: list[str],
    recovery: pl.DataFrame,
    statistics: pl.DataFrame,
    blog: pl.DataFrame | None,
    blog_caption: str,
    figures: list[str],
    max_steps: int,
    level: float,
    reach: pl.DataFrame | None = None,
    objective: pl.DataFrame | None = None,
) -> str:
    """The whole `reports/recovery.md`.

    Args:
        title: first heading.
        preamble: lines under it (what was aggregated, from where).
        recovery, statistics: the aggregate tables.
        blog: the blog table with its exact-MLE row (`blog_table.with_mle_row`), or None.
        blog_caption: one line describing the blog table's settings.
        figures: figure file names relative to the report.
        max_steps: the step budget.
        level: the Wald intervals' nominal coverage.
        reach: `reach.reach_table` (steps to within 0.1 SE of the MLE).
        objective: `recovery.objective_table` over every fit of the study (the study's best
            by the objective opens the summary), or None.

    Returns:
        Markdown text.
    """
    best = best_lr(recovery)
    opening = None if objective is None else study_finding(objective)
    at_best = statistics.join(
        best.select("scenario", "optimizer", "lr"), on=["scenario", "optimizer", "lr"], how="semi"
    )
    parts = [
        f"# {title}",
        "",
        *preamble,
        "",
        "## Summary (generated from the numbers below)",
        "",
        *([opening] if opening else []),
        *findings(recovery, statistics, max_steps=max_steps, level=level, reach=reach),
        *([] if blog is None else [blog_finding(blog)]),
        "",
        "## Best learning rate per scenario",
        "",
        markdown_table(best),
        "",
        "## Optimisation: did gradient descent reach the exact MLE?",
        "",
        "Shares are of all fits (± binomial MC SE in `reports/recovery.parquet`); steps among "
        "converged fits; gaps (mean NLL above the exact MLE's) and errors |θ̂ − θ̂_MLE| / SE over "
        "fits that did not diverge; spread = mean over datasets of max − min across inits, "
        "in SE.",
        "",
        markdown_table(recovery.select(OPTIMISATION_COLUMNS)),
        "",
        "## Statistics at the best learning rate: gradient descent vs the exact MLE",
        "",
        f"Per dataset the best-NLL init; bias ± MC SE, SD, RMSE against the truth; coverage of "
        f"{pct(level)} Wald intervals with SEs from the Fisher information at the estimate, "
        "natural (`cover`) and logit/log scale (`cover_log`). All learning rates: "
        "`reports/statistics.parquet`.",
        "",
        markdown_table(at_best.select(STATISTICS_COLUMNS)),
        "",
    ]
    if blog is not None:
        parts += [
            "## The blog's table, reproduced",
            "",
            blog_caption,
            "",
            markdown_table(blog, 7),
            "",
        ]
    parts += ["## Figures", ""]
    for name in figures:
        parts += [f"![{name}](figures/{name})", "", FIGURE_CAPTIONS.get(name, ""), ""]
    return "\n".join(parts)
