"""Read a ZIP-regression design from a user's file: ``y ~ count regressors | zero regressors``.

The formula follows pscl's `zeroinfl`: the response, then the regressors of the count part
(log lambda), then after ``|`` those of the zero part (logit pi); without ``|`` both parts use
the same regressors. Each side is a formulaic formula, so string columns (treatment coding),
``C(x)``, interactions (``a:b``, ``a*b``) and transforms (``np.log(x)``, ``I(x**2)``,
``center(x)``, ``scale(x)``) work as in R or patsy; each part has an intercept unless the user
removes it (``- 1``, ``+ 0``).

A regression needs every row, so the columns the formula uses are loaded (after ``--where``).
Rows with a missing regressor are dropped before any matrix is built, so that y and both
designs stay row-aligned; the response must then be a count in every row. Every problem is a
one-line `UserError` naming what is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from formulaic import Formula
from formulaic.transforms import TRANSFORMS
from formulaic.utils.variables import Variable, get_required_variables

from pipeline.core.errors import UserError
from pipeline.store.count_file import first_line, name_list, row_filter, scan_table

PARTS = ("count", "zero")
MAX_LEVELS = 1000  # distinct values of a string regressor: each level is one dense column
# As R's lm(): a column (scaled to norm 1) closer than this to the span of the earlier columns
# is a combination of them; the fit's Hessian would be singular to working precision.
COLLINEAR_TOL = 1e-7
_MAX_COUNT = 2**62  # y is stored as int64
_ROW = "__formula_row"
_NAME = re.compile(r"[^\W\d]\w*(\.\w+)*")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class Design:
    """The response and the two design matrices of a ZIP regression, row-aligned.

    Attributes:
        formula: the formula as given.
        response: the response column.
        y: int64 counts, shape (n,).
        X: float64 count-part design, shape (n, p).
        x_names: formulaic's column names of X, "Intercept" renamed to "intercept".
        Z: float64 zero-part design, shape (n, q).
        z_names: column names of Z.
        rows: rows in the file that --where selected (all rows without it).
        dropped: rows dropped for a missing value in a used column (n = rows - dropped).
    """

    formula: str
    response: str
    y: np.ndarray
    X: np.ndarray
    x_names: tuple[str, ...]
    Z: np.ndarray
    z_names: tuple[str, ...]
    rows: int
    dropped: int


def split_formula(text: str) -> tuple[str, str, str]:
    """The response and the right-hand sides of the count and zero parts.

    Args:
        text: ``"y ~ a + b | c"``, or ``"y ~ a + b"`` for the same regressors in both parts.

    Returns:
        (response, count rhs, zero rhs), stripped; backquotes around the response removed.

    Raises:
        UserError: no ``~`` or several, an empty side, several ``|``, or a response that is
            not a plain column name.
    """
    sides = _split_top(text, "~")
    rhs = _split_top(sides[-1], "|")
    response, count = sides[0].strip(), rhs[0].strip()
    zero = rhs[-1].strip()
    quoted = re.fullmatch(r"`([^`]+)`", response)
    problems = [
        (len(sides) == 1, "needs '~' between the response and the regressors, e.g. 'y ~ a | b'"),
        (len(sides) > 2, "has more than one '~'"),
        (len(rhs) > 2, "has more than one '|' (it separates the count part from the zero part)"),
        (not response, "nothing before '~' (the response column)"),
        (not (quoted or _NAME.fullmatch(response)), f"the response {_cut(response)!r} must be "
         "a column name (transform it in the file, not in the formula)"),
        (not count, "nothing after '~' (use 1 for an intercept only)"),
        (not zero, "nothing after '|' (use 1 for an intercept only)"),
    ]  # fmt: skip
    problem = next((what for bad, what in problems if bad), None)
    if problem:
        raise UserError(f"formula {_cut(text)!r}: {problem}")
    return quoted.group(1) if quoted else response, count, zero


def read_design(path: str | Path, formula: str, *, where: str | None = None) -> Design:
    """Load the columns `formula` uses from a CSV, TSV or parquet file and build the design.

    Args:
        path: the file (CSV/TSV column types are inferred from every row).
        formula: ``"y ~ count regressors | zero regressors"``.
        where: optional polars SQL condition selecting rows, e.g. ``"camper = 1"``.

    Returns:
        The `Design`; `rows` counts the rows `where` selected; errors number rows from 1 in
        the file.

    Raises:
        UserError: a bad file, formula, filter, column or value (one line, naming it).
    """
    path = Path(path)
    split_formula(formula)  # a malformed formula fails before the file is read
    lf = scan_table(path)
    try:
        response, _, regressors = _resolve(formula, lf.collect_schema().names())
        used = dict.fromkeys([_ROW, response, *regressors])
        frame = lf.with_row_index(_ROW, offset=1).filter(row_filter(lf, where))
        frame = frame.select(*used).collect()
        if frame.height == 0:
            raise UserError("no rows" + (f" after --where {where!r}" if where else ""))
    except (pl.exceptions.PolarsError, OSError) as err:
        raise UserError(f"{path}: cannot read ({first_line(err)})") from None
    except UserError as err:
        raise UserError(f"{path}: {err}") from None
    try:
        return _design(frame, formula, frame.height)
    except UserError as err:
        raise UserError(f"{path}: {err}") from None


def build_design(frame: pl.DataFrame, formula: str, *, rows: int | None = None) -> Design:
    """Build the design of `formula` from a frame already in memory.

    Args:
        frame: the data, one row per observation.
        formula: ``"y ~ count regressors | zero regressors"``.
        rows: rows to report as `Design.rows` (default: the frame's height).

    Returns:
        The `Design`; error messages number rows from 1 in `frame`'s order.

    Raises:
        UserError: a bad formula, column or value (one line, naming it).
    """
    if frame.height == 0:
        raise UserError("no rows to fit")
    numbered = frame.with_row_index(_ROW, offset=1)
    return _design(numbered, formula, frame.height if rows is None else rows)


def _design(frame: pl.DataFrame, formula: str, rows: int) -> Design:
    """`build_design` on a frame that numbers its rows in the `_ROW` column."""
    response, parts, regressors = _resolve(formula, frame.columns)
    frame, dropped = _drop_missing(frame, regressors)
    y = _counts(frame, response)
    data = _levels(frame.select(_ROW, *regressors)).to_pandas()
    built = [_matrix(parts[i], data, part) for i, part in enumerate(PARTS)]
    row_ids = frame[_ROW].to_numpy()
    for part, (matrix, names) in zip(PARTS, built):
        _check_values(matrix, names, part, row_ids)
    (X, x_names), (Z, z_names) = built
    n, p, q = len(y), X.shape[1], Z.shape[1]
    if n <= p + q:
        after = f" (after dropping {dropped} with missing values)" if dropped else ""
        raise UserError(f"{n} rows{after} for {p + q} parameters ({p} count, {q} zero); "
                        "need more rows than parameters")  # fmt: skip
    for part, (matrix, names) in zip(PARTS, built):
        _check_rank(matrix, names, part)
    return Design(formula, response, y, X, x_names, Z, z_names, rows, dropped)


def _resolve(formula: str, columns: list[str]) -> tuple[str, list[Formula], list[str]]:
    """Parse `formula` and find the columns it reads among `columns`.

    Returns:
        (response, [count part's Formula, zero part's], the regressors' columns).
    """
    response, *sides = split_formula(formula)
    available = [c for c in columns if c != _ROW]
    if response not in available:
        raise UserError(f"no column {response!r} (the response); available: "
                        f"{name_list(available)}")  # fmt: skip
    parsed, regressors = [], {}
    # `.` stands for every column but the response, as in R.
    dot = {"__formulaic_variables_available__": [c for c in available if c != response]}
    for part, rhs in zip(PARTS, sides):
        try:
            parsed.append(Formula(rhs, _context=dot))
            factors = [factor for term in parsed[-1] for factor in term.factors]
        except Exception as err:  # formulaic's parser raises several kinds
            raise UserError(f"{part} part {_cut(rhs)!r}: {_message(err)}") from None
        for name in _factor_names(factors):
            root = name.split(".", 1)[0]
            if name in available or root in available:
                regressors[name if name in available else root] = None
            elif root not in TRANSFORMS:
                raise UserError(f"no column {name!r} (in the {part} part); available: "
                                f"{name_list(available)}")  # fmt: skip
    return response, parsed, list(regressors)


def _factor_names(factors: list) -> set[str]:
    """The data names formulaic's factors read (required_variables misses some)."""
    names: set[str] = set()
    for factor in factors:
        if factor.eval_method.value == "lookup":
            names.add(factor.expr)
        elif factor.eval_method.value == "python":
            # With the transforms as context, formulaic lists the names inside Q("a b") but
            # fails on those inside center(x) and scale(x); without it, the other way round.
            for context in ({}, TRANSFORMS):
                try:
                    found = get_required_variables(factor.expr, context)
                except Exception:  # noqa: S112 - the other context covers it
                    continue
                names |= {str(v) for v in found if Variable.Role.VALUE in v.roles}
    return names


def _levels(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with categorical and enum columns restricted to the levels in these rows.

    pandas keeps a category absent from the rows, which would give an all-zero dummy (or,
    for the reference level, a dummy per other level, collinear with the intercept).

    Raises:
        UserError: a non-numeric column with more than `MAX_LEVELS` distinct values.
    """
    for column, dtype in frame.schema.items():
        if dtype.is_numeric() or dtype == pl.Boolean:
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


def _drop_missing(frame: pl.DataFrame, columns: list[str]) -> tuple[pl.DataFrame, int]:
    """`frame` without the rows where a column is null (or NaN), and how many were dropped."""
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


def _counts(frame: pl.DataFrame, response: str) -> np.ndarray:
    """The response as int64 counts, or a `UserError` naming the first bad row."""
    col = frame[response]
    text = (
        col.cast(pl.String).str.strip_chars() if col.dtype in (pl.String, pl.Categorical) else None
    )
    if text is None and not col.dtype.is_numeric():
        raise UserError(f"response {response!r} holds {col.dtype}, not counts")
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
            raise UserError(f"response {response!r}: {int(bad.sum())} {name} value(s), first at "
                            f"row {frame[_ROW][i]}{shown}; counts must be non-negative "
                            f"integers{hint}")  # fmt: skip
    return values.astype(np.int64)


def _matrix(formula: Formula, data, part: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """One part's design matrix (float64) and column names, intercept renamed."""
    try:
        with np.errstate(all="ignore"):  # log(0) and the like are reported below, per column
            matrix = formula.get_model_matrix(data, na_action="ignore", context={})
        names = tuple("intercept" if n == "Intercept" else str(n) for n in matrix.columns)
        values = np.asarray(matrix.to_numpy(dtype=np.float64))
    except Exception as err:  # formulaic runs the user's Python: any error is the user's
        raise UserError(f"{part} part: {_message(err)}") from None
    if values.shape[0] != len(data):
        raise RuntimeError(f"{part} part: formulaic returned {values.shape[0]} of {len(data)} rows")
    return values, names


def _check_values(matrix: np.ndarray, names: tuple[str, ...], part: str, row_ids) -> None:
    """Reject a part without columns, a non-finite value, or a constant column."""
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


def _check_rank(matrix: np.ndarray, names: tuple[str, ...], part: str) -> None:
    """Reject collinear columns, naming the first that is a combination of earlier ones."""
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


def _message(err: Exception) -> str:
    """formulaic's error as one clean line (no colour codes, no source excerpt)."""
    return _cut(_ANSI.sub("", first_line(err)), 200)


def _cut(text: str, width: int = 80) -> str:
    """`text` cut to `width` characters."""
    return text if len(text) <= width else text[: width - 1] + "…"


def _split_top(text: str, sep: str) -> list[str]:
    """`text` split at each `sep` outside brackets and quotes."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"`":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts
