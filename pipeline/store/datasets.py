"""The data stage's files: raw counts streamed to parquet, histograms and the summary.

Histograms travel as one long table (scenario, replicate, value, freq); `load_data` reads it
and the summary back, checked against the current params (`files.read`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.errors import UserError
from pipeline.core.histogram import Histogram, histogram, merge_histograms
from pipeline.store import files


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


def load_data(
    layout: files.Layout, data_hash: str
) -> tuple[pl.DataFrame, dict[tuple[str, int], Histogram]]:
    """The data stage's summary table and histograms, checked against the current params.

    Args:
        layout: the work directory's `files.Layout`.
        data_hash: `params.digest("seed", "data")`, which the files must carry.

    Returns:
        (summary, histograms keyed by (scenario, replicate)), in summary row order.
    """
    summary = files.read(layout.summary, data_hash)
    hists = histograms_from_frame(files.read(layout.histograms, data_hash))
    keys = list(zip(summary["scenario"].to_list(), summary["replicate"].to_list()))
    missing = [k for k in keys if k not in hists]
    if missing:
        raise UserError(f"{layout.histograms.path}: no histogram for dataset {missing[0]}")
    return summary, {k: hists[k] for k in keys}


def write_dataset(file: files.File, chunks: Iterator[np.ndarray], params_hash: str) -> Histogram:
    """Stream count chunks to a stamped parquet file (temp file + rename); return the histogram.

    Args:
        file: destination, `Layout.dataset(scenario, replicate)`.
        chunks: int64 arrays, written in order as row groups of column `y`.
        params_hash: the data stamp (`zip.params_hash`); `zip.kind` is "dataset".

    Returns:
        The histogram of all the counts written.
    """
    meta = {files.KIND_KEY: file.kind, files.HASH_KEY: params_hash}
    schema = pa.schema([pa.field("y", pa.int64())], metadata=meta)
    parts = []
    with files.atomic(file.path) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as out:
        for y in chunks:
            out.write_table(pa.Table.from_arrays([pa.array(y)], schema=schema))
            parts.append(histogram(y))
    return merge_histograms(parts)


def remove_stale(layout: files.Layout, keep: set[Path]) -> int:
    """Delete dataset files we stamped that params no longer name; foreign files stay.

    Args:
        layout: the work directory's `files.Layout`.
        keep: the dataset paths the current params name.

    Returns:
        How many files were removed (empty scenario folders go too).
    """
    removed = 0
    root = layout.datasets
    for path in sorted(root.glob("*/*.parquet")) if root.exists() else []:
        if path in keep:
            continue
        try:
            kind = (pq.read_metadata(path).metadata or {}).get(files.KIND_KEY.encode())
        except Exception:  # unreadable: not provably ours, leave it
            kind = None
        if kind == b"dataset":
            path.unlink()
            removed += 1
    for folder in sorted(root.glob("*")) if root.exists() else []:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return removed
