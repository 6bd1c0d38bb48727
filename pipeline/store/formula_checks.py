"""The value and rank checks of a ZIP-regression design read from a user's file.

`formula` builds y, X and Z; what may go into them is decided here: the rows with a missing
regressor are dropped (`drop_missing`), string regressors are cut to the levels present and
to at most `MAX_LEVELS` (`restrict_levels`), the response must be a count in every row
(`response_counts`), and each part's matrix must be finite, without constant columns
(`check_values`) and of full rank (`check_rank`). Frames number their rows from 1 in the
`ROW` column, so every problem is a one-line `UserError` naming the row in the file.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from pipeline.core.errors import UserError
from pipeline.store.count_file import name_list

MAX_LEVELS = 1000  # distinct values of a string regressor: each level is one dense column
# As R's lm(): a column (scaled to norm 1) closer than this to the span of the earlier columns
# is a combination of them; the fit's Hessian would be singular to working precision.
COLLINEAR_TOL = 1e-7
ROW = "__formula_row"  # numbers the rows from 1 (in the file, after --where); "_" added
# while a column of the file has the name
_MAX_COUNT = 2**62  # y is stored as int64


def restrict_levels(frame: pl.DataFrame, categorical: set[str] = frozenset()) -> pl.DataFrame:
    """`frame` with categorical and enum columns restricted to the levels in these rows.

    pandas keeps a category absent from the rows, which would give an all-zero dummy (or,
    for the reference level, a dummy per other level, collinear with the intercept).

    Args:
        frame: the rows and regressor columns a design is built from.
        categorical: numeric columns used as categories (``C(id)``): capped alike.

    Returns:
        The frame, categorical columns as strings and enums cut to the levels present.

    Raises:
        UserError: a categorical column with more than `MAX_LEVELS` distinct values.
    """
    for column, dtype in frame.schema.items():
        if (dtype.is_numeric() or dtype == pl.Boolean) and column not in categorical:
            continue
        if (levels := frame[column].n_unique()) > MAX_LEVELS:
            raise UserError(f"column {column!r} has {levels} distinct values: too many levels "
                            f"for a categorical regressor (at most {MAX_LEVELS})")  # fmt: skip
        if dtype == pl.Categorical:
            frame = frame.with_columns(pl.col(column).cast(pl.String))
        elif isinstance(dtype, pl.Enum):
            present = set(frame[column].cast(pl.String).unique())
            levels = [c for c in dtype.categories if c in present]  # the user's order
            frame = frame.with_columns(pl.col(column).cast(pl.String).cast(pl.Enum(levels)))
    return frame


def drop_missing(frame: pl.DataFrame, columns: list[str]) -> tuple[pl.DataFrame, int]:
    """`frame` without the rows where a column is null (or NaN), and how many were dropped.

    Args:
        frame: the rows, numbered in the `ROW` column; columns: the regressors' columns.

    Returns:
        (the complete rows, the number dropped).

    Raises:
        UserError: every row misses a value.
    """
    if not columns:
        return frame, 0
    flags = [pl.col(c).is_null() | (pl.col(c).is_nan() if frame.schema[c].is_float() else False)
             for c in columns]  # fmt: skip
    missing = frame.select(flags)
    drop = missing.select(pl.any_horizontal(pl.all())).to_series()
    dropped = int(drop.sum())
    if dropped == frame.height:
        holes = [c for c in columns if missing[c].any()]
        raise UserError(f"every one of the {dropped} rows has a missing value in "
                        f"{name_list(holes)}")  # fmt: skip
    return frame.filter(~drop), dropped


def response_counts(frame: pl.DataFrame, response: str, row: str = ROW,
                    role: str = "response") -> np.ndarray:  # fmt: skip
    """The response (or the frequency weights) as int64 counts.

    Args:
        frame: the rows, numbered in column `row`; response: the response column.
        role: "response", or "weights" for a column of frequency weights (same checks: a
            row of weight w stands for w rows).

    Returns:
        int64 counts, one per row.

    Raises:
        UserError: a value that is not a count (naming the first bad row).
    """
    col = frame[response]
    text = (
        col.cast(pl.String).str.strip_chars() if col.dtype in (pl.String, pl.Categorical) else None
    )
    if text is None and not col.dtype.is_numeric():
        raise UserError(f"{role} {response!r} holds {col.dtype}, not {_WHAT[role]}")
    values = (col if text is None else text.cast(pl.Float64, strict=False)).cast(pl.Float64)
    values = values.to_numpy()
    with np.errstate(invalid="ignore"):
        problems = {"non-numeric": np.zeros(len(values), bool) if text is None else
                    (text.is_not_null().to_numpy() & np.isnan(values)),
                    "missing": np.isnan(values), "infinite": np.isinf(values),
                    "negative": values < 0, "non-integer": values != np.floor(values),
                    "too large (>= 2**62)": values >= _MAX_COUNT}  # fmt: skip
    for name, bad in problems.items():
        if bad.any():
            i = int(np.argmax(bad))
            shown = "" if col[i] is None else f" ({col[i]!r})"
            hint = f" (skip them with --where '\"{response}\" IS NOT NULL')" * (name == "missing")
            raise UserError(f"{role} {response!r}: {int(bad.sum())} {name} value(s), first at "
                            f"row {frame[row][i]}{shown}; {_WHAT[role]} must be non-negative "
                            f"integers{hint}")  # fmt: skip
    return values.astype(np.int64)


_WHAT = {"response": "counts", "weights": "frequency weights"}


def check_values(matrix: np.ndarray, names: tuple[str, ...], part: str, row_ids) -> None:
    """Reject a part without columns, a non-finite value, or a constant column.

    Args:
        matrix: one part's design; names: its column names; part: "count" or "zero".
        row_ids: the file's row number of each row of `matrix` (for the message).

    Raises:
        UserError: naming the part, the column and the first bad row.
    """
    if not names:
        raise UserError(f"the {part} part has no columns (for an intercept only, write 1)")
    bad = ~np.isfinite(matrix)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise UserError(f"{part} part: column {names[j]!r} has {int(bad[:, j].sum())} "
                        f"non-finite value(s), first at row {row_ids[i]} ({matrix[i, j]}); "
                        "e.g. the log of 0 or of a negative number")  # fmt: skip
    flat = [j for j in range(len(names))
            if names[j] != "intercept" and np.ptp(matrix[:, j]) == 0]  # fmt: skip
    for j in flat:
        # Without an intercept, one constant non-zero column is the intercept (e.g. `C(g) - 1`
        # on rows where g takes a single value).
        value = matrix[0, j]
        if "intercept" in names or value == 0 or len(flat) > 1:
            raise UserError(f"{part} part: column {names[j]!r} is constant ({value:g} in all "
                            f"{len(matrix)} rows); drop it from the {part} part")  # fmt: skip


def check_rank(matrix: np.ndarray, names: tuple[str, ...], part: str) -> None:
    """Reject collinear columns, naming the first that is a combination of earlier ones.

    Args:
        matrix: one part's design (finite, no zero column); names, part: as in `check_values`.

    Raises:
        UserError: naming the collinear columns.
    """
    scaled = matrix / np.linalg.norm(matrix, axis=0)
    # Unpivoted QR: |R[k, k]| is the distance from column k to the span of columns 0..k-1.
    r = np.linalg.qr(scaled, mode="r")
    weak = np.flatnonzero(np.abs(np.diag(r)) < COLLINEAR_TOL)
    if weak.size == 0:
        return
    k = int(weak[0])
    coef = np.abs(np.linalg.solve(r[:k, :k], r[:k, k])) if k else np.zeros(0)
    involved = [names[j] for j in np.flatnonzero(coef > 1e-6 * coef.max(initial=0))]
    raise UserError(f"{part} part: columns {name_list([*involved, names[k]])} are collinear "
                    f"({names[k]!r} is a combination of the others); drop one")  # fmt: skip
