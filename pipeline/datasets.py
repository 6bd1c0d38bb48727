"""The stages' parquet files: written atomically and stamped, read back only if they are ours.

Every file carries a `zip.kind` (what it is) and `zip.params_hash` (the params that made it) in
its parquet key-value metadata. Reading checks both, so a corrupt, foreign or stale file where a
stage expects its own output is reported (one line, exit 2), never silently reused.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.errors import UserError
from pipeline.histogram import Histogram

KIND_KEY = "zip.kind"
HASH_KEY = "zip.params_hash"


def data_dir(workdir: Path) -> Path:
    return workdir / "data"


def reports_dir(workdir: Path) -> Path:
    return workdir / "reports"


def dataset_path(workdir: Path, scenario: str, replicate: int) -> Path:
    return data_dir(workdir) / "datasets" / scenario / f"{replicate:03d}.parquet"


def write(df: pl.DataFrame, path: Path, kind: str, params_hash: str, **meta: str) -> None:
    """Write `df` to `path` atomically (temp file + rename) with its stamp in the metadata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        df.write_parquet(tmp, metadata={KIND_KEY: kind, HASH_KEY: params_hash, **meta})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_meta(path: Path, kind: str, params_hash: str | None = None) -> dict[str, str]:
    """The stamp of a stage's file; raises `UserError` if it is missing, corrupt or foreign.

    Args:
        path: the parquet file.
        kind: the `zip.kind` it must carry.
        params_hash: if given, the `zip.params_hash` it must carry (else it is stale).
    """
    if not path.exists():
        raise UserError(f"{path}: missing (run the stage that writes it, e.g. `make data`)")
    try:
        meta = pl.read_parquet_metadata(path)
    except Exception:
        raise UserError(
            f"{path}: not a readable parquet file (corrupt?); delete it and rerun"
        ) from None
    if meta.get(KIND_KEY) != kind:
        raise UserError(f"{path}: not a {kind!r} file written by this pipeline (foreign file?)")
    if params_hash is not None and meta.get(HASH_KEY) != params_hash:
        raise UserError(
            f"{path}: written for other params (hash {meta.get(HASH_KEY)}, expected "
            f"{params_hash}); rerun the stage that writes it"
        )
    return meta


def read(path: Path, kind: str, params_hash: str | None = None, columns=None) -> pl.DataFrame:
    """Read a stage's parquet file after checking its stamp (see `read_meta`)."""
    read_meta(path, kind, params_hash)
    try:
        return pl.read_parquet(path, columns=columns)
    except Exception as err:
        raise UserError(
            f"{path}: cannot be read ({type(err).__name__}); delete it and rerun"
        ) from None


def histograms_from_frame(df: pl.DataFrame) -> dict[tuple[str, int], Histogram]:
    """Split a (scenario, replicate, value, freq) table into one `Histogram` per dataset."""
    out: dict[tuple[str, int], Histogram] = {}
    for (scenario, replicate), part in df.sort("value").group_by(
        ["scenario", "replicate"], maintain_order=True
    ):
        out[(scenario, int(replicate))] = Histogram(
            part["value"].to_numpy().astype(np.int64), part["freq"].to_numpy().astype(np.int64)
        )
    return out


def histograms_to_frame(hists: Mapping[tuple[str, int], Histogram]) -> pl.DataFrame:
    """Inverse of `histograms_from_frame`."""
    parts = [
        pl.DataFrame(
            {
                "scenario": [s] * len(h.values),
                "replicate": [r] * len(h.values),
                "value": h.values,
                "freq": h.freqs,
            },
            schema={
                "scenario": pl.String,
                "replicate": pl.Int64,
                "value": pl.Int64,
                "freq": pl.Int64,
            },
        )
        for (s, r), h in hists.items()
    ]
    return pl.concat(parts)


def load_study(
    workdir: Path, data_hash: str
) -> tuple[pl.DataFrame, dict[tuple[str, int], Histogram]]:
    """The data stage's summary table and histograms, checked against the current params.

    Args:
        workdir: folder holding `data/`.
        data_hash: `params.digest("seed", "data")`, which the files must carry.

    Returns:
        (summary, histograms keyed by (scenario, replicate)), in summary row order.
    """
    summary = read(data_dir(workdir) / "summary.parquet", "summary", data_hash)
    frame = read(data_dir(workdir) / "histograms.parquet", "histograms", data_hash)
    hists = histograms_from_frame(frame)
    keys = list(zip(summary["scenario"].to_list(), summary["replicate"].to_list()))
    missing = [k for k in keys if k not in hists]
    if missing:
        path = data_dir(workdir) / "histograms.parquet"
        raise UserError(f"{path}: no histogram for dataset {missing[0]}")
    return summary, {k: hists[k] for k in keys}
