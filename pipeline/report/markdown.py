"""The report's words: best learning rates, generated findings and markdown tables.

Pure functions of the aggregate tables (`recovery.optimisation_table`,
`statistics.statistics_table`, the blog table): every sentence is derived from the numbers, so
the summary changes when the study does.
"""

from __future__ import annotations

import math

import polars as pl

from pipeline.analysis.recovery import best_lr

_POOR = 0.5  # "converges at the MLE in only ..." below this share of fits


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


def _pct(p: float | None, se: float | None = None) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    return f"{100 * p:.0f} ± {100 * se:.0f} %" if se else f"{100 * p:.0f} %"


def _g(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}g}"


def _problems(r: dict, label: str, max_steps: int) -> str | None:
    """One sentence on what went wrong at one (optimizer, lr), or None."""
    said = []
    if r["diverged"] > 0:
        said.append(f"diverges in {_pct(r['diverged'], r['diverged_se'])} of fits")
    if r["converged"] == 0 and r["max_steps"] > 0 and r["diverged"] < _POOR:
        said.append(
            f"never converges within {max_steps} steps (median NLL gap {_g(r['gap_median'], 2)})"
        )
    elif 0 < r["recovered"] < _POOR:
        said.append(f"converges at the MLE in only {_pct(r['recovered'])} of fits")
    if r["off_mle"] > 0:
        text = (
            f"{_pct(r['off_mle'], r['off_mle_se'])} of fits end more than 1 SE from the exact "
            f"MLE without diverging (worst {_g(max(r['err_pi_max'], r['err_lambda_max']), 2)} SE)"
        )
        if r["converged_off"] > 0:
            text += f", {_pct(r['converged_off'])} of all fits stopping there as converged"
        if r["off_collapsed"]:
            text += (
                f"; in {_pct(r['off_collapsed'])} of these π̂ collapsed towards 0, where the "
                "gradient in logit π vanishes with π"
            )
        said.append(text)
    return f"{label}: {'; '.join(said)}." if said else None


def findings(
    recovery: pl.DataFrame,
    statistics: pl.DataFrame,
    *,
    max_steps: int,
    level: float,
    reach: pl.DataFrame | None = None,
) -> list[str]:
    """Sentences on what worked and what failed, per scenario, from the numbers.

    Args:
        recovery: the optimisation table.
        statistics: the statistics table.
        max_steps: the step budget of each fit.
        level: the Wald intervals' nominal coverage.
        reach: `reach.reach_table` (steps to within 0.1 SE of the MLE).

    Returns:
        Markdown list lines: one bullet per scenario, details as sub-bullets.
    """
    multi = recovery["optimizer"].n_unique() > 1

    def label(opt: str, lr: float) -> str:
        return f"{opt} lr {lr:g}" if multi else f"lr {lr:g}"

    lines = []
    for c in best_lr(recovery).iter_rows(named=True):
        rows = recovery.filter(pl.col("scenario") == c["scenario"]).sort("optimizer", "lr")
        top = rows.filter((pl.col("optimizer") == c["optimizer"]) & (pl.col("lr") == c["lr"]))
        top = top.row(0, named=True)
        lines.append(
            f"- **{c['scenario']}**: best {label(c['optimizer'], c['lr'])} by the objective "
            f"(mean NLL gap {_g(c['objective'])}; {_pct(c['recovered'])} of fits converged at "
            f"the MLE, median {_g(c['steps_median'])} steps); by share converged at the MLE "
            f"{label(c['optimizer_recovered'], c['lr_recovered'])} "
            f"({_pct(c['recovered_best'])}, median {_g(c['steps_median_best'])} steps)."
        )
        sub = []
        if top["err_pi_max"] is not None:
            sub.append(
                f"At {label(c['optimizer'], c['lr'])} every fit that did not diverge ends within "
                f"{_g(top['err_pi_max'], 2)} SE of the exact MLE in π and "
                f"{_g(top['err_lambda_max'], 2)} SE in λ (medians {_g(top['err_pi_median'], 2)}"
                f" and {_g(top['err_lambda_median'], 2)})."
            )
        is_top = (
            (pl.col("scenario") == c["scenario"])
            & (pl.col("optimizer") == c["optimizer"])
            & (pl.col("lr") == c["lr"])
        )
        hit = None if reach is None else reach.filter(is_top)
        if hit is not None and hit.height and hit["reach_median"][0] is not None:
            h = hit.row(0, named=True)
            sub.append(
                f"{_pct(h['reached'])} of its fits come within 0.1 SE of the exact MLE in both π "
                f"and λ after a median of {_g(h['reach_median'])} steps (90th percentile "
                f"{_g(h['reach_p90'])}); the convergence test fires after a median of "
                f"{_g(top['steps_median'])}."
            )
        if top["max_steps"] > 0 and (top["max_steps_on_boundary"] or 0) >= _POOR:
            sub.append(
                f"The {_pct(top['max_steps'])} of its fits that hit {max_steps} steps are "
                f"mostly ({_pct(top['max_steps_on_boundary'])}) on datasets whose MLE is on the "
                "boundary π̂ = 0, where logit π drifts towards −∞."
            )
        for r in rows.iter_rows(named=True):
            sub.append(_problems(r, label(r["optimizer"], r["lr"]), max_steps))
        sub.extend(_statistics_lines(statistics, c, level))
        lines.extend(f"  - {s}" for s in sub if s)
    return lines


def blog_finding(blog: pl.DataFrame) -> str:
    """One bullet comparing the blog's settings with ours on the blog table's starts.

    Args:
        blog: the blog table (`blog_table.blog_table`, with or without the exact-MLE row).

    Returns:
        A markdown list line.
    """
    fits = blog.filter(pl.col("init").cast(pl.String) != "exact MLE")

    def worst(col: str) -> str:
        return _g(fits[col].abs().max(), 2)

    text = (
        f"- **The blog's table** ({fits.height} starts): at the blog's settings the fits end up "
        f"to {worst('mixture_dev_se')} SE from the exact MLE in π and {worst('lambda_dev_se')} "
        "SE in λ"
    )
    if "lr_tuned" in fits.columns:
        converged = (fits["status_tuned"] == "converged").mean()
        text += (
            f"; at lr {fits['lr_tuned'][0]:g} with our stopping rule {_pct(converged)} converge, "
            f"within {worst('mixture_dev_se_tuned')} SE in π and "
            f"{worst('lambda_dev_se_tuned')} SE in λ, after a median of "
            f"{_g(fits['steps_tuned'].median())} steps"
        )
    return text + "."


def _statistics_lines(statistics: pl.DataFrame, choice: dict, level: float) -> list[str]:
    stats = statistics.filter(
        (pl.col("scenario") == choice["scenario"])
        & (pl.col("optimizer") == choice["optimizer"])
        & (pl.col("lr") == choice["lr"])
    )
    lines = []
    for row in stats.iter_rows(named=True):
        par = "π̂" if row["parameter"] == "pi" else "λ̂"
        flag = ""
        if row["cover_se"] and abs(row["cover"] - level) > 2 * row["cover_se"]:
            flag = f", more than 2 MC SE off the nominal {_pct(level)}"
        lines.append(
            f"{par} over {row['datasets']} datasets (best-NLL init at lr {row['lr']:g}): bias "
            f"{_g(row['bias'])} ± {_g(row['bias_se'], 2)}, RMSE {_g(row['rmse'])} (exact MLE: "
            f"bias {_g(row['mle_bias'])}, RMSE {_g(row['mle_rmse'])}); {_pct(level)} Wald "
            f"coverage {_pct(row['cover'], row['cover_se'])}{flag} (exact MLE "
            f"{_pct(row['mle_cover'])})."
        )
    if stats.height and stats["boundary"][0]:
        lines.append(
            f"{_pct(stats['boundary'][0])} of the datasets have their exact MLE on the "
            "boundary π̂ = 0."
        )
    return lines


def _cell(value, digits: int) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return _g(value, digits)
    return str(value).replace("|", "\\|")


def as_text(df: pl.DataFrame, digits: int = 3) -> pl.DataFrame:
    """Float columns as text with `digits` significant digits (tiny NLL gaps stay visible)."""
    return df.with_columns(
        pl.col(c).map_elements(lambda v: _g(v, digits), return_dtype=pl.String)
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
    "convergence_vs_lr.png": "Share of fits converged (solid) and diverged (dashed), ± MC SE, "
    "and median / 90th-percentile steps to convergence, against the learning rate.",
    "error_vs_lr.png": "Top: |θ̂ − θ̂_MLE| in standard errors, median (solid) and max (dashed) "
    "over fits that did not diverge. Bottom: RMSE against the truth of the best-NLL init per "
    "dataset, relative to the exact MLE's (1 = as good as the MLE).",
    "sampling_distribution.png": "Estimates over replicates at each scenario's best learning "
    "rate (best-NLL init) against the exact MLE's; the black line is the truth.",
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

    Returns:
        Markdown text.
    """
    best = best_lr(recovery)
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
        f"{_pct(level)} Wald intervals with SEs from the Fisher information at the estimate, "
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
