"""Sweep figures: the blitted per-fit convergence PNG, trial figures, study figures."""

from __future__ import annotations

import warnings

import matplotlib.pyplot as plt
import numpy as np
import optuna
import polars as pl
import pytest
from conftest import sweep_data
from matplotlib.collections import LineCollection
from PIL import Image
from scipy import stats

from pipeline.analysis.objective import build_problem, fit_histories, fit_rows, run_fits
from pipeline.core.histogram import histogram
from pipeline.report.convergence import (
    GAP_RANGE,
    BlitPlot,
    ConvergencePlot,
    close_figures,
    pmf_figure,
    study_figures,
    trajectories_figure,
    trial_figures,
)
from pipeline.stages import config

SCENARIOS = (("blog", 0.5, 5.0), ("rare-events", 0.3, 0.5))


def _plot(scenario="blog", *, lam_hi=8.0, max_step=60, shift=0.0, title="fit 0"):
    """One fit's `render` payload; `shift` moves the trajectory (a different fit)."""
    steps = np.arange(0, 51, 10)
    return {
        "steps": steps,
        "gap": np.array([1.0, 1e-3, 1e-8, 1e-14, 0.0, -1e-17]) * (1 + shift),
        "pi": np.linspace(0.1 + shift, 0.5, steps.size),
        "lam": np.linspace(1.0, 5.0 + shift, steps.size),
        "pi_true": 0.5,
        "lam_true": 5.0,
        "mle_pi": 0.47 + shift / 10,
        "mle_lam": 5.2,
        "max_step": max_step,
        "lam_hi": lam_hi,
        "scenario": scenario,
        "title": title,
    }


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path))


class _Gap(BlitPlot):
    """The smallest renderer on the base: one panel, the gap line, static parts counted."""

    def __init__(self):
        super().__init__(3.0, 2.0, 50, ("gap",), {"left": 0.2}, title_x=0.5)
        self.line = self.axes[0].plot([], [], color="C0", animated=True)[0]
        self.statics: list[tuple] = []

    def _static(self, key):
        self.statics.append(key)

    def render(self, path, plot):
        self._restore((plot["scenario"], plot["max_step"]), plot["scenario"], plot["max_step"],
                      (GAP_RANGE,))  # fmt: skip
        self.line.set_data(plot["steps"], self._gap(plot))
        self.axes[0].draw_artist(self.line)
        self._write(path, plot["title"])


def test_the_blitting_base_renders_static_parts_once_per_key_and_clips_the_gap(tmp_path):
    plot = _Gap()
    for scenario, max_step in (("a", 60), ("b", 60), ("a", 60), ("a", 80)):
        plot.render(tmp_path / "g.png", _plot(scenario, max_step=max_step))
    assert plot.statics == [("a", 60), ("b", 60), ("a", 80)]
    assert Image.open(tmp_path / "g.png").size == (150, 100)
    assert plot._gap(_plot()).min() == GAP_RANGE[0]  # 0 and negative gaps sit on the axis
    # A reused background gives the same pixels as a fresh renderer.
    fresh = _Gap()
    fresh.render(tmp_path / "f.png", _plot("a", max_step=80))
    np.testing.assert_array_equal(_pixels(tmp_path / "f.png"), _pixels(tmp_path / "g.png"))


@pytest.mark.parametrize(("width", "height", "dpi"), [(7.5, 2.4, 80), (4.0, 3.0, 50)])
def test_render_writes_a_png_of_the_configured_size(tmp_path, width, height, dpi):
    plot = ConvergencePlot(width, height, dpi)
    plot.render(tmp_path / "c.png", _plot())
    image = Image.open(tmp_path / "c.png")
    assert image.format == "PNG" and image.mode == "RGB"
    assert image.size == (round(width * dpi), round(height * dpi))
    assert len(np.unique(_pixels(tmp_path / "c.png").reshape(-1, 3), axis=0)) > 2  # not blank


def test_render_sets_each_panels_data_limits_and_title(tmp_path):
    plot = ConvergencePlot()
    payload = _plot(lam_hi=9.0, max_step=70, title="adam lr 0.1")
    plot.render(tmp_path / "c.png", payload)
    gap, pi, lam = plot.lines
    np.testing.assert_array_equal(gap.get_xdata(), payload["steps"])
    # Gaps at or below 0 (rounding under the exact MLE) sit on the axis floor.
    np.testing.assert_array_equal(gap.get_ydata(), [1.0, 1e-3, 1e-8, 1e-14, 1e-16, 1e-16])
    np.testing.assert_array_equal(pi.get_ydata(), payload["pi"])
    np.testing.assert_array_equal(lam.get_ydata(), payload["lam"])
    assert [line.get_ydata()[0] for line in plot.truth] == [0.5, 5.0]
    assert [line.get_ydata()[0] for line in plot.mle] == [0.47, 5.2]
    assert [ax.get_ylim() for ax in plot.axes] == [GAP_RANGE, (0.0, 1.0), (0.0, 9.0)]
    assert all(ax.get_xlim() == (0.0, 70.0) for ax in plot.axes)
    assert plot.axes[0].get_yscale() == "log"
    assert plot.title.get_text() == "adam lr 0.1" and plot.scenario.get_text() == "blog"


def test_render_updates_the_lines_between_fits(tmp_path):
    plot = ConvergencePlot()
    first, second = _plot(), _plot(shift=0.3, title="fit 1")
    plot.render(tmp_path / "a.png", first)
    plot.render(tmp_path / "b.png", second)
    np.testing.assert_array_equal(plot.lines[1].get_ydata(), second["pi"])
    a, b = _pixels(tmp_path / "a.png"), _pixels(tmp_path / "b.png")
    assert a.shape == b.shape and (a != b).any()
    # Drawing the first fit again restores it exactly: nothing of the second is left over.
    plot.render(tmp_path / "again.png", first)
    np.testing.assert_array_equal(_pixels(tmp_path / "again.png"), a)


def test_render_of_a_scenario_seen_before_matches_a_fresh_plot(tmp_path):
    """A cached background is reused with its own axes limits (a bug found here: the lines
    of a scenario drawn after another one were plotted in the other one's coordinates)."""
    fresh = ConvergencePlot()
    fresh.render(tmp_path / "fresh.png", _plot("blog", lam_hi=6.0))
    reused = ConvergencePlot()
    reused.render(tmp_path / "blog.png", _plot("blog", lam_hi=6.0))
    reused.render(tmp_path / "other.png", _plot("rare-events", lam_hi=20.0, max_step=200))
    reused.render(tmp_path / "blog-again.png", _plot("blog", lam_hi=6.0))
    again, fresh_pixels = _pixels(tmp_path / "blog-again.png"), _pixels(tmp_path / "fresh.png")
    np.testing.assert_array_equal(again, fresh_pixels)


@pytest.fixture(scope="module")
def trial():
    """A tiny real sweep trial: 2 scenarios x 2 replicates x 2 inits, adam at lr 0.1."""
    summary, hists = sweep_data(SCENARIOS, 2, 300, 1)
    problem = build_problem(summary, hists, 0, config.SweepConfig(inits=2))
    fit = config.FitConfig(max_steps=60, chunk_steps=20, record_every=10)
    result = run_fits(problem, fit, 0.1, "adam", None)
    return problem, fit_rows(problem, result), fit_histories(result)


def _segments(collection: LineCollection) -> list[np.ndarray]:
    return [np.asarray(s) for s in collection.get_segments()]


def test_trial_figures_draw_every_fits_path_per_scenario(trial):
    problem, rows, histories = trial
    figures = trial_figures(problem, rows, histories, "zip-lr trial 0: adam lr=0.1")
    assert set(figures) == {"figures/trajectories.png", "figures/pmf_vs_data.png"}
    fig = figures["figures/trajectories.png"]
    axes = np.array(fig.axes).reshape(2, len(SCENARIOS))
    assert fig.get_suptitle() == "zip-lr trial 0: adam lr=0.1"
    for col, (name, pi_true, lam_true) in enumerate(SCENARIOS):
        fits = rows.with_row_index("fit").filter(pl.col("scenario") == name)["fit"].to_list()
        assert axes[0, col].get_title() == name
        for row, (column, truth, scale) in enumerate(
            [("pi", pi_true, "linear"), ("lambda", lam_true, "log")]
        ):
            ax = axes[row, col]
            assert ax.get_yscale() == scale
            (collection,) = ax.collections
            got = _segments(collection)
            assert len(got) == len(fits) == 4
            for segment, f in zip(got, fits):
                path = histories.filter(pl.col("fit") == f).select("step", column).to_numpy()
                np.testing.assert_array_equal(segment, path)
            (ref,) = ax.lines
            assert ref.get_ydata()[0] == truth


def _mixture(k, pi, lam):
    """Independent reference: point mass at 0 mixed with scipy's Poisson."""
    return pi * (np.asarray(k) == 0) + (1 - pi) * stats.poisson.pmf(k, lam)


def test_trial_figures_draw_the_best_init_against_its_data(trial):
    problem, rows, histories = trial
    fig = trial_figures(problem, rows, histories, "t")["figures/pmf_vs_data.png"]
    assert len(fig.axes) == len(SCENARIOS)
    for ax, (name, pi_true, lam_true) in zip(fig.axes, SCENARIOS):
        assert ax.get_title() == f"{name} (replicate 0)"
        rep = rows.filter((pl.col("scenario") == name) & (pl.col("replicate") == 0))
        nll = rep["nll_final"].to_numpy()
        best = rep.row(int(np.argmin(nll)), named=True)
        want = [
            ("best of 2 inits", best["pi_hat"], best["lambda_hat"]),
            ("exact MLE", best["mle_pi"], best["mle_lambda"]),
            ("true", pi_true, lam_true),
        ]
        assert len(ax.lines) == 3
        for line, (label, pi, lam) in zip(ax.lines, want):
            assert line.get_label().startswith(f"{label}: π = {pi:.4g}")
            k = line.get_xdata()
            np.testing.assert_allclose(line.get_ydata(), _mixture(k, pi, lam), rtol=1e-10)
        # The bars are that replicate's data.
        ours = (pl.col("scenario") == name) & (pl.col("replicate") == 0)
        hist = problem.hists[problem.fits.filter(ours)["dataset"][0]]
        heights = [p.get_height() for p in ax.patches]
        np.testing.assert_allclose(heights, hist.freqs / hist.n)


def test_trajectories_and_pmf_figures_one_column_per_panel():
    paths = [np.array([[0, 0.1], [10, 0.3], [20, 0.4]]), np.array([[0, 0.9], [20, 0.5]])]
    lam_paths = [np.array([[0, 1.0], [20, 5.0]]), np.array([[0, 9.0], [10, 6.0]])]
    panel = {"scenario": "s", "pi_true": 0.4, "lam_true": 5.0, "pi_paths": paths,
             "lam_paths": lam_paths}  # fmt: skip
    fig = trajectories_figure([panel, {**panel, "scenario": "t"}, {**panel, "scenario": "u"}], "x")
    assert len(fig.axes) == 2 * 3
    assert [ax.get_title() for ax in fig.axes[:3]] == ["s", "t", "u"]
    for got, want in zip(_segments(fig.axes[0].collections[0]), paths):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(_segments(fig.axes[3].collections[0]), lam_paths):
        np.testing.assert_array_equal(got, want)
    hist = histogram([0, 0, 1, 2])
    fig = pmf_figure([("a", hist, {"m": (0.5, 1.0)}), ("b", hist, {})], "y")
    assert [ax.get_title() for ax in fig.axes] == ["a", "b"]
    assert [len(ax.lines) for ax in fig.axes] == [1, 0]
    assert fig.get_suptitle() == "y"


@pytest.fixture
def study():
    """An in-memory study of 3 complete trials whose objectives span 11 decades."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize")
    lr = optuna.distributions.FloatDistribution(1e-3, 10.0, log=True)
    for value, objective in [(0.01, 0.5), (0.1, 1e-3), (1.0, 1e-12)]:
        trial = optuna.trial.create_trial(params={"lr": value}, distributions={"lr": lr},
                                          value=objective)  # fmt: skip
        study.add_trial(trial)
    yield study
    optuna.logging.set_verbosity(verbosity)


def test_study_figures_on_log_axes_then_closed(study):
    before = set(plt.get_fignums())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the module silences optuna's experimental warnings
        figures = study_figures(study)
    assert set(figures) == {"figures/optimization_history.png", "figures/lr_vs_objective.png"}
    history = figures["figures/optimization_history.png"].axes[0]
    assert history.get_yscale() == "log"
    np.testing.assert_allclose(history.collections[0].get_offsets(),
                               [[0, 0.5], [1, 1e-3], [2, 1e-12]])  # fmt: skip
    np.testing.assert_allclose(history.lines[0].get_ydata(), [0.5, 1e-3, 1e-12])  # best so far
    lr_ax = figures["figures/lr_vs_objective.png"].axes[0]
    assert (lr_ax.get_xscale(), lr_ax.get_yscale()) == ("log", "log")
    np.testing.assert_allclose(lr_ax.collections[0].get_offsets(),
                               [[0.01, 0.5], [0.1, 1e-3], [1.0, 1e-12]])  # fmt: skip
    for fig in figures.values():
        np.testing.assert_allclose(fig.get_size_inches(), [7.0, 4.5])
    opened = {fig.number for fig in figures.values()}
    assert opened <= set(plt.get_fignums()) and not opened & before
    close_figures(figures.values())
    assert set(plt.get_fignums()) == before
