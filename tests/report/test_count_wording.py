"""`report.count_wording`: cells that stay readable numbers, the trust notes, strict JSON and
flat MLflow metrics (the whole report's text: tests/report/test_count_report.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pipeline.report import count_wording as w


@pytest.mark.parametrize(
    "p, log10_p, cell",
    [(0.0342, None, "0.0342"), (1.0, None, "1"), (None, None, "n/a"), (math.nan, None, "n/a"),
     (0.0, -412.36, "4.4e-413"), (0.0, -99.999, "1.0e-100"), (0.0, None, "< 1e-300"),
     (0.0, -math.inf, "< 1e-300"), (0.0, -123456.2, "<1e-99999")],
)  # fmt: skip
def test_a_p_cell_is_a_short_readable_number(p, log10_p, cell):
    assert w.p_cell(p, log10_p) == cell
    assert len(cell) <= w.P_WIDTH


def test_a_p_below_the_float_range_is_read_from_its_log10():
    """The review's 16641.5710^-17800.8: a chi-square tail far below 1e-300 glued to the next
    column. Its log10 gives the cell (chi2 with 2 df: sf = exp(-x/2) exactly); one token."""
    log10_p = -82000.0 / 2 / math.log(10)
    cell = w.p_cell(0.0, log10_p)
    assert cell == f"{10 ** (log10_p % 1):.1f}e{math.floor(log10_p)}" and " " not in cell
    assert w.p_text(0.0, log10_p) == f"p = {cell}"
    assert w.p_text(0.0) == "p < 1e-300"


def test_a_number_too_wide_for_its_column_gets_three_digits():
    assert w.num_cell(12.5, ".2f", 8) == "   12.50"
    assert w.num_cell(16641.571, ".4f", 10) == "  1.66e+04"
    assert w.num_cell(math.inf, ".2f", 6) == "   n/a" and w.num_cell(None, ".2f", 4) == " n/a"


def test_the_small_sample_warning_follows_the_floor():
    from pipeline.core.inference.asymptotics import sample_size_floor

    floor = sample_size_floor(2)
    assert w.small_sample_warning(floor, 2) == ""
    line = w.small_sample_warning(floor - 1, 2)
    assert line.startswith(f"warning: only n = {floor - 1:,} counts (< {floor})")
    assert line.endswith("Vuong withheld")


def test_gof_notes_say_what_the_header_rule_did_not():
    g = {"small_groups": 2, "groups": 3, "df": 1, "raw_df": -1, "parameters": 3}
    notes = w.gof_notes("ZIP", g)
    assert notes == ["  ZIP: 2 of 3 groups expect < 5 (merging would leave no df): poor "
                     "chi-square reference",
                     "  ZIP: 3 groups - 1 - 3 parameters = -1 df, raised to 1: poor chi-square "
                     "reference"]  # fmt: skip
    assert w.gof_notes("ZIP", {**g, "small_groups": 0, "raw_df": 2}) == []


def test_jsonable_is_strict_json():
    obj = {"a": (np.float64(1.5), np.int64(3)), "b": [math.nan, -math.inf, np.float32(2.0)]}
    out = w.jsonable(obj)
    assert out == {"a": [1.5, 3], "b": [None, None, 2.0]}
    json.dumps(out, allow_nan=False)


def test_metrics_are_flat_finite_and_valid_mlflow_keys():
    report = {"models": {"zip": {"count": [{"term": "C(g)[T.b]", "estimate": 0.5, "se": math.nan,
                                            "interval": (0.1, 0.9)}]}},
              "n": 10, "frequencies": [{"observed": 3}], "flag": True}  # fmt: skip
    m = w.metrics(report)
    assert m == {"models.zip.count.C_g__T.b_.estimate": 0.5,
                 "models.zip.count.C_g__T.b_.interval.lower": 0.1,
                 "models.zip.count.C_g__T.b_.interval.upper": 0.9, "n": 10.0,
                 "flag": 1.0}  # fmt: skip


def test_frequency_rows_keep_every_count_and_label_the_tail():
    starts = np.array([0, 1, 2, 5])
    observed = np.array([10, 6, 3, 1])
    expected = {"zip": np.array([9.5, 6.2, 3.1, 1.2])}
    rows = w.frequency_rows(starts, observed, expected)
    assert [w.row_label(r) for r in rows] == ["0", "1", "2-4", "5+"]
    assert sum(r["observed"] for r in rows) == 20
    lines = w.frequency_lines(rows, [("zip", "ZIP")])
    assert len(lines) == 1 + len(rows) and lines[-1].split()[:2] == ["5+", "1"]
