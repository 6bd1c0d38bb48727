"""The report's figures, one function per figure, each returning a matplotlib `Figure`.

Built on `matplotlib.figure.Figure` with an Agg canvas (never pyplot), so nothing global
changes; `save` writes a PNG atomically. Panels are one column per scenario, learning rate on
a log axis, one line per optimizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, MaxNLocator, NullLocator

from pipeline.store import files

_MARKERS = "os^vD"
GD_AT_BEST = "gradient descent, best lr"  # its lr is in each panel's title
_ERR_FLOOR = 1e-4  # |error| / SE drawn no lower than this on log axes


def _panels(rows: int, cols: int, width: float = 3.2, height: float = 2.6):

    fig = Figure(figsize=(width * cols + 0.6, height * rows + 0.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, np.atleast_2d(fig.subplots(rows, cols, squeeze=False))


def save(fig, path: Path) -> None:
    """Write `fig` as PNG at `path` atomically (`files.atomic`)."""
    with files.atomic(path) as tmp:
        fig.savefig(tmp, format="png")


def _lines(ax, df: pl.DataFrame, y: str, *, err: str | None = None, style="-", label=""):
    """One line per optimizer of column `y` against lr (NaN/null points skipped)."""
    for i, ((opt,), part) in enumerate(df.sort("lr").group_by("optimizer", maintain_order=True)):
        lr = part["lr"].to_numpy()
        val = part[y].cast(pl.Float64).fill_null(np.nan).to_numpy()
        yerr = part[err].fill_null(np.nan).to_numpy() if err else None
        ax.errorbar(
            lr,
            val,
            yerr=yerr,
            fmt=style,
            marker=_MARKERS[i % len(_MARKERS)],
            markersize=4,
            capsize=2,
            label=f"{opt}{label}",
        )
    _log_axis(ax, "x")


def _log_axis(ax, which: str = "x") -> None:
    """Log scale with few ticks: default minor ticks over many decades dominate render time."""

    getattr(ax, f"set_{which}scale")("log")
    axis = getattr(ax, f"{which}axis")
    axis.set_major_locator(LogLocator(numticks=5))
    axis.set_minor_locator(NullLocator())


def _legend_outside(ax, row=()) -> None:
    """The row's legend right of its last panel `ax`, clear of every plotted point; with `row`
    (the row's panels), one entry per label any of them has."""
    handles = dict(zip(*reversed(ax.get_legend_handles_labels()), strict=True))
    for other in row:
        for handle, label in zip(*other.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    ax.legend(list(handles.values()), list(handles), fontsize="x-small", loc="upper left",
              bbox_to_anchor=(1.02, 1.0), borderaxespad=0)  # fmt: skip


def convergence_vs_lr(recovery: pl.DataFrame, scenarios: Sequence[str], max_steps: int):
    """Share of fits recovered / converged (/ diverged) and steps to convergence vs lr.

    `recovered` (the report's and the objective's measure: converged and within `OFF_SE` of
    the exact MLE) is the solid line, `converged` dashed beside it; the `diverged` share is
    drawn only when some fit of the table diverged (a line at zero in every panel says
    nothing the caption cannot).

    Args:
        recovery: the optimisation table (`recovery.optimisation_table`).
        scenarios: scenario names, one column of panels each.
        max_steps: the step budget (drawn as a reference line).

    Returns:
        The figure.
    """
    fig, axes = _panels(2, len(scenarios))
    any_diverged = bool((recovery["diverged"].fill_null(0.0) > 0).any())
    for j, name in enumerate(scenarios):
        part = recovery.filter(pl.col("scenario") == name)
        top, bottom = axes[0, j], axes[1, j]
        _lines(top, part, "recovered", err="recovered_se", label=" recovered")
        _lines(top, part, "converged", err="converged_se", style="--", label=" converged")
        if any_diverged:
            _lines(top, part, "diverged", err="diverged_se", style=":", label=" diverged")
        top.set_ylim(-0.05, 1.05)
        top.set_title(name)
        _lines(bottom, part, "steps_median", label=" median")
        _lines(bottom, part, "steps_p90", style=":", label=" 90th pct")
        bottom.axhline(max_steps, color="0.6", linewidth=0.8)
        bottom.set_xlabel("learning rate")
    axes[0, 0].set_ylabel("share of fits (± MC SE)")
    axes[1, 0].set_ylabel("steps to convergence")
    _legend_outside(axes[0, -1])
    _legend_outside(axes[1, -1])
    return fig


def error_vs_lr(recovery: pl.DataFrame, statistics: pl.DataFrame, scenarios: Sequence[str]):
    """Estimate error vs learning rate: distance to the exact MLE, and RMSE against the truth.

    Top: median (solid) and max (dashed) |theta_hat - theta_MLE| in MLE standard errors
    (values below 1e-4 SE, i.e. zero for any purpose, are drawn at 1e-4, a dotted line in the
    legend says so).
    Bottom: RMSE against the truth of the best-NLL init, relative to the exact MLE's RMSE
    (1 = as good as the MLE).

    Args:
        recovery: the optimisation table.
        statistics: the statistics table (`statistics.statistics_table`).
        scenarios: scenario names, one column of panels each.

    Returns:
        The figure.
    """
    fig, axes = _panels(2, len(scenarios))
    stats = statistics.with_columns((pl.col("rmse") / pl.col("mle_rmse")).alias("rmse_ratio"))
    for j, name in enumerate(scenarios):
        part = recovery.filter(pl.col("scenario") == name)
        top, bottom = axes[0, j], axes[1, j]
        for par in ("pi", "lambda"):
            floor = part.with_columns(
                pl.col(f"err_{par}_median", f"err_{par}_max").clip(_ERR_FLOOR)
            )
            _lines(top, floor, f"err_{par}_median", label=f" {par} median")
            _lines(top, floor, f"err_{par}_max", style="--", label=f" {par} max")
            sub = stats.filter((pl.col("scenario") == name) & (pl.col("parameter") == par))
            _lines(bottom, sub, "rmse_ratio", label=f" {par}")
        _log_axis(top, "y")
        top.set_ylim(bottom=_ERR_FLOOR / 2)
        top.axhline(
            _ERR_FLOOR,
            color="0.6",
            linewidth=0.8,
            linestyle=":",
            label=f"floor: below {_ERR_FLOOR:g} SE drawn here",
        )
        top.set_title(name)
        bottom.axhline(1.0, color="0.6", linewidth=0.8)
        _log_axis(bottom, "y")
        bottom.set_xlabel("learning rate")
    axes[0, 0].set_ylabel(r"$|\hat\theta - \hat\theta_{MLE}|$ / SE")
    axes[1, 0].set_ylabel("RMSE / RMSE of exact MLE")
    _legend_outside(axes[0, -1])
    _legend_outside(axes[1, -1])
    return fig


def sampling_distribution(best: pl.DataFrame, summary: pl.DataFrame, scenarios: Sequence[str]):
    """Estimates over replicates at each scenario's best lr, against the exact MLE's, and truth.

    Args:
        best: best-NLL init per dataset at the chosen lr (scenario, replicate, pi_hat,
            lambda_hat, optimizer, lr).
        summary: the data stage's summary (scenario, mle_pi, mle_lambda, pi_true, lambda_true).
        scenarios: scenario names, one column of panels each.

    Returns:
        The figure.
    """

    fig, axes = _panels(2, len(scenarios))
    for j, name in enumerate(scenarios):
        gd = best.filter(pl.col("scenario") == name)
        mle = summary.filter(pl.col("scenario") == name)
        tag = f"GD lr {gd['lr'][0]:g}" if gd.height else "no GD fits"
        for i, (est, ref, truth, label) in enumerate(
            [("pi_hat", "mle_pi", "pi_true", "π"), ("lambda_hat", "mle_lambda", "lambda_true", "λ")]
        ):
            ax = axes[i, j]
            a = gd[est].drop_nans().drop_nulls().to_numpy() if gd.height else np.array([])
            b = mle[ref].drop_nans().drop_nulls().to_numpy()
            both = np.concatenate([a, b])
            bins = np.histogram_bin_edges(both, bins=max(5, min(30, len(b) // 2)))
            ax.hist(b, bins=bins, histtype="stepfilled", alpha=0.35, label="exact MLE")
            if a.size:
                ax.hist(a, bins=bins, histtype="step", linewidth=1.5, label=GD_AT_BEST)
            ax.axvline(mle[truth][0], color="k", linewidth=1.0, label="truth")
            ax.set_xlabel(label)
            ax.xaxis.set_major_locator(MaxNLocator(4))
            if i == 0:
                ax.set_title(f"{name} ({tag})")
    axes[0, 0].set_ylabel("datasets")
    axes[1, 0].set_ylabel("datasets")
    for i in range(2):
        _legend_outside(axes[i, -1], axes[i])
    return fig


def reach_curves(reach: pl.DataFrame, scenarios: Sequence[str], max_steps: int, within: float):
    """Share of fits within `within` SEs of the exact MLE by step, one line per lr.

    Args:
        reach: per fit (scenario, optimizer, lr, reach_step) with reach_step null when the
            fit never got there (from the MLflow metric histories).
        scenarios: scenario names, one panel each.
        max_steps: the step budget (x range).
        within: the distance in standard errors the curves are about.

    Returns:
        The figure.
    """
    fig, axes = _panels(1, len(scenarios))
    steps = np.arange(max_steps + 1)
    for j, name in enumerate(scenarios):
        ax = axes[0, j]
        part = reach.filter(pl.col("scenario") == name).sort("optimizer", "lr")
        for (opt, lr), sub in part.group_by(["optimizer", "lr"], maintain_order=True):
            hit = sub["reach_step"].fill_null(np.inf).cast(pl.Float64).to_numpy()
            share = (hit[None, :] <= steps[:, None]).mean(axis=1)
            ax.plot(steps, share, label=f"{opt} lr {lr:g}")
        ax.set_title(name)
        ax.set_xlabel("optimizer step")
        ax.set_ylim(-0.05, 1.05)
    axes[0, 0].set_ylabel(f"share of fits within {within:g} SE of MLE")
    _legend_outside(axes[0, -1])
    return fig
