"""Tests of `pipeline.store.formula`: a ZIP-regression formula and file into y, X and Z.

Designs are checked against matrices written out by hand (treatment coding: the first level
is the reference and has no column; the intercept comes first); every bad input must be a
one-line `UserError` naming the problem.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline.core.errors import UserError
from pipeline.store.formula import build_design, read_design, split_formula
from pipeline.store.formula_checks import MAX_LEVELS

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fish_caught.csv"
Y = [0, 1, 3, 0, 2, 5, 0, 1, 4, 0, 2, 1]
X = [0.5, 1.5, 2.0, 3.5, 1.0, 2.5, 4.0, 0.8, 3.0, 1.2, 2.2, 5.0]
B = [0, 1, 1, 0, 1, 0, 1, 0, 0, 1, 1, 0]
G = ["a", "b", "c", "a", "b", "c", "a", "c", "b", "a", "c", "b"]


@pytest.fixture
def table(tmp_path) -> Path:
    """A CSV with a count, a number, a 0/1 column, strings, a constant and a copy of x."""
    frame = pl.DataFrame({"y": Y, "x": X, "b": B, "g": G, "k": [7] * 12, "x2": [2 * v for v in X]})
    frame.write_csv(tmp_path / "t.csv")
    return tmp_path / "t.csv"


def _dummies(levels: list[str]) -> np.ndarray:
    return np.array([[g == level for level in levels] for g in G], dtype=float)


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("y ~ a + b | c", ("y", "a + b", "c")),
        ("  y~a+b  ", ("y", "a+b", "a+b")),
        ("visits ~ x | 1", ("visits", "x", "1")),
        ("y ~ I(a | b) + C(g, levels=['x|y']) | c", ("y", "I(a | b) + C(g, levels=['x|y'])", "c")),
        ("`my y` ~ x", ("my y", "x", "x")),
        ("n.fish ~ x - 1 | 0 + x", ("n.fish", "x - 1", "0 + x")),
    ],
)
def test_split_formula(text, parts):
    assert split_formula(text) == parts


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("y x", "needs '~'"),
        ("y ~ a ~ b", "more than one '~'"),
        ("y ~ a | b | c", "more than one '|'"),
        ("~ x", "nothing before '~'"),
        ("y ~ ", "nothing after '~'"),
        ("y ~ | z", "nothing after '~'"),
        ("y ~ a |  ", "nothing after '|'"),
        ("np.log(y) ~ x", "must be a column name"),
        ("y + z ~ x", "must be a column name"),
    ],
)
def test_split_formula_rejects_bad_shapes(text, word):
    with pytest.raises(UserError, match=word):
        split_formula(text)


def test_numeric_binary_and_string_columns_by_hand(table):
    d = read_design(table, "y ~ x + b + g | g")
    assert d.response == "y" and d.formula == "y ~ x + b + g | g"
    assert d.x_names == ("intercept", "x", "b", "g[T.b]", "g[T.c]")
    assert d.z_names == ("intercept", "g[T.b]", "g[T.c]")
    ones = np.ones((12, 1))
    assert np.array_equal(d.X, np.hstack([ones, np.c_[X, B], _dummies(["b", "c"])]))
    assert np.array_equal(d.Z, np.hstack([ones, _dummies(["b", "c"])]))
    assert d.y.dtype == np.int64 and d.y.tolist() == Y
    assert d.X.dtype == d.Z.dtype == np.float64
    assert (d.rows, d.dropped) == (12, 0)


def test_interactions_and_transforms(table):
    d = read_design(table, "y ~ x * b + np.log(x) + I(x**2) | center(x) + g:b")
    assert d.x_names == ("intercept", "x", "b", "np.log(x)", "I(x ** 2)", "x:b")
    x, b = np.array(X), np.array(B, dtype=float)
    assert np.allclose(d.X[:, 1:], np.c_[x, b, np.log(x), x**2, x * b])
    assert d.z_names == ("intercept", "center(x)", "g[a]:b", "g[b]:b", "g[c]:b")
    assert np.allclose(d.Z[:, 1], x - x.mean())
    assert np.array_equal(d.Z[:, 2:], _dummies(["a", "b", "c"]) * b[:, None])


def test_minus_one_or_plus_zero_removes_the_intercept(table):
    d = read_design(table, "y ~ x - 1 | 0 + g")
    assert d.x_names == ("x",) and np.array_equal(d.X[:, 0], X)
    # Without an intercept, every level of a string column has its own column.
    assert d.z_names == ("g[a]", "g[b]", "g[c]")
    assert np.array_equal(d.Z, _dummies(["a", "b", "c"]))


def test_where_selects_rows(table):
    d = read_design(table, "y ~ x | 1", where="b = 1 AND x > 1")
    keep = [i for i in range(12) if B[i] == 1 and X[i] > 1]
    assert d.rows == len(keep) and d.dropped == 0
    assert d.y.tolist() == [Y[i] for i in keep]
    assert np.array_equal(d.X[:, 1], [X[i] for i in keep])


def test_rows_with_missing_regressors_are_dropped_and_counted(tmp_path):
    path = tmp_path / "m.csv"
    body = "y,x,g,unused\n0,1.0,a,\n1,NA,b,1\n2,3.0,,1\n3,2.5,b,\n0,0.5,a,1\n4,4.0,b,1\n1,2.0,a,1\n"
    path.write_text(body)
    d = read_design(path, "y ~ x + g | 1")
    assert (d.rows, d.dropped) == (7, 2)
    assert d.y.tolist() == [0, 3, 0, 4, 1]
    assert np.array_equal(d.X, [[1, 1.0, 0], [1, 2.5, 1], [1, 0.5, 0], [1, 4.0, 1], [1, 2.0, 0]])


def test_parquet_and_build_design_agree_with_csv(table, tmp_path):
    frame = pl.read_csv(table)
    frame.write_parquet(tmp_path / "t.parquet")
    formula = "y ~ x + g | b"
    ref = read_design(table, formula)
    for d in (read_design(tmp_path / "t.parquet", formula), build_design(frame, formula)):
        assert d.x_names == ref.x_names and d.z_names == ref.z_names
        assert np.array_equal(d.X, ref.X) and np.array_equal(d.Z, ref.Z)
        assert np.array_equal(d.y, ref.y) and d.rows == 12


def test_shipped_fish_example():
    d = read_design(EXAMPLE, "count ~ camper + persons | persons")
    fish = pl.read_csv(EXAMPLE)
    assert d.x_names == ("intercept", "camper", "persons")
    assert d.z_names == ("intercept", "persons")
    assert d.X.shape == (fish.height, 3) and d.Z.shape == (fish.height, 2)
    assert np.array_equal(d.y, fish["count"].to_numpy())
    assert np.array_equal(d.X[:, 1:], fish.select("camper", "persons").to_numpy())
    assert (d.rows, d.dropped) == (fish.height, 0)


@pytest.mark.parametrize(
    ("formula", "where", "words"),
    [
        ("y ~ x +* (", None, "count part 'x +* (': Operator `+*`"),
        ("y ~ x | b + (", None, "zero part"),
        ("y ~ x + nope", None, "no column 'nope' (in the count part); available: 'y', 'x'"),
        ("y ~ x | center(nope)", None, "no column 'nope' (in the zero part)"),
        ("visits ~ x", None, "no column 'visits' (the response)"),
        ("y ~ np.log(g)", None, "count part: Unable to evaluate factor `np.log(g)`"),
        ("y ~ x + k", None, "count part: column 'k' is constant (7 in all 12 rows)"),
        ("y ~ x | b", "b = 1", "zero part: column 'b' is constant (1 in all 6 rows)"),
        ("y ~ x + x2 + b", None, "count part: columns 'x', 'x2' are collinear ('x2' is a comb"),
        ("y ~ x | x + I(2 * x + 1)", None, "zero part: columns 'intercept', 'x', 'I(2 * x + 1)'"),
        ("y ~ g * b | 1", "x < 2.1", "6 rows for 7 parameters (6 count, 1 zero)"),
        ("y ~ 0", None, "the count part has no columns"),
        ("y ~ x | -1", None, "the zero part has no columns"),
        (
            "y ~ np.log(x - 1)",
            None,
            "'np.log(x - 1)' has 3 non-finite value(s), first at row 1 (nan)",
        ),
        ("y ~ x", "x > 99", "no rows after --where 'x > 99'"),
    ],
)
def test_bad_formulas_are_one_line_user_errors(table, formula, where, words):
    with pytest.raises(UserError, match=re.escape(words)) as err:
        read_design(table, formula, where=where)
    assert "\n" not in str(err.value) and str(err.value).startswith(str(table))


@pytest.mark.parametrize(
    ("ys", "words"),
    [
        (["1", "-2", "0", "-1"], "6 negative value(s), first at row 2 (-2)"),
        (["1", "2.5", "0", "3"], "3 non-integer value(s), first at row 2 (2.5)"),
        (["1", "0", "lots", "x"], "6 non-numeric value(s), first at row 3 ('lots')"),
        (["1", "NA", "0", "2"], "3 missing value(s), first at row 2; counts must be"),
        (["1", "inf", "0", "2"], "3 infinite value(s), first at row 2 (inf)"),
    ],
)
def test_bad_responses_name_the_first_bad_row(tmp_path, ys, words):
    path = tmp_path / "r.csv"
    path.write_text("y,x\n" + "".join(f"{y},{i}\n" for i, y in enumerate(ys * 3)))
    with pytest.raises(UserError, match=f"response 'y': {re.escape(words)}"):
        read_design(path, "y ~ x")


def test_all_rows_missing_or_too_many_levels_are_errors():
    frame = pl.DataFrame(
        {"y": [0, 1, 2], "x": [None, None, None]}, schema_overrides={"x": pl.Float64}
    )
    with pytest.raises(UserError, match="every one of the 3 rows has a missing value in 'x'"):
        build_design(frame, "y ~ x")
    n = MAX_LEVELS + 1
    ids = pl.DataFrame({"y": [1] * n, "id": [f"p{i}" for i in range(n)]})
    with pytest.raises(UserError, match=f"column 'id' has {n} distinct values"):
        build_design(ids, "y ~ id")
    with pytest.raises(UserError, match="no rows to fit"):
        build_design(ids.head(0), "y ~ id")
