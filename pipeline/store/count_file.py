"""Read one column of counts (optionally weighted by a column of frequency weights) from a
CSV or parquet file into a `Histogram`, streaming.

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


def scan(path: Path, *columns: str, as_text: bool = False) -> pl.LazyFrame:
    """A lazy scan of `path` (CSV/TSV: the count columns parsed as Float64, or as text).

    Args:
        path: CSV, TSV or parquet file.
        columns: the count (and weight) columns (CSV: read as Float64 so that 3.0 and 1e3
            are counts too and any other token is a parse error, diagnosed by `_bad_token`).
        as_text: read the CSV column as strings (to find an unparsable value).

    Returns:
        The `LazyFrame`.

    Raises:
        UserError: missing, unreadable or empty file; unsupported extension.
    """
    dtype = pl.String if as_text else pl.Float64
    return _scan(path, schema_overrides=dict.fromkeys(columns, dtype))


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


def read_counts(path: str | Path, column: str, where: str | None = None,
                weights: str | None = None) -> Counts:  # fmt: skip
    """Histogram of a non-negative integer column, validated and built by streaming scans.

    Args:
        path: CSV, TSV or parquet file.
        column: name of the count column.
        where: optional polars SQL condition selecting rows, e.g. ``"camper = 1"``.
        weights: optional column of frequency weights (non-negative integers: a row of weight
            w stands for w rows; weight 0 leaves it out). The histogram's frequencies are the
            weights' sums per count, so a weighted file and its expanded rows give one
            histogram.

    Returns:
        The `Counts` (`hist.n` is the weights' sum with `weights`).

    Raises:
        UserError: unreadable file, missing or non-numeric column, a bad filter, no rows, or
            a missing, NaN, infinite, negative or non-integer count or weight (naming its
            row); weights all zero or summing past 2**62.
    """
    path = Path(path)
    roles = {column: "counts"} if weights is None else {column: "counts", weights: "weights"}
    lf = scan(path, *roles)
    try:
        schema = lf.collect_schema()
    except (pl.exceptions.PolarsError, OSError) as err:
        raise UserError(f"{path}: cannot read ({first_line(err)})") from None
    for name in roles:
        if name not in schema:
            role = " (the --weights column)" if name == weights != column else ""
            raise UserError(f"{path}: no column {name!r}{role}; available: "
                            f"{name_list(schema.names())}")  # fmt: skip
        if not schema[name].is_numeric():
            raise UserError(f"{path}: column {name!r} holds {schema[name]}, not numbers")
    keep = row_filter(lf, where)
    cols = {name: pl.col(name) if schema[name].is_integer() else pl.col(name).cast(pl.Float64)
            for name in roles}  # fmt: skip
    checks = {name: _problems(cols[name], schema[name].is_integer()) for name in roles}
    problems = [(name, what, cond) for name, named in checks.items()
                for what, cond in named.items()]  # fmt: skip
    aggs = [pl.len().alias("rows"), (pl.len() - (~keep).sum()).alias("selected")]
    aggs += [(keep & cond).sum().alias(f"problem{i}") for i, (_, _, cond) in enumerate(problems)]
    if weights is not None:  # in float64: an int64 sum of weights below 2**62 each can wrap
        aggs.append(cols[weights].cast(pl.Float64).filter(keep).sum().alias("weight_sum"))
    try:
        found = _collect(lf.select(aggs), path, where).row(0, named=True)
    except UserError:
        if path.suffix.lower() in (".csv", ".tsv"):
            for name, role in roles.items():
                _bad_token(path, name, role)
        raise
    if found["selected"] == 0:
        scope = f" after --where {where!r}" if where else ""
        raise UserError(f"{path}: column {column!r} has no rows{scope}")
    for i, (name, what, cond) in enumerate(problems):
        if found[f"problem{i}"]:
            row, value = _first(lf, keep & cond, name)
            if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
                value = int(value)
            if value is None:
                shown = ""
            else:  # a float's %g keeps a 1e300 to one short cell
                shown = f" ({value:.6g})" if isinstance(value, float) else f" ({value!r})"
            count, must = found[f"problem{i}"], _MUST[roles[name]]
            raise UserError(f"{path}: column {name!r} has {count} {what} value(s), first at "
                            f"row {row}{shown}; {must}")  # fmt: skip
    # Every value is now a count below 2**62: int64 holds it, whatever the column's dtype
    # (numpy has no 128-bit integers to convert to).
    value = cols[column].cast(pl.Int64).alias("value")
    if weights is None:
        freq = pl.len().alias("freq")
    else:
        if found["weight_sum"] == 0:
            raise UserError(f"{path}: every weight in column {weights!r} is zero"
                            + (f" after --where {where!r}" if where else ""))  # fmt: skip
        if found["weight_sum"] >= _MAX_COUNT:
            raise UserError(f"{path}: the weights in column {weights!r} sum to "
                            f"{found['weight_sum']:.6g}, beyond 2**62 rows")  # fmt: skip
        freq = cols[weights].cast(pl.Int64).sum().alias("freq")
    hist = _collect(
        lf.filter(keep).group_by(value).agg(freq).filter(pl.col("freq") > 0).sort("value"),
        path, where,
    )  # fmt: skip
    values = hist["value"].to_numpy().astype(np.int64)
    freqs = hist["freq"].to_numpy().astype(np.int64)
    return Counts(Histogram(values, freqs), int(found["rows"]), int(found["selected"]))


_MUST = {"counts": "counts must be non-negative integers",
         "weights": "frequency weights must be non-negative integers (a row of weight w "
                    "stands for w rows)"}  # fmt: skip


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


def _bad_token(path: Path, column: str, role: str = "counts") -> None:
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
                    f"({value!r}); {_MUST[role]}")  # fmt: skip


def _first(lf: pl.LazyFrame, cond: pl.Expr, column: str) -> tuple[int, object]:
    """1-based data row and value of the first row where `cond` holds."""
    hit = lf.with_row_index(_ROW, offset=1).filter(cond).select(_ROW, column).head(1)
    row = hit.collect(engine="streaming").row(0)
    return int(row[0]), row[1]
