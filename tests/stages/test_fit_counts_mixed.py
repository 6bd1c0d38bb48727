"""`fit_counts --formula "y ~ x + (1 | g) | z"` (issue 20 item 5): random intercepts in lme4 /
glmmTMB syntax, fitted by the exact quadrature oracle (`core.oracle.mixed`; its references
against glmmTMB and lme4 are in tests/core/test_oracle_mixed.py), each family against itself
without them, the conditional modes, the MLflow run, and bad input (one line, exit 2)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from scipy import stats

from pipeline.core.model import fit_data
from pipeline.core.oracle import mixed
from pipeline.core.oracle.fit import fit_model

DATA = Path(__file__).parents[2] / "examples" / "salamanders.csv"
FORMULA = "count ~ mined + (1|site) | mined"


def _run(args, tiny_params, capsys, workdir=None) -> dict:
    from pipeline.stages import fit_counts

    tail = ["--workdir", str(workdir)] if workdir else ["--no-mlflow"]
    argv = [str(DATA), *args, "--params", str(tiny_params), "--json", *tail]
    assert fit_counts.main(argv) == 0
    return json.loads(capsys.readouterr().out)


def _design():
    d = pl.read_csv(DATA)
    yes = (d["mined"] == "yes").to_numpy().astype(float)  # formulaic's level order: no, yes
    X = np.c_[np.ones(d.height), yes]
    return fit_data(X, X, d["count"].to_numpy()), d["site"].to_numpy()


def test_zip_with_a_site_intercept_is_the_oracles_fit(tiny_params, capsys):
    r = _run(["--formula", FORMULA, "--family", "zip"], tiny_params, capsys)
    data, site = _design()
    want = mixed.fit_mixed("zip", data, site, ("count",))
    m = r["models"]["zip"]
    got = [c["estimate"] for c in m["zero"] + m["count"]] + [m["sigma"][0]["log_sigma"]]
    np.testing.assert_allclose(got, want.params, rtol=1e-10)
    np.testing.assert_allclose([c["se"] for c in m["zero"] + m["count"]], want.se[:4], rtol=1e-8)
    assert m["loglik"] == pytest.approx(want.loglik, rel=1e-12)
    # σ's interval: the profile likelihood's for the family asked for, Wald on log σ for the
    # Poisson beside it (exp(log σ ± z SE)); its test against the ZIP without the intercept.
    s = m["sigma"][0]
    profile = mixed.sigma_profile(want, data, site, "count", 0.95)
    assert (s["lower"], s["upper"]) == pytest.approx(profile, rel=1e-9)
    assert s["interval"] == "profile likelihood, chi2(1) cutoff"
    other = r["models"]["poisson"]["sigma"][0]
    z = stats.norm.ppf(0.975)
    assert other["lower"] == pytest.approx(math.exp(other["log_sigma"] - z * other["se_log_sigma"]))
    fixed = fit_model("zip", data).loglik
    t = m["sigma_tests"]["count"]
    assert t["statistic"] == pytest.approx(2 * (want.loglik - fixed), rel=1e-9)
    assert t["p_value"] == pytest.approx(0.5 * stats.chi2.sf(t["statistic"], 1), rel=1e-9)
    # The ZIP's Poisson is there too, and the modes are per site in file order.
    assert set(r["models"]) == {"zip", "poisson"} and r["groups"] == 23
    assert r["modes"]["group"][:3] == ["VF-1", "VF-2", "VF-3"]
    np.testing.assert_allclose(r["modes"]["count"], want.modes[:, 0], rtol=1e-8, atol=1e-12)
    assert (r["random"], r["group_column"]) == (["count"], "site")


def test_the_zero_part_of_a_hurdle_does_not_depend_on_its_count_family(tiny_params, capsys):
    """A hurdle's zero part is its own binary model: with the random intercept there only,
    hurdle Poisson and hurdle NB give the same zero-part σ, coefficients and test."""
    r = _run(["--formula", "count ~ mined | mined + (1|site)", "--family", "all"],
             tiny_params, capsys)  # fmt: skip
    hp, hn = r["models"]["hurdle_poisson"], r["models"]["hurdle_nb"]
    assert r["models"]["poisson"]["status"] == "failed"  # no zero part for the intercept
    assert hp["sigma"][0]["sigma"] == pytest.approx(hn["sigma"][0]["sigma"], rel=1e-6)
    for a, b in zip(hp["zero"], hn["zero"]):
        assert a["estimate"] == pytest.approx(b["estimate"], rel=1e-6)
    assert r["recommendation"]["family"] == r["detail"]
    best = min((m["bic"], f) for f, m in r["models"].items() if m["status"] != "failed")[1]
    assert r["detail"] == best


def test_the_mlflow_run_holds_the_modes(tiny_params, tmp_path, capsys, isolated_mlflow):
    from mlflow.tracking import MlflowClient

    r = _run(["--formula", FORMULA, "--family", "poisson"], tiny_params, capsys, tmp_path)
    client = MlflowClient(tracking_uri=isolated_mlflow)
    run = client.get_run(r["mlflow_run_id"])
    assert run.data.tags["zip.random"] == "count" and run.data.tags["zip.group_column"] == "site"
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {
        "modes.csv",
        "fit_counts.json",
        "fit_counts.txt",
    }
    local = client.download_artifacts(run.info.run_id, "modes.csv", str(tmp_path))
    modes = pl.read_csv(local)
    assert modes.columns == ["group", "count"] and modes.height == 23
    np.testing.assert_allclose(modes["count"].to_numpy(), r["modes"]["count"], rtol=1e-15)


@pytest.mark.parametrize(
    ("formula", "fragment"),
    [
        ("count ~ mined + (1|nosuch)", "no column 'nosuch' (the grouping column"),
        ("count ~ mined + (mined|site)", "only random intercepts '(1 | group)'"),
        ("count ~ (1|site)", "write '1 + (1 | group)'"),
        ("count ~ mined + (1|site) | mined + (1|spp)", "give one grouping column"),
        ("count ~ mined + (1|one)", "at least two groups"),
        ("count ~ mined + (1|row)", "every group has one row"),
    ],
)
def test_bad_random_terms_exit_2_with_one_line(formula, fragment, tiny_params, tmp_path,
                                               capsys):  # fmt: skip
    from pipeline.stages.cli import run
    from pipeline.stages.fit_counts import main

    d = pl.read_csv(DATA).with_columns(one=pl.lit("a"), row=pl.int_range(pl.len()))
    path = tmp_path / "data.csv"
    d.write_csv(path)
    with pytest.raises(SystemExit) as exit_:
        run(main, [str(path), "--formula", formula, "--json", "--params", str(tiny_params),
                   "--workdir", str(tmp_path), "--family", "zip"])  # fmt: skip
    out = capsys.readouterr()
    assert exit_.value.code == 2 and out.out == ""
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], out.err
    assert not (tmp_path / "mlruns").exists()


def test_a_long_mixed_analysis_says_its_cost_first(tiny_params, capsys, monkeypatch):
    """The cost line (stderr, before any fit) from rows x quadrature points per fit."""
    from pipeline.analysis import count_fits
    from pipeline.stages import fit_counts

    monkeypatch.setattr(count_fits, "SECONDS_PER_POINT", 1e-2)  # as if the data were huge
    argv = [str(DATA), "--formula", FORMULA, "--family", "poisson", "--params",
            str(tiny_params), "--json", "--no-mlflow"]  # fmt: skip
    assert fit_counts.main(argv) == 0
    err = capsys.readouterr().err
    # one count-part intercept, 25 points per row; its fit and its σ's profile interval
    want = (644 * 25) * (1 + count_fits.PROFILE_FITS) * 1e-2
    # and its gradient descent from the tiny params' 2 starts
    want += count_fits.DESCENT_POINT_STEP * count_fits.DESCENT_STEPS * (644 * 25) * 2
    assert f"644 rows in 23 groups, 1 family with random intercepts: ~{want / 60:.0f} min" in err


def test_the_family_asked_for_is_also_fitted_by_gradient_descent(tiny_params, capsys):
    """`--family zip`: the ZIP with its site intercept by the mixed engine beside its oracle;
    its best start within 0.01 oracle SE on every parameter, log σ included (the engine's
    bar, tests/core/test_mixed_engine.py); the Poisson shown beside it gets none."""
    raw = yaml.safe_load(tiny_params.read_text())
    raw["fit_counts"].update(max_steps=1000)  # the tiny params' 100 steps stop it early
    longer = tiny_params.with_name("longer.yaml")
    longer.write_text(yaml.safe_dump(raw))
    r = _run(["--formula", FORMULA, "--family", "zip"], longer, capsys)
    gd = r["models"]["zip"]["gradient_descent"]
    assert gd["status"] == "converged" and gd["max_se_error"] < 0.01, gd
    assert gd["oracle"] == "the quadrature oracle" and abs(gd["nll_gap"]) < 1e-9
    assert set(gd["params"]) >= {"count: intercept", "log(sigma) count"}
    assert "gradient_descent" not in r["models"]["poisson"]
