"""Tests of the `fit_counts` stage: the descent, the CLI (text, JSON, bad input) and its MLflow
run. Reading the file: tests/store/test_count_file.py; the report's numbers and layout:
tests/report/test_count_report.py; every family: tests/stages/test_fit_counts_family.py.

Stage runs use `--workdir tmp_path` with an MLflow store isolated there (`isolated_mlflow`), and
the tiny params of `conftest.py` where the descent's length does not matter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import leaves, write_csv, zip_sample

from pipeline.core.histogram import histogram
from pipeline.core.oracle import mle
from pipeline.stages.cli import ROOT

EXAMPLE = ROOT / "examples" / "fish_caught.csv"


ZIP_PATH = ["--family", "zip"]  # the ZIP report here ("all": test_fit_counts_family)


def fit_counts(args, env, cwd) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pipeline.fit_counts", *map(str, args), *ZIP_PATH]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


# -- the stage -------------------------------------------------------------------------------
def test_descent_matches_exact_mle(write_params, tmp_path):
    """Converged descent stops at |gradient| < grad_tol = 1e-6 in (logit pi, log lambda), so
    its error is about I^-1 g <= (n SE^2) 1e-6, i.e. ~1e-4 SE at n = 10,000: 0.01 SE is ample."""
    from pipeline.core.model import histogram_data
    from pipeline.stages import config
    from pipeline.stages.fit_counts import descend

    params = config.load(write_params({"fit_counts": {"inits": 4, "max_steps": 3000}}))
    hist = histogram(zip_sample(0.5, 5.0, 10_000, 0))
    exact = mle.exact_mle(hist)
    data = histogram_data(hist.values, hist.freqs)
    result, reference = descend(data, params.fit_counts, params.fit, np.random.default_rng(0))
    best = int(np.argmin(result.nll))
    assert result.status[best] == "converged"
    assert abs(result.pi[best] - exact.pi) < 0.01 * exact.se_pi
    assert abs(result.lam[best] - exact.lam) < 0.01 * exact.se_lam
    assert abs(reference - exact.nll) < 1e-12  # the engine's NLL at the MLE: same number
    assert result.nll[best] - reference < 1e-9


def test_json_is_one_object_of_numbers_matching_the_exact_mle(write_params, tmp_path):
    params = write_params({"fit_counts": {"inits": 3, "max_steps": 2000}})
    args = [EXAMPLE, "--column", "count", "--params", params, "--workdir", tmp_path]
    proc = fit_counts([*args, "--json", "--no-mlflow"], {**os.environ, "CI": "true"}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)  # exactly one JSON document, nothing else on stdout
    words = (".source.file", ".source.column", ".family", ".detail", ".mlflow_experiment",
             ".se_conventions", ".vuong_caveat", ".zip_vuong.caveat", ".reference", ".null",
             ".note", ".status", ".optimizer", ".title", ".message", ".term", ".worst_term",
             ".se_warning", ".label", ".method", ".reason", ".first", ".second", ".smaller",
             ".larger", ".favoured")  # fmt: skip
    for path, value in leaves(report):
        if path.endswith(words) or path.startswith((".closed_form.notes", ".warnings")):
            assert isinstance(value, str), path
        else:
            assert value is None or isinstance(value, (int, float, bool)), (path, value)
    y = np.loadtxt(EXAMPLE, delimiter=",", skiprows=1, usecols=1).astype(int)
    exact = mle.exact_mle(histogram(y))
    assert report["n"] == len(y) == 250 and report["mlflow_run_id"] is None
    assert report["closed_form"]["zip"]["pi"] == pytest.approx(exact.pi, rel=1e-12)
    assert report["closed_form"]["zip"]["se_lambda"] == pytest.approx(exact.se_lam, rel=1e-12)
    assert (
        report["lr_tests"]["poisson_vs_zip"]["p_value"] < 1e-10
    )  # the example has plenty of extra zeros
    gd = report["gradient_descent"]
    assert abs(gd["pi"] - exact.pi) < 0.01 * exact.se_pi
    assert sum(f["observed"] for f in report["frequencies"]) == 250


def run_main(args, capsys) -> str:
    """`fit_counts.main` in this process (no second torch/MLflow import); returns stdout."""
    from pipeline.stages import fit_counts as stage

    assert stage.main([*(str(a) for a in args), *ZIP_PATH]) == 0
    return capsys.readouterr().out


def test_terminal_table_is_the_json_report_rendered(tiny_params, tmp_path, capsys):
    """The text and `--json` print the same report (its layout: tests/report/test_count_report)."""
    from pipeline.report.count_report import render

    args = [EXAMPLE, "--column", "count", "--params", tiny_params, "--no-mlflow"]
    text = run_main(args, capsys)
    report = json.loads(run_main([*args, "--json"], capsys))
    assert report["n"] == report["source"]["rows"] == 250 and report["source"]["where"] is None
    # JSON turned tuples into lists and NaN into null, which render shows alike
    assert text == render(report) + "\n"


def test_fewer_zeros_than_poisson_gives_the_boundary_answer(tiny_params, tmp_path, capsys):
    y = zip_sample(0.0, 3.0, 400, 3)
    y = y[y > 0]  # no zeros at all: certainly fewer than a Poisson gives
    path = write_csv(tmp_path / "few_zeros.csv", y)
    args = [path, "--column", "count", "--params", tiny_params, "--no-mlflow"]
    r = json.loads(run_main([*args, "--json"], capsys))
    assert r["closed_form"]["zip"]["boundary"] is True and r["closed_form"]["zip"]["pi"] == 0.0
    assert r["closed_form"]["zip"]["lambda"] == pytest.approx(y.mean(), rel=1e-12)
    assert (
        r["lr_tests"]["poisson_vs_zip"]["statistic"] == 0.0
        and r["lr_tests"]["poisson_vs_zip"]["p_value"] == 1.0
    )
    # on the boundary the Wald interval for pi is not meaningful: the profile one is given
    assert (
        r["closed_form"]["zip"]["profile"]["pi"][0] == 0.0
        and r["closed_form"]["zip"]["wald"]["pi"] is None
    )
    assert r["closed_form"]["zip"]["interval"]["pi"]["method"] == "profile"
    assert r["zip_vuong"]["raw"]["statistic"] is None  # both fits coincide: z undefined
    # the stage's own descent (seeded starts) heads for logit(pi) = -inf
    assert r["gradient_descent"]["towards_boundary"] is True
    assert r["gradient_descent"]["status"] == "max_steps" and r["gradient_descent"]["pi"] < 0.05
    assert r["closed_form"]["notes"][0].startswith("0 zeros observed, ")
    lines = run_main(args, capsys).splitlines()
    assert "  pi -> 0: descent drives logit(pi) towards -inf, the boundary MLE" in lines
    assert any("the MLE is on the boundary pi = 0" in line for line in lines)


def test_example_run_logs_one_mlflow_run(tiny_params, tmp_path, isolated_mlflow, capsys,
                                         monkeypatch):  # fmt: skip
    from mlflow.tracking import MlflowClient

    args = [EXAMPLE, "--column", "count", "--where", "camper = 1", "--params", tiny_params,
            "--workdir", tmp_path]  # fmt: skip
    out = run_main(args, capsys)
    assert "of 250 rows, where camper = 1" in out and "MLflow run" in out
    client = MlflowClient(tracking_uri=isolated_mlflow)
    exp = client.get_experiment_by_name("zip-test-counts")
    runs = client.search_runs([exp.experiment_id], "tags.`zip.stage` = 'fit_counts'")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_id in out
    tags = run.data.tags
    assert tags["zip.column"] == "count" and tags["zip.where"] == "camper = 1"
    assert tags["zip.file"] == str(EXAMPLE)
    # Its own experiment, at the top level: the study's runs table keeps its invocations.
    assert "mlflow.parentRunId" not in tags and tags["zip.level"] == "analysis"
    assert run.info.run_name == "fit_counts-fish_caught.csv-count-where:camper = 1-zip"
    study = client.get_experiment_by_name("zip-test")
    assert study is None or client.search_runs([study.experiment_id]) == []
    assert run.data.params["fit_counts.inits"] == "2"
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"rootogram.png", "convergence.png", "fit_counts.json", "fit_counts.txt",
            "frequencies.md"} <= names  # fmt: skip
    stored = json.loads(Path(client.download_artifacts(run.info.run_id, "fit_counts.json",
                                                       str(tmp_path))).read_text())  # fmt: skip
    table = np.loadtxt(EXAMPLE, delimiter=",", skiprows=1, usecols=(1, 2)).astype(int)
    campers = table[table[:, 1] == 1, 0]
    assert stored["mlflow_run_id"] == run.info.run_id and stored["n"] == len(campers) < 250
    # the metrics are the report's numbers, the report's fit that of the selected rows
    metrics = run.data.metrics
    assert (
        metrics["closed_form.zip.pi"]
        == stored["closed_form"]["zip"]["pi"]
        == mle.exact_mle(histogram(campers)).pi
    )
    assert (
        metrics["lr_tests.poisson_vs_zip.p_value"]
        == stored["lr_tests"]["poisson_vs_zip"]["p_value"]
    )
    assert (
        metrics["closed_form.zip.profile.pi.lower"]
        == stored["closed_form"]["zip"]["profile"]["pi"][0]
    )
    assert metrics["gradient_descent.nll_gap"] == stored["gradient_descent"]["nll_gap"]
    # the kept init's path, recorded every fit.record_every = 10 steps (20 points at most)
    history = client.get_metric_history(run.info.run_id, "gd.nll")
    last = stored["gradient_descent"]["steps"] // 10 * 10
    assert sorted(m.step for m in history) == list(range(0, last + 1, 10))

    # Ctrl-C (or SIGTERM, turned into KeyboardInterrupt) while logging: the run ends KILLED.
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("pipeline.report.rootogram.convergence_figure", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_main(args, capsys)
    runs = client.search_runs([exp.experiment_id], "tags.`zip.stage` = 'fit_counts'")
    assert sorted(r.info.status for r in runs) == ["FINISHED", "KILLED"]


# -- bad input -------------------------------------------------------------------------------
def _bad_files(tmp: Path) -> dict[str, tuple[list, str]]:
    """name -> (arguments after the program, expected fragment of the one-line error)."""

    def csv(name: str, body: str) -> Path:
        (tmp / name).write_text(body)
        return tmp / name

    pl.DataFrame({"count": ["1", "2"]}).write_parquet(tmp / "text.parquet")
    pl.DataFrame({"count": [True, False]}).write_parquet(tmp / "bool.parquet")
    (tmp / "corrupt.parquet").write_bytes(b"not a parquet file at all")
    (tmp / "folder.csv").mkdir()
    (tmp / "zero_bytes.csv").write_bytes(b"")
    ok = csv("ok.csv", "count,site\n1,0\n0,1\n3,1\n")
    return {
        "negative": ([csv("neg.csv", "count\n1\n-2\n"), "--column", "count"], "negative"),
        "non-integer": ([csv("frac.csv", "count\n1\n2.5\n"), "--column", "count"],
                        "non-integer"),
        "nan": ([csv("nan.csv", "count\n1\nnan\n"), "--column", "count"], "NaN"),
        "empty-field": ([csv("blank.csv", "count,x\n1,a\n,b\n"), "--column", "count"],
                        "missing"),
        "na-token": ([csv("na.csv", "count\n1\nNA\n"), "--column", "count"], "missing"),
        "non-numeric": ([csv("word.csv", "count\n1\nmany\n"), "--column", "count"],
                        "non-numeric value at row 2 ('many')"),
        "text-parquet": ([tmp / "text.parquet", "--column", "count"], "not numbers"),
        "bool-parquet": ([tmp / "bool.parquet", "--column", "count"], "not numbers"),
        "header-only": ([csv("header.csv", "count\n"), "--column", "count"], "has no rows"),
        "filtered-empty": ([ok, "--column", "count", "--where", "site > 5"],
                           "no rows after --where"),
        "missing-column": ([ok, "--column", "counts"], "available: 'count', 'site'"),
        "bad-where": ([ok, "--column", "count", "--where", "nope > 1"], "--where"),
        "no-file": ([tmp / "absent.csv", "--column", "count"], "no such file"),
        "directory": ([tmp / "folder.csv", "--column", "count"], "not a regular file"),
        "zero-bytes": ([tmp / "zero_bytes.csv", "--column", "count"], "empty"),
        "corrupt": ([tmp / "corrupt.parquet", "--column", "count"], "cannot read"),
        "extension": ([csv("data.xlsx", "x"), "--column", "count"], "unsupported file type"),
        "all-zero": ([csv("zeros.csv", "count\n0\n0\n0\n"), "--column", "count"],
                     "not identifiable"),
    }  # fmt: skip


BAD = ["negative", "non-integer", "nan", "empty-field", "na-token", "non-numeric", "text-parquet",
       "bool-parquet", "header-only", "filtered-empty", "missing-column", "bad-where", "no-file",
       "directory", "zero-bytes", "corrupt", "extension", "all-zero"]  # fmt: skip


@pytest.mark.parametrize("name", BAD)
def test_bad_input_exits_2_with_one_line(name, tiny_params, tmp_path):
    args, fragment = _bad_files(tmp_path)[name]
    env = {**os.environ, "CI": "true"}
    extra = ["--json", "--params", tiny_params, "--workdir", tmp_path]
    proc = fit_counts([*args, *extra], env, tmp_path)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr and fragment in lines[0], lines[0]
    assert not (tmp_path / "mlruns").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_exits_2(tiny_params, tmp_path):
    path = write_csv(tmp_path / "locked.csv", [1, 2])
    path.chmod(0)
    proc = fit_counts([path, "--column", "count", "--params", tiny_params], os.environ, tmp_path)
    assert proc.returncode == 2 and "permission denied" in proc.stderr


def test_run_names_tell_analyses_apart_and_stay_short():
    from argparse import Namespace

    from pipeline.stages.fit_counts import run_name

    def name(**kw):
        base = dict(file="/d/fish.csv", column="count", formula=None, where=None, weights=None,
                    family="all")  # fmt: skip
        return run_name(Namespace(**{**base, **kw}))

    names = {name(), name(where="camper = 1"), name(where="camper = 0"), name(weights="w"),
             name(column=None, formula="count ~ persons"), name(family="zip")}  # fmt: skip
    assert len(names) == 6 and name() == "fit_counts-fish.csv-count-all"
    long = name(column=None, formula="y ~ " + " + ".join(f"x{i}" for i in range(100)))
    assert len(long) < 100 and "…" in long


def test_the_answer_is_printed_before_mlflow_is_touched(tiny_params, tmp_path, isolated_mlflow,
                                                        capsys, monkeypatch):  # fmt: skip
    """Issue 19 item 3: the terminal's answer waited for MLflow's import and round trips
    (~3 s of ~6 s on the fish example); now the store opens only after the text is out."""
    from pipeline.stages import fit_counts
    from pipeline.tracking.runs import Tracker

    opened = []
    real = Tracker.fit_counts.__func__

    def spy(cls, tracking, root):
        opened.append(capsys.readouterr().out)  # what the user had seen by then
        return real(cls, tracking, root)

    monkeypatch.setattr(Tracker, "fit_counts", classmethod(spy))
    argv = [str(EXAMPLE), "--column", "count", "--params", str(tiny_params),
            "--workdir", str(tmp_path)]  # fmt: skip
    assert fit_counts.main(argv) == 0
    (seen,) = opened
    assert seen.startswith("Count families (all):") and "Recommendation:" in seen
    assert capsys.readouterr().out.startswith("\nMLflow run ")
