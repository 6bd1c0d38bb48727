"""Figures shared by the stages: data histograms against zero-inflated Poisson pmfs.

Figures are built on `matplotlib.figure.Figure` with an Agg canvas attached inside `figure()`,
never through pyplot: importing this module selects no backend and keeps no figure state, and
a stage can reuse one figure for many runs (DESIGN §6: rendering dominates the cost).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipeline.core.histogram import Histogram
from pipeline.core.laws.distributions import zip_log_pmf

_MAX_GRID = 2000  # pmf points drawn per curve; wider supports are sampled, not enumerated


def figure(width: float = 6.0, height: float = 4.0, dpi: int = 100):
    """A new figure on the Agg (PNG) canvas, outside pyplot's global registry.

    Args:
        width, height: size in inches.
        dpi: dots per inch when saved.

    Returns:
        `(fig, ax)`: the `Figure` and its single `Axes`; `fig.savefig` and
        `MlflowClient.log_figure` work on it directly.
    """

    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def zip_pmf(values, pi: float, lam: float) -> np.ndarray:
    """Zero-inflated Poisson probabilities of integer `values` (`distributions.zip_log_pmf`).

    Args:
        values: array-like of non-negative integers.
        pi: probability of a structural zero, in [0, 1].
        lam: Poisson rate > 0.

    Returns:
        Array of P(Y = value), same shape as `values`.
    """
    return np.exp(zip_log_pmf(values, pi, lam))


def pmf_grid(hist: Histogram, curves: Mapping[str, tuple[float, float]]) -> np.ndarray:
    """The integer points at which to draw pmfs: the observed range and each curve's bulk.

    Every integer when that range is narrow, else `_MAX_GRID` integers spread over it plus
    the observed values (so a curve never skips the bars it is compared with).
    """
    hi = int(hist.values.max()) if hist.n else 0
    for pi, lam in curves.values():
        if np.isfinite(lam) and pi < 1:
            hi = max(hi, int(np.ceil(lam + 4 * np.sqrt(lam) + 4)))
    if hi < _MAX_GRID:
        return np.arange(hi + 1)
    spread = np.linspace(0, hi, _MAX_GRID).round().astype(np.int64)
    return np.union1d(spread, hist.values)


def pmf_vs_histogram(
    ax,
    hist: Histogram,
    curves: Mapping[str, tuple[float, float]],
    *,
    title: str | None = None,
    log: bool = False,
) -> None:
    """Draw the observed frequencies of `hist` as bars and ZIP pmfs as lines on `ax`.

    Args:
        ax: a matplotlib `Axes` (cleared first, so one figure can be reused).
        hist: the data's histogram of counts.
        curves: ZIP laws to overlay, as `{label: (pi, lam)}`; entries with a non-finite
            parameter (e.g. an MLE that does not exist) are skipped.
        title: axes title.
        log: logarithmic probability axis (shows the tail of a wide distribution).

    Returns:
        None; draws on `ax`.
    """
    ax.clear()
    n = max(hist.n, 1)
    # Unit-wide bars are sub-pixel once the range spans hundreds of values: widen them.
    width = max(0.8, float(np.ptp(hist.values)) / 400) if hist.values.size else 0.8
    ax.bar(
        hist.values,
        hist.freqs / n,
        width=width,
        color="0.75",
        edgecolor="0.55",
        linewidth=0.5,
        label=f"data (n = {hist.n:,})",
    )
    shown = {
        k: (float(p), float(r)) for k, (p, r) in curves.items() if np.isfinite(p) and np.isfinite(r)
    }
    grid = pmf_grid(hist, shown)
    markers = "os^vD"
    for i, (label, (pi, lam)) in enumerate(shown.items()):
        ax.plot(
            grid,
            zip_pmf(grid, pi, lam),
            marker=markers[i % len(markers)],
            markersize=3 if grid.size <= 60 else 0,
            linewidth=1.2,
            label=f"{label}: π = {pi:.4g}, λ = {lam:.4g}",
        )
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("count y")
    ax.set_ylabel("P(Y = y)  /  relative frequency")
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small")
