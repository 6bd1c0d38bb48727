"""Figures of the sweep: one convergence PNG per fit, trial figures, study figures.

A study logs thousands of `convergence.png`, so that one is drawn the cheap way (`BlitPlot`,
the base of this module's `ConvergencePlot` and of `reg_convergence.RegressionPlot`): one
reused Agg figure whose axes limits are fixed per scenario, its static parts (axes, ticks,
labels) rendered once into a background, then per fit only the lines and the title are drawn
over a restored copy of that background (matplotlib's blitting) and the RGB buffer is encoded
by Pillow at a low compression level. That takes ~10 ms instead of ~40-130 ms for a full
`savefig` of the same three panels (benchmarks/README.md, "Tracking").

Trial and study figures are few and are drawn normally.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from optuna.visualization import matplotlib as ovm
from PIL import Image

from pipeline.core.histogram import Histogram
from pipeline.report.plots import pmf_vs_histogram

GAP_RANGE = (1e-16, 1e3)  # NLL gap axis (nats per observation); gaps below are drawn at 1e-16


class BlitPlot:
    """The base of the per-fit `convergence.png` renderers: one reused Agg figure, one row of
    panels, the first the NLL gap on a log axis; static parts rendered once per background key
    and kept, per fit only the animated artists and the title blitted over a restored copy.

    Subclasses make their animated artists (`animated=True`: left out of the background), call
    `_restore` with the key and the y limits, draw their artists and call `_write`; they may
    add static parts drawn into a new background by overriding `_static`.

    Args:
        width, height, dpi: figure size in inches and dots per inch of the PNG.
        titles: one title per panel.
        margins: `Figure.subplots_adjust` arguments.
        title_x: figure x of the centre of the per-fit title.
    """

    def __init__(self, width: float, height: float, dpi: int, titles: Sequence[str],
                 margins: Mapping[str, float], title_x: float):  # fmt: skip
        self.fig = Figure(figsize=(width, height), dpi=dpi)
        self.canvas = FigureCanvasAgg(self.fig)
        self.axes = np.atleast_1d(self.fig.subplots(1, len(titles)))
        self.fig.subplots_adjust(**margins)
        self.axes[0].set_yscale("log")
        for ax, label in zip(self.axes, titles):
            ax.set_xlabel("step")
            ax.set_title(label, fontsize="small")
        # Text is costly to draw (~0.1 ms a glyph): the scenario goes into the background,
        # only the short per-fit part is drawn each time.
        self.scenario = self.fig.text(0.01, 0.96, "", fontsize="small", weight="bold", va="top")
        self.title = self.fig.text(title_x, 0.96, "", fontsize="small", ha="center", va="top",
                                   animated=True)  # fmt: skip
        self._backgrounds: dict[tuple, object] = {}

    def _static(self, key: tuple) -> None:
        """Static parts that depend on the background key (drawn before it is rendered)."""

    def _restore(self, key: tuple, scenario: str, max_step: float, ylims) -> None:
        # The limits are set on every call: a cached background carries the pixels of its
        # axes, but the fit's lines are drawn with the axes' current limits.
        for ax, ylim in zip(self.axes, ylims):
            ax.set_xlim(0, max_step)
            ax.set_ylim(*ylim)
        if key not in self._backgrounds:
            self.scenario.set_text(scenario)
            self._static(key)
            self.canvas.draw()
            self._backgrounds[key] = self.canvas.copy_from_bbox(self.fig.bbox)
        self.canvas.restore_region(self._backgrounds[key])

    @staticmethod
    def _gap(plot: Mapping) -> np.ndarray:
        """The NLL gap, gaps below the axis drawn at its bottom."""
        return np.clip(np.asarray(plot["gap"], float), GAP_RANGE[0], None)

    def _write(self, path: Path, title: str) -> None:
        self.title.set_text(title)
        self.fig.draw_artist(self.title)
        size = self.canvas.get_width_height()
        image = Image.frombuffer("RGBA", size, self.canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
        image.convert("RGB").save(path, format="png", compress_level=1)


class ConvergencePlot(BlitPlot):
    """Renders `convergence.png` of one intercept-only fit: NLL gap to the exact MLE, π and λ
    against step.

    Args:
        width, height: figure size in inches.
        dpi: dots per inch of the PNG.
    """

    def __init__(self, width: float = 7.5, height: float = 2.4, dpi: int = 80):
        super().__init__(width, height, dpi, ("NLL − NLL(MLE)", "π", "λ"),
                         dict(left=0.08, right=0.98, bottom=0.2, top=0.8, wspace=0.32),
                         title_x=0.55)  # fmt: skip
        lam_ax = self.axes[2]
        # Animated artists are left out of the background and drawn per fit.
        self.lines = [ax.plot([], [], color="C0", lw=1.2, animated=True)[0] for ax in self.axes]
        ref = dict(lw=0.9, animated=True)
        self.truth = [ax.axhline(0, color="0.3", ls=":", **ref) for ax in self.axes[1:]]
        self.mle = [ax.axhline(0, color="C3", ls="--", **ref) for ax in self.axes[1:]]
        lam_ax.legend([self.truth[1], self.mle[1]], ["true", "exact MLE"], fontsize="x-small",
                      loc="upper right")  # fmt: skip

    def render(self, path: Path, plot: Mapping) -> None:
        """Draw one fit and write the PNG.

        Args:
            path: the PNG file to write.
            plot: `steps`, `gap`, `pi`, `lam` (arrays of one fit's trajectory), `pi_true`,
                `lam_true`, `mle_pi`, `mle_lam`, `max_step`, `lam_hi` (the λ axis limit, fixed
                per scenario so that its background is reused), `scenario` (drawn in the
                background) and `title` (the fit's own line).
        """

        key = (plot["scenario"], plot["max_step"], plot["lam_hi"])
        self._restore(key, plot["scenario"], plot["max_step"],
                      (GAP_RANGE, (0.0, 1.0), (0.0, plot["lam_hi"])))  # fmt: skip
        for line, values in zip(self.lines, (self._gap(plot), plot["pi"], plot["lam"])):
            line.set_data(plot["steps"], values)
        for line, value in zip(self.truth, (plot["pi_true"], plot["lam_true"])):
            line.set_ydata([value, value])
        for line, value in zip(self.mle, (plot["mle_pi"], plot["mle_lam"])):
            line.set_ydata([value, value])
        for i, ax in enumerate(self.axes):
            if i:
                ax.draw_artist(self.truth[i - 1])
                ax.draw_artist(self.mle[i - 1])
            ax.draw_artist(self.lines[i])
        self._write(path, plot["title"])


def trajectories_figure(panels: Sequence[Mapping], title: str):
    """All fits' π and λ against step, one column per scenario (the blog's 'random seeding').

    Args:
        panels: one mapping per scenario with `scenario`, `pi_true`, `lam_true` and
            `pi_paths`, `lam_paths`: one (N, 2) array of (step, value) per fit.
        title: the figure title.

    Returns:
        The `Figure` (Agg canvas, outside pyplot).
    """

    cols = max(len(panels), 1)
    fig = Figure(figsize=(3.2 * cols, 5.0), dpi=80)
    FigureCanvasAgg(fig)
    axes = np.asarray(fig.subplots(2, cols, squeeze=False))
    # Fixed margins: constrained layout would cost more than drawing the figure itself.
    fig.subplots_adjust(left=0.75 / (3.2 * cols), right=0.98, bottom=0.1, top=0.9,
                        wspace=0.3, hspace=0.35)  # fmt: skip
    for col, panel in enumerate(panels):
        for row, (key, truth, label) in enumerate(
            (("pi_paths", panel["pi_true"], "π"), ("lam_paths", panel["lam_true"], "λ"))
        ):
            ax = axes[row, col]
            ax.add_collection(LineCollection(panel[key], linewidths=0.7, alpha=0.5, color="C0"))
            ax.axhline(truth, color="k", ls="--", lw=1.0, label="true")
            ax.autoscale_view()
            ax.set_xlabel("step")
            ax.set_ylabel(label)
            if row == 0:
                ax.set_title(panel["scenario"], fontsize="small")
                ax.legend(fontsize="x-small", loc="upper right")
            else:
                ax.set_yscale("log")  # λ starts anywhere in (0, 10) and may run away
    fig.suptitle(title, fontsize="small")
    return fig


def pmf_figure(panels: Sequence[tuple[str, Histogram, Mapping[str, tuple[float, float]]]],
               title: str):  # fmt: skip
    """Fitted pmfs against the data histogram, one panel per scenario.

    Args:
        panels: `(scenario, histogram, {label: (pi, lam)})` per scenario.
        title: the figure title.

    Returns:
        The `Figure` (Agg canvas, outside pyplot).
    """

    cols = max(len(panels), 1)
    fig = Figure(figsize=(4.2 * cols, 3.6), dpi=80)
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(1, cols))
    fig.subplots_adjust(left=0.75 / (4.2 * cols), right=0.98, bottom=0.14, top=0.86, wspace=0.3)
    for ax, (scenario, hist, curves) in zip(axes, panels):
        pmf_vs_histogram(ax, hist, curves, title=scenario)
    fig.suptitle(title, fontsize="small")
    return fig


def trial_figures(problem, rows, histories, title: str) -> dict[str, object]:
    """The trial's figures: every fit's trajectory, and fitted pmfs against the data.

    Args:
        problem: the `objective.Problem` that was fitted.
        rows: the trial's fit rows (same order as the fits of `problem`).
        histories: `objective.fit_histories` of those fits.
        title: a title naming the trial.

    Returns:
        `{artifact name: Figure}`.
    """

    dataset = problem.fits["dataset"].to_numpy()
    by_fit = histories.partition_by("fit", as_dict=True, maintain_order=True)
    panels, pmfs = [], []
    for (scenario,), part in rows.with_row_index("fit").group_by(["scenario"], maintain_order=True):
        paths = {"pi_paths": [], "lam_paths": []}
        for b in part["fit"]:
            path = by_fit[(b,)]
            for key, column in (("pi_paths", "pi"), ("lam_paths", "lambda")):
                keep = path[column].is_finite()
                paths[key].append(path.filter(keep).select("step", column).to_numpy())
        first = part.row(0, named=True)
        panels.append(
            {
                "scenario": scenario,
                "pi_true": first["pi_true"],
                "lam_true": first["lambda_true"],
                **paths,
            }
        )
        rep = part.filter(pl.col("replicate") == part["replicate"].min())
        best = rep.row(int(rep["nll_final"].arg_min()), named=True)
        curves = {
            f"best of {rep.height} inits": (best["pi_hat"], best["lambda_hat"]),
            "exact MLE": (best["mle_pi"], best["mle_lambda"]),
            "true": (best["pi_true"], best["lambda_true"]),
        }
        hist = problem.hists[int(dataset[best["fit"]])]
        pmfs.append((f"{scenario} (replicate {best['replicate']})", hist, curves))
    return {
        "figures/trajectories.png": trajectories_figure(panels, title),
        "figures/pmf_vs_data.png": pmf_figure(pmfs, title),
    }


def study_figures(study) -> dict[str, object]:
    """Optuna's optimisation history and learning rate against objective, as figures.

    Args:
        study: an Optuna study with at least one complete trial.

    Returns:
        `{artifact name: Figure}`; close them with `close_figures` after logging.
    """

    plt.switch_backend("Agg")  # Optuna draws through pyplot; never open a window
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # these plots are flagged experimental
        ax = ovm.plot_optimization_history(study)
        ax.set_yscale("log")  # objectives span many decades (1e-15 converged ... 1 diverged)
        out["figures/optimization_history.png"] = ax.figure
        ax = np.atleast_1d(ovm.plot_slice(study, params=["lr"]))[0]
        ax.set_xscale("log")
        ax.set_yscale("log")
        out["figures/lr_vs_objective.png"] = ax.figure
    for fig in out.values():
        fig.set_size_inches(7, 4.5)
    return out


def close_figures(figures) -> None:
    """Release pyplot figures made by `study_figures`."""

    for fig in figures:
        plt.close(fig)
