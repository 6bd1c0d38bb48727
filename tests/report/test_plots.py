"""Shared figures: the Agg figure factory, the ZIP pmf, its grid and histogram-vs-pmf panels."""

from __future__ import annotations

import io

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image
from scipy import stats

from pipeline.core.histogram import histogram, histogram_from_bincount
from pipeline.report.plots import figure, pmf_grid, pmf_vs_histogram, zip_pmf


def _mixture(k, pi, lam):
    """Independent reference: a point mass at 0 with weight pi mixed with scipy's Poisson."""
    k = np.asarray(k)
    return pi * (k == 0) + (1 - pi) * stats.poisson.pmf(k, lam)


@pytest.mark.parametrize(("width", "height", "dpi"), [(6.0, 4.0, 100), (3.0, 2.0, 50)])
def test_figure_is_an_agg_figure_outside_pyplot(width, height, dpi):
    before = plt.get_fignums()
    fig, ax = figure(width, height, dpi)
    assert isinstance(fig.canvas, FigureCanvasAgg)
    assert fig.axes == [ax]
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert Image.open(buf).size == (round(width * dpi), round(height * dpi))
    assert plt.get_fignums() == before  # nothing registered with pyplot


@pytest.mark.parametrize("pi", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("lam", [1e-3, 2.5, 300.0])
def test_zip_pmf_matches_scipy_mixture(pi, lam):
    k = np.arange(0, int(lam + 10 * np.sqrt(lam) + 10))
    np.testing.assert_allclose(zip_pmf(k, pi, lam), _mixture(k, pi, lam), rtol=1e-12, atol=1e-300)


def test_zip_pmf_keeps_the_shape_of_its_values():
    k = np.array([[0, 1, 2], [3, 4, 40]])
    out = zip_pmf(k, 0.2, 3.0)
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out, _mixture(k, 0.2, 3.0), rtol=1e-12)


# (observed counts, curves): narrow and wide ranges, curves wider than the data, curves that
# cannot be drawn (pi = 1, non-finite) and must not widen the grid.
GRID_CASES = {
    "narrow-data": ([0, 0, 1, 3, 7], {"a": (0.2, 2.0)}),
    "curve-wider-than-data": ([0, 1, 2], {"a": (0.5, 50.0), "b": (0.0, 1e-3)}),
    "large-rate": ([0, 0, 2], {"a": (0.3, 300.0)}),
    "wide-data": ([0, 5, 17, 90_000, 1_234_567], {"a": (0.1, 3.0)}),
    "wide-curve": ([0, 3], {"a": (0.0, 1e6)}),
    "undrawable-curves": (
        [0, 1, 4],
        {"zeros": (1.0, 1e6), "inf": (0.3, np.inf), "nan": (np.nan, 9e5)},
    ),
}


@pytest.mark.parametrize(("counts", "curves"), GRID_CASES.values(), ids=GRID_CASES.keys())
def test_pmf_grid_covers_observed_values_and_each_curves_bulk(counts, curves):
    hist = histogram(counts)
    grid = pmf_grid(hist, curves)
    assert grid[0] == 0 and (np.diff(grid) > 0).all()
    assert np.isin(hist.values, grid).all()
    for pi, lam in curves.values():
        if np.isfinite(pi) and np.isfinite(lam) and pi < 1:
            # Poisson mass beyond the grid's end is negligible (scipy, not the module's rule).
            assert (1 - pi) * stats.poisson.sf(grid[-1], lam) < 1e-4
    # Capped: at most 2000 sampled points plus the observed values, else every integer.
    assert grid.size <= 2000 + hist.values.size
    if grid[-1] < 2000:
        np.testing.assert_array_equal(grid, np.arange(grid[-1] + 1))


def test_pmf_grid_ignores_curves_that_cannot_be_drawn():
    hist = histogram([0, 1, 4])
    grid = pmf_grid(hist, GRID_CASES["undrawable-curves"][1])
    np.testing.assert_array_equal(grid, np.arange(5))


def test_pmf_grid_of_an_empty_histogram_is_zero():
    hist = histogram_from_bincount([0, 0, 0])
    assert hist.n == 0
    np.testing.assert_array_equal(pmf_grid(hist, {}), [0])


def _bars(ax) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x centres, heights, widths) of the bars on `ax`."""
    rects = ax.patches
    x = np.array([r.get_x() + r.get_width() / 2 for r in rects])
    return x, np.array([r.get_height() for r in rects]), np.array([r.get_width() for r in rects])


@pytest.mark.parametrize("log", [False, True])
def test_pmf_vs_histogram_draws_data_shares_and_pmf_values(log):
    rng = np.random.default_rng(7)
    counts = np.where(rng.random(300) < 0.4, 0, rng.poisson(2.0, 300))
    hist = histogram(counts)
    curves = {"true": (0.4, 2.0), "MLE": (0.35, 2.1), "missing": (float("nan"), 1.0)}
    fig, ax = figure()
    pmf_vs_histogram(ax, hist, curves, title="blog", log=log)

    x, heights, widths = _bars(ax)
    values, freqs = np.unique(counts, return_counts=True)
    np.testing.assert_allclose(x, values)
    np.testing.assert_allclose(heights, freqs / counts.size, rtol=1e-12)
    np.testing.assert_allclose(widths, 0.8)
    assert ax.containers[0].get_label() == "data (n = 300)"

    lines = ax.lines
    assert [line.get_label() for line in lines] == [
        "true: π = 0.4, λ = 2",
        "MLE: π = 0.35, λ = 2.1",
    ]
    for line, (pi, lam) in zip(lines, [curves["true"], curves["MLE"]]):
        k = line.get_xdata()
        assert np.isin(values, k).all() and k[0] == 0
        np.testing.assert_allclose(line.get_ydata(), _mixture(k, pi, lam), rtol=1e-12)
        assert line.get_markersize() == 3  # a short grid shows its points
    assert ax.get_title() == "blog"
    assert ax.get_yscale() == ("log" if log else "linear")
    assert [t.get_text() for t in ax.get_legend().get_texts()][-1] == "data (n = 300)"


def test_pmf_vs_histogram_redraws_a_reused_axes_without_pyplot():
    before = plt.get_fignums()
    fig, ax = figure()
    first = histogram([0, 0, 0, 1, 2, 2, 5])
    second = histogram([0, 3, 3])
    pmf_vs_histogram(ax, first, {"a": (0.4, 1.5), "b": (0.3, 1.7)}, title="t", log=True)
    pmf_vs_histogram(ax, second, {"c": (0.1, 2.0)})
    x, heights, _ = _bars(ax)
    np.testing.assert_allclose(x, [0, 3])
    np.testing.assert_allclose(heights, [1 / 3, 2 / 3])
    assert len(ax.lines) == 1 and ax.get_title() == "" and ax.get_yscale() == "linear"
    fig.savefig(io.BytesIO(), format="png")
    assert plt.get_fignums() == before


def test_pmf_vs_histogram_widens_bars_and_drops_markers_on_a_wide_range():
    hist = histogram([0, 0, 10, 4000])
    fig, ax = figure()
    pmf_vs_histogram(ax, hist, {"a": (0.5, 3000.0)})
    _, heights, widths = _bars(ax)
    np.testing.assert_allclose(widths, 4000 / 400)  # sub-pixel unit bars widened
    np.testing.assert_allclose(heights, [0.5, 0.25, 0.25])
    (line,) = ax.lines
    assert line.get_markersize() == 0
    assert line.get_xdata().size <= 2000 + 3
    k = line.get_xdata()
    np.testing.assert_allclose(line.get_ydata(), _mixture(k, 0.5, 3000.0), rtol=1e-10)
