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
from pipeline.store.formula_checks import (
    ROW,
    check_rank,
    check_values,
    drop_missing,
    response_counts,
    restrict_levels,
)

PARTS = ("count", "zero")
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
        used = dict.fromkeys([ROW, response, *regressors])
        frame = lf.with_row_index(ROW, offset=1).filter(row_filter(lf, where))
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
    numbered = frame.with_row_index(ROW, offset=1)
    return _design(numbered, formula, frame.height if rows is None else rows)


def _design(frame: pl.DataFrame, formula: str, rows: int) -> Design:
    """`build_design` on a frame that numbers its rows in the `ROW` column."""
    response, parts, regressors = _resolve(formula, frame.columns)
    frame, dropped = drop_missing(frame, regressors)
    y = response_counts(frame, response)
    data = restrict_levels(frame.select(ROW, *regressors)).to_pandas()
    built = [_matrix(parts[i], data, part) for i, part in enumerate(PARTS)]
    row_ids = frame[ROW].to_numpy()
    for part, (matrix, names) in zip(PARTS, built):
        check_values(matrix, names, part, row_ids)
    (X, x_names), (Z, z_names) = built
    n, p, q = len(y), X.shape[1], Z.shape[1]
    if n <= p + q:
        after = f" (after dropping {dropped} with missing values)" if dropped else ""
        raise UserError(f"{n} rows{after} for {p + q} parameters ({p} count, {q} zero); "
                        "need more rows than parameters")  # fmt: skip
    for part, (matrix, names) in zip(PARTS, built):
        check_rank(matrix, names, part)
    return Design(formula, response, y, X, x_names, Z, z_names, rows, dropped)


def _resolve(formula: str, columns: list[str]) -> tuple[str, list[Formula], list[str]]:
    """Parse `formula` and find the columns it reads among `columns`.

    Returns:
        (response, [count part's Formula, zero part's], the regressors' columns).
    """
    response, *sides = split_formula(formula)
    available = [c for c in columns if c != ROW]
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
