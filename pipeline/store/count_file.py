"""Read one column of counts from a CSV or parquet file into a `Histogram`, streaming.

Only the histogram of the counts is needed (DESIGN §2), so the file is never loaded: polars
scans it lazily, one pass of aggregates validates the column (after the optional `--where`
filter) and a second pass builds the histogram with a streaming group-by. Memory stays
bounded by polars' chunk size and the number of distinct counts, whatever the number of rows.

Every problem with the file or the column is a `UserError` (one line, exit 2).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl

from pipeline.core.errors import UserError
from pipeline.core.histogram import Histogram

FORMATS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}
NULL_VALUES = ["NA", "N/A", "NULL", "null", "None"]
_MAX_COUNT = 2**62  # `Histogram` stores int64
_ROW = "__fit_counts_row"


class Counts(NamedTuple):
    """The histogram of a column and how many rows the file (and the filter) had.

    Attributes:
        hist: histogram of the counts in the selected rows.
        rows: rows in the file.
        selected: rows left after `--where` (= `hist.n`).
    """

    hist: Histogram
    rows: int
    selected: int


def name_list(names: list[str], shown: int = 8, width: int = 30) -> str:
    """Column names for an error line: the first `shown`, each cut to `width` characters."""
    cut = [repr(n if len(n) <= width else n[: width - 1] + "…") for n in names[:shown]]
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(cut) + more


def first_line(err: Exception) -> str:
    """The first line of an error's message (at most 300 characters), for a one-line report."""
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:300]


def check_path(path: Path) -> str:
    """The kind of a user's file ("csv", "tsv" or "parquet"), once it is known to be readable.

    Args:
        path: the file.

    Returns:
        The kind, from the extension (`FORMATS`).

    Raises:
        UserError: missing, unreadable or empty file; unsupported extension; binary text.
    """
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise UserError(f"{path}: unsupported file type {path.suffix or '(none)'!r}; "
                        f"expected one of {', '.join(FORMATS)}")  # fmt: skip
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if not path.is_file():
        raise UserError(f"{path}: not a regular file")
    if not os.access(path, os.R_OK):
        raise UserError(f"{path}: permission denied")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: the file is empty")
    if kind != "parquet":
        with path.open("rb") as head:
            if b"\0" in head.read(65536):
                raise UserError(f"{path}: binary content, not {kind.upper()} text "
                                "(a parquet file needs the .parquet extension)")  # fmt: skip
    return kind


def _scan(path: Path, **csv_options) -> pl.LazyFrame:
    """A lazy scan of a checked file; `csv_options` go to `pl.scan_csv` for CSV/TSV."""
    kind = check_path(path)
    try:
        if kind == "parquet":
            return pl.scan_parquet(path, glob=False)
        return pl.scan_csv(path, separator="\t" if kind == "tsv" else ",", glob=False,
                           null_values=NULL_VALUES, **csv_options)  # fmt: skip
    except (pl.exceptions.PolarsError, OSError) as err:
        raise UserError(f"{path}: cannot read as {kind} ({first_line(err)})") from None


def scan_table(path: Path) -> pl.LazyFrame:
    """A lazy scan of every column of `path`, CSV/TSV types inferred from all the rows.

    Args:
        path: CSV, TSV or parquet file.

    Returns:
        The `LazyFrame`.

    Raises:
        UserError: as `check_path`, or a file polars cannot open.
    """
    return _scan(path, infer_schema_length=None)


def scan(path: Path, column: str, *, as_text: bool = False) -> pl.LazyFrame:
    """A lazy scan of `path` (CSV/TSV: the count column parsed as Float64, or as text).

    Args:
        path: CSV, TSV or parquet file.
        column: the count column (CSV: read as Float64 so that 3.0 and 1e3 are counts too
            and any other token is a parse error, diagnosed by `_bad_token`).
        as_text: read the CSV column as strings (to find an unparsable value).

    Returns:
        The `LazyFrame`.

    Raises:
        UserError: missing, unreadable or empty file; unsupported extension.
    """
    return _scan(path, schema_overrides={column: pl.String if as_text else pl.Float64})


def row_filter(lf: pl.LazyFrame, where: str | None) -> pl.Expr:
    """The row filter as a boolean expression (null counts as false)."""
    if not where:
        return pl.lit(True)
    try:
        expr = pl.sql_expr(where)
    except (pl.exceptions.PolarsError, ValueError, TypeError) as err:
        raise UserError(f"--where {where!r}: {first_line(err)} (a SQL condition; quote column "
                        'names that are SQL words, e.g. "group" = 1)') from None  # fmt: skip
    if not expr.meta.eq(expr.meta.undo_aliases()):
        # SQL reads trailing text as a column alias (`a = 1 'x'`, `a = 1 AS x`): refuse it,
        # it is never part of a row condition and usually a quoting mistake.
        raise UserError(f"--where {where!r}: must be a condition only; found the alias "
                        f"{expr.meta.output_name()!r} after it (unbalanced quotes?)")  # fmt: skip
    try:
        dtype = lf.select(expr.alias("where")).collect_schema()["where"]
    except (pl.exceptions.PolarsError, ValueError, TypeError) as err:
        raise UserError(f"--where {where!r}: {first_line(err)}") from None
    if dtype != pl.Boolean:
        raise UserError(f"--where {where!r}: must be a condition (true/false), gives {dtype}")
    return expr.fill_null(False)


def read_counts(path: str | Path, column: str, where: str | None = None) -> Counts:
    """Histogram of a non-negative integer column, validated and built by streaming scans.

    Args:
        path: CSV, TSV or parquet file.
        column: name of the count column.
        where: optional polars SQL condition selecting rows, e.g. ``"camper = 1"``.

    Returns:
        The `Counts`.

    Raises:
        UserError: unreadable file, missing or non-numeric column, a bad filter, no rows, or
            a missing, NaN, infinite, negative or non-integer count (naming its row).
    """
    path = Path(path)
    lf = scan(path, column)
    try:
        schema = lf.collect_schema()
    except (pl.exceptions.PolarsError, OSError) as err:
        raise UserError(f"{path}: cannot read ({first_line(err)})") from None
    if column not in schema:
        raise UserError(f"{path}: no column {column!r}; available: {name_list(schema.names())}")
    dtype = schema[column]
    if not dtype.is_numeric():
        raise UserError(f"{path}: column {column!r} holds {dtype}, not numbers")
    keep = row_filter(lf, where)
    col = pl.col(column) if dtype.is_integer() else pl.col(column).cast(pl.Float64)
    problems = _problems(col, dtype.is_integer())
    aggs = [pl.len().alias("rows"), (pl.len() - (~keep).sum()).alias("selected")]
    aggs += [(keep & cond).sum().alias(name) for name, cond in problems.items()]
    try:
        found = _collect(lf.select(aggs), path, where).row(0, named=True)
    except UserError:
        if path.suffix.lower() in (".csv", ".tsv"):
            _bad_token(path, column)
        raise
    if found["selected"] == 0:
        scope = f" after --where {where!r}" if where else ""
        raise UserError(f"{path}: column {column!r} has no rows{scope}")
    for name, cond in problems.items():
        if found[name]:
            row, value = _first(lf, keep & cond, column)
            if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
                value = int(value)
            if value is None:
                shown = ""
            else:  # a float's %g keeps a 1e300 to one short cell
                shown = f" ({value:.6g})" if isinstance(value, float) else f" ({value!r})"
            raise UserError(f"{path}: column {column!r} has {found[name]} {name} value(s), "
                            f"first at row {row}{shown}; counts must be non-negative "
                            "integers")  # fmt: skip
    # Every value is now a count below 2**62: int64 holds it, whatever the column's dtype
    # (numpy has no 128-bit integers to convert to).
    value = col.cast(pl.Int64).alias("value")
    hist = _collect(
        lf.filter(keep).group_by(value).agg(pl.len().alias("freq")).sort("value"),
        path, where,
    )  # fmt: skip
    values = hist["value"].to_numpy().astype(np.int64)
    freqs = hist["freq"].to_numpy().astype(np.int64)
    return Counts(Histogram(values, freqs), int(found["rows"]), int(found["selected"]))


def _problems(col: pl.Expr, integer: bool) -> dict[str, pl.Expr]:
    """Named conditions that make a value not a count (checked in this order)."""
    out = {"missing": col.is_null()}
    if integer:  # Int64 up to 2**63 - 1 and UInt64 up to 2**64 - 1 exist: bound them too
        out["too large (>= 2**62)"] = (col >= _MAX_COUNT).fill_null(False)
    if not integer:
        out["NaN"] = col.is_nan().fill_null(False)
        out["infinite"] = col.is_infinite().fill_null(False)
        finite = col.is_finite().fill_null(False)
        out["non-integer"] = finite & (col != col.floor()).fill_null(False)
        out["too large (>= 2**62)"] = finite & (col >= float(_MAX_COUNT)).fill_null(False)
    out["negative"] = (col < 0).fill_null(False)
    return out


def _collect(lf: pl.LazyFrame, path: Path, where: str | None) -> pl.DataFrame:
    try:
        return lf.collect(engine="streaming")
    except pl.exceptions.ComputeError as err:
        raise UserError(f"{path}: {first_line(err)}") from None
    except (pl.exceptions.PolarsError, OSError) as err:
        scope = f" (with --where {where!r})" if where else ""
        raise UserError(f"{path}: cannot read{scope}: {first_line(err)}") from None


def _bad_token(path: Path, column: str) -> None:
    """Raise a `UserError` naming the first CSV value that is not a number, if any.

    The whole column is parsed whatever `--where` selects, so any row can be the culprit.
    """
    text = pl.col(column).str.strip_chars()
    bad = text.is_not_null() & text.cast(pl.Float64, strict=False).is_null()
    try:
        row, value = _first(scan(path, column, as_text=True), bad, column)
    except (pl.exceptions.PolarsError, IndexError):
        return
    raise UserError(f"{path}: column {column!r} has a non-numeric value at row {row} "
                    f"({value!r}); counts must be non-negative integers")  # fmt: skip


def _first(lf: pl.LazyFrame, cond: pl.Expr, column: str) -> tuple[int, object]:
    """1-based data row and value of the first row where `cond` holds."""
    hit = lf.with_row_index(_ROW, offset=1).filter(cond).select(_ROW, column).head(1)
    row = hit.collect(engine="streaming").row(0)
    return int(row[0]), row[1]
