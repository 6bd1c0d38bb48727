"""The regression scenarios' data on disk: one parquet file per scenario and a long summary.

`data/regression/<scenario>.parquet` holds every replicate of a scenario: `replicate`, the
design columns (`core.simulation.design.columns`, e.g. `age`, `health[poor]`), the exposure
column where the scenario has one (its log the count part's offset), and the count `y`.
`data/reg_summary.parquet` has one row per dataset × coefficient (part "zero" or "count",
term, truth, the Newton oracle's estimate and SE, and the dataset's oracle NLL and status).
Both are stamped with the data stage's params hash, like the intercept-only files.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from pipeline.core.errors import UserError
from pipeline.store import files


def read_scenario(layout: files.Layout, scenario: str, params_hash: str) -> pl.DataFrame:
    """A regression scenario's rows (every replicate), checked against its stamp."""
    return files.read(layout.reg_dataset(scenario), params_hash)


def load_regression(
    layout: files.Layout, params_hash: str, scenarios: Sequence[str]
) -> tuple[pl.DataFrame, dict[str, pl.DataFrame]]:
    """The regression summary and each scenario's rows.

    Args:
        layout: the work directory's layout.
        params_hash: the data stage's stamp.
        scenarios: the regression scenarios params names.

    Returns:
        (summary, {scenario: rows}); an empty summary when there are none.

    Raises:
        UserError: a file is missing, stale or foreign (from `files.read`).
    """
    if not scenarios:
        return pl.DataFrame(), {}
    summary = files.read(layout.reg_summary, params_hash)
    missing = sorted(set(scenarios) - set(summary["scenario"].unique()))
    if missing:
        raise UserError(f"{layout.reg_summary.path}: no rows for scenario(s) {missing}; "
                        "rerun `make data`")  # fmt: skip
    return summary, {s: read_scenario(layout, s, params_hash) for s in scenarios}


def remove_stale(layout: files.Layout, keep: set[str]) -> int:
    """Delete scenario files params no longer name; returns how many."""
    folder = layout.data / "regression"
    removed = 0
    if folder.is_dir():
        for path in folder.glob("*.parquet"):
            if path.stem not in keep:
                path.unlink()
                removed += 1
    return removed
