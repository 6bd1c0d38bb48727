"""Random intercepts in a formula (`store.formula.random_intercepts`, `read_design`): which
part carries them, the formula left for the fixed effects, the grouping column's values, and
the refusals (one `UserError` line each)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pipeline.core.errors import UserError
from pipeline.store.formula import RandomTerms, build_design, random_intercepts


@pytest.mark.parametrize(
    ("formula", "want"),
    [
        ("y ~ x + (1|g) | z", RandomTerms("y ~ x | z", "g", ("count",))),
        ("y ~ x | z + ( 1 | g )", RandomTerms("y ~ x | z ", "g", ("zero",))),
        ("y ~ x + (1|g) | 1 + (1|g)", RandomTerms("y ~ x | 1 ", "g", ("count", "zero"))),
        ("y ~ x + (1|g)", RandomTerms("y ~ x ", "g", ("count", "zero"))),  # shared side
        ("y ~ x + (1|`my group`)", RandomTerms("y ~ x ", "my group", ("count", "zero"))),
        ("y ~ x | z", RandomTerms("y ~ x | z", None, ())),
        ("y ~ I((x > 1) | (z > 2))", RandomTerms("y ~ I((x > 1) | (z > 2))", None, ())),
    ],
)
def test_random_intercepts_are_taken_out_of_their_part(formula, want):
    assert random_intercepts(formula) == want


@pytest.mark.parametrize(
    ("formula", "fragment"),
    [
        ("y ~ x + (x | g)", "only random intercepts"),
        ("y ~ x + (0 | g)", "only random intercepts"),
        ("y ~ x + (1 || g)", "only random intercepts"),
        ("y ~ (1 | g)", "has only its random intercept"),
        ("y ~ x + (1|g) + (1|g)", "2 random intercepts"),
        ("y ~ x + (1|g) | z + (1|h)", "give one grouping column"),
    ],
)
def test_other_bracketed_bars_are_refused(formula, fragment):
    with pytest.raises(UserError, match=fragment.replace("|", r"\|")):
        random_intercepts(formula)


def test_the_design_carries_the_groups_and_drops_rows_missing_them():
    frame = pl.DataFrame({"y": [0, 1, 2, 0, 3, 1], "x": [0.1, 0.5, 0.2, 0.9, 0.3, 0.4],
                          "g": ["a", "a", None, "b", "b", "c"]})  # fmt: skip
    d = build_design(frame, "y ~ x + (1|g)")
    assert d.group_column == "g" and d.random == ("count", "zero")
    assert list(d.groups) == ["a", "a", "b", "b", "c"] and d.dropped == 1
    assert d.x_names == ("intercept", "x") and len(d.y) == 5
    with pytest.raises(UserError, match="no column 'h'"):
        build_design(frame, "y ~ x + (1|h)")
    assert build_design(frame.drop("g"), "y ~ x").groups is None
    np.testing.assert_array_equal(build_design(frame, "y ~ x | 1 + (1|g)").X[:, 1],
                                  [0.1, 0.5, 0.9, 0.3, 0.4])  # fmt: skip
