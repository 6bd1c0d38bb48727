"""The regression scenarios' part of `reports/recovery.md` and its figure.

`reg_sections` lays out, per regression scenario, the generated findings (`reg_findings`),
the optimisation table (full batch; mini-batches apart), the coefficients' recovery at the
best variant, and `regression_error_vs_lr.png` (`reg_error_vs_lr`). Pure functions of the
tables of `analysis.reg_recovery`; no I/O beyond `figures.save` called by the stage.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from pipeline.analysis.reg_recovery import LOOSE, LOOSE_SE, TIGHT, TIGHT_SE
from pipeline.report.figures import _MARKERS, _log_axis, _panels
from pipeline.report.findings import pct, sig
from pipeline.report.markdown import markdown_table
from pipeline.report.reg_findings import reg_findings, variant_label

FIGURE = "regression_error_vs_lr.png"
_FLOOR = 1e-6  # errors drawn no lower than this many oracle SEs on the log axis
OPTIMISATION_COLUMNS = (
    "optimizer lr standardize batch_size fits converged stalled max_steps diverged steps_median "
    f"gap_median gap_max err_median err_max {TIGHT} {LOOSE}"
).split()
CAPTION = (
    "Median over fits that did not diverge of the largest |coefficient − oracle| in oracle "
    f"SEs, against the learning rate; one line per (optimizer,) covariate scale and batch size, "
    f"grey lines at {TIGHT_SE:g} and {LOOSE_SE:g} SE (values below {_FLOOR:g} drawn at it); a "
    "cross marks a learning rate where some fits diverged (the median is over the others)."
)

FAMILY_NAMES = {"zip": "ZIP", "zinb": "ZINB", "hurdle_poisson": "hurdle Poisson",
                "hurdle_nb": "hurdle NB", "poisson": "Poisson", "nb": "NB"}  # fmt: skip


def _line_name(row: dict, multi: bool) -> str:
    scale = "std" if row["standardize"] else "raw"
    batch = "full" if row["batch_size"] is None else f"batch {row['batch_size']}"
    return f"{row['optimizer'] + ' ' if multi else ''}{scale}, {batch}"


def reg_error_vs_lr(optimisation: pl.DataFrame, scenarios: Sequence[str]):
    """Median largest coefficient error (oracle SEs) against lr, a panel per scenario.

    Args:
        optimisation: `reg_optimisation_table`.
        scenarios: regression scenario names, one panel each.

    Returns:
        The figure.
    """
    fig, axes = _panels(1, len(scenarios))
    multi = optimisation["optimizer"].n_unique() > 1
    keys = ["optimizer", "standardize", "batch_size"]
    for j, name in enumerate(scenarios):
        ax = axes[0, j]
        part = optimisation.filter(pl.col("scenario") == name).sort([*keys, "lr"])
        crossed = False
        for i, (_, line) in enumerate(part.group_by(keys, maintain_order=True)):
            row = line.row(0, named=True)
            err = line["err_median"].fill_null(float("nan")).clip(_FLOOR).to_numpy()
            style = "-" if row["batch_size"] is None else "--"
            lr = line["lr"].to_numpy()
            ax.plot(lr, err, style, marker=_MARKERS[i % len(_MARKERS)], markersize=4,
                    label=_line_name(row, multi))  # fmt: skip
            hit = (line["diverged"] > 0).to_numpy()
            if hit.any():
                ax.plot(lr[hit], err[hit], "x", color="crimson", markersize=8,
                        label=None if crossed else "some fits diverged")  # fmt: skip
                crossed = True
        for level in (TIGHT_SE, LOOSE_SE):
            ax.axhline(level, color="0.6", linewidth=0.8)
        _log_axis(ax, "x")
        _log_axis(ax, "y")
        # Explicit limits: a panel whose every fit diverged has no point to scale from.
        top = part["err_max"].drop_nans().drop_nulls().max()
        ax.set_ylim(_FLOOR / 2, max(10.0, 3 * top) if top is not None else 10.0)
        if part.height:
            ax.set_xlim(part["lr"].min() / 2, part["lr"].max() * 2)
        ax.set_title(name)
        ax.set_xlabel("learning rate")
    axes[0, 0].set_ylabel("median max |coef − oracle| / SE")
    axes[0, 0].legend(fontsize="x-small")
    return fig


def _pm(value, se, digits: int = 3) -> str:
    return sig(value, digits) if se is None else f"{sig(value, digits)} ± {sig(se, 2)}"


def coefficient_table(recovery: pl.DataFrame) -> pl.DataFrame:
    """One scenario's `reg_recovery_table` for reading: estimates ± MC SE as text."""
    out = recovery.select("part", "term", "truth")
    for who in ("oracle", "gd"):
        rows = recovery.iter_rows(named=True)
        text = [
            (_pm(r[f"{who}_bias"], r[f"{who}_bias_se"]), sig(r[f"{who}_rmse"]),
             pct(r[f"{who}_cover"], r[f"{who}_cover_se"]))
            for r in rows
        ]  # fmt: skip
        out = out.with_columns(
            pl.Series(f"{who}_bias", [t[0] for t in text], pl.String),
            pl.Series(f"{who}_rmse", [t[1] for t in text], pl.String),
            pl.Series(f"{who}_cover", [t[2] for t in text], pl.String),
        )
    return out.with_columns(recovery.select("gd_err_mean", "gd_err_max"))


def heading(name: str, family: str | None = None, exposure: str | None = None,
            groups: str | None = None) -> str:  # fmt: skip
    """A scenario's heading, e.g. `### visits (ZIP; exposure: time ~ U(0.5, 2), its log the
    count part's offset)`; `groups`: its random intercepts in words."""
    said = [FAMILY_NAMES.get(family, family)] if family else []
    if exposure:
        said.append(f"exposure: {exposure}, its log the count part's offset")
    if groups:
        said.append(f"random intercepts: {groups}")
    return f"### {name}" + (f" ({'; '.join(said)})" if said else "")


def _scenario(name, optimisation, recovery, *, multi: bool, level: float,
              family: str | None = None, exposure: str | None = None,
              groups: str | None = None) -> list[str]:  # fmt: skip
    rows = optimisation.filter(pl.col("scenario") == name)
    cols = [c for c in OPTIMISATION_COLUMNS if multi or c != "optimizer"]
    full = rows.filter(pl.col("batch_size").is_null())
    mini = rows.filter(pl.col("batch_size").is_not_null())
    parts = [heading(name, family, exposure, groups), ""]
    if full.height:
        shown = full.select(c for c in cols if c != "batch_size")
        parts += ["Full batch:", "", markdown_table(shown), ""]
    if mini.height:
        parts += ["Mini-batches (never converged by the test; judged where they end):", "",
                  markdown_table(mini.select(cols)), ""]  # fmt: skip
    rec = recovery.filter(pl.col("scenario") == name)
    if rec.height and rec["optimizer"][0] is not None:
        r0 = rec.row(0, named=True)
        parts += [
            f"Coefficients over {r0['datasets']} datasets ({r0['excluded']} left out: oracle not "
            f"converged): bias ± MC SE, RMSE against the truth and {pct(level)} Wald coverage "
            f"± MC SE, of the oracle and of GD at {variant_label(r0)}, lr {r0['lr']:g} "
            "(best-NLL init per dataset); `gd_err_*`: |GD − oracle| in oracle SEs.",
            "",
            markdown_table(coefficient_table(rec)),
            "",
        ]
    return parts


def reg_sections(
    optimisation: pl.DataFrame,
    best: pl.DataFrame,
    recovery: pl.DataFrame,
    *,
    max_steps: int,
    level: float,
    figure: str | None = FIGURE,
    families: dict[str, str] | None = None,
    exposures: dict[str, str] | None = None,
    groups: dict[str, str] | None = None,
) -> str:
    """The "## Regression scenarios" part of `reports/recovery.md`.

    Args:
        optimisation: `reg_optimisation_table`.
        best: `reg_best_variant`.
        recovery: `reg_recovery_table`.
        max_steps: the step budget of each fit.
        level: the Wald intervals' nominal coverage.
        figure: the figure's file name under `figures/`, or None for no figure.
        families: each scenario's count family, for the headings (optional).
        exposures: the scenarios with an exposure, each in words (`ExposureSpec.describe`),
            for the headings and the findings (optional).
        groups: the scenarios with random intercepts, each in words (`RandomSpec.describe`),
            for the headings (optional).

    Returns:
        Markdown text (ends with a newline).
    """
    multi = optimisation["optimizer"].n_unique() > 1
    parts = [
        "## Regression scenarios",
        "",
        "Count regressions: log μᵢ = xᵢᵀβ, and a zero part zᵢᵀγ = logit πᵢ (π the probability of "
        "a structural zero: ZIP, ZINB) or logit P(Yᵢ > 0) (hurdles); NB families add the "
        "dispersion α (variance μ + αμ², fitted as log α, reported as α; an oracle at the "
        "boundary α̂ = 0 is still the reference, and log α is then not judged in SEs). "
        "In every trial each dataset × init is "
        "fitted once per variant (covariates raw or standardised, full batch or mini-batches) "
        "and judged against the dataset's Newton oracle: `gap` is the full-data mean NLL above "
        "the oracle's (nats/obs), `err` the largest |coefficient − oracle| in oracle SEs "
        f"(medians and maxima over fits that did not diverge); `{TIGHT}` / `{LOOSE}`: share of "
        "all fits with every coefficient that close. The best variant per scenario has the "
        "lowest median `err` over all fits, a diverged fit counting as infinitely far. All rows: "
        "`reports/reg_optimisation.parquet`, `reports/reg_recovery.parquet`."
        + (
            " Scenarios with random intercepts are fitted full batch on their covariates as "
            "drawn, against the exact quadrature oracle; their log σ is a parameter like the "
            "others (reported as σ; not judged in SEs where the oracle has σ̂ = 0): see "
            '"Random intercepts" below.'
            if groups
            else ""
        ),
        "",
        "### Summary (generated from the numbers below)",
        "",
        *reg_findings(
            optimisation, best, recovery, max_steps=max_steps, level=level, exposures=exposures
        ),
        "",
    ]
    for name in best["scenario"].to_list():
        parts += _scenario(name, optimisation, recovery, multi=multi, level=level,
                           family=(families or {}).get(name),
                           exposure=(exposures or {}).get(name),
                           groups=(groups or {}).get(name))  # fmt: skip
    if figure:
        parts += [f"![{figure}](figures/{figure})", "", CAPTION, ""]
    return "\n".join(parts)
