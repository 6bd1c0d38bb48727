"""The blitted per-fit `convergence.png` of a regression fit (`RegressionPlot`)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.report.convergence import GAP_RANGE
from pipeline.report.reg_convergence import ERR_LIMIT, RegressionPlot, short_label

TERMS = (("zero", "intercept"), ("count", "intercept"), ("count", "health[poor]"))


def _plot(scenario="visits", *, terms=TERMS, max_step=60, shift=0.0, title="fit 0"):
    """One fit's `render` payload; `shift` moves the trajectory (a different fit)."""
    steps = np.arange(0, 51, 10)
    errors = [(steps, np.array([200.0, -30.0, 4.0, 0.5, 0.01, 0.0]) * (j + 1 + shift))
              for j in range(len(terms))]  # fmt: skip
    return {
        "kind": "regression",
        "steps": steps,
        "gap": np.array([1.0, 1e-3, 1e-8, 1e-14, 0.0, -1e-17]) * (1 + shift),
        "errors": errors,
        "labels": [short_label(p, t) for p, t in terms],
        "parts": [p for p, _ in terms],
        "max_step": max_step,
        "scenario": scenario,
        "title": title,
    }


def _pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def test_short_labels_name_the_part_and_cut_long_terms():
    assert short_label("zero", "age") == "π:age"
    assert short_label("count", "health[poor]") == "λ:health[poor]"
    assert short_label("count", "a_very_long_term_name") == "λ:a_very_long_t…"


@pytest.mark.parametrize(("width", "height", "dpi"), [(8.0, 2.6, 80), (4.0, 3.0, 50)])
def test_render_writes_a_png_of_the_configured_size(tmp_path, width, height, dpi):
    RegressionPlot(width, height, dpi).render(tmp_path / "c.png", _plot())
    with Image.open(tmp_path / "c.png") as image:
        assert image.format == "PNG" and image.mode == "RGB"
        assert image.size == (round(width * dpi), round(height * dpi))
    assert (tmp_path / "c.png").stat().st_size > 0
    assert len(np.unique(_pixels(tmp_path / "c.png").reshape(-1, 3), axis=0)) > 2  # not blank


def test_render_clips_gaps_and_errors_to_the_axes(tmp_path):
    plot = RegressionPlot()
    payload = _plot(max_step=70, title="rep 0 init 1 · raw full · lr 0.1")
    plot.render(tmp_path / "c.png", payload)
    np.testing.assert_array_equal(plot.gap_line.get_ydata(), [1.0, 1e-3, 1e-8, 1e-14, 1e-16, 1e-16])
    assert len(plot.lines) == 3
    # The third coefficient's first error (200 × 3 = 600 SEs) is inside, ±1e3 is the limit.
    np.testing.assert_array_equal(plot.lines[2].get_ydata(), payload["errors"][2][1])
    big = _plot(shift=10.0)  # 200 × 11 = 2200 SEs: drawn at the edge
    plot.render(tmp_path / "d.png", big)
    assert plot.lines[0].get_ydata()[0] == ERR_LIMIT
    assert plot.lines[0].get_ydata()[1] == -30.0 * 11
    gap_ax, err_ax = plot.axes
    assert (gap_ax.get_yscale(), err_ax.get_yscale()) == ("log", "symlog")
    assert gap_ax.get_ylim() == GAP_RANGE and err_ax.get_ylim() == (-ERR_LIMIT, ERR_LIMIT)
    assert all(ax.get_xlim() == (0.0, 60.0) for ax in plot.axes)
    assert plot.title.get_text() == "fit 0" and plot.scenario.get_text() == "visits"
    assert [t.get_text() for t in plot.legend.get_texts()] == ["π:intercept", "λ:intercept",
                                                                "λ:health[poor]"]  # fmt: skip


def test_render_updates_the_lines_between_fits(tmp_path):
    plot = RegressionPlot()
    first, second = _plot(), _plot(shift=0.3, title="fit 1")
    plot.render(tmp_path / "a.png", first)
    plot.render(tmp_path / "b.png", second)
    a, b = _pixels(tmp_path / "a.png"), _pixels(tmp_path / "b.png")
    assert a.shape == b.shape and (a != b).any()
    plot.render(tmp_path / "again.png", first)  # nothing of the second fit is left over
    np.testing.assert_array_equal(_pixels(tmp_path / "again.png"), a)


def test_a_scenario_with_other_coefficients_then_the_first_matches_a_fresh_plot(tmp_path):
    """Backgrounds (legend included) are cached per scenario and coefficients; lines of a
    larger model are not drawn for a smaller one."""
    fresh = RegressionPlot()
    fresh.render(tmp_path / "fresh.png", _plot())
    reused = RegressionPlot()
    reused.render(tmp_path / "first.png", _plot())
    wide = (*TERMS, ("zero", "age"), ("count", "age"), ("count", "chronic"))
    reused.render(tmp_path / "other.png", _plot("raw-income", terms=wide, max_step=200))
    assert len(reused.lines) == 6
    reused.render(tmp_path / "again.png", _plot())
    np.testing.assert_array_equal(_pixels(tmp_path / "again.png"), _pixels(tmp_path / "fresh.png"))
    assert (_pixels(tmp_path / "other.png") != _pixels(tmp_path / "fresh.png")).any()
