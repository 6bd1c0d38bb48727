"""The aggregate stage's regression part: the sweep's regression fits → tables, figure, text.

Runs only when params name regression scenarios and the sweep wrote `data/reg_fits.parquet`.
Reads (parquet only, stamps checked like `data/fits.parquet`) `data/reg_fits.parquet` and
`data/reg_coefs.parquet` (the sweep's stamp) and `data/reg_summary.parquet` (the data
stage's); writes `reports/reg_optimisation.parquet` (`reg_recovery.reg_optimisation_table`),
`reports/reg_recovery.parquet` (`reg_recovery.reg_recovery_table`),
`reports/figures/regression_error_vs_lr.png` and, with random-intercept scenarios,
`reports/sigma_recovery.parquet` and `reports/sigma_boundary.parquet`
(`mixed_recovery`), and returns the markdown the stage appends to `reports/recovery.md`.
"""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl

from pipeline.analysis import mixed_recovery
from pipeline.analysis import reg_recovery as rr
from pipeline.report import figures as rp
from pipeline.report import reg_sections, sigma_sections
from pipeline.report.reg_findings import variant_label
from pipeline.stages import config
from pipeline.store import files


def load_regression(params: config.Params, workdir: Path) -> dict[str, pl.DataFrame] | None:
    """The sweep's regression tables and the regression summary, or None when there are none.

    Returns:
        {"fits", "coefs", "summary"}, or None without regression scenarios or without
        `data/reg_fits.parquet`.

    Raises:
        UserError: a stale or foreign input (`files.read`).
    """
    layout = files.Layout(workdir)
    if not params.data.regression.scenarios or not layout.reg("fits").path.exists():
        return None
    stamp = params.digest(*config.STAGE_BLOCKS["sweep"])
    return {
        "fits": files.read(layout.reg("fits"), stamp),
        "coefs": files.read(layout.reg("coefs"), stamp),
        "summary": files.read(layout.reg_summary, params.digest(*config.STAGE_BLOCKS["generate"])),
    }


def aggregate_regression(params: config.Params, workdir: Path, inputs, stamp: str) -> dict | None:
    """Compute and write the regression outputs (module docstring).

    Args:
        params: validated params.
        workdir: folder holding `data/` and `reports/`.
        inputs: `load_regression(params, workdir)` (None: nothing to do).
        stamp: the aggregate stage's params hash.

    Returns:
        None, or {"optimisation", "best", "recovery", "text", "files"}.
    """
    if inputs is None or inputs["fits"].height == 0:
        return None
    order = [s.name for s in params.data.regression.scenarios]
    optimisation = rr.reg_optimisation_table(inputs["fits"], order)
    best = rr.reg_best_variant(optimisation)
    recovery = rr.reg_recovery_table(inputs["coefs"], inputs["fits"], inputs["summary"],
                                     level=params.report.level, best=best, order=order)  # fmt: skip
    coefs, fits, summary = inputs["coefs"], inputs["fits"], inputs["summary"]
    sigma = mixed_recovery.sigma_table(summary, coefs, fits, best, order)
    near_zero = mixed_recovery.boundary_table(summary, coefs, fits, best, order)
    layout = files.Layout(workdir)
    written = []
    tables = [("reg_optimisation", optimisation), ("reg_recovery", recovery)]
    if sigma.height:
        tables += [("sigma_recovery", sigma), ("sigma_boundary", near_zero)]
    else:  # no grouped scenario (any more): old tables would describe other params
        for name in ("sigma_recovery", "sigma_boundary"):
            layout.report(name).path.unlink(missing_ok=True)
    for name, table in tables:
        files.write(table, layout.report(name), stamp)
        written.append(layout.report(name).path)
    shown = [s for s in order if s in set(optimisation["scenario"])]
    rp.save(reg_sections.reg_error_vs_lr(optimisation, shown), layout.figures / reg_sections.FIGURE)
    written.append(layout.figures / reg_sections.FIGURE)
    scenarios = params.data.regression.scenarios
    families = {s.name: s.family for s in scenarios}
    exposures = {s.name: s.exposure.describe() for s in scenarios if s.exposure is not None}
    groups = {s.name: s.random.describe() for s in scenarios if s.random is not None}
    text = reg_sections.reg_sections(optimisation, best, recovery, max_steps=params.fit.max_steps,
                                     level=params.report.level, families=families,
                                     exposures=exposures, groups=groups)  # fmt: skip
    if sigma.height:
        text = text.rstrip("\n") + "\n\n" + sigma_sections.sigma_section(sigma, near_zero) + "\n"
    return {"optimisation": optimisation, "best": best, "recovery": recovery, "sigma": sigma,
            "text": text, "files": written}  # fmt: skip


def best_line(result: dict) -> str:
    """The terminal's line: each regression scenario's best variant."""
    return "; ".join(
        f"{r['scenario']} {variant_label(r)} lr {r['lr']:g}"
        for r in result["best"].iter_rows(named=True)
        if r["lr"] is not None
    )


def metrics(result: dict | None) -> dict[str, float]:
    """Per regression scenario, its best variant's lr and score, for the stage's MLflow run."""
    out: dict[str, float] = {}
    for row in (result or {}).get("best", pl.DataFrame()).iter_rows(named=True):
        if row["lr"] is None:
            continue
        out[f"{row['scenario']}.reg_best_lr"] = row["lr"]
        out[f"{row['scenario']}.reg_best_standardize"] = float(row["standardize"])
        out[f"{row['scenario']}.reg_best_batch_size"] = float(row["batch_size"] or 0)
        out[f"{row['scenario']}.reg_best_err_median"] = row["err_median_all"]
        out[f"{row['scenario']}.reg_best_within_0.01se"] = row[rr.TIGHT]
    return {k: v for k, v in out.items() if math.isfinite(v)}
