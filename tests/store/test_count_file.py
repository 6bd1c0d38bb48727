"""Tests of `pipeline.store.count_file`: reading one column of counts into a histogram.

The reference is numpy on the same counts (`core.histogram.histogram`); errors are checked as
the whole one-line message the user sees (the `fit_counts` stage tests check that they reach
the terminal as `error: ...` with exit status 2).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from conftest import write_csv, zip_sample

from pipeline.core.errors import UserError
from pipeline.core.histogram import histogram
from pipeline.store import count_file as count_io


def test_read_counts_matches_numpy_histogram_for_csv_tsv_and_parquet(tmp_path):
    y = zip_sample(0.4, 3.0, 3000, 1)
    group = np.arange(len(y)) % 3
    frame = pl.DataFrame({"count": y, "site": group})
    frame.write_csv(tmp_path / "c.csv")
    frame.write_csv(tmp_path / "c.tsv", separator="\t")
    frame.write_parquet(tmp_path / "c.parquet")
    frame.with_columns(pl.col("count").cast(pl.Float64)).write_parquet(tmp_path / "f.parquet")
    for name in ("c.csv", "c.tsv", "c.parquet", "f.parquet"):
        counts = count_io.read_counts(tmp_path / name, "count")
        assert counts.rows == counts.selected == len(y)
        ref = histogram(y)
        assert np.array_equal(counts.hist.values, ref.values)
        assert np.array_equal(counts.hist.freqs, ref.freqs)
        picked = count_io.read_counts(tmp_path / name, "count", where="site = 1 AND count > 0")
        ref = histogram(y[(group == 1) & (y > 0)])
        assert np.array_equal(picked.hist.values, ref.values)
        assert np.array_equal(picked.hist.freqs, ref.freqs)
        assert picked.rows == len(y) and picked.selected == ref.n


def test_read_counts_names_the_first_bad_row(tmp_path):
    path = write_csv(tmp_path / "bad.csv", [1, 2, 0, 3, -4, 5, -1])
    with pytest.raises(UserError, match=r"2 negative value\(s\), first at row 5 \(-4\)"):
        count_io.read_counts(path, "count")
    # The filter decides which rows must be counts.
    assert count_io.read_counts(path, "count", where="count >= 0").hist.n == 5


@pytest.mark.parametrize(
    ("body", "where", "values", "freqs", "rows"),
    [
        # counts written as floats, in scientific notation, or padded are still counts
        ("count\n1e3\n3.0\n0\n", None, [0, 3, 1000], [1, 1, 1], 3),
        # a null in the filter's column counts as false
        ("count,site\n1,\n2,1\n4,1\n", "site = 1", [2, 4], [1, 1], 3),
        # a bad count outside the filter does not matter
        ("count,site\n-1,0\n2,1\n2,1\n", "site = 1", [2], [2], 3),
        # a column named like an SQL word, quoted
        ("count,group\n1,0\n2,1\n", '"group" = 1', [2], [1], 2),
    ],
)
def test_read_counts_by_hand(tmp_path, body, where, values, freqs, rows):
    path = tmp_path / "c.csv"
    path.write_text(body)
    counts = count_io.read_counts(path, "count", where)
    assert counts.hist.values.tolist() == values and counts.hist.freqs.tolist() == freqs
    assert counts.hist.values.dtype == np.int64 and counts.hist.freqs.dtype == np.int64
    assert (counts.rows, counts.selected) == (rows, sum(freqs))


@pytest.mark.parametrize("suffix", [".pq", ".PARQUET", ".CSV"])
def test_read_counts_knows_extensions_in_any_case(tmp_path, suffix):
    frame = pl.DataFrame({"count": [0, 5, 5, 2]})
    path = tmp_path / f"c{suffix}"
    if suffix == ".CSV":
        frame.write_csv(path)
    else:
        frame.write_parquet(path)
    counts = count_io.read_counts(path, "count")
    assert counts.hist.values.tolist() == [0, 2, 5] and counts.hist.freqs.tolist() == [1, 1, 2]


DIRECTORY = object()  # a folder where the file should be
MUST = "; counts must be non-negative integers"
EXPECTED = "expected one of .csv, .tsv, .parquet, .pq"
# name -> (file name, content, column, --where, the whole message after "<file>: "); content is
# CSV text, a frame written as parquet, raw bytes, DIRECTORY, or None for no file at all
BAD = {
    "negative": (
        "neg.csv",
        "count\n1\n-2\n",
        "count",
        None,
        f"column 'count' has 1 negative value(s), first at row 2 (-2){MUST}",
    ),
    "non-integer": (
        "frac.csv",
        "count\n1\n2.5\n2.25\n",
        "count",
        None,
        f"column 'count' has 2 non-integer value(s), first at row 2 (2.5){MUST}",
    ),
    "nan": (
        "nan.csv",
        "count\n1\nnan\n",
        "count",
        None,
        f"column 'count' has 1 NaN value(s), first at row 2 (nan){MUST}",
    ),
    "infinite": (
        "inf.csv",
        "count\n1\ninf\n",
        "count",
        None,
        f"column 'count' has 1 infinite value(s), first at row 2 (inf){MUST}",
    ),
    "too-large": (
        "big.csv",
        "count\n1\n5e18\n",
        "count",
        None,
        "column 'count' has 1 too large (>= 2**62) value(s), first at row 2 "
        f"(5000000000000000000){MUST}",
    ),
    "na-token": (
        "na.csv",
        "count\n1\nNA\n3\n",
        "count",
        None,
        f"column 'count' has 1 missing value(s), first at row 2{MUST}",
    ),
    "parquet-null": (
        "null.parquet",
        pl.DataFrame({"count": [1, 0, None]}),
        "count",
        None,
        f"column 'count' has 1 missing value(s), first at row 3{MUST}",
    ),
    "parquet-negative": (
        "neg.parquet",
        pl.DataFrame({"count": [1, -3, 2]}),
        "count",
        None,
        f"column 'count' has 1 negative value(s), first at row 2 (-3){MUST}",
    ),
    "non-numeric": (
        "word.csv",
        "count,site\n1,0\nmany,1\n",
        "count",
        "site = 0",
        f"column 'count' has a non-numeric value at row 2 ('many'){MUST}",
    ),
    "text-parquet": (
        "text.parquet",
        pl.DataFrame({"count": ["1", "2"]}),
        "count",
        None,
        "column 'count' holds String, not numbers",
    ),
    "header-only": ("header.csv", "count\n", "count", None, "column 'count' has no rows"),
    "filtered-empty": (
        "ok.csv",
        "count,site\n1,0\n0,1\n",
        "count",
        "site > 5",
        "column 'count' has no rows after --where 'site > 5'",
    ),
    "missing-column": (
        "ok.csv",
        "count,site\n1,0\n",
        "counts",
        None,
        "no column 'counts'; available: 'count', 'site'",
    ),
    "no-file": ("absent.csv", None, "count", None, "no such file"),
    "directory": ("folder.csv", DIRECTORY, "count", None, "not a regular file"),
    "zero-bytes": ("zero_bytes.csv", b"", "count", None, "the file is empty"),
    "extension": ("data.xlsx", "x", "count", None, f"unsupported file type '.xlsx'; {EXPECTED}"),
    "no-extension": ("data", "x", "count", None, f"unsupported file type '(none)'; {EXPECTED}"),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_input_is_one_line_naming_the_file(name, tmp_path):
    file_name, content, column, where, message = BAD[name]
    path = tmp_path / file_name
    if isinstance(content, str):
        path.write_text(content)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, pl.DataFrame):
        content.write_parquet(path)
    elif content is DIRECTORY:
        path.mkdir()
    with pytest.raises(UserError) as info:
        count_io.read_counts(path, column, where)
    assert str(info.value) == f"{path}: {message}"


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("count + 1", "--where 'count + 1': must be a condition (true/false), gives Float64"),
        ("nope > 1", "--where 'nope > 1': "),
        ("group = 1", "--where 'group = 1': "),
    ],
)
def test_bad_filter_is_one_line_naming_the_filter(tmp_path, where, message):
    path = tmp_path / "ok.csv"
    path.write_text("count,site\n1,0\n0,1\n3,1\n")
    with pytest.raises(UserError) as info:
        count_io.read_counts(path, "count", where)
    text = str(info.value)
    assert text.startswith(message) and "\n" not in text
    if where == "group = 1":  # an SQL word: the hint says how to quote it
        assert text.endswith(
            '(a SQL condition; quote column names that are SQL words, e.g. "group" = 1)'
        )


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_weighted_counts_are_the_histogram_of_the_expanded_rows(tmp_path, suffix):
    rng = np.random.default_rng(3)
    y, w = zip_sample(0.3, 2.0, 400, seed=3), rng.integers(0, 5, 400)
    frame = pl.DataFrame({"y": y, "w": w, "g": rng.integers(0, 2, 400)})
    path = tmp_path / f"f{suffix}"
    frame.write_csv(path) if suffix == ".csv" else frame.write_parquet(path)
    got = count_io.read_counts(path, "y", "g = 1", weights="w")
    keep = frame["g"].to_numpy() == 1
    want = histogram(np.repeat(y[keep], w[keep]))
    np.testing.assert_array_equal(got.hist.values, want.values)  # weight-0 values left out
    np.testing.assert_array_equal(got.hist.freqs, want.freqs)
    assert (got.rows, got.selected) == (400, int(keep.sum()))


def test_weights_summing_past_int64_rows_are_refused(tmp_path):
    path = tmp_path / "w.csv"
    path.write_text("y,w\n0,4000000000000000000\n1,4000000000000000000\n")
    with pytest.raises(UserError, match=r"sum to 8e\+18, beyond 2\*\*62 rows"):
        count_io.read_counts(path, "y", weights="w")
