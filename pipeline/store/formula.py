"""Read a ZIP-regression design from a user's file: ``y ~ count regressors | zero regressors``.

The formula follows pscl's `zeroinfl`: the response, then the regressors of the count part
(log lambda), then after ``|`` those of the zero part (logit pi); without ``|`` both parts use
the same regressors. Each side is a formulaic formula, so string columns (treatment coding),
``C(x)``, interactions (``a:b``, ``a*b``) and transforms (``np.log(x)``, ``I(x**2)``,
``center(x)``, ``scale(x)``) work as in R or patsy; each part has an intercept unless the user
removes it (``- 1``, ``+ 0``). ``offset(np.log(t))`` in either part is that part's offset (a
fixed coefficient of 1), carried beside the design, not in it.

Nothing the user wrote is evaluated before `formula_grammar` has checked it, and then only in
its namespace (the columns and the whitelisted transforms). Integer columns enter arithmetic as
float64 (``I(t**2)`` on millisecond epochs does not wrap).

A regression needs every row, so the columns the formula uses are loaded (after ``--where``).
Rows with a missing regressor are dropped before any matrix is built, so that y and both
designs stay row-aligned; the response must then be a count in every row. Every problem is a
one-line `UserError` naming what is wrong.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from formulaic import Formula
from formulaic.materializers import PandasMaterializer
from formulaic.parser import DefaultFormulaParser
from formulaic.utils.layered_mapping import LayeredMapping

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
from pipeline.store.formula_grammar import (
    MAX_COLUMNS,
    Uses,
    check_factor,
    namespace,
    quote,
    read_quoted,
    term_bound,
    unquote,
)

PARTS = ("count", "zero")
_NAME = re.compile(r"[^\W\d]\w*(\.\w+)*")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_DOT = "__formulaic_variables_available__"  # formulaic's context key for what `.` stands for


@dataclass(frozen=True)
class Design:
    """The response, the two design matrices and the two offsets of a ZIP regression.

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
        count_offset: float64 offset of log lambda, shape (n,): the sum of the count part's
            ``offset(…)`` terms, zeros without one.
        zero_offset: the same for the zero part's linear predictor.
        weights: int64 frequency weights, shape (n,): the `weights` column's (all > 0: rows
            of weight 0 are left out, counted in `zero_weight`), ones without one.
        zero_weight: rows of weight 0 left out.
        group_column: the grouping column of the random intercepts ``(1 | g)``, or None.
        groups: (n,) its values per row (rows missing it are dropped, as for a regressor).
        random: the parts with a random intercept, in `PARTS` order (empty without one).
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
    count_offset: np.ndarray = field(default=None)  # type: ignore[assignment]
    zero_offset: np.ndarray = field(default=None)  # type: ignore[assignment]
    weights: np.ndarray = field(default=None)  # type: ignore[assignment]
    zero_weight: int = 0
    group_column: str | None = None
    groups: np.ndarray | None = None
    random: tuple[str, ...] = ()

    def __post_init__(self):
        for name in ("count_offset", "zero_offset"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, np.zeros(len(self.y)))
        if self.weights is None:
            object.__setattr__(self, "weights", np.ones(len(self.y), np.int64))


@dataclass(frozen=True)
class _Part:
    """One checked right-hand side: formulaic's Formula on aliased names, and what it reads."""

    name: str
    formula: Formula
    terms: list[tuple[str, list[tuple[Uses, str | None]]]]  # (term, [(uses, lookup name)])
    offsets: list[str]  # the offset terms' names


@dataclass(frozen=True)
class RandomTerms:
    """A formula's random intercepts: the formula without them, their grouping column and the
    parts they are in."""

    fixed: str
    group: str | None
    parts: tuple[str, ...]


_RANDOM = re.compile(r"\(\s*1\s*\|\s*(?P<group>`(?:[^`\\]|\\.)*`|[^\W\d]\w*)\s*\)")


def random_intercepts(text: str) -> RandomTerms:
    """Take the random-intercept terms ``(1 | g)`` (lme4 / glmmTMB syntax) out of a formula.

    A term ``(1 | g)`` added (``+``) to a part's right-hand side gives that part a Gaussian
    random intercept per level of column g; without ``|`` between the parts, both parts share
    the right-hand side and so the random intercept. One grouping column for the formula.

    Returns:
        `RandomTerms` (`fixed` is `text` itself when there are none).

    Raises:
        UserError: another bracketed ``|`` term (random slopes, ``||``, ``(0 | g)``), two
            grouping columns, two random intercepts in one part, or a part left without
            regressors (write ``1 + (1 | g)``).
    """
    sides = _split_top(text, "~")
    if len(sides) != 2 or "|" not in sides[1]:
        return RandomTerms(text, None, ())
    rhs = _split_top(sides[1], "|")
    if len(rhs) > 2:
        return RandomTerms(text, None, ())  # split_formula names the problem
    fixed, groups, parts = [], set(), []
    for part, side in zip(PARTS, rhs):
        kept, found = [], 0
        for term in _split_top(side, "+"):
            bare = term.strip()
            match = _RANDOM.fullmatch(bare)
            if match:
                found += 1
                group = match["group"]
                groups.add(read_quoted(group) or group)
            elif bare.startswith("(") and "|" in bare:
                raise UserError(f"formula {_cut(text)!r}: {_cut(bare)!r}: only random "
                                "intercepts '(1 | group)' are supported")  # fmt: skip
            else:
                kept.append(term)
        if found > 1:
            raise UserError(f"formula {_cut(text)!r}: the {part} part has {found} random "
                            "intercepts; give one '(1 | group)'")  # fmt: skip
        if found and not "".join(kept).strip():
            raise UserError(f"formula {_cut(text)!r}: the {part} part has only its random "
                            "intercept; write '1 + (1 | group)'")  # fmt: skip
        if found:
            parts.append(part)
        fixed.append("+".join(kept))
    if not groups:
        return RandomTerms(text, None, ())
    if len(groups) > 1:
        raise UserError(f"formula {_cut(text)!r}: random intercepts by {sorted(groups)}: give "
                        "one grouping column")  # fmt: skip
    if len(rhs) == 1:  # the zero part shares the right-hand side, random intercept included
        parts = list(PARTS)
    return RandomTerms(f"{sides[0]}~{'|'.join(fixed)}", groups.pop(), tuple(parts))


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
    quoted = read_quoted(response)
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
    return quoted if quoted else response, count, zero


def check_formula(text: str) -> None:
    """Refuse a formula with a piece outside the grammar; reads no file, evaluates nothing.

    Raises:
        UserError: a malformed formula, or a factor `formula_grammar.check_factor` refuses.
    """
    _, *sides = split_formula(random_intercepts(text).fixed)
    aliases: dict[str, str] = {}
    for part, rhs in zip(PARTS, sides):
        aliased, aliases = unquote(rhs, set(), part, aliases)
        parser = DefaultFormulaParser()
        for token in _parse(part, rhs, parser.get_tokens, aliased):
            if token.kind.value == "python":
                check_factor(token.token, part)
        _parse(part, rhs, parser.get_ast, aliased)  # a malformed side, before any file is read


def read_design(path: str | Path, formula: str, *, where: str | None = None,
                weights: str | None = None) -> Design:  # fmt: skip
    """Load the columns `formula` uses from a CSV, TSV or parquet file and build the design.

    Args:
        path: the file (CSV/TSV column types are inferred from every row).
        formula: ``"y ~ count regressors | zero regressors"``.
        where: optional polars SQL condition selecting rows, e.g. ``"camper = 1"``.
        weights: optional column of frequency weights (non-negative integers: a row of
            weight w stands for w rows, weight 0 for none).

    Returns:
        The `Design`; `rows` counts the rows `where` selected; errors number rows from 1 in
        the file.

    Raises:
        UserError: a bad file, formula, filter, column or value (one line, naming it).
    """
    path = Path(path)
    random = random_intercepts(formula)  # a malformed or forbidden formula fails before the
    split_formula(random.fixed)  # file is read
    try:
        check_formula(formula)
    except UserError as err:
        raise UserError(f"{path}: {err}") from None
    lf = scan_table(path)
    try:
        names = lf.collect_schema().names()
        row = _row_column(names)
        response, parts, refs = _resolve(random.fixed, names, row)
        if weights is not None and weights not in names:
            raise UserError(f"no column {weights!r} (the --weights column); available: "
                            f"{name_list(names)}")  # fmt: skip
        if random.group is not None and random.group not in names:
            raise UserError(f"no column {random.group!r} (the grouping column of "
                            f"'(1 | {random.group})'); available: {name_list(names)}")  # fmt: skip
        extra = [c for c in (weights, random.group) if c is not None]
        used = dict.fromkeys([row, response, *refs.values(), *extra])
        frame = lf.with_row_index(row, offset=1).filter(row_filter(lf, where))
        frame = frame.select(*used).collect()
        if frame.height == 0:
            raise UserError("no rows" + (f" after --where {where!r}" if where else ""))
    except (pl.exceptions.PolarsError, OSError) as err:
        raise UserError(f"{path}: cannot read ({first_line(err)})") from None
    except UserError as err:
        raise UserError(f"{path}: {err}") from None
    try:
        return _design(frame, formula, frame.height, row, weights)
    except UserError as err:
        raise UserError(f"{path}: {err}") from None


def build_design(frame: pl.DataFrame, formula: str, *, rows: int | None = None,
                 weights: str | None = None) -> Design:  # fmt: skip
    """Build the design of `formula` from a frame already in memory.

    Args:
        frame: the data, one row per observation.
        formula: ``"y ~ count regressors | zero regressors"``.
        rows: rows to report as `Design.rows` (default: the frame's height).
        weights: optional column of frequency weights (as `read_design`).

    Returns:
        The `Design`; error messages number rows from 1 in `frame`'s order.

    Raises:
        UserError: a bad formula, column or value (one line, naming it).
    """
    check_formula(formula)
    if frame.height == 0:
        raise UserError("no rows to fit")
    row = _row_column(frame.columns)
    numbered = frame.with_row_index(row, offset=1)
    if weights is not None and weights not in frame.columns:
        raise UserError(f"no column {weights!r} (the weights); available: "
                        f"{name_list(frame.columns)}")  # fmt: skip
    group = random_intercepts(formula).group
    if group is not None and group not in frame.columns:
        raise UserError(f"no column {group!r} (the grouping column of '(1 | {group})'); "
                        f"available: {name_list(frame.columns)}")  # fmt: skip
    return _design(numbered, formula, frame.height if rows is None else rows, row, weights)


def _row_column(columns: list[str]) -> str:
    """A name for the row numbers that no column of the file has."""
    row = ROW
    while row in columns:
        row += "_"
    return row


def _design(frame: pl.DataFrame, formula: str, rows: int, row: str,
            weights: str | None = None) -> Design:  # fmt: skip
    """`build_design` on a frame that numbers its rows in column `row`."""
    random = random_intercepts(formula)
    response, parts, refs = _resolve(random.fixed, [c for c in frame.columns if c != row], row)
    regressors = list(dict.fromkeys(refs.values()))
    grouping = [random.group] if random.group is not None else []
    zero_weight = 0
    if weights is not None:  # a row of weight 0 is no row: left out before anything is checked
        w = response_counts(frame, weights, row, role="weights")
        zero_weight = int((w == 0).sum())
        if zero_weight == frame.height:
            raise UserError(f"every weight in {weights!r} is zero")
        frame = frame.filter(pl.Series(w > 0))
    frame, dropped = drop_missing(frame, list(dict.fromkeys(regressors + grouping)))
    y = response_counts(frame, response, row)
    factors = [f for part in parts for _, fs in part.terms for f in fs]
    categorical = {refs[n] for uses, _ in factors for n in uses.categorical}
    numeric = {refs[n] for uses, ref in factors for n in uses.numeric | {ref} - {None}}
    regs = restrict_levels(frame.select(regressors), categorical)
    levels = {c: regs[c].n_unique() for c in regressors
              if c in categorical or not regs.schema[c].is_numeric()}  # fmt: skip
    for part in parts:
        _check_width(part, refs, levels)
    floats = [c for c in numeric if regs.schema[c].is_integer()]  # arithmetic in float64
    regs = regs.with_columns(pl.col(c).cast(pl.Float64) for c in floats)
    data = regs.select(pl.col(c).alias(ref) for ref, c in refs.items()).to_pandas()
    row_ids = frame[row].to_numpy()
    built = [_matrix(part, data, refs, row_ids) for part in parts]
    for part, (matrix, names, _) in zip(PARTS, built):
        check_values(matrix, names, part, row_ids)
    (X, x_names, x_off), (Z, z_names, z_off) = built
    n, p, q = len(y), X.shape[1], Z.shape[1]
    if n <= p + q:
        after = f" (after dropping {dropped} with missing values)" if dropped else ""
        raise UserError(f"{n} rows{after} for {p + q} parameters ({p} count, {q} zero); "
                        "need more rows than parameters")  # fmt: skip
    for part, (matrix, names, _) in zip(PARTS, built):
        check_rank(matrix, names, part)
    w = None if weights is None else response_counts(frame, weights, row, role="weights")
    groups = frame[random.group].to_numpy() if random.group is not None else None
    return Design(formula, response, y, X, x_names, Z, z_names, rows, dropped, x_off, z_off,
                  w, zero_weight, random.group, groups, random.parts)  # fmt: skip


def _resolve(formula: str, columns: list[str], row: str) -> tuple[str, list[_Part], dict]:
    """Parse and check `formula` and find the columns it reads among `columns`.

    Returns:
        (response, the two checked parts, {name in the aliased formula: column}).
    """
    response, *sides = split_formula(formula)
    available = [c for c in columns if c != row]
    if response not in available:
        raise UserError(f"no column {response!r} (the response); available: "
                        f"{name_list(available)}")  # fmt: skip
    reserved = set(available)
    aliases: dict[str, str] = {}
    # `.` stands for every column but the response, as in R; odd names under an alias.
    dot_text = " + ".join(quote(c) for c in available if c != response) or "1"
    _, aliases = unquote(dot_text, reserved, "count", aliases)
    by_name = {name: alias for alias, name in aliases.items()}
    dot = {_DOT: [by_name.get(c, c) for c in available if c != response]}
    refs: dict[str, str] = {}
    parts = []
    for part, rhs in zip(PARTS, sides):
        aliased, aliases = unquote(rhs, reserved, part, aliases)
        tree = _parse(part, rhs, DefaultFormulaParser().get_ast, aliased)
        bound = term_bound(tree, len(dot[_DOT]))
        if bound > MAX_COLUMNS:
            raise UserError(f"{part} part {_cut(rhs)!r} expands to more than {MAX_COLUMNS} "
                            "terms; simplify it")  # fmt: skip
        parsed = _parse(part, rhs, Formula, aliased, _context=dot)
        terms, offsets = [], []
        for term in parsed:
            factors = []
            for factor in term.factors:
                kind = factor.eval_method.value
                if kind == "lookup":
                    refs[factor.expr] = _column(factor.expr, available, aliases, part)
                    factors.append((Uses(), factor.expr))
                elif kind == "python":
                    uses = check_factor(factor.expr, part)
                    for name in uses.numeric | uses.categorical:
                        refs[name] = _column(name, available, aliases, part)
                    factors.append((uses, None))
                    if uses.offset and len(term.factors) > 1:
                        raise UserError(f"{part} part: {str(term)!r}: an offset() is a term of "
                                        "its own, added with +")  # fmt: skip
                    if uses.offset:
                        offsets.append(str(term))
            terms.append((str(term), factors))
        parts.append(_Part(part, parsed, terms, offsets))
    return response, parts, refs


def _column(name: str, available: list[str], aliases: dict[str, str], part: str) -> str:
    """The column `name` (a plain name or an alias) reads; a `UserError` if there is none."""
    column = aliases.get(name, name)
    if column not in available:
        raise UserError(f"no column {column!r} (in the {part} part); available: "
                        f"{name_list(available)}")  # fmt: skip
    return column


def _check_width(part: _Part, refs: dict[str, str], levels: dict[str, int]) -> None:
    """Refuse a part whose design would have more than `MAX_COLUMNS` columns."""
    width = 0
    for _, factors in part.terms:
        cols = 1
        for uses, ref in factors:
            if ref is not None:
                cols *= levels.get(refs[ref], 1)
            else:
                cols *= uses.width * math.prod(
                    levels.get(refs[n], 1) for n in uses.numeric | uses.categorical
                )
        width += cols
    if width > MAX_COLUMNS:
        raise UserError(f"the {part.name} part would have up to {width} columns (at most "
                        f"{MAX_COLUMNS}); use fewer levels or interactions")  # fmt: skip


def _matrix(part: _Part, data, refs: dict[str, str], row_ids):
    """One part's design matrix (float64), its column names and its offset vector.

    formulaic evaluates the checked factors in `namespace()` and the columns only: its own
    transforms (all of numpy, among others) are not in reach.
    """
    ns = namespace()
    try:
        materializer = PandasMaterializer(data, context=ns)
        materializer.layered_context = LayeredMapping(
            LayeredMapping(materializer.data_context, name="data"),
            LayeredMapping(ns, name="context"),
        )
        with np.errstate(all="ignore"):  # log(0) and the like are reported below, per column
            matrix = materializer.get_model_matrix(part.formula, na_action="ignore")
        raw = [str(n) for n in matrix.columns]
        values = np.asarray(matrix.to_numpy(dtype=np.float64))
    except UserError:
        raise
    except Exception as err:  # an error of the user's data or formula, e.g. log of a string
        raise UserError(f"{part.name} part: {_message(err)}") from None
    if values.shape[0] != len(data):
        raise RuntimeError(f"{part.name} part: formulaic returned {values.shape[0]} of "
                           f"{len(data)} rows")  # fmt: skip
    keep = [j for j, n in enumerate(raw) if n not in part.offsets]
    if len(raw) - len(keep) != len(part.offsets):
        raise UserError(f"the {part.name} part's offset {_cut(part.offsets[0])!r} must be one "
                        "numeric column")  # fmt: skip
    offset = values[:, [j for j in range(len(raw)) if j not in keep]].sum(axis=1)
    bad = ~np.isfinite(offset)
    if bad.any():
        i = int(np.argmax(bad))
        raise UserError(f"{part.name} part: offset {_display(part.offsets, refs)!r} has "
                        f"{int(bad.sum())} non-finite value(s), first at row {row_ids[i]} "
                        f"({offset[i]}); e.g. the log of 0")  # fmt: skip
    names = tuple("intercept" if n == "Intercept" else _display([n], refs) for n in raw)
    return values[:, keep], tuple(names[j] for j in keep), offset


def _display(names: list[str], refs: dict[str, str]) -> str:
    """`names` joined, each alias replaced by the column as the user writes it."""
    text = " + ".join(names)
    aliases = [r for r, c in refs.items() if r != c]
    if not aliases:
        return text
    pattern = re.compile(r"(?<![\w.])(" + "|".join(map(re.escape, aliases)) + r")(?!\w)")
    return pattern.sub(lambda m: quote(refs[m.group(1)]), text)


def _parse(part: str, rhs: str, parse, *args, **kwargs):
    """formulaic's `parse(*args, **kwargs)` of one side, its errors as one line."""
    try:
        return parse(*args, **kwargs)
    except UserError:
        raise
    except Exception as err:  # formulaic's parser raises several kinds
        raise UserError(f"{part} part {_cut(rhs)!r}: {_message(err)}") from None


def _message(err: Exception) -> str:
    """formulaic's error as one clean line (no colour codes, no source excerpt)."""
    return _cut(_ANSI.sub("", first_line(err)), 200)


def _cut(text: str, width: int = 80) -> str:
    """`text` cut to `width` characters."""
    return text if len(text) <= width else text[: width - 1] + "…"


def _split_top(text: str, sep: str) -> list[str]:
    """`text` split at each `sep` outside brackets and quotes (``\\`` escapes in quotes)."""
    parts, depth, quote_char, start, skip = [], 0, "", 0, False
    for i, ch in enumerate(text):
        if skip:
            skip = False
        elif quote_char:
            skip = ch == "\\"
            quote_char = "" if ch == quote_char else quote_char
        elif ch in "'\"`":
            quote_char = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts
