"""`fit_counts` on extreme and hostile count files (the audit's items 1, 2 and 13a): a finite,
correct answer within a bounded time, or one line on stderr with exit status 2."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import polars as pl
import pytest

from pipeline.stages.cli import ROOT


def run(args, env, cwd, timeout=120) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pipeline.fit_counts", *map(str, args),
           "--params", str(ROOT / "params.yaml"), "--no-mlflow", "--family", "zip"]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def one_line_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert len(lines[0].replace(str(proc.args[3]), "FILE")) < 400, lines[0]  # bounded text
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_counts_whose_sum_overflows_int64_give_a_finite_exact_answer(tmp_path, stage_env):
    """Used to hang forever: the int64 total wrapped, lambda-hat went negative."""
    path = tmp_path / "s.csv"
    path.write_text("count\n0\n" + "4000000000000000000\n" * 3)
    proc = run([path, "--column", "count", "--json"], stage_env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["closed_form"]["zip"]["lambda"] == pytest.approx(4e18, rel=1e-14)
    assert report["closed_form"]["zip"]["pi"] == pytest.approx(0.25, rel=1e-12)
    assert report["data"]["mean"] == pytest.approx(3e18, rel=1e-15)
    lo, hi = report["closed_form"]["zip"]["profile"]["lambda"]
    assert lo < 4e18 < hi and math.isfinite(hi)
    # gradient descent lands on the MLE; its gap is measured without the rounding of the
    # data's constant term (~1e4 nats at this scale)
    assert abs(report["gradient_descent"]["nll_gap"]) < 1e-6


@pytest.mark.parametrize(
    "dtype, values, shown",
    [
        (pl.UInt64, [0, 2**64 - 1], "18446744073709551615"),  # used to be a traceback
        (pl.Int64, [0, 2**63 - 1, 5], "9223372036854775807"),  # used to be accepted
        (pl.Int64, [0, 2**62, 2**62, 2**62], "4611686018427387904"),
    ],
)
def test_integer_parquet_columns_are_size_checked(tmp_path, stage_env, dtype, values, shown):
    path = tmp_path / "c.parquet"
    pl.DataFrame({"count": pl.Series(values, dtype=dtype)}).write_parquet(path)
    proc = run([path, "--column", "count"], stage_env, tmp_path)
    one_line_error(proc, "too large (>= 2**62)", shown)


def test_a_binary_file_named_csv_is_one_short_line(tmp_path, stage_env):
    path = tmp_path / "data.csv"
    pl.DataFrame({f"column_{i}_" + "x" * 40: [1, 2] for i in range(60)}).write_parquet(path)
    proc = run([path, "--column", "count"], stage_env, tmp_path)
    one_line_error(proc, "binary content")


def test_a_missing_column_among_many_lists_a_few(tmp_path, stage_env):
    path = tmp_path / "wide.csv"
    names = [f"column_{i}_" + "x" * 40 for i in range(60)]
    path.write_text(",".join(names) + "\n" + ",".join("1" for _ in names) + "\n")
    proc = run([path, "--column", "count"], stage_env, tmp_path)
    one_line_error(proc, "no column 'count'", "and 52 more")


def test_a_where_with_unbalanced_quotes_is_refused_not_read_as_an_alias(tmp_path, stage_env):
    """`camper = 1'; touch x; echo '` parses in polars SQL as a condition with an alias; the
    audit's injection string must be refused, not silently accepted as `camper = 1`."""
    where = "camper = 1'; touch /tmp/pwned; echo '"
    proc = run([ROOT / "examples" / "fish_caught.csv", "--column", "count", "--where", where],
               stage_env, tmp_path)  # fmt: skip
    one_line_error(proc, "must be a condition only", "alias")
