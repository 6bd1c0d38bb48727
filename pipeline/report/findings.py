"""The report's words: the summary's sentences, each derived from the numbers.

Pure functions of the aggregate tables (`recovery.optimisation_table`,
`statistics.statistics_table`, the blog table, `reach.reach_table`): when the study changes,
the sentences change with it. `markdown.report` lays them out with the tables.
"""

from __future__ import annotations

import math

import polars as pl

from pipeline.analysis.recovery import BEST_RULE, best_lr

_POOR = 0.5  # "converges at the MLE in only ..." below this share of fits


def pct(p: float | None, se: float | None = None) -> str:
    """A share as a whole percentage, with its Monte-Carlo SE when given ("n/a" for none)."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    return f"{100 * p:.0f} ± {100 * se:.0f} %" if se else f"{100 * p:.0f} %"


def sig(x: float | None, digits: int = 3) -> str:
    """A number to `digits` significant digits ("n/a" for none)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}g}"


def _problems(r: dict, label: str, max_steps: int) -> str | None:
    """One sentence on what went wrong at one (optimizer, lr), or None."""
    said = []
    if r["diverged"] > 0:
        said.append(f"diverges in {pct(r['diverged'], r['diverged_se'])} of fits")
    if r["converged"] == 0 and r["max_steps"] > 0 and r["diverged"] < _POOR:
        said.append(
            f"never converges within {max_steps} steps (median NLL gap {sig(r['gap_median'], 2)})"
        )
    elif 0 < r["recovered"] < _POOR:
        said.append(f"converges at the MLE in only {pct(r['recovered'])} of fits")
    if r["off_mle"] > 0:
        text = (
            f"{pct(r['off_mle'], r['off_mle_se'])} of fits end more than 1 SE from the exact "
            f"MLE without diverging (worst {sig(max(r['err_pi_max'], r['err_lambda_max']), 2)} SE)"
        )
        if r["converged_off"] > 0:
            text += f", {pct(r['converged_off'])} of all fits stopping there as converged"
        if r["off_collapsed"]:
            text += (
                f"; in {pct(r['off_collapsed'])} of these π̂ collapsed towards 0, where the "
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
        text = (
            f"- **{c['scenario']}**: best {label(c['optimizer'], c['lr'])} by the objective: "
            f"{BEST_RULE} ({pct(c['recovered'])} of fits converged at the MLE, median "
            f"{sig(c['steps_median'])} steps)"
        )
        if (c["optimizer_recovered"], c["lr_recovered"]) != (c["optimizer"], c["lr"]):
            text += (
                f"; by share converged at the MLE, then median steps: "
                f"{label(c['optimizer_recovered'], c['lr_recovered'])} "
                f"({pct(c['recovered_best'])}, median {sig(c['steps_median_best'])} steps)"
            )
        lines.append(text + ".")
        sub = []
        if top["err_pi_max"] is not None:
            sub.append(
                f"At {label(c['optimizer'], c['lr'])} every fit that did not diverge ends within "
                f"{sig(top['err_pi_max'], 2)} SE of the exact MLE in π and "
                f"{sig(top['err_lambda_max'], 2)} SE in λ (medians {sig(top['err_pi_median'], 2)}"
                f" and {sig(top['err_lambda_median'], 2)})."
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
                f"{pct(h['reached'])} of its fits come within 0.1 SE of the exact MLE in both π "
                f"and λ after a median of {sig(h['reach_median'])} steps (90th percentile "
                f"{sig(h['reach_p90'])}); the convergence test fires after a median of "
                f"{sig(top['steps_median'])}."
            )
        if top["max_steps"] > 0 and (top["max_steps_on_boundary"] or 0) >= _POOR:
            sub.append(
                f"The {pct(top['max_steps'])} of its fits that hit {max_steps} steps are "
                f"mostly ({pct(top['max_steps_on_boundary'])}) on datasets whose MLE is on the "
                "boundary π̂ = 0, where logit π drifts towards −∞."
            )
        for r in rows.iter_rows(named=True):
            sub.append(_problems(r, label(r["optimizer"], r["lr"]), max_steps))
        sub.extend(_statistics_lines(statistics, c, level))
        lines.extend(f"  - {s}" for s in sub if s)
    return lines


def study_finding(objective: pl.DataFrame) -> str | None:
    """One bullet naming the study's best (optimizer, lr) by the objective over all its fits.

    It is Optuna's best trial recomputed from the fits tables (`recovery.objective_table`), so
    the report names what `make sweep` printed and tagged on the sweep's run.

    Args:
        objective: `recovery.objective_table` over the study's fits, best first.

    Returns:
        A markdown list line, or None without fits.
    """
    if objective.height == 0:
        return None
    top = objective.row(0, named=True)
    text = (
        f"- **The study**: best lr {top['lr']:g} ({top['optimizer']}) by the objective: "
        f"{BEST_RULE} — "
        f"{pct(top['recovered'])} of its {top['fits']:,} fits recovered (converged within 1 SE "
        f"of the exact MLE or Newton oracle), objective {sig(top['objective'], 4)}; Optuna's "
        "best trial"
    )
    if objective.height > 1:
        nxt = objective.row(1, named=True)
        text += (
            f"; next {nxt['optimizer']} lr {nxt['lr']:g} ({pct(nxt['recovered'])} recovered, "
            f"objective {sig(nxt['objective'], 4)})"
        )
    return text + "."


def blog_finding(blog: pl.DataFrame) -> str:
    """One bullet comparing the blog's settings with ours on the blog table's starts.

    Args:
        blog: the blog table (`blog_table.blog_table`, with or without the exact-MLE row).

    Returns:
        A markdown list line.
    """
    fits = blog.filter(pl.col("init").cast(pl.String) != "exact MLE")

    def worst(col: str) -> str:
        return sig(fits[col].abs().max(), 2)

    text = (
        f"- **The blog's table** ({fits.height} starts): at the blog's settings the fits end up "
        f"to {worst('mixture_dev_se')} SE from the exact MLE in π and {worst('lambda_dev_se')} "
        "SE in λ"
    )
    if "lr_tuned" in fits.columns:
        converged = (fits["status_tuned"] == "converged").mean()
        text += (
            f"; at lr {fits['lr_tuned'][0]:g} with our stopping rule {pct(converged)} converge, "
            f"within {worst('mixture_dev_se_tuned')} SE in π and "
            f"{worst('lambda_dev_se_tuned')} SE in λ, after a median of "
            f"{sig(fits['steps_tuned'].median())} steps"
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
            flag = f", more than 2 MC SE off the nominal {pct(level)}"
        lines.append(
            f"{par} over {row['datasets']} datasets (best-NLL init at lr {row['lr']:g}): bias "
            f"{sig(row['bias'])} ± {sig(row['bias_se'], 2)}, RMSE {sig(row['rmse'])} (exact MLE: "
            f"bias {sig(row['mle_bias'])}, RMSE {sig(row['mle_rmse'])}); {pct(level)} Wald "
            f"coverage {pct(row['cover'], row['cover_se'])}{flag} (exact MLE "
            f"{pct(row['mle_cover'])})."
        )
    if stats.height and stats["boundary"][0]:
        lines.append(
            f"{pct(stats['boundary'][0])} of the datasets have their exact MLE on the "
            "boundary π̂ = 0."
        )
    return lines
