"""`fit_counts --family`: "all" is the default and compares the families; one family is
fitted alone; the ZIP keeps its own report; `make fit-counts FAMILY=...` passes the value
verbatim; a bad value or all-zero counts is one line and exit 2 (the comparison itself:
tests/analysis/test_count_fits.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.stages.cli import ROOT

EXAMPLE = ROOT / "examples" / "fish_caught.csv"


def run_json(args, tiny_params, capsys) -> dict:
    from pipeline.stages import fit_counts

    argv = [str(EXAMPLE), *args, "--params", str(tiny_params), "--no-mlflow", "--json"]
    assert fit_counts.main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_the_default_compares_every_family(tiny_params, capsys):
    report = run_json(["--column", "count"], tiny_params, capsys)
    assert report["family"] == "all"
    assert set(report["models"]) == {
        "poisson", "nb", "zip", "zinb", "hurdle_poisson", "hurdle_nb"}  # fmt: skip
    # The fish counts: half zeros, variance 2.5x the mean. The Poisson and the NB misfit
    # (Pearson p < 1e-7 in the table); the ZIP has the lowest BIC (tied with the hurdle
    # Poisson, which fits the same distribution to a column of counts).
    assert report["recommendation"]["family"] in ("zip", "hurdle_poisson")


def test_one_family_is_fitted_alone(tiny_params, capsys):
    report = run_json(["--formula", "count ~ persons + camper | persons", "--family", "zinb"],
                      tiny_params, capsys)  # fmt: skip
    assert list(report["models"]) == ["zinb"]


def test_zip_keeps_its_exact_report(tiny_params, capsys):
    report = run_json(["--column", "count", "--family", "zip"], tiny_params, capsys)
    assert list(report["models"]) == ["zip", "poisson"] and "poisson_vs_zip" in report["lr_tests"]
    assert {"gradient_descent", "closed_form", "zip_vuong"} <= set(report)


def one_line_exit_2(args, tmp_path, tiny_params) -> str:
    cmd = [sys.executable, "-m", "pipeline.fit_counts", *map(str, args), "--params",
           str(tiny_params), "--no-mlflow"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env={**os.environ, "CI": "true"})  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_a_bad_family_is_one_line(tmp_path, tiny_params):
    line = one_line_exit_2([EXAMPLE, "--column", "count", "--family", "zinb; rm -rf /"],
                           tmp_path, tiny_params)  # fmt: skip
    assert "--family" in line and "hurdle_nb" in line


@pytest.mark.parametrize("family", ["all", "zinb"])
def test_all_zero_counts_are_one_line(family, tmp_path, tiny_params):
    path = tmp_path / "zeros.csv"
    path.write_text("count\n0\n0\n0\n")
    line = one_line_exit_2([path, "--column", "count", "--family", family], tmp_path, tiny_params)
    assert "all 3 counts are zero" in line


def test_make_passes_family_verbatim(tmp_path):
    printer = tmp_path / "python"
    printer.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    printer.chmod(0o755)
    value = "zinb'; touch pwned; echo '"
    cmd = ["make", "-s", "-f", str(ROOT / "Makefile"), "-o", ".venv/.installed", "fit-counts",
           "FILE=data.csv", "COLUMN=count", f"FAMILY={value}", f"PY={printer}"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in {"FILE", "COLUMN", "FAMILY"}}
    out = subprocess.run(cmd, cwd=tmp_path, env={**env, "CI": "true"}, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    argv = json.loads(out.stdout.strip().splitlines()[-1])
    assert f"--family={value}" in argv
    assert not Path(tmp_path / "pwned").exists()
