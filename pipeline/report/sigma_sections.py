"""The random intercepts' part of `reports/recovery.md`: σ's recovery and gradient descent as
σ → 0, from the tables of `analysis.mixed_recovery`, with findings generated from the numbers.
Pure functions; no I/O.
"""

from __future__ import annotations

import polars as pl

from pipeline.analysis.mixed_recovery import BANDS, SMALL_SIGMA, TEST_LEVEL
from pipeline.report.findings import pct, sig
from pipeline.report.markdown import markdown_table
from pipeline.report.reg_sections import _pm


def sigma_findings(sigma: pl.DataFrame, boundary: pl.DataFrame) -> list[str]:
    """One bullet per scenario × random part, and one on GD at the boundary."""
    lines = []
    for r in sigma.iter_rows(named=True):
        level = pct(r["level"])
        what = (f"the LR test of σ = 0 rejected on {pct(r['reject'], r['reject_se'])} "
                f"({'its size' if r['sigma'] == 0 else 'power'} at {TEST_LEVEL:g})")  # fmt: skip
        zero = f"σ̂ = 0 on {pct(r['at_zero'], r['at_zero_se'])}"
        profile = pct(r["profile_cover"], r["profile_cover_se"])
        wald = pct(r["wald_cover"], r["wald_cover_se"])
        cover = (f"{level} profile intervals covered σ on {profile}, Wald intervals on the log "
                 f"scale on {wald}")  # fmt: skip
        if r["sigma"] == 0:
            cover += " (a Wald interval on the log scale never contains σ = 0)"
        gd = ("" if r["gd_err_max"] is None else
              f"; GD at the best variant ended within {sig(r['gd_err_max'], 2)} oracle SE of the "
              f"oracle's log σ wherever the oracle has an SE")  # fmt: skip
        lines.append(f"- **{r['scenario']}** ({r['part']} part, σ = {r['sigma']:g}, "
                     f"{r['datasets']} datasets): bias of σ̂ {_pm(r['bias'], r['bias_se'])}, "
                     f"RMSE {sig(r['rmse'])}; {zero}; {cover}; {what}{gd}.")  # fmt: skip
    at_zero = boundary.filter(pl.col("band") == BANDS[0])
    for r in at_zero.iter_rows(named=True):
        lines.append(
            f"- **{r['scenario']}**, the {r['datasets']} datasets whose oracle has σ̂ = 0: "
            f"after a median {sig(r['steps_median'])} steps "
            f"({pct(r['converged'], r['converged_se'])} met the stop rule) gradient descent "
            f"had σ at a median {sig(r['gd_sigma_median'])} "
            f"(largest {sig(r['gd_sigma_max'])}), a median {sig(r['gap_median'])} nats/obs above "
            "the oracle's NLL: σ = 0 is out of reach on the log scale, and as σ → 0 the "
            "likelihood flattens (its slope in log σ shrinks like σ²), so descent creeps towards "
            "the boundary instead of landing on it."
        )
    for r in sigma.iter_rows(named=True):
        if r["converged_fits"]:
            lines.append(
                f"- **{r['scenario']}**: all {r['converged_fits']} converged fits of every trial "
                f"ended within {sig(r['converged_err_max'], 2)} oracle SE of the oracle on every "
                "parameter (log σ included where the oracle has an SE)."
            )
    return lines


SIGMA_COLUMNS = ("part sigma datasets bias rmse at_zero wald_cover profile_cover reject "
                 "gd_estimates gd_bias gd_rmse gd_err_max").split()  # fmt: skip
BOUNDARY_COLUMNS = ("part band datasets converged steps_median gd_sigma_median gd_sigma_max "
                    "gap_median").split()  # fmt: skip


def _text(table: pl.DataFrame, shares: tuple[str, ...]) -> pl.DataFrame:
    """Shares as percentages ± MC SE, the rest as they are."""
    return table.with_columns(
        pl.Series(c, [pct(v, e) for v, e in zip(table[c], table[f"{c}_se"])], pl.String)
        for c in shares
    )


def sigma_section(sigma: pl.DataFrame, boundary: pl.DataFrame) -> str:
    """The "## Random intercepts" part of the report (empty without grouped scenarios).

    Args:
        sigma: `mixed_recovery.sigma_table`; boundary: `mixed_recovery.boundary_table`.
    """
    if sigma.is_empty():
        return ""
    level = pct(sigma["level"][0])
    parts = [
        "## Random intercepts: σ",
        "",
        "Scenarios with Gaussian random intercepts per group (a fixed set of groups per "
        "scenario; the intercepts and counts drawn anew per replicate) are fitted by gradient "
        "descent on the adaptive Gauss–Hermite marginal likelihood, full batch, and judged "
        "against the exact quadrature oracle with the same nodes (its rows in the scenario "
        "tables above). σ̂ is the oracle's estimate (0 where the maximum is on the boundary); "
        f"coverage is of {level} intervals (Wald on log σ, and the profile likelihood's, lower "
        "limit 0 where σ = 0 is inside); `reject`: share of datasets where the LR test of σ = 0 "
        f"(½χ²₀ + ½χ²₁) has p < {TEST_LEVEL:g}. GD columns are at each scenario's best variant. "
        "Shares ± Monte-Carlo SE. All rows: `reports/sigma_recovery.parquet`, "
        "`reports/sigma_boundary.parquet`.",
        "",
        *sigma_findings(sigma, boundary),
        "",
    ]
    for name in sigma["scenario"].unique(maintain_order=True).to_list():
        rows = sigma.filter(pl.col("scenario") == name)
        shown = _text(rows, ("at_zero", "wald_cover", "profile_cover", "reject"))
        parts += [f"### {name}: σ", "", markdown_table(shown.select(SIGMA_COLUMNS)), ""]
        near = boundary.filter(pl.col("scenario") == name)
        if near.height:
            parts += [
                f"Gradient descent by the oracle's σ̂ (0, below {SMALL_SIGMA:g}, the rest):",
                "",
                markdown_table(_text(near, ("converged",)).select(BOUNDARY_COLUMNS)),
                "",
            ]
    return "\n".join(parts)
