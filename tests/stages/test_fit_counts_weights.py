"""`fit_counts --weights COLUMN`: frequency weights, a row of weight w counting as w rows.

The contract is the expanded file: every number of the report (estimates, both kinds of
standard errors, log-likelihoods, AIC/BIC, LR and Vuong tests, goodness of fit, the
frequency table) equals the unweighted report on the rows repeated w times, to 1e-10
relative — for a column of counts and for a formula, for every family. Only the gradient
descent of a formula may differ (its engine sums in another order and stops at its own
tolerance). Bad weights are one line and exit 2 (tests/store for each check's wording).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from pipeline.stages.cli import ROOT

EXAMPLE = ROOT / "examples" / "fish_caught.csv"
FORMULA = "count ~ persons + camper | persons"


def run_json(path, args, tiny_params, capsys) -> dict:
    from pipeline.stages import fit_counts

    argv = [str(path), *args, "--params", str(tiny_params), "--no-mlflow", "--json"]
    assert fit_counts.main(argv) == 0
    return json.loads(capsys.readouterr().out)


# The oracle's own words: "converged: Newton decrement 1.8e-27" against 2.0e-27.
ANYWHERE = ("message",)


def assert_same_numbers(a, b, where="report", skip=("source", "mlflow_run_id")):
    """Every leaf of `a` equals `b`'s: numbers to 1e-10 relative, the rest exactly."""
    if isinstance(a, dict):
        assert set(a) == set(b), f"{where}: keys {set(a) ^ set(b)}"
        for key in a:
            if key not in skip and key not in ANYWHERE:
                assert_same_numbers(a[key], b[key], f"{where}.{key}", ())
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_numbers(x, y, f"{where}[{i}]", ())
    elif isinstance(a, float) or isinstance(b, float):
        if a is None or b is None or (isinstance(a, float) and math.isnan(a)):
            assert a == b or (a is b is None) or (math.isnan(a) and math.isnan(b)), where
        else:
            assert a == pytest.approx(b, rel=1e-10, abs=1e-300), where
    else:
        assert a == b, where


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The fish data with random frequency weights 0..3 (zeros included) and its expansion."""
    tmp = tmp_path_factory.mktemp("weights")
    fish = pl.read_csv(EXAMPLE)
    w = np.random.default_rng(20261205).integers(0, 4, fish.height)
    weighted, expanded = tmp / "weighted.csv", tmp / "expanded.csv"
    fish.with_columns(w=pl.Series(w)).write_csv(weighted)
    fish[np.repeat(np.arange(fish.height), w)].write_csv(expanded)
    return weighted, expanded


@pytest.mark.parametrize("family", ["all", "zip", "zinb"])
@pytest.mark.parametrize("what", [["--column", "count"], ["--formula", FORMULA]],
                         ids=["column", "formula"])  # fmt: skip
def test_a_weighted_file_reports_as_its_expanded_rows(what, family, files, tiny_params, capsys):
    weighted, expanded = files
    a = run_json(weighted, [*what, "--weights", "w", "--family", family], tiny_params, capsys)
    b = run_json(expanded, [*what, "--family", family], tiny_params, capsys)
    assert a["source"]["weights"] == "w" and b["source"]["weights"] is None
    skip = ("source", "mlflow_run_id") + (("gradient_descent",) * (what[0] == "--formula"))
    assert_same_numbers(a, b, skip=skip)
    if what[0] == "--formula" and family == "zip":  # the descent ran on the weighted rows
        # (its equality to expanded rows: tests/core for `fit_designs(weights=)`)
        assert set(a["gradient_descent"]) == set(b["gradient_descent"])


def test_collapsed_duplicate_rows_are_the_original_file(tiny_params, capsys, tmp_path):
    """Real data as users store it: the fish rows collapsed to their distinct values with a
    multiplicity column give the original file's report."""
    fish = pl.read_csv(EXAMPLE).select("count", "persons", "camper")
    collapsed = tmp_path / "collapsed.parquet"
    fish.group_by(fish.columns).len("times").write_parquet(collapsed)
    assert pl.read_parquet(collapsed).height < fish.height
    a = run_json(collapsed, ["--formula", FORMULA, "--weights", "times"], tiny_params, capsys)
    b = run_json(EXAMPLE, ["--formula", FORMULA], tiny_params, capsys)
    assert_same_numbers(a, b)


@pytest.mark.parametrize(
    "weights, fragment",
    [("1\n-1\n2", "negative"), ("1\n0.5\n2", "non-integer"), ("1\n\n2", "missing"),
     ("1\nmany\n2", "non-numeric"), ("0\n0\n0", "every weight"), ("1\nnan\n2", "NaN")],
    ids=["negative", "fractional", "missing", "text", "all-zero", "nan"],
)  # fmt: skip
@pytest.mark.parametrize("what", [["--column", "y"], ["--formula", "y ~ 1"]],
                         ids=["column", "formula"])  # fmt: skip
def test_bad_weights_are_one_line(what, weights, fragment, tmp_path, tiny_params):
    path = tmp_path / "w.csv"
    rows = weights.split("\n")
    path.write_text("y,w\n" + "".join(f"{i % 3},{v}\n" for i, v in enumerate(rows)))
    cmd = [sys.executable, "-m", "pipeline.fit_counts", str(path), *what, "--weights", "w",
           "--params", str(tiny_params), "--no-mlflow"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "'w'" in lines[0], lines[0]
    if fragment != "NaN" or what[0] == "--column":  # a formula reads nan as a missing value
        assert fragment in lines[0], lines[0]


def test_a_missing_weights_column_is_named(tmp_path, tiny_params):
    path = tmp_path / "w.csv"
    path.write_text("y,x\n0,1\n1,2\n3,1\n")
    for what in (["--column", "y"], ["--formula", "y ~ x"]):
        cmd = [sys.executable, "-m", "pipeline.fit_counts", str(path), *what, "--weights",
               "nosuch", "--params", str(tiny_params), "--no-mlflow"]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert "no column 'nosuch' (the --weights column)" in proc.stderr, proc.stderr
