"""Tests of `pipeline.store.formula_grammar`: what a formula may say, checked before evaluation.

Property tests draw formulas from a grammar of allowed and forbidden pieces: an allowed formula
gives a design or one line; a forbidden one is refused by `check_formula` (which reads no data)
and never runs: its sentinel file is never written and `builtins.__import__` is not called
while it is checked. The examples are few (CI time); the grammar covers every kind of piece.
"""

from __future__ import annotations

import builtins

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.core.errors import UserError
from pipeline.store.formula import build_design, check_formula
from pipeline.store.formula_grammar import (
    MAX_COLUMNS,
    check_factor,
    quote,
    read_quoted,
    term_bound,
    unquote,
)

RNG = np.random.default_rng(7)
N = 40
FRAME = pl.DataFrame(
    {
        "y": RNG.poisson(2.0, N),
        "x": RNG.normal(size=N),
        "e": RNG.uniform(0.5, 3.0, N),
        "k": RNG.integers(0, 5, N),
        "g": RNG.choice(["a", "b", "c"], N),
        "1": RNG.normal(size=N),
    }
)
ALLOWED = [
    "x", "e", "k", "g", "`1`", "np.log(e)", "log1p(e)", "sqrt(e)", "np.exp(x)", "I(x ** 2)",
    "I(2 * x - e / 3)", "center(x)", "scale(e)", "standardize(x)", "C(g)", "C(k)",
    "C(g, Treatment('b'))", "C(g, contr.treatment('c'))", "C(g, levels=['c', 'b', 'a'])",
    "poly(x, 2)", "bs(e, df=4)", "x:g", "offset(np.log(e))", "offset(log(e))", "{x + e}",
]  # fmt: skip
SENTINEL = "SENTINEL_PATH"
FORBIDDEN = [
    "I(__import__('os').system('touch SENTINEL_PATH'))",
    "{__import__('os').system('touch SENTINEL_PATH')}",
    "I(open('SENTINEL_PATH', 'w'))",
    "I((lambda: open('SENTINEL_PATH', 'w'))())",
    "I([open('SENTINEL_PATH', 'w') for _ in x])",
    'I(exec(\'open("SENTINEL_PATH", "w")\') or x)',
    "I(eval('1'))",
    "I(getattr(x, 'sum'))",
    "I(x.__class__)",
    "I(x[0])",
    "I(x if x else e)",
    "I(x > 0)",
    "np.os.system('touch SENTINEL_PATH')",
    "np.log(x).real",
    "I(globals())",
    "contr.__class__(g)",
    "log(x, x)",
    "C(g, levels=[open('SENTINEL_PATH', 'w')])",
    "I(__builtins__)",
    "I(2 ** 10 ** 10)",
    "np.log(x, out=x)",
    "I({'a': 1})",
    "I(f'{x}')",
    "C(I(x))",
]


def _rhs(pieces: list[str]) -> str:
    return " + ".join(pieces)


formulas_allowed = st.lists(st.sampled_from(ALLOWED), min_size=1, max_size=4).map(_rhs)


@st.composite
def formulas_forbidden(draw):
    """An allowed right-hand side with one forbidden piece somewhere, in either part."""
    pieces = draw(st.lists(st.sampled_from(ALLOWED), min_size=0, max_size=3))
    bad = draw(st.sampled_from(FORBIDDEN))
    pieces.insert(draw(st.integers(0, len(pieces))), bad)
    other = draw(st.lists(st.sampled_from(ALLOWED), min_size=1, max_size=2))
    sides = [_rhs(pieces), _rhs(other)]
    if draw(st.booleans()):
        sides.reverse()
    return f"y ~ {sides[0]} | {sides[1]}"


@settings(max_examples=40, deadline=None)
@given(count=formulas_allowed, zero=formulas_allowed)
def test_allowed_formulas_fit_or_fail_with_one_line(count, zero):
    formula = f"y ~ {count} | {zero}"
    check_formula(formula)
    try:
        d = build_design(FRAME, formula)
    except UserError as err:  # e.g. collinear or too many columns for 40 rows
        assert "\n" not in str(err)
        return
    assert d.X.shape[0] == d.Z.shape[0] == N and np.isfinite(d.X).all()
    for part, offset in (("count", d.count_offset), ("zero", d.zero_offset)):
        side = count if part == "count" else zero
        distinct = {p for p in side.split(" + ") if p.startswith("offset(")}  # terms are a set
        expected = np.log(FRAME["e"].to_numpy()) * len(distinct)
        assert np.allclose(offset, expected, rtol=1e-12, atol=0)
    assert not any("offset" in n for n in d.x_names + d.z_names)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(formula=formulas_forbidden())
def test_forbidden_formulas_never_run(tmp_path, monkeypatch, formula):
    sentinel = tmp_path / "pwned"
    formula = formula.replace(SENTINEL, str(sentinel))
    calls = []
    real_import = builtins.__import__

    def spy(name, globals=None, *args, **kwargs):
        # Imports by modules (formulaic's lazy ones) name their module; evaluated text doesn't.
        if not (globals or {}).get("__name__"):
            calls.append(name)
        return real_import(name, globals, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(builtins, "__import__", spy)
        with pytest.raises(UserError) as err:
            check_formula(formula)
    assert calls == [] and "\n" not in str(err.value)
    with pytest.raises(UserError):
        build_design(FRAME, formula)
    assert not sentinel.exists()


@pytest.mark.parametrize(
    ("expr", "words"),
    [
        ("I(__import__('os').system('id'))", "__import__('os').system\" in"),
        ("I(x.__class__)", "'x.__class__' in"),
        ("I(x[0])", "Subscript is not allowed"),
        ("I((lambda: 1)())", "'lambda: 1' in"),
        ("I(__builtins__)", "names starting with '__' are not allowed"),
        ("I(x ** 10 ** 9)", "'10 ** 9' in 'I(x ** 10 ** 9)': a power of constants"),
        ("I('a' * 10)", "only numbers are allowed here"),
        ("np.log(x, x)", "log() takes at most 1 positional"),
        ("np.log(x, out=x)", "np.log() has no keyword 'out'"),
        ("np.log(x=x)", "np.log() has no keyword 'x'"),
        ("C(np.log(x))", "C() takes a column name first"),
    ],
)
def test_check_factor_names_the_offending_piece(expr, words):
    with pytest.raises(UserError, match=r"^count part: ") as err:
        check_factor(expr, "count")
    assert words in str(err.value)


def test_check_factor_says_what_a_factor_reads():
    uses = check_factor("C(g, Treatment('b'))", "zero")
    assert (uses.numeric, uses.categorical, uses.offset) == (frozenset(), {"g"}, False)
    uses = check_factor("offset(np.log(t) + 2 * u)", "count")
    assert (uses.numeric, uses.offset) == ({"t", "u"}, True)
    assert check_factor("poly(x, 5)", "count").width == 5


@pytest.mark.parametrize("name", ["1", "a b", "a`b", "back\\slash", "__formula_row", "x"])
def test_quote_and_unquote_reach_every_name(name):
    text, aliases = unquote(f"{quote(name)} + np.log({quote(name)})", set(), "count", {})
    if name.isidentifier() and not name.startswith("__"):
        assert text == f"{name} + np.log({name})" and aliases == {}
    else:
        (alias,) = aliases
        assert aliases[alias] == name and text == f"{alias}  + np.log( {alias} )"
        assert read_quoted(quote(name)) == name


def test_unquote_keeps_aliases_apart_from_columns_and_text():
    text, aliases = unquote("`a b` + C(g, levels=['`x`'])", {"_col0"}, "zero", {})
    assert aliases == {"_col0_1": "a b"} and "levels=['`x`']" in text
    with pytest.raises(UserError, match="a backquote is not closed"):
        unquote("`a b + x", set(), "zero", {})


def test_term_bound_before_expansion():
    from formulaic.parser import DefaultFormulaParser

    def bound(rhs, dot=1):
        return term_bound(DefaultFormulaParser().get_ast(rhs), dot)

    assert bound("a + b + c") == 4  # with the intercept
    assert bound("(a + b + c)**2") == 1 + 6
    assert bound("a * b") == 1 + 3 and bound("a:b - a") == 2
    wide = "(" + " + ".join(f"x{i}" for i in range(20)) + ")**20"
    assert bound(wide) == MAX_COLUMNS + 1  # 2**20 - 1 terms, capped: never computed
    assert bound(". + x", dot=7) == 1 + 7 + 1
