"""The hanging rootogram on rows chosen from the data (ranges of counts): one bar per row,
labelled by its range (geometry in general: test_rootogram.py)."""

from __future__ import annotations

import numpy as np

from pipeline.core.histogram import histogram
from pipeline.core.inference.intercept import frequency_table
from pipeline.core.oracle.mle import exact_mle
from pipeline.report.plots import figure
from pipeline.report.rootogram import hanging_rootogram


def test_grouped_rows_get_one_bar_and_a_range_label_each():
    y = np.random.default_rng(1).poisson(216, 500)
    fit = exact_mle(histogram(y))
    table = frequency_table(histogram(y), fit.pi, fit.lam, y.mean())
    fig, ax = figure()
    hanging_rootogram(ax, table, table.poisson, "Poisson")
    heights = np.array([r.get_height() for r in ax.patches])
    np.testing.assert_allclose(heights, np.sqrt(table.observed), rtol=1e-12)
    labels = [t.get_text() for t in ax.get_xticklabels()]
    edges = table.counts.tolist()
    expected = ["0", *(f"{a}-{b - 1}" if b - a > 1 else str(a)
                       for a, b in zip(edges[1:-1], edges[2:])), f"{edges[-1]}+"]  # fmt: skip
    assert labels == expected and labels[1].startswith("1-")
