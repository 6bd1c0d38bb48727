"""`thin` (metric histories within MLflow's budget) and `flatten` (nested config as params)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.tracking.values import finite, flatten, param, redact, thin


# -- thin and flatten --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "n, max_points, expected",
    [
        (10, 4, [0, 3, 6, 9]),
        (51, 6, [0, 10, 20, 30, 40, 50]),
        (5, 5, [0, 1, 2, 3, 4]),
        (3, 10, [0, 1, 2]),
        (101, 2, [0, 100]),
    ],
)
def test_thin_examples(n, max_points, expected):
    steps = np.arange(n) * 10
    values = np.linspace(1.0, 0.0, n)
    kept_steps, kept_values = thin(steps, values, max_points)
    assert kept_steps.tolist() == [10 * i for i in expected]
    np.testing.assert_array_equal(kept_values, values[expected])


@pytest.mark.parametrize("n", [2, 3, 7, 50, 99, 100, 101, 1000])
@pytest.mark.parametrize("max_points", [2, 3, 10, 100])
def test_thin_keeps_ends_and_spreads_at_most_max_points(n, max_points):
    steps = np.arange(n) * 7 + 3
    kept, values = thin(steps, steps.astype(float) ** 0.5, max_points)
    assert len(kept) == min(n, max_points)
    assert kept[0] == steps[0] and kept[-1] == steps[-1]
    np.testing.assert_array_equal(values, kept**0.5)  # values stay with their steps
    gaps = np.diff(kept) // 7
    assert (gaps >= 1).all() and gaps.max() - gaps.min() <= 1  # evenly spread


def test_thin_drops_non_finite_points_before_choosing():
    steps = np.arange(8)
    values = np.array([np.nan, 1.0, 2.0, np.inf, 4.0, -np.inf, 6.0, np.nan])
    kept, kept_values = thin(steps, values, 10)
    assert kept.tolist() == [1, 2, 4, 6] and kept_values.tolist() == [1.0, 2.0, 4.0, 6.0]
    kept, kept_values = thin(steps, values, 2)
    assert kept.tolist() == [1, 6] and kept_values.tolist() == [1.0, 6.0]
    kept, kept_values = thin(steps, np.full(8, np.nan), 5)
    assert len(kept) == 0 and len(kept_values) == 0


def test_flatten_joins_nested_keys_with_dots():
    config = {
        "seed": 0,
        "data": {"n": 500, "scenarios": [{"name": "blog", "pi": 0.5}]},
        "fit": {"max_steps": 60, "adam": {"betas": (0.9, 0.999)}},
        "tune": {},
    }
    assert flatten(config) == {
        "seed": 0,
        "data.n": 500,
        "data.scenarios.blog.pi": 0.5,  # a list of named mappings: by name
        "fit.max_steps": 60,
        "fit.adam.betas": (0.9, 0.999),
    }
    assert flatten({"a": {"b": 1}}, prefix="params.") == {"params.a.b": 1}


def test_param_is_text_within_mlflows_limit_and_finite_filters_metrics():
    assert param("abc") == "abc" and param(0.1) == "0.1" and len(param("x" * 7000)) == 6000
    assert [finite(v) for v in (1, 2.5, float("nan"), float("inf"), None, "x")] == [
        True, True, False, False, False, False]  # fmt: skip


def test_redact_hides_passwords_only():
    assert redact("postgresql://user:secret@db/x") == "postgresql://user:***@db/x"
    assert redact("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


def test_flatten_names_list_items_by_index_without_distinct_names_and_cleans_keys():
    config = {"s": [{"name": "a", "x": 1}, {"name": "a", "x": 2}], "c": {"health[poor]": 0.6},
              "grid": [0.1, 1.0]}  # fmt: skip
    assert flatten(config) == {"s.0.name": "a", "s.0.x": 1, "s.1.name": "a", "s.1.x": 2,
                               "c.health_poor_": 0.6, "grid": [0.1, 1.0]}  # fmt: skip
