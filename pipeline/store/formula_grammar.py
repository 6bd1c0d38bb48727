"""What a formula may say, checked before anything is evaluated: text in, one-line refusals out.

A formula reaches formulaic, which evaluates each factor as Python. Nothing the user wrote is
evaluated until it has passed `check_factor`: a factor is an expression built only from column
names, numeric constants, arithmetic (``+ - * / // % **``), and calls of the transforms in
`FUNCTIONS` (``np.log`` and friends, ``I``, ``C`` with treatment coding, ``center``, ``scale``,
``standardize``, ``poly``, ``bs``, ``offset``), each with the keywords it documents. Attribute
access beyond ``np.<function>`` and ``contr.treatment``, subscripts, lambdas, comprehensions,
comparisons, dunder names and every other call are refused, naming the piece. The factors are
then evaluated by `model_matrix` in `namespace()` alone: the columns and those functions, not
formulaic's own transforms (which hold all of numpy).

Column names that are not plain identifiers are written in backquotes (`` `my col` ``,
`` `1` ``; a backquote inside is ``\\` ``, a backslash ``\\\\``). `unquote` replaces each by an
identifier alias before formulaic sees the text, so every column can be named.

`term_bound` bounds the number of terms a right-hand side expands to from formulaic's parse
tree, before formulaic expands it (``(x0 + … + x19)**20`` is 2**20 - 1 terms).
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
from formulaic.transforms import TRANSFORMS

from pipeline.core.errors import UserError

MAX_COLUMNS = 2000  # columns (and terms) of one part's design: each is a dense float64 column
_UFUNCS = ("log", "log1p", "log2", "log10", "exp", "expm1", "exp2", "sqrt", "square", "abs")


@dataclass(frozen=True)
class Signature:
    """How a whitelisted function may be called: positional arguments and keyword names."""

    positional: int
    keywords: tuple[str, ...] = ()


# name -> (function, signature). Bare names and `np.<ufunc>`; offset() is the identity here,
# its column is taken out of the design by `formula`.
FUNCTIONS: dict[str, tuple[object, Signature]] = {
    **{f: (getattr(np, f), Signature(1)) for f in _UFUNCS if f not in ("square", "abs")},
    **{f"np.{f}": (getattr(np, f), Signature(1)) for f in _UFUNCS},
    "I": (TRANSFORMS["I"], Signature(1)),
    "offset": (TRANSFORMS["I"], Signature(1)),
    "C": (TRANSFORMS["C"], Signature(2, ("contrasts", "levels"))),
    "Treatment": (TRANSFORMS["Treatment"], Signature(1, ("reference",))),
    "contr.treatment": (TRANSFORMS["contr"].treatment, Signature(1, ("reference",))),
    "center": (TRANSFORMS["center"], Signature(1)),
    "scale": (TRANSFORMS["scale"], Signature(4, ("center", "scale", "ddof"))),
    "standardize": (TRANSFORMS["standardize"], Signature(4, ("center", "rescale", "ddof"))),
    "poly": (TRANSFORMS["poly"], Signature(3, ("degree", "raw"))),
    "bs": (TRANSFORMS["bs"], Signature(
        2, ("df", "knots", "degree", "include_intercept", "lower_bound", "upper_bound")
    )),
}  # fmt: skip
_STRINGS_IN = {"C", "Treatment", "contr.treatment"}  # calls whose arguments may be text
_ARITH = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow)


def namespace() -> dict[str, object]:
    """The only names a checked factor is evaluated with (besides the columns)."""
    ns: dict[str, object] = {k: f for k, (f, _) in FUNCTIONS.items() if "." not in k}
    ns["np"] = SimpleNamespace(**{k[3:]: f for k, (f, _) in FUNCTIONS.items() if k[:3] == "np."})
    ns["contr"] = SimpleNamespace(treatment=FUNCTIONS["contr.treatment"][0])
    return ns


@dataclass(frozen=True)
class Uses:
    """The columns a factor reads: as numbers, and as the first argument of C()."""

    numeric: frozenset[str] = frozenset()
    categorical: frozenset[str] = frozenset()
    offset: bool = False  # the factor is offset(...)
    width: int = 1  # columns its numbers give before levels (poly degree, bs df)


def check_factor(expr: str, part: str) -> Uses:
    """Refuse a factor that is not in the grammar; say which names it reads.

    Args:
        expr: one factor as formulaic hands it over (quoted names already aliased).
        part: "count" or "zero", for the message.

    Returns:
        The names the factor reads as values (columns, checked against the file later).

    Raises:
        UserError: naming the offending piece.
    """
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as err:
        raise UserError(f"{part} part: {_cut(expr)!r} is not an expression ({err.msg})") from None
    walker = _Walker(expr, part)
    walker.visit(tree.body, strings=False)
    top = tree.body
    is_offset = isinstance(top, ast.Call) and _func_name(top.func) == "offset"
    categorical = set()
    if isinstance(top, ast.Call) and _func_name(top.func) == "C":
        first = top.args[0] if top.args else None
        if not isinstance(first, ast.Name):
            raise UserError(f"{part} part: C() takes a column name first, not "
                            f"{_cut(ast.unparse(first) if first else '')!r}")  # fmt: skip
        categorical.add(first.id)
    numeric = walker.names - categorical
    return Uses(frozenset(numeric), frozenset(categorical), is_offset, walker.width)


class _Walker:
    """Walk a factor's syntax tree, allowing only the grammar above."""

    def __init__(self, expr: str, part: str):
        self.expr, self.part = expr, part
        self.names: set[str] = set()
        self.width = 1

    def refuse(self, node: ast.AST, why: str):
        piece = ast.get_source_segment(self.expr.strip(), node) or ast.unparse(node)
        raise UserError(f"{self.part} part: {_cut(piece)!r} in {_cut(self.expr.strip())!r}: "
                        f"{why}")  # fmt: skip

    def visit(self, node: ast.AST, *, strings: bool) -> None:
        if isinstance(node, ast.Name):
            if node.id.startswith("__"):
                self.refuse(node, "names starting with '__' are not allowed "
                            "(write a column of that name in backquotes)")  # fmt: skip
            self.names.add(node.id)
        elif isinstance(node, ast.Constant):
            kinds = (int, float, str) if strings else (int, float)
            if type(node.value) not in kinds:
                self.refuse(
                    node,
                    "only numbers are allowed here"
                    + (", and text as an argument of C()" if not strings else ""),
                )
        elif isinstance(node, ast.BinOp) and isinstance(node.op, _ARITH):
            if isinstance(node.op, ast.Pow) and _constant(node.left) and _constant(node.right):
                self.refuse(node, "a power of constants; write its value")
            self.visit(node.left, strings=False)
            self.visit(node.right, strings=False)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            self.visit(node.operand, strings=False)
        elif isinstance(node, (ast.List, ast.Tuple)) and strings:
            for item in node.elts:
                if not isinstance(item, ast.Constant):
                    self.refuse(item, "a list may hold only numbers and text")
                self.visit(item, strings=True)
        elif isinstance(node, ast.Call):
            self.call(node)
        else:
            what = type(node).__name__
            self.refuse(
                node,
                f"{what} is not allowed in a formula (allowed: column names, "
                "numbers, + - * / ** and the functions " + _function_list() + ")",
            )

    def call(self, node: ast.Call) -> None:
        name = _func_name(node.func)
        if name not in FUNCTIONS:
            self.refuse(node.func, "not a function a formula may call; allowed: "
                        + _function_list())  # fmt: skip
        sig = FUNCTIONS[name][1]
        if len(node.args) > sig.positional or any(isinstance(a, ast.Starred) for a in node.args):
            self.refuse(node, f"{name}() takes at most {sig.positional} positional argument(s)")
        for kw in node.keywords:
            if kw.arg not in sig.keywords:
                allowed = ", ".join(sig.keywords) or "none"
                self.refuse(node, f"{name}() has no keyword {kw.arg or '**'!r} "
                            f"(allowed: {allowed})")  # fmt: skip
        strings = name in _STRINGS_IN
        for arg in [*node.args, *(kw.value for kw in node.keywords)]:
            self.visit(arg, strings=strings)
        if name in ("poly", "bs"):
            ints = [a.value for a in ast.walk(node) if isinstance(a, ast.Constant)
                    and isinstance(a.value, (int, float))]  # fmt: skip
            self.width *= max(3, *map(int, ints)) if ints else 3


def _func_name(func: ast.AST) -> str:
    """``log``, ``np.log`` or ``contr.treatment``; "" for anything else."""
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return f"{func.value.id}.{func.attr}"
    return ""


def _constant(node: ast.AST) -> bool:
    """Whether `node` is built from numbers only (no column)."""
    return all(not isinstance(n, ast.Name) for n in ast.walk(node))


def _function_list() -> str:
    return " ".join(k for k in FUNCTIONS if not k.startswith("np.")) + " np.log etc."


def unquote(
    rhs: str, reserved: set[str], part: str, aliases: dict[str, str]
) -> tuple[str, dict[str, str]]:
    """Replace each backquoted name in `rhs` by an identifier alias.

    Args:
        rhs: one side of the formula; ``\\``` and ``\\\\`` escape a backquote and a backslash
            inside backquotes. Quotes of Python text (``'…'``, ``"…"``) are left alone.
        reserved: names an alias must not take (the file's columns).
        part: "count" or "zero", for the message.
        aliases: {alias: column name} already given (kept: the same name, the same alias).

    Returns:
        (the text with aliases, {alias: column name} extended).

    Raises:
        UserError: a backquote left open or an empty name.
    """
    aliases = dict(aliases)
    names = {name: alias for alias, name in aliases.items()}
    out, i, quote = [], 0, ""
    while i < len(rhs):
        ch = rhs[i]
        if quote:
            out.append(ch)
            if ch == "\\" and i + 1 < len(rhs):
                out.append(rhs[i + 1])
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
            out.append(ch)
        elif ch == "`":
            name, i = _quoted(rhs, i + 1, part)
            if name not in names:
                alias, k = f"_col{len(names)}", 0  # a valid identifier, not a dunder
                while alias in reserved or alias in aliases:
                    k += 1
                    alias = f"_col{len(names)}_{k}"
                names[name], aliases[alias] = alias, name
            out.append(f" {names[name]} ")
        else:
            out.append(ch)
        i += 1
    return "".join(out).strip(), aliases


def _quoted(rhs: str, i: int, part: str) -> tuple[str, int]:
    """The name in backquotes starting at `rhs[i]`, and the index of its closing backquote."""
    name = []
    while i < len(rhs) and rhs[i] != "`":
        if rhs[i] == "\\" and i + 1 < len(rhs) and rhs[i + 1] in "`\\":
            i += 1
        name.append(rhs[i])
        i += 1
    if i == len(rhs):
        raise UserError(f"{part} part {_cut(rhs)!r}: a backquote is not closed")
    if not name:
        raise UserError(f"{part} part {_cut(rhs)!r}: empty name in backquotes")
    return "".join(name), i


def read_quoted(text: str) -> str | None:
    """The name if `text` is exactly one backquoted name, else None."""
    if not text.startswith("`"):
        return None
    try:
        name, end = _quoted(text, 1, "response")
    except UserError:
        return None
    return name if end == len(text) - 1 else None


def quote(name: str) -> str:
    """How a column is written in a formula: as is if an identifier, else in backquotes."""
    if name.isidentifier() and not name.startswith("__"):
        return name
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def term_bound(node, dot: int) -> int:
    """An upper bound on the terms formulaic's parse tree `node` expands to, capped.

    Args:
        node: formulaic's ASTNode (operator and args) or Token (one factor).
        dot: the number of columns ``.`` stands for.

    Returns:
        At most `MAX_COLUMNS` + 1 (anything above is refused alike).
    """
    cap = MAX_COLUMNS + 1
    if not hasattr(node, "operator"):
        return 1
    symbol = node.operator.symbol
    if symbol == ".":
        return min(max(dot, 1), cap)
    args = [term_bound(a, dot) for a in node.args]
    if symbol == "**" and len(node.args) == 2:
        try:
            power = int(str(node.args[1]))
        except ValueError:
            return args[0]  # formulaic refuses a power that is not an integer
        return min(sum(math.comb(args[0], k) for k in range(1, min(power, args[0]) + 1)), cap)
    if symbol in ("+", "|") or (symbol == "-" and len(args) == 1):
        return min(sum(args), cap)
    if symbol == "-":
        return args[0]
    if symbol == ":":
        return min(math.prod(args), cap)
    return min(math.prod(a + 1 for a in args) - 1, cap)  # *, /, %in%: every product of terms


def _cut(text: str, width: int = 80) -> str:
    """`text` cut to `width` characters."""
    return text if len(text) <= width else text[: width - 1] + "…"
