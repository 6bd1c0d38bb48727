"""The per-fit `convergence.png` of a ZIP regression fit: NLL gap to the Newton oracle and
every coefficient's error in oracle standard errors, against step.

Drawn by blitting like the intercept-only `ConvergencePlot` (their base: `convergence.BlitPlot`):
its static parts (axes, the ±1 SE band, the legend, the scenario) rendered once per (scenario,
max_step, coefficients) into a background, then per fit only the lines and the title.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.lines import Line2D

from pipeline.report.convergence import GAP_RANGE, BlitPlot

ERR_LIMIT = 1e3  # error axis (oracle SEs, symlog, linear within ±1); beyond it drawn at the edge
LABEL_CHARS = 16  # legend names are cut to this many characters


def short_label(part: str, term: str) -> str:
    """A coefficient's legend name: `π:` for the zero part (logit π; logit P(Y > 0) in a hurdle),
    `λ:` for the count part, `α:` for the NB dispersion (log α)."""
    text = f"{ {'zero': 'π', 'dispersion': 'α'}.get(part, 'λ') }:{term}"
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


def _style(i: int, part: str) -> dict:
    return {"color": f"C{i % 10}", "ls": "-" if part == "count" else (0, (4, 1.5))}


class RegressionPlot(BlitPlot):
    """Renders `convergence.png` of one regression fit (two panels).

    Args:
        width, height: figure size in inches.
        dpi: dots per inch of the PNG.
    """

    def __init__(self, width: float = 8.0, height: float = 2.6, dpi: int = 80):
        super().__init__(width, height, dpi, ("NLL − NLL(oracle)", "(coef − oracle) / SE"),
                         dict(left=0.07, right=0.8, bottom=0.19, top=0.8, wspace=0.28),
                         title_x=0.45)  # fmt: skip
        gap_ax, err_ax = self.axes
        err_ax.set_yscale("symlog", linthresh=1.0)
        err_ax.axhspan(-1.0, 1.0, color="0.92", lw=0)
        for edge in (-1.0, 1.0):
            err_ax.axhline(edge, color="0.5", ls="--", lw=0.8)
        # Animated artists are left out of the background and drawn per fit.
        self.gap_line = gap_ax.plot([], [], color="C0", lw=1.2, animated=True)[0]
        self.lines: list[Line2D] = []  # one per coefficient, grown on demand
        self.legend = None

    def _line(self, i: int) -> Line2D:
        while len(self.lines) <= i:
            self.lines.append(self.axes[1].plot([], [], lw=1.0, animated=True)[0])
        return self.lines[i]

    def _static(self, key: tuple) -> None:
        _, _, labels, parts = key
        if self.legend is not None:
            self.legend.remove()
        # Proxy handles: copies of the animated lines would be animated too (not drawn).
        handles = [Line2D([], [], lw=1.0, **_style(i, p)) for i, p in enumerate(parts)]
        self.legend = self.axes[1].legend(
            handles, labels, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False,
            fontsize="x-small" if len(labels) <= 12 else "xx-small", handlelength=1.8,
        )  # fmt: skip

    def render(self, path: Path, plot: Mapping) -> None:
        """Draw one fit and write the PNG.

        Args:
            path: the PNG file to write.
            plot: `steps` and `gap` (the NLL gap to the oracle, nats per observation);
                `errors`: one `(steps, (value − oracle) / se_oracle)` pair per coefficient;
                `labels` (legend names) and `parts` ("zero"/"count") of the coefficients;
                `max_step`, `scenario` (drawn in the background) and `title` (the fit's line).
        """

        parts = list(plot["parts"])
        key = (plot["scenario"], plot["max_step"], tuple(plot["labels"]), tuple(parts))
        self._restore(key, plot["scenario"], plot["max_step"],
                      (GAP_RANGE, (-ERR_LIMIT, ERR_LIMIT)))  # fmt: skip
        self.gap_line.set_data(plot["steps"], self._gap(plot))
        self.axes[0].draw_artist(self.gap_line)
        for i, ((steps, err), part) in enumerate(zip(plot["errors"], parts)):
            line = self._line(i)
            line.set_data(steps, np.clip(np.asarray(err, float), -ERR_LIMIT, ERR_LIMIT))
            style = _style(i, part)
            line.set_color(style["color"])
            line.set_linestyle(style["ls"])
            self.axes[1].draw_artist(line)
        self._write(path, plot["title"])
