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


def test_formula_code_is_refused_before_the_file_is_read(tmp_path, monkeypatch):
    # Issue 21 reproduction 1: this ran `id` and fitted the model.
    monkeypatch.chdir(tmp_path)
    formula = "count ~ persons + I(__import__('os').system('id > pwned-x') + persons**2)"
    with pytest.raises(UserError, match="not a function a formula may call"):
        read_design(tmp_path / "absent.csv", formula)  # refused before the file is opened
    with pytest.raises(UserError, match="not a function a formula may call"):
        read_design(EXAMPLE, formula)
    leak = "count ~ I(int(open('/etc/hostname').read()))"
    with pytest.raises(UserError, match="'int' in") as err:
        read_design(EXAMPLE, leak)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "pwned-x").exists()


def test_integer_columns_enter_arithmetic_as_float64():
    # Issue 21 reproduction 7: int64 millisecond epochs squared wrapped to +-9e18.
    t = 1_600_000_000_000 + np.arange(12, dtype=np.int64) * 86_400_000
    frame = pl.DataFrame({"y": Y, "t": t, "x": X})
    d = build_design(frame, "y ~ I(t**2) + x | 1")
    assert np.array_equal(d.X[:, 1], t.astype(np.float64) ** 2)
    with pytest.raises(UserError, match=r"'10 \*\* 9' in 'I\(t \*\* 10 \*\* 9\)': a power"):
        build_design(frame, "y ~ I(t**10**9)")
    with pytest.raises(UserError, match=r"column 'I\(t \*\* 40.0\)' has 12 non-finite value"):
        build_design(frame, "y ~ I(t**40.0)")


def test_integer_categoricals_have_the_level_cap():
    # Issue 21 reproduction 11: C(id) on 3,000 integer levels ran for minutes.
    n = 3 * MAX_LEVELS
    frame = pl.DataFrame({"y": [i % 3 for i in range(n)], "id": list(range(n))})
    with pytest.raises(UserError, match=f"column 'id' has {n} distinct values"):
        build_design(frame, "y ~ C(id)")
    d = build_design(frame.head(30).with_columns(pl.col("id") % 4), "y ~ C(id) | 1")
    assert d.x_names == ("intercept", "C(id)[T.1]", "C(id)[T.2]", "C(id)[T.3]")


def test_wide_expansions_are_refused_before_expanding():
    # Issue 21 reproduction 18: (x0 + ... + x19)**20 expanded for minutes.
    frame = pl.DataFrame({"y": Y, **{f"x{i}": X for i in range(20)}})
    wide = "y ~ (" + " + ".join(f"x{i}" for i in range(20)) + ")**20"
    with pytest.raises(UserError, match="expands to more than 2000 terms"):
        build_design(frame, wide)
    levels = pl.DataFrame({"y": [1] * 3000, "a": [f"a{i % 60}" for i in range(3000)],
                           "b": [f"b{i // 50}" for i in range(3000)]})  # fmt: skip
    with pytest.raises(UserError, match="the count part would have up to 3721 columns"):
        build_design(levels, "y ~ a * b | 1")


def test_every_column_is_reachable_by_a_quoted_name(tmp_path):
    # Issue 21 reproduction 17: a column `1` was dropped, `__formula_row` broke --formula,
    # a backquote in a name could not be written.
    frame = pl.DataFrame({"y": Y, "1": X, "__formula_row": B, "a`b": [2 * v for v in B[::-1]]})
    frame.write_csv(tmp_path / "odd.csv")
    d = read_design(tmp_path / "odd.csv", r"y ~ `1` + __formula_row | `a\`b`")
    assert d.x_names == ("intercept", "`1`", "__formula_row")
    assert np.array_equal(d.X[:, 1:], np.c_[X, B]) and d.z_names == ("intercept", r"`a\`b`")
    assert np.array_equal(d.Z[:, 1], [2 * v for v in B[::-1]])
    assert read_design(tmp_path / "odd.csv", "y ~ . | 1").x_names[1:] == (
        "`1`", "`__formula_row`", r"`a\`b`"
    )  # fmt: skip
    with pytest.raises(UserError, match="response 'y': 7 non-integer value.s., first at row 1"):
        build_design(frame.with_columns(y=pl.col("1")), "y ~ __formula_row")


def test_offsets_are_vectors_not_coefficients(table):
    d = read_design(table, "y ~ x + offset(np.log(x)) | b + offset(log(x)) + offset(x)")
    assert d.x_names == ("intercept", "x") and d.z_names == ("intercept", "b")
    x = np.array(X)
    assert np.allclose(d.count_offset, np.log(x), rtol=1e-15, atol=0)
    assert np.allclose(d.zero_offset, np.log(x) + x, rtol=1e-15, atol=0)
    plain = read_design(table, "y ~ x | b")
    assert np.array_equal(plain.count_offset, np.zeros(12))
    assert np.array_equal(plain.zero_offset, np.zeros(12))
    with pytest.raises(UserError, match=r"zero part: offset 'offset\(np.log\(b\)\)' has 6 non-f"):
        read_design(table, "y ~ x | offset(np.log(b))")
    with pytest.raises(UserError, match="an offset.. is a term of its own"):
        read_design(table, "y ~ x + offset(x):b")
