"""fit_counts figures: hanging rootogram geometry and the gradient-descent paths."""

from __future__ import annotations

import io

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image
from scipy import stats

from pipeline.core.descent.engine import fit_zip, stack_histograms
from pipeline.core.histogram import histogram
from pipeline.core.inference.intercept import FrequencyTable, frequency_table
from pipeline.core.oracle.mle import exact_mle
from pipeline.report.plots import figure
from pipeline.report.rootogram import convergence_figure, hanging_rootogram, rootogram_figure

# (pi, lambda, n, tail K): from few rows to more than 20 (smaller tick labels).
CASES = [(0.0, 1.5, 200, 4), (0.4, 3.0, 500, 8), (0.2, 12.0, 800, 26)]


def _counts(pi, lam, n, seed=11) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.where(rng.random(n) < pi, 0, rng.poisson(lam, n))


def _mixture(k, pi, lam):
    """Independent reference: point mass at 0 mixed with scipy's Poisson."""
    return pi * (np.asarray(k) == 0) + (1 - pi) * stats.poisson.pmf(k, lam)


def _table(pi, lam, n, tail) -> tuple[np.ndarray, FrequencyTable]:
    y = _counts(pi, lam, n)
    mle = exact_mle(histogram(y))
    return y, frequency_table(histogram(y), mle.pi, mle.lam, y.mean(), tail=tail)


def _bars(ax) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x centres, bottoms, heights) of the bars on `ax`."""
    rects = ax.patches
    x = np.array([r.get_x() + r.get_width() / 2 for r in rects])
    return x, np.array([r.get_y() for r in rects]), np.array([r.get_height() for r in rects])


@pytest.mark.parametrize(("pi", "lam", "n", "tail"), CASES)
def test_hanging_rootogram_hangs_sqrt_observed_from_sqrt_expected(pi, lam, n, tail):
    y, table = _table(pi, lam, n, tail)
    # Independent reference: the table's rows from the raw counts, the tail row pooled.
    observed = np.bincount(np.minimum(y, tail), minlength=tail + 1)
    mle = exact_mle(histogram(y))
    pmf = _mixture(np.arange(tail), mle.pi, mle.lam)
    expected = n * np.append(pmf, 1 - pmf.sum())
    fig, ax = figure()
    hanging_rootogram(ax, table, table.zip, "ZIP")

    x, bottom, height = _bars(ax)
    np.testing.assert_allclose(x, np.arange(tail + 1))
    np.testing.assert_allclose(height, np.sqrt(observed), rtol=1e-12)
    np.testing.assert_allclose(bottom, np.sqrt(expected) - np.sqrt(observed), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(bottom + height, np.sqrt(expected), rtol=1e-9)  # hangs from curve
    curve, zero = ax.lines
    np.testing.assert_array_equal(curve.get_xdata(), np.arange(tail + 1))
    np.testing.assert_allclose(curve.get_ydata(), np.sqrt(expected), rtol=1e-9)
    assert list(zero.get_ydata()) == [0.0, 0.0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == [*map(str, range(tail)), f"{tail}+"]
    assert ax.get_ylim()[0] <= min(bottom.min(), 0.0) - 0.3 + 1e-12
    assert ax.get_title() == "ZIP"


def test_hanging_rootogram_by_hand():
    # Counts 0, 1, "2+": a bar of sqrt(9) = 3 hung from sqrt(4) = 2 ends at -1 (under-predicted).
    table = FrequencyTable(
        counts=np.array([0, 1, 2]),
        observed=np.array([9, 4, 1]),
        zip=np.array([4.0, 4.0, 6.25]),
        poisson=np.array([1.0, 9.0, 4.0]),
    )
    fig, ax = figure()
    hanging_rootogram(ax, table, table.poisson, "Poisson")
    _, bottom, height = _bars(ax)
    np.testing.assert_allclose(bottom, [1 - 3, 3 - 2, 2 - 1])
    np.testing.assert_allclose(height, [3, 2, 1])
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [1, 3, 2])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2+"]
    assert ax.get_ylim()[0] <= -2.3


def test_rootogram_figure_puts_both_models_on_a_shared_axis():
    before = plt.get_fignums()
    _, table = _table(0.4, 3.0, 500, 8)
    fig = rootogram_figure(table, "ZIP: fit", "Poisson: fit")
    left, right = fig.axes
    assert (left.get_title(), right.get_title()) == ("ZIP: fit", "Poisson: fit")
    assert left.get_shared_y_axes().joined(left, right)
    np.testing.assert_allclose(left.lines[0].get_ydata(), np.sqrt(table.zip))
    np.testing.assert_allclose(right.lines[0].get_ydata(), np.sqrt(table.poisson))
    assert left.get_legend() is not None and right.get_legend() is None
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert Image.open(buf).size == (1100, 420)
    assert plt.get_fignums() == before


@pytest.fixture(scope="module")
def descent():
    """A real small fit_counts descent: 3 inits on 400 ZIP counts, histories every 10 steps.

    The fits converge between recorded steps (so each path gets its final state appended, and
    the shorter ones have NaN history tails) at gaps of 0 to 1e-15 (drawn at the floor).
    """
    hist = histogram(_counts(0.35, 4.0, 400, seed=2))
    values, freqs = stack_histograms([hist])
    rng = np.random.default_rng(0)
    pi0, lam0 = rng.uniform(0.05, 0.95, 3), rng.uniform(1.0, 10.0, 3)
    result = fit_zip(values, freqs, np.zeros(3, np.int64), pi0, lam0, 0.5, max_steps=400,
                     record_every=10, chunk_steps=50)  # fmt: skip
    assert set(result.status) == {"converged"} and (result.steps % 10 != 0).all()
    return result, exact_mle(hist)


@pytest.mark.parametrize("best", [0, 2])
def test_convergence_figure_draws_every_init_to_its_final_state(descent, best):
    result, mle = descent
    fig = convergence_figure(result, best, mle.pi, mle.lam, mle.nll)
    gap_ax, pi_ax, lam_ax = fig.axes
    assert gap_ax.get_yscale() == "log"
    assert all(ax.get_xscale() == "symlog" for ax in fig.axes)
    finals = [result.nll - mle.nll, result.pi, result.lam]
    for ax, final, history, exact in zip(
        fig.axes,
        finals,
        [result.history_nll - mle.nll, result.history_pi, result.history_lam],
        [None, mle.pi, mle.lam],
    ):
        paths = ax.lines[: len(result.pi)]
        for b, line in enumerate(paths):
            x, y = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
            # Ends at the fit's final state; before it, the recorded (finite) history.
            assert x[-1] == result.steps[b]
            keep = np.isfinite(history[b])
            n = keep.sum()
            np.testing.assert_array_equal(x[:n], result.history_step[keep])
            if exact is None:  # the NLL gap, floored at float64 resolution for the log axis
                floor = 1e-16 * max(abs(mle.nll), 1.0)
                np.testing.assert_allclose(y[:n], np.maximum(history[b][keep], floor))
                assert y[-1] == pytest.approx(max(final[b], floor), rel=1e-9, abs=1e-15)
                assert (y > 0).all()
            else:
                np.testing.assert_array_equal(y[:n], history[b][keep])
                assert y[-1] == final[b]
            assert (line.get_label() == "kept") == (b == best)
            assert line.get_color() == ("#d62728" if b == best else "#7f7f7f")
        if exact is not None:
            (ref,) = ax.lines[len(result.pi) :]
            assert list(ref.get_ydata()) == [exact, exact]
    assert len(gap_ax.lines) == len(result.pi)  # no reference line at a gap of 0
