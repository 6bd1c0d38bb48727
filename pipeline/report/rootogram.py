"""Figures of `fit_counts`: hanging rootograms of the fitted families (`rootograms_figure`)
and the gradient-descent paths.

Hanging rootogram (Kleiber & Zeileis 2016, The American Statistician 70:296): for each count k
a bar of height sqrt(observed_k) hangs from the curve sqrt(expected_k), so its bottom sits at
sqrt(expected_k) - sqrt(observed_k). A bar ending above zero means the model over-predicts k,
below zero that it under-predicts k; the square root makes the deviations comparable across
rare and common counts (the Poisson variance equals the mean). Where the table groups counts
into rows (a range of counts, `core.inference.goodness.count_bins`), each bar is one row: its
frequencies summed over the range.

Figures are built on an Agg canvas (`plots.figure`), never through pyplot.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from pipeline.core.inference.intercept import FrequencyTable
from pipeline.report.plots import figure

if TYPE_CHECKING:  # torch is imported only where the engine runs
    from pipeline.core.descent.outcome import FitResult


def _labels(counts: np.ndarray) -> list[str]:
    """'3' for a one-count row, '5-9' for a range of counts, 'K+' for the open last row."""
    spans = [(int(a), int(b) - 1) for a, b in zip(counts[:-1], counts[1:])]
    return [str(a) if a == b else f"{a}-{b}" for a, b in spans] + [f"{counts[-1]}+"]


def hanging_rootogram(ax, table: FrequencyTable, expected: np.ndarray, title: str) -> None:
    """Draw one hanging rootogram on `ax`.

    Args:
        ax: matplotlib Axes.
        table: the frequency table (rows from `table.counts`, the last one the pooled tail).
        expected: expected frequencies per row of `table` (`table.zip` or `table.poisson`).
        title: axes title.
    """
    x = np.arange(len(table.counts))
    top = np.sqrt(expected)
    height = np.sqrt(table.observed)
    ax.bar(x, height, bottom=top - height, width=0.8, color="#9ecae1", edgecolor="#3182bd",
           label="sqrt(observed), hanging")  # fmt: skip
    ax.plot(x, top, "o-", color="#d62728", lw=1.5, ms=3, label="sqrt(expected)")
    ax.axhline(0.0, color="black", lw=0.8)
    low = float(np.min(top - height, initial=0.0))
    ax.set_ylim(min(low, ax.get_ylim()[0]) - 0.3, None)
    ax.set_xticks(x, _labels(table.counts), fontsize=7 if len(x) > 20 else 9)
    ax.set_xlabel("count")
    if len(x) and max(len(label) for label in _labels(table.counts)) > 4:
        ax.tick_params(axis="x", labelrotation=45)  # ranges such as '180-195' overlap flat
    ax.set_title(title, fontsize=10)


def rootogram_figure(table: FrequencyTable, zip_label: str, poisson_label: str):
    """Hanging rootograms of the ZIP and the Poisson fit side by side, on a shared y axis.

    Args:
        table: observed and expected frequencies (`inference.frequency_table`).
        zip_label, poisson_label: panel titles (e.g. with the estimates).

    Returns:
        The matplotlib `Figure`.
    """
    fig, _ = figure(11.0, 4.2)
    fig.clear()
    left, right = fig.subplots(1, 2, sharey=True)
    hanging_rootogram(left, table, table.zip, zip_label)
    hanging_rootogram(right, table, table.poisson, poisson_label)
    left.set_ylabel("sqrt(frequency)")
    left.legend(fontsize=8, loc="upper right")
    return fig


def _path(steps, values, final_step, final_value):
    """A recorded history with the final state appended (histories stop before it)."""
    keep = np.isfinite(values)
    steps, values = steps[keep], values[keep]
    if not len(steps) or steps[-1] != final_step:
        steps, values = np.append(steps, final_step), np.append(values, final_value)
    return steps, values


def convergence_figure(result: FitResult, best: int, pi: float, lam: float, nll: float):
    """Gradient-descent paths of every init: NLL gap to the exact MLE, pi and lambda by step.

    Args:
        result: the engine's `FitResult` (one row per init).
        best: index of the init that was kept.
        pi, lam, nll: the exact MLE and its mean NLL (the dashed reference lines).

    Returns:
        The matplotlib `Figure`.
    """
    fig, _ = figure(12.0, 3.8)
    fig.clear()
    axes = fig.subplots(1, 3)
    series = [("history_nll", "nll", nll), ("history_pi", "pi", pi),
              ("history_lam", "lam", lam)]  # fmt: skip
    for ax, (hist_key, final_key, exact) in zip(axes, series):
        for b in range(len(result.pi)):
            steps, values = _path(result.history_step, getattr(result, hist_key)[b],
                                  result.steps[b], getattr(result, final_key)[b])  # fmt: skip
            if final_key == "nll":
                # Floor the gap at float64 resolution of a mean NLL so the log axis stays finite.
                values = np.maximum(values - exact, 1e-16 * max(abs(exact), 1.0))
            style = {"color": "#d62728", "lw": 1.8, "zorder": 3} if b == best else {
                "color": "#7f7f7f", "lw": 0.8, "alpha": 0.6}  # fmt: skip
            ax.plot(steps, values, label="kept" if b == best else None, **style)
        if final_key != "nll":
            ax.axhline(exact, color="black", ls="--", lw=1, label="exact MLE")
        ax.set_xscale("symlog", linthresh=10)  # the early steps matter most
        ax.set_xlim(0, None)
        ax.set_xlabel("optimizer step")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("mean NLL - exact minimum (nats)")
    axes[1].set_ylabel("pi")
    axes[2].set_ylabel("lambda")
    axes[1].legend(fontsize=8)
    return fig


def rootograms_figure(rows: list[dict], models: list[tuple[str, str]]):
    """One hanging rootogram panel per model, on a shared y axis (at most 3 panels a row).

    Args:
        rows: the frequency rows (`count_wording.frequency_rows`).
        models: [(row key, panel title), ...].

    Returns:
        The matplotlib `Figure`.
    """
    counts = np.array([row["count"] for row in rows])
    observed = np.array([row["observed"] for row in rows], float)
    cols = min(3, max(1, len(models)))
    grid = math.ceil(len(models) / cols)
    fig, _ = figure(4.2 * cols, 3.6 * grid)
    fig.clear()
    axes = np.atleast_1d(fig.subplots(grid, cols, sharey=True, squeeze=False)).ravel()
    low, high = 0.0, 0.0
    for ax, (key, title) in zip(axes, models):
        expected = np.array([row[key] for row in rows], float)
        table = FrequencyTable(counts, observed, expected, expected)
        hanging_rootogram(ax, table, expected, title)
        low = min(low, float(np.min(np.sqrt(expected) - np.sqrt(observed), initial=0.0)))
        high = max(high, float(np.max(np.sqrt(expected), initial=0.0)))
    axes[0].set_ylim(low - 0.3, 1.05 * high + 0.3)  # shared: every panel's bars in view
    for ax in axes[len(models) :]:
        ax.set_visible(False)
    axes[0].set_ylabel("sqrt(frequency)")
    axes[0].legend(fontsize=7, loc="upper right")
    return fig
