"""The regression scenarios' words: where gradient descent recovers the Newton oracle and
where it does not, every sentence derived from the numbers.

Pure functions of `reg_recovery.reg_optimisation_table`, `reg_best_variant` and
`reg_recovery_table`; `reg_sections.reg_sections` lays them out with the tables.

A *line* is one (optimizer, standardize, batch_size) across the learning rates. At an lr a
line "reaches the oracle" when at least `MOST` of its fits end with every coefficient within
0.01 oracle SE, "comes within sampling error" when at least `MOST` end within 1 SE.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from pipeline.analysis.reg_recovery import LOOSE, TIGHT
from pipeline.report.findings import pct, sig

MOST = 0.9  # share of a line's fits that must end near the oracle at an lr


def variant_label(row: dict, optimizer: bool = True) -> str:
    """The variant in words, e.g. `adam on standardised covariates, full batch`."""
    scale = "standardised" if row["standardize"] else "raw"
    batch = "full batch" if row["batch_size"] is None else f"batches of {row['batch_size']}"
    return f"{row['optimizer'] + ' ' if optimizer else ''}on {scale} covariates, {batch}"


def lr_span(chosen: Sequence[float], grid: Sequence[float]) -> str:
    """The learning rates `chosen` out of the sorted `grid`: `lr 0.01–0.3` when they are
    consecutive in the grid, else listed (`lr 0.01, 1`)."""
    chosen = sorted(chosen)
    if len(chosen) == 1:
        return f"lr {chosen[0]:g}"
    idx = [list(grid).index(lr) for lr in chosen]
    if idx == list(range(idx[0], idx[0] + len(idx))):
        return f"lr {chosen[0]:g}–{chosen[-1]:g}"
    return "lr " + ", ".join(f"{lr:g}" for lr in chosen)


def _span(lo: str, hi: str, unit: str = "") -> str:
    """The range `lo–hi unit`, or one value when both print the same."""
    return f"{lo}{unit}" if lo == hi else f"{lo}–{hi}{unit}"


def _at_least(share: float) -> str:
    return "every fit" if share >= 1 else f"at least {pct(share)} of fits"


def _at_most(share: float) -> str:
    return "no fit" if share == 0 else f"at most {pct(share)} of fits"


def line_sentence(rows: pl.DataFrame, label: str, max_steps: int) -> str:
    """One sentence on one line across its learning rates (rows sorted by lr)."""
    grid = rows["lr"].to_list()
    tight = rows.filter(pl.col(TIGHT) >= MOST)
    loose = rows.filter(pl.col(LOOSE) >= MOST)
    if tight.height:
        text = (
            f"{label}: reaches the oracle (every coefficient within 0.01 oracle SE in "
            f"{_at_least(tight[TIGHT].min())}) at {lr_span(tight['lr'].to_list(), grid)}"
        )
        conv = tight.filter(pl.col("steps_median").is_not_null())
        if conv.height:
            text += ", converging in a median of " + _span(
                sig(conv["steps_median"].min()), sig(conv["steps_median"].max()), " steps"
            )
    elif loose.height:
        top = loose.sort("err_median").row(0, named=True)
        text = (
            f"{label}: ends within 1 oracle SE (in {_at_least(loose[LOOSE].min())}) "
            f"at {lr_span(loose['lr'].to_list(), grid)} but not within 0.01 SE "
            f"({_at_most(loose[TIGHT].max())} there); closest at "
            f"lr {top['lr']:g} by the median largest error of the fits that did not diverge "
            f"({sig(top['err_median'], 2)} SE)"
        )
    else:
        scored = rows.filter(pl.col("err_median").is_not_null())
        text = (
            f"{label}: no learning rate brings {pct(MOST)} of the fits within 1 oracle SE in "
            f"{max_steps} steps"
        )
        if scored.height:
            top = scored.sort("err_median_all", "err_median").row(0, named=True)
            text += (
                f"; closest at lr {top['lr']:g} by the median largest error over all fits, a "
                f"diverged one counted infinitely far ({sig(top['err_median'], 2)} SE over "
                f"those that did not diverge, {pct(top[LOOSE])} of fits within 1 SE, "
                f"median NLL gap {sig(top['gap_median'], 2)} nats/obs)"
            )
        if rows["converged"].max() == 0 and rows["batch_size"][0] is None:
            text += f"; no fit converged within {max_steps} steps at any lr"
    stalling = rows.filter(pl.col("stalled") > 0) if "stalled" in rows.columns else rows.clear()
    if stalling.height:
        text += (
            f"; fits stall on the saturated zero part's plateau (π → 0 or 1, the stop rule "
            f"holding away from the maximum) at {lr_span(stalling['lr'].to_list(), grid)} (up "
            f"to {pct(stalling['stalled'].max())})"
        )
    diverging = rows.filter(pl.col("diverged") > 0)
    if diverging.height:
        text += (
            f"; fits diverge at {lr_span(diverging['lr'].to_list(), grid)} (up to "
            f"{pct(diverging['diverged'].max())})"
        )
    return text + "."


def _cover_span(cover: pl.Series) -> str:
    return _span(f"{100 * cover.min():.0f}", f"{100 * cover.max():.0f}", " %")


def recovery_sentences(recovery: pl.DataFrame, level: float) -> list[str]:
    """Sentences on one scenario's coefficients at its best variant (`reg_recovery_table`)."""
    if recovery.height == 0 or recovery["optimizer"][0] is None:
        return []
    r0 = recovery.row(0, named=True)
    at = f"At the best variant ({variant_label(r0)}, lr {r0['lr']:g})"
    worst = recovery.sort("gd_err_max", descending=True, nulls_last=True).row(0, named=True)
    name = f"{worst['part']} {worst['term']}"
    if worst["gd_err_max"] is None:
        return [f"{at} no dataset has a GD estimate (every init diverged)."]
    if worst["gd_err_max"] < 0.01:
        said = (
            f"{at} GD reproduces the oracle's estimates: every coefficient within "
            f"{sig(worst['gd_err_max'], 2)} oracle SE, so its bias, RMSE and coverage against "
            "the truth are the oracle's"
        )
    elif worst["gd_err_max"] < 1:
        said = (
            f"{at} GD stays within sampling error of the oracle but not on it: up to "
            f"{sig(worst['gd_err_max'], 2)} oracle SE ({name}; mean "
            f"{sig(recovery['gd_err_mean'].max(), 2)})"
        )
    else:
        said = (
            f"{at} GD does not recover the oracle: up to {sig(worst['gd_err_max'], 2)} oracle "
            f"SE off ({name})"
        )
    ratio = (recovery["gd_rmse"] / recovery["oracle_rmse"]).drop_nans().drop_nulls()
    if ratio.len():
        said += f"; GD's RMSE is {_span(sig(ratio.min()), sig(ratio.max()))} × the oracle's"
    lines = [said + "."]
    cover = (
        f"{pct(level)} Wald coverage over {r0['datasets']} datasets: GD's intervals "
        f"{_cover_span(recovery['gd_cover'])}, the oracle's "
        f"{_cover_span(recovery['oracle_cover'])} across the {recovery.height} coefficients"
    )
    off = [
        f"{r['part']} {r['term']} ({prefix}: {pct(r[f'{prefix}_cover'], r[f'{prefix}_cover_se'])})"
        for r in recovery.iter_rows(named=True)
        for prefix in ("gd", "oracle")
        if r[f"{prefix}_cover_se"]
        and abs(r[f"{prefix}_cover"] - level) > 2 * r[f"{prefix}_cover_se"]
    ]
    if off:
        cover += "; more than 2 MC SE off the nominal level: " + ", ".join(off)
    lines.append(cover + ".")
    missing = r0["datasets"] - recovery["gd_estimates"].min()
    if missing:
        lines.append(f"{missing} dataset(s) have no GD estimate there (every init diverged).")
    return lines


def reg_findings(
    optimisation: pl.DataFrame,
    best: pl.DataFrame,
    recovery: pl.DataFrame,
    *,
    max_steps: int,
    level: float,
    exposures: dict[str, str] | None = None,
) -> list[str]:
    """Per regression scenario, where GD recovers the oracle and where it does not.

    Args:
        optimisation: `reg_optimisation_table`.
        best: `reg_best_variant`.
        recovery: `reg_recovery_table`.
        max_steps: the step budget of each fit.
        level: the Wald intervals' nominal coverage.
        exposures: the scenarios with an exposure t, each in words (e.g. `time ~ U(0.5, 2)`):
            their bullet says that log t is the count part's offset (optional).

    Returns:
        Markdown list lines: one bullet per scenario, details as sub-bullets.
    """
    multi = optimisation["optimizer"].n_unique() > 1
    lines = []
    for b in best.iter_rows(named=True):
        rows = optimisation.filter(pl.col("scenario") == b["scenario"])
        rec = recovery.filter(pl.col("scenario") == b["scenario"])
        head = f"- **{b['scenario']}**"
        exposure = (exposures or {}).get(b["scenario"])
        if exposure:
            head += (f" [exposure: {exposure}, its log the count part's offset in the data, "
                     "the oracle and GD alike]")  # fmt: skip
        if rec.height:
            left_out = rec["excluded"][0]
            head += f" ({rec['datasets'][0]} datasets, {rec.height} coefficients"
            head += f"; {left_out} left out: oracle not converged)" if left_out else ")"
        if b["optimizer"] is not None:
            head += (
                f": closest to the oracle {variant_label(b, multi)} at lr {b['lr']:g} by the "
                f"median largest coefficient error over all fits, a diverged one counted "
                f"infinitely far ({sig(b['err_median_all'], 2)} oracle SE, "
                f"{pct(b['converged'])} converged)."
            )
        lines.append(head)
        sub = []
        keys = ["optimizer", "standardize", "batch_size"]
        for _, part in rows.sort("lr").group_by(keys, maintain_order=True):
            label = variant_label(part.row(0, named=True), multi)
            sub.append(line_sentence(part, label[0].upper() + label[1:], max_steps))
        if rows["batch_size"].is_not_null().any():
            sub.append(
                "Mini-batch fits never pass the convergence test (SGD noise): they run all "
                f"{max_steps} steps and are judged by where they end."
            )
        sub.extend(recovery_sentences(rec, level))
        lines.extend(f"  - {s}" for s in sub)
    return lines
