"""Tests of `fit_counts --formula` (stages/fit_counts.py, the design path): the report, `--json`,
categorical regressors, the MLflow run, bad input (exit 2, one line) and FORMULA through make.

Reading the design: tests/store/ (formula); the oracle: tests/core/test_oracle_*.py. Stage runs
are in-process (`fit_counts.main`, one torch import per worker) with `--workdir tmp_path`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import leaves

from pipeline.core.model import fit_data
from pipeline.core.oracle.fit import fit_model
from pipeline.stages.cli import ROOT

EXAMPLE = ROOT / "examples" / "fish_caught.csv"
FORMULA = "count ~ camper + persons | persons"
WORDS = (".source.file", ".source.formula", ".family", ".detail", ".mlflow_experiment",
         ".se_conventions", ".vuong_caveat", ".caveat", ".reference", ".null", ".note",
         ".status", ".optimizer", ".title", ".message", ".term", ".worst_term", ".se_warning",
         ".label", ".method", ".reason", ".first", ".second", ".smaller", ".larger")  # fmt: skip


@pytest.fixture
def params(write_params) -> Path:
    """Tiny params with a descent long enough to converge on the example."""
    return write_params({"fit_counts": {"inits": 3, "max_steps": 3000}})


def run_main(args, capsys) -> str:
    """The ZIP regression path (`--family zip`; test_fit_counts_family covers "all")."""
    from pipeline.stages import fit_counts as stage

    assert stage.main([*(str(a) for a in args), "--family", "zip"]) == 0
    return capsys.readouterr().out


def example_design():
    frame = pl.read_csv(EXAMPLE)
    ones = np.ones(frame.height)
    X = np.c_[ones, frame["camper"].to_numpy(), frame["persons"].to_numpy()]
    Z = np.c_[ones, frame["persons"].to_numpy()]
    return X, Z, frame["count"].to_numpy()


def test_json_holds_both_parts_and_the_oracle(params, tmp_path, capsys):
    """The oracle equals statsmodels' Newton estimates; the descent lands on it."""
    from statsmodels.discrete.count_model import ZeroInflatedPoisson

    args = [EXAMPLE, "--formula", FORMULA, "--params", params, "--no-mlflow"]
    r = json.loads(run_main([*args, "--json"], capsys))
    for path, value in leaves(r):
        if path.endswith(WORDS) or path.startswith(".warnings"):
            assert isinstance(value, str), path
        elif path != ".source.where":
            assert value is None or isinstance(value, (int, float, bool)), (path, value)
    X, Z, y = example_design()
    sm = ZeroInflatedPoisson(y, X, exog_infl=Z).fit(start_params=np.zeros(5), method="newton",
                                                    maxiter=100, disp=0)  # fmt: skip
    gamma = [c["estimate"] for c in r["models"]["zip"]["zero"]]
    beta = [c["estimate"] for c in r["models"]["zip"]["count"]]
    np.testing.assert_allclose(np.r_[gamma, beta], sm.params, atol=1e-6)
    fit = fit_model("zip", fit_data(X, Z, y))
    np.testing.assert_allclose(
        [c["se"] for c in r["models"]["zip"]["zero"]], fit.se_gamma, rtol=1e-12
    )
    assert r["n"] == r["source"]["rows"] == 250 and r["source"]["dropped"] == 0
    assert r["models"]["zip"]["loglik"] == pytest.approx(fit.loglik, rel=1e-12)
    lr = r["lr_tests"]["poisson_vs_zip"]
    assert lr["df"] == 2 and lr["reference"] == "chi2(2)" and lr["p_value"] < 1e-30
    assert lr["log10_p_value"] == pytest.approx(np.log10(lr["p_value"]), rel=1e-9)
    gd = r["gradient_descent"]
    assert gd["status"] == "converged" and gd["max_se_error"] < 0.01 and gd["nll_gap"] < 1e-9
    assert sum(f["observed"] for f in r["frequencies"]) == 250
    assert sum(f["zip"] for f in r["frequencies"]) == pytest.approx(250)
    assert r["frequencies"][0]["zip"] == pytest.approx(126, abs=1)  # ZIP fits the zeros


def test_offsets_reproduce_r_zeroinfl_on_owls(params, tmp_path, capsys, monkeypatch):
    """`offset(log(BroodSize))` through the CLI reproduces R's pscl `zeroinfl` on glmmTMB's Owls
    (the reference numbers and the R code: tests/core/test_oracle_offsets.py), and the descent
    lands on the oracle with the offset in its predictor."""
    import importlib

    monkeypatch.syspath_prepend(str(ROOT / "tests" / "core"))  # its helpers import each other
    module = importlib.import_module("test_oracle_offsets")
    owls = ROOT / "tests" / "data" / "owls.csv"
    formula = "SiblingNegotiation ~ FoodTreatment + ArrivalTime + offset(log(BroodSize)) | 1"
    r = json.loads(run_main([owls, "--formula", formula, "--params", params, "--no-mlflow",
                             "--json"], capsys))  # fmt: skip
    _, est, se, loglik = module.R_REFERENCE["zip"]
    z = r["models"]["zip"]
    got = [c["estimate"] for c in z["zero"] + z["count"]]
    np.testing.assert_allclose(got, est, rtol=1e-6)
    np.testing.assert_allclose([c["se"] for c in z["zero"] + z["count"]], se, rtol=5e-4)
    assert z["loglik"] == pytest.approx(loglik, rel=1e-8)
    assert r["n"] == 599 and r["gradient_descent"]["max_se_error"] < 0.01


def test_string_column_is_treatment_coded_and_q1_uses_the_boundary_mixture(params, tmp_path,
                                                                           capsys):  # fmt: skip
    rng = np.random.default_rng(4)
    site = rng.choice(["north", "lake", "south"], 300)
    rate = np.select([site == "lake", site == "south"], [4.0, 1.5], 2.5)
    y = rng.binomial(1, 0.6, 300) * rng.poisson(rate)
    path = tmp_path / "sites.csv"
    pl.DataFrame({"count": y, "site": site}).write_csv(path)
    args = [path, "--formula", "count ~ site | 1", "--params", params, "--no-mlflow", "--json"]
    r = json.loads(run_main(args, capsys))
    assert [c["term"] for c in r["models"]["zip"]["count"]] == ["intercept", "site[T.north]",
                                                      "site[T.south]"]  # fmt: skip
    assert [c["term"] for c in r["models"]["zip"]["zero"]] == ["intercept"]
    X = np.c_[np.ones(300), site == "north", site == "south"].astype(float)
    fit = fit_model("zip", fit_data(X, np.ones((300, 1)), y))
    np.testing.assert_allclose(
        [c["estimate"] for c in r["models"]["zip"]["count"]], fit.beta, atol=1e-9
    )
    lr = r["lr_tests"]["poisson_vs_zip"]
    assert lr["reference"] == "0.5*chi2(0) + 0.5*chi2(1)" and lr["note"] == ""


def test_printed_report_and_one_mlflow_run(params, tmp_path, isolated_mlflow, capsys):
    """The text has both parts' tables (rendered from the same report as the JSON artifact)."""
    from mlflow.tracking import MlflowClient

    from pipeline.report.count_report import render

    args = [EXAMPLE, "--formula", FORMULA, "--where", "persons > 1", "--params", params,
            "--workdir", tmp_path]  # fmt: skip
    out = run_main(args, capsys)
    assert "where persons > 1" in out and "MLflow run" in out
    lines = out.splitlines()
    for line in (
        "count part: log(mean)",
        "zero part: logit(pi), pi = P(structural zero)",
        "Likelihood-ratio tests (nested pairs; H0: the smaller model's restriction)",
        "Observed against expected frequencies (summed over the rows' fitted laws)",
    ):
        assert line in lines, line
    assert lines[0].startswith(f"Count families (zip): {EXAMPLE}, {FORMULA} (")
    count = out.split("count part: log(mean)")[1].split("zero part")[0].splitlines()
    zero = out.split("zero part: logit(pi)")[1].split("Vuong test")[0].splitlines()
    assert [line.split()[0] for line in count[2:5]] == ["intercept", "camper", "persons"]
    assert [line.split()[0] for line in zero[2:4]] == ["intercept", "persons"]
    assert any(line.startswith("  Poisson in ZIP") and "chi2(2)" in line for line in lines)
    assert any(line.startswith("Gradient descent (") for line in lines)
    client = MlflowClient(tracking_uri=isolated_mlflow)
    exp = client.get_experiment_by_name("zip-test-counts")
    (run,) = client.search_runs([exp.experiment_id], "tags.`zip.stage` = 'fit_counts'")
    assert run.info.status == "FINISHED" and run.info.run_id in out
    assert run.data.tags["zip.formula"] == FORMULA and run.data.tags["zip.where"] == "persons > 1"
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"rootogram.png", "fit_counts.json", "fit_counts.txt", "frequencies.md"} <= names
    stored = json.loads(Path(client.download_artifacts(run.info.run_id, "fit_counts.json",
                                                       str(tmp_path))).read_text())  # fmt: skip
    assert out.split("\n\nMLflow run")[0] == render(stored)
    metrics = run.data.metrics
    assert (
        metrics["models.zip.zero.persons.estimate"]
        == stored["models"]["zip"]["zero"][1]["estimate"]
    )
    assert (
        metrics["lr_tests.poisson_vs_zip.statistic"]
        == stored["lr_tests"]["poisson_vs_zip"]["statistic"]
    )
    assert stored["n"] < 250 and stored["mlflow_run_id"] == run.info.run_id


def test_categorical_terms_reach_mlflow_under_valid_keys(params, tmp_path, isolated_mlflow,
                                                        capsys):  # fmt: skip
    """Treatment-coded names (`g[T.b]`) carry brackets, which MLflow refuses in a key: every
    key the run logs is sanitised (a real-data run once stopped here with a traceback)."""
    from mlflow.tracking import MlflowClient

    rng = np.random.default_rng(4)
    g = rng.choice(["a", "b", "c"], 400)
    y = np.where(rng.random(400) < 0.3, 0, rng.poisson(np.where(g == "b", 3.0, 1.5)))
    path = tmp_path / "groups.csv"
    pl.DataFrame({"count": y, "g": g}).write_csv(path)
    out = run_main([path, "--formula", "count ~ g | g", "--params", params,
                    "--workdir", tmp_path], capsys)  # fmt: skip
    client = MlflowClient(tracking_uri=isolated_mlflow)
    exp = client.get_experiment_by_name("zip-test-counts")
    (run,) = client.search_runs([exp.experiment_id], "tags.`zip.stage` = 'fit_counts'")
    assert run.info.run_id in out and run.info.status == "FINISHED"
    keys = set(run.data.metrics)
    assert "models.zip.zero.g_T.b_.estimate" in keys and "models.zip.count.g_T.c_.estimate" in keys
    assert all(re.fullmatch(r"[\w\-. /:]+", k) for k in keys)


# -- bad input -------------------------------------------------------------------------------
def _bad(tmp: Path) -> dict[str, tuple[list, str]]:
    """name -> (arguments after the program, expected fragment of the one-line error)."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=40)
    frame = pl.DataFrame({"count": rng.poisson(2, 40), "x": x, "x2": 2 * x,
                          "flat": np.ones(40), "g": rng.integers(0, 2, 40)})  # fmt: skip
    frame.write_csv(ok := tmp / "ok.csv")
    frame.with_columns(count=pl.col("count") + 0.5).write_csv(frac := tmp / "frac.csv")
    frame.head(3).write_csv(few := tmp / "few.csv")
    frame.with_columns(count=pl.when(pl.col("g") == 1).then(0).otherwise(pl.col("count") + 1)
                       ).write_csv(sep := tmp / "sep.csv")  # fmt: skip
    # Issue 21 item 14: y > 0 exactly when a continuous x > 0 (quasi-complete separation):
    # `--family zip` exited 0 after 200 iterations with a zero-part x of -161 and p = 0.097.
    frame.with_columns(count=pl.when(pl.col("x") > 0).then(pl.col("count") + 1).otherwise(0)
                       ).write_csv(sep_x := tmp / "sep_x.csv")  # fmt: skip
    return {
        "unknown-column": ([ok, "--formula", "count ~ nosuch"], "no column 'nosuch'"),
        "unparsable": ([ok, "--formula", "count ~ x +"], "count part"),
        "no-tilde": ([ok, "--formula", "count x"], "needs '~'"),
        "constant": ([ok, "--formula", "count ~ x + flat"], "'flat' is constant"),
        "collinear": ([ok, "--formula", "count ~ x + x2"], "collinear"),
        "non-integer": ([frac, "--formula", "count ~ x"], "non-integer"),
        "too-few-rows": ([few, "--formula", "count ~ x | x"], "need more rows than parameters"),
        "separated": ([sep, "--formula", "count ~ 1 | g"], "no finite maximum"),
        "separated-x": ([sep_x, "--formula", "count ~ x | x"], "no finite maximum"),
        "both": ([ok, "--formula", "count ~ x", "--column", "count"], "exactly one of"),
        "neither": ([ok], "exactly one of --column"),
    }


BAD = ["unknown-column", "unparsable", "no-tilde", "constant", "collinear", "non-integer",
       "too-few-rows", "separated", "separated-x", "both", "neither"]  # fmt: skip


# Reading the design is shared by every family; separation is the ZIP oracle's verdict (the
# comparison of families shows each family's status instead).
CASES = [(name, family) for name in BAD for family in ("zip", "all")
         if not (name.startswith("separated") and family == "all")]  # fmt: skip


@pytest.mark.parametrize(("name", "family"), CASES)
def test_bad_input_exits_2_with_one_line(name, family, tiny_params, tmp_path, capsys):
    """In-process through `cli.run`, exactly as `python -m pipeline.fit_counts` maps errors."""
    from pipeline.stages.cli import run
    from pipeline.stages.fit_counts import main

    args, fragment = _bad(tmp_path)[name]
    with pytest.raises(SystemExit) as exit_:
        run(main, [*map(str, args), "--json", "--params", str(tiny_params), "--workdir",
                   str(tmp_path), "--family", family])  # fmt: skip
    out = capsys.readouterr()
    assert exit_.value.code == 2 and out.out == ""
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], out.err
    assert "Traceback" not in out.err
    assert not (tmp_path / "mlruns").exists()


def test_column_and_formula_together_in_a_real_process(tiny_params, tmp_path):
    """The real entry point: one line, exit 2, before any heavy import."""
    args, fragment = _bad(tmp_path)["both"]
    cmd = [sys.executable, "-m", "pipeline.fit_counts", *map(str, args), "--params",
           str(tiny_params)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env={**os.environ, "CI": "true"})  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr.startswith("error: ") and fragment in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


# -- FORMULA through make ----------------------------------------------------------------------
HOSTILE = {
    "single-quote": "count ~ x'; touch {s}; echo ' | z",
    "double-quote": 'count ~ x"; touch {s}; echo " | z',
    "command-subst": "count ~ $(touch {s}) | z",
    "backticks": "count ~ `touch {s}` | z",
    "make-shell": "count ~ $(shell touch {s}) | z",
    "semicolon-pipe": "count ~ x | z; touch {s} | cat",
    "newline": "count ~ x\ntouch {s}\n'\"",
    "leading-dash": "-count ~ x | z",
}


def _make(cwd: Path, *assignments: str, py: Path | None = None):
    cmd = ["make", "-s", "-f", str(ROOT / "Makefile"), "-o", ".venv/.installed", "fit-counts",
           *assignments, *([f"PY={py}"] if py else [])]  # fmt: skip
    skip = {"FILE", "COLUMN", "FORMULA", "WHERE", "JSON"}
    env = {k: v for k, v in os.environ.items() if k not in skip}
    return subprocess.run(cmd, cwd=cwd, env={**env, "CI": "true"}, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


@pytest.mark.parametrize("template", HOSTILE.values(), ids=HOSTILE.keys())
def test_formula_reaches_the_program_verbatim_and_runs_nothing(template, tmp_path):
    printer = tmp_path / "python"
    printer.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    printer.chmod(0o755)
    sentinel = tmp_path / "pwned"
    formula = template.format(s=sentinel)
    out = _make(tmp_path, "FILE=data.csv", f"FORMULA={formula}", py=printer)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [
        "-m", "pipeline.fit_counts", f"--formula={formula}", "--params=params.yaml",
        "--", "data.csv",
    ]  # fmt: skip
    assert not sentinel.exists(), "the value was run, not passed"


def test_the_real_program_gets_the_hostile_formula_verbatim(tmp_path):
    sentinel = tmp_path / "pwned"
    formula = (
        f"count ~ nosuch'; touch {sentinel}; echo ' + $(touch {sentinel}) | `touch {sentinel}`"
    )
    out = _make(ROOT, "FILE=examples/fish_caught.csv", f"FORMULA={formula}")
    assert out.returncode == 2, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert errors and "Traceback" not in out.stderr, out.stderr
    assert not sentinel.exists()


def test_make_without_column_or_formula_prints_the_usage(tmp_path):
    out = _make(tmp_path, "FILE=f.csv", py=tmp_path / "never-run")
    assert out.returncode == 2 and "FORMULA='y ~ count regressors | zero regressors'" in out.stderr


def test_a_separated_family_is_labelled_so_and_never_recommended(tiny_params, tmp_path, capsys):
    """Issue 21 item 14: the comparison labelled the continuous separation `max_iter`; now
    every family with a zero part says `separated`, and the recommendation skips them."""
    from pipeline.stages import fit_counts

    x = np.random.default_rng(8).normal(size=200)
    y = np.where(x > 0, np.random.default_rng(9).poisson(2.0, 200) + 1, 0)
    pl.DataFrame({"count": y, "x": x}).write_csv(path := tmp_path / "sep.csv")
    argv = [str(path), "--formula", "count ~ x | x", "--params", str(tiny_params),
            "--no-mlflow", "--json"]  # fmt: skip
    assert fit_counts.main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    statuses = {f: m["status"] for f, m in report["models"].items()}
    assert {statuses[f] for f in ("zip", "zinb", "hurdle_poisson", "hurdle_nb")} == {"separated"}
    assert report["recommendation"]["family"] in ("poisson", "nb", None)


def test_a_long_fit_is_announced_and_each_family_reported(tiny_params, monkeypatch, capsys):
    """Issue 21 item 3: 10^6 rows x 20 covariates under FAMILY=all ran 494 s with no word;
    the cost is now said before the fits (on stderr: `--json` keeps stdout one object), and
    the families are reported one by one as they finish (the terminal's progress bar)."""
    from pipeline.analysis import count_fits
    from pipeline.stages import fit_counts

    seen = []
    real = count_fits.fit_families

    def spy(*args, on_family=None, **kwargs):
        return real(*args, on_family=lambda f: (seen.append(f), on_family(f)), **kwargs)

    monkeypatch.setattr(count_fits, "fit_families", spy)
    argv = [str(EXAMPLE), "--formula", FORMULA, "--params", str(tiny_params), "--no-mlflow",
            "--json"]  # fmt: skip
    assert fit_counts.main(argv) == 0
    quiet = capsys.readouterr()
    assert "fit_counts:" not in quiet.err  # 250 rows: nothing to announce
    assert seen == list(count_fits.families_for("all"))
    monkeypatch.setattr(count_fits, "SECONDS_PER_ROW_K2", 1e-2)  # as if the file were huge
    assert fit_counts.main(argv) == 0
    loud = capsys.readouterr()
    json.loads(loud.out)
    # count ~ persons + camper | persons: 3 count and 2 zero coefficients, log alpha for NB
    k2 = 3**2 + 4**2 + 5**2 + 6**2 + 5**2 + 6**2
    minutes = 1e-2 * 250 * k2 / 60
    assert (
        f"fit_counts: 250 rows, 6 families of up to 6 parameters: ~{minutes:.0f} min of "
        "Newton fits on these cores (Ctrl-C stops)"
    ) in loud.err.splitlines()
