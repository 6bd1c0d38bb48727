"""Property-based tests (Hypothesis) of users' count columns: `read_counts` and `fit_counts`.

Columns of every dtype a user's file may hold (int8..int64, uint8..uint64, float32, float64,
bool, string), 1 to 2000 rows, with zeros, negatives, values up to 2**64 - 1, NaN, infinities,
nulls, non-integer floats, all zeros, a single positive, sums past int64; written as CSV, TSV
and parquet. The reference is computed here without polars: the values as written (parquet)
or the file's text parsed with the `csv` module (CSV/TSV, whose column the reader documents as
read as Float64), a histogram from `collections.Counter` and the exact MLE of
`pipeline.core.oracle.mle` on it.

- `read_counts` (in-process, many examples): the histogram of the reference, exactly, or one
  `UserError` line naming the file, the column and the reference's first problem and its row.
- `fit_counts.main` (in-process with `pipeline.stages.cli.run`'s semantics: a `UserError` is the
  one line the user sees, any other exception a traceback; a few examples): a JSON report with
  pi in [0, 1], a finite lambda > 0, a finite gradient-descent gap and pi, lambda equal to the
  reference's exact MLE to 1e-9, or one line naming the file and column; within 60 s.

Bugs the properties found (now fixed) have regression cases at the end of this module; the
strategies still leave those inputs to them, so the properties keep their speed.

The example counts come from the Hypothesis profile (tests/conftest.py): `ci` (CI=true) is
derandomized and small. Run longer by hand with
    HYPOTHESIS_PROFILE=long .venv/bin/pytest tests/store/test_hostile_counts.py
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import re
import signal
import time
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from conftest import TINY
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from pipeline.core.errors import UserError
from pipeline.core.histogram import Histogram
from pipeline.core.oracle.mle import exact_mle
from pipeline.store.count_file import NULL_VALUES, read_counts

READ_SECONDS = 20.0  # read_counts takes milliseconds on these files
FIT_SECONDS = 60.0  # one fit_counts example (about a second on 2 busy cores)
MAX_MESSAGE = 400  # characters of an error line besides the file's path
MAX_COUNT = 2**62

INTS = {
    "int8": pl.Int8,
    "int16": pl.Int16,
    "int32": pl.Int32,
    "int64": pl.Int64,
    "uint8": pl.UInt8,
    "uint16": pl.UInt16,
    "uint32": pl.UInt32,
    "uint64": pl.UInt64,
}
# int128 and uint128 have their own regression case at the end (numpy has no such dtype).
DTYPES = {**INTS, "float32": pl.Float32, "float64": pl.Float64, "bool": pl.Boolean,
          "string": pl.String}  # fmt: skip
FORMATS = {"csv": ".csv", "tsv": ".tsv", "parquet": ".parquet"}
# What the reader takes for a number in a CSV cell (polars' Float64 parser); cells are written
# without surrounding spaces, unicode digits or underscores, which polars and Python disagree on.
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|infinity|nan)", re.I)


def hostile_examples(share: int) -> int:
    """The profile's example count divided by `share` (at least 1): slow properties run a
    fixed fraction of the cheap ones' count, so every profile scales them together."""
    return max(1, settings.default.max_examples // share)


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise `TimeoutError` in this (main) thread if the block runs longer than `seconds`
    (a hang in Python code; a hang inside native code is caught by the elapsed-time check)."""

    def expire(signum, frame):
        raise TimeoutError(f"took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    start = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert time.monotonic() - start < seconds


# -- strategies ------------------------------------------------------------------------------
def _int_elements(name: str) -> st.SearchStrategy:
    lo, hi = int(np.iinfo(name).min), int(np.iinfo(name).max)
    edges = [v for v in (0, 1, 2, -1, lo, hi, hi - 1, 2**53 + 1, 2**61, 2**62 - 1, 2**62,
                         2**63 - 1) if lo <= v <= hi]  # fmt: skip
    return st.one_of(st.integers(0, min(hi, 30)), st.integers(lo, hi), st.sampled_from(edges))


def _float_elements(width: int) -> st.SearchStrategy:
    edges = [math.nan, math.inf, -math.inf, -0.0, 0.5, -1.0, 2.0**24, 2.0**61, 2.0**62]
    if width == 64:
        edges += [2.0**53 + 2, 2.0**62 - 1024, 1e300, 5e-324, 3.5]
    integral = st.integers(0, 30).map(float) | st.integers(0, 2**62).map(float)
    return st.one_of(integral, st.floats(width=width), st.sampled_from(edges))


TOKENS = ["0", "1", "2", "17", "-1", "1.5", "1e3", "3.0", "NaN", "inf", "-inf", "", "NA", "null",
          "abc", "1,2", 'a"b', "a\nb", "名前", "ü", "'5'", "0x10"]  # fmt: skip
ELEMENTS = {
    **{name: _int_elements(name) for name in INTS},
    "float32": _float_elements(32),
    "float64": _float_elements(64),
    "bool": st.booleans(),
    "string": st.one_of(
        st.sampled_from(TOKENS),
        st.from_regex(r"-?[0-9]{1,25}(\.[0-9]{0,3})?", fullmatch=True),
        st.text(alphabet="bcdgkmopqrsuvwxyz名ü", min_size=1, max_size=6),
    ),
}
ZERO = {"float32": 0.0, "float64": 0.0, "bool": False, "string": "0"}
POSITIVE = {"bool": st.just(True), "string": st.integers(1, 10**6).map(str),
            "float32": st.integers(1, 2**24).map(float),
            "float64": st.integers(1, 2**53).map(float)}  # fmt: skip
VALID = {  # valid counts of each dtype (a bool column is refused by design: not numbers)
    **{name: st.integers(0, min(int(np.iinfo(name).max), 50))
       | st.integers(0, min(int(np.iinfo(name).max), 2**61)) for name in INTS},
    "float32": st.integers(0, 50).map(float) | st.integers(0, 2**24).map(float),
    "float64": st.integers(0, 50).map(float) | st.integers(0, 2**53).map(float),
    "bool": st.booleans(),
    "string": st.integers(0, 50).map(str),
}  # fmt: skip


@st.composite
def columns(draw) -> tuple[str, list]:
    """(dtype name, values): a pool of a few values (any, or valid counts) repeated over
    1-2000 rows (drawing 2000 values one by one would be slow), or all zeros, or zeros and a
    single positive."""
    name = draw(st.sampled_from(sorted(DTYPES)))
    n = draw(st.integers(1, 5) | st.integers(1, 2000))
    shape = draw(st.sampled_from(["pool", "pool", "counts", "counts", "zeros", "one positive"]))
    zero = ZERO.get(name, 0)
    if shape in ("pool", "counts"):
        element = ELEMENTS[name] | st.none() if shape == "pool" else VALID[name]
        pool = draw(st.lists(element, min_size=1, max_size=6))
        pick = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).integers(0, len(pool), n)
        values = [pool[i] for i in pick]
    else:
        values = [zero] * n
        if shape == "one positive":
            hi = int(np.iinfo(name).max) if name in INTS else None
            positive = POSITIVE[name] if hi is None else st.integers(1, hi)
            values[draw(st.integers(0, n - 1))] = draw(positive)
    return name, values


def write(folder: Path, name: str, values: list, fmt: str) -> Path:
    path = folder / f"counts{FORMATS[fmt]}"
    frame = pl.Series("count", values, dtype=DTYPES[name], strict=True).to_frame()
    if fmt == "parquet":
        frame.write_parquet(path)
    else:
        frame.write_csv(path, separator="\t" if fmt == "tsv" else ",")
    return path


# -- the reference ---------------------------------------------------------------------------
NON_NUMERIC = object()


def cells(path: Path, fmt: str, name: str, values: list) -> list | str:
    """The column as the reader should see it: numbers and None (as stored in parquet; CSV
    cells parsed as float64), or the refusal of a parquet column that does not hold numbers,
    with NON_NUMERIC for an unparsable CSV cell."""
    if fmt == "parquet":
        if name in ("bool", "string"):
            return "not numbers"
        if name == "float32":  # what the file stores: the nearest float32
            return [None if v is None else float(np.float32(v)) for v in values]
        return values
    with path.open(newline="") as f:
        rows = list(csv.reader(f, delimiter="\t" if fmt == "tsv" else ","))[1:]
    out = []
    for row in rows:
        cell = row[0] if row else ""
        if cell == "" or cell in NULL_VALUES:
            out.append(None)
        elif NUMBER.fullmatch(cell):
            out.append(float(cell))
        else:
            out.append(NON_NUMERIC)
    return out


def problems(column: list, integer: bool) -> dict[str, tuple[int, int]]:
    """kind -> (how many, first 1-based row), in the order the reader checks them."""
    checks = {}
    if integer:
        checks["too large (>= 2**62)"] = lambda v: v >= MAX_COUNT
    else:
        checks["NaN"] = lambda v: math.isnan(v)
        checks["infinite"] = lambda v: math.isinf(v)
        checks["non-integer"] = lambda v: math.isfinite(v) and v != math.floor(v)
        checks["too large (>= 2**62)"] = lambda v: math.isfinite(v) and v >= MAX_COUNT
    checks["negative"] = lambda v: v < 0
    found = {}
    missing = [i + 1 for i, v in enumerate(column) if v is None]
    if missing:
        found["missing"] = (len(missing), missing[0])
    for kind, bad in checks.items():
        rows = [i + 1 for i, v in enumerate(column) if v is not None and bad(v)]
        if rows:
            found[kind] = (len(rows), rows[0])
    return found


def reference(path: Path, fmt: str, name: str, values: list) -> Histogram | str:
    """The histogram the reader must return, or the text its one error line must contain."""
    column = cells(path, fmt, name, values)
    if isinstance(column, str):
        return f"column 'count' holds {DTYPES[name]}, not numbers"
    if NON_NUMERIC in column:
        return f"column 'count' has a non-numeric value at row {column.index(NON_NUMERIC) + 1}"
    integer = fmt == "parquet" and name in INTS
    found = problems(column, integer)
    if found:
        kind, (count, row) = next(iter(found.items()))
        return f"column 'count' has {count} {kind} value(s), first at row {row}"
    freq = Counter(int(v) for v in column)
    keys = sorted(freq)
    return Histogram(np.array(keys, np.int64), np.array([freq[k] for k in keys], np.int64))


def check_error_line(message: str, path: Path, expected: str) -> None:
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith(f"{path}: "), message
    assert len(message.replace(str(path), "")) < MAX_MESSAGE, message
    assert expected in message, (expected, message)


# -- read_counts -------------------------------------------------------------------------------
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(column=columns(), fmt=st.sampled_from(sorted(FORMATS)))
@example(column=("int64", [0] + [2**62 - 1] * 4), fmt="parquet")  # the sum overflows int64
@example(column=("uint64", [0, 2**64 - 1]), fmt="parquet")
@example(column=("float64", [0.0, math.nan, 1.0]), fmt="csv")
def test_read_counts_gives_the_reference_histogram_or_one_line(tmp_path, column, fmt):
    name, values = column
    path = write(tmp_path, name, values, fmt)
    expected = reference(path, fmt, name, values)
    try:
        with time_limit(READ_SECONDS):
            counts = read_counts(path, "count")
    except UserError as err:
        event("refused")
        assert isinstance(expected, str), f"refused valid counts: {err}"
        check_error_line(str(err), path, expected)
    else:
        event("read")
        assert isinstance(expected, Histogram), f"accepted bad counts: expected {expected!r}"
        assert counts.rows == counts.selected == len(values)
        assert counts.hist.values.tolist() == expected.values.tolist()
        assert counts.hist.freqs.tolist() == expected.freqs.tolist()


# -- fit_counts ----------------------------------------------------------------------------------
def fit(path: Path, params: Path, workdir: Path) -> dict | str:
    """`fit_counts.main` as `cli.run` runs it: the JSON report, or the UserError line."""
    from pipeline.stages import fit_counts

    argv = [str(path), "--column", "count", "--params", str(params), "--workdir", str(workdir),
            "--no-mlflow", "--json", "--family", "zip"]  # the ZIP's exact report  # fmt: skip
    out = io.StringIO()
    try:
        with time_limit(FIT_SECONDS), contextlib.redirect_stdout(out):
            code = fit_counts.main(argv)
    except UserError as err:
        return str(err)
    assert code == 0
    return json.loads(out.getvalue())


def finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@settings(
    max_examples=hostile_examples(4),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(column=columns(), fmt=st.sampled_from(sorted(FORMATS)))
@example(column=("int64", [0] + [4 * 10**18] * 3), fmt="csv")  # the sum overflows int64
@example(column=("uint8", [0, 0, 0, 1, 2, 5, 3, 0]), fmt="parquet")
@example(column=("int32", [0, 0, 0]), fmt="parquet")  # all zeros: not identifiable
def test_fit_counts_gives_the_exact_mle_or_one_line(tmp_path, column, fmt):
    name, values = column
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(TINY))
    path = write(tmp_path, name, values, fmt)
    expected = reference(path, fmt, name, values)
    if isinstance(expected, Histogram) and expected.values.tolist() == [0]:
        expected = "column 'count': all"  # every count zero
    got = fit(path, params, tmp_path)
    if isinstance(got, str):
        event("refused")
        assert isinstance(expected, str), f"refused valid counts: {got}"
        check_error_line(got, path, expected)
        if expected.endswith("all"):
            assert "not identifiable" in got, got
        return
    event("fitted")
    assert isinstance(expected, Histogram), f"accepted bad counts: expected {expected!r}"
    exact = exact_mle(expected)
    z, gd = got["closed_form"]["zip"], got["gradient_descent"]
    assert got["n"] == expected.n == len(values)
    assert 0.0 <= z["pi"] <= 1.0 and finite(z["pi"])
    assert finite(z["lambda"]) and z["lambda"] > 0
    assert finite(z["nll"]) and finite(gd["nll_gap"])
    assert math.isclose(z["pi"], exact.pi, rel_tol=1e-9, abs_tol=1e-12), (z["pi"], exact.pi)
    assert math.isclose(z["lambda"], exact.lam, rel_tol=1e-9), (z["lambda"], exact.lam)
    assert math.isclose(got["data"]["mean"], expected.total / expected.n, rel_tol=1e-12)
    assert got["data"]["max"] == int(expected.values[-1])


# -- bugs found by the properties -------------------------------------------------------------
@pytest.mark.parametrize("dtype", [pl.Int128, pl.UInt128])
def test_a_128_bit_integer_parquet_column_is_read_or_refused_in_one_line(tmp_path, dtype):
    path = tmp_path / "counts.parquet"
    pl.Series("count", [0, 1, 2], dtype=dtype).to_frame().write_parquet(path)
    try:
        counts = read_counts(path, "count")
    except UserError as err:
        check_error_line(str(err), path, "count")
    else:
        assert counts.hist.values.tolist() == [0, 1, 2]
