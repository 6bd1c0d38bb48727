"""The data stage's regression scenarios: validation, files, oracle fits, determinism."""

import copy
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
from conftest import TINY, config_error, merge

from pipeline.analysis.regression import matrices
from pipeline.core.model import fit_data
from pipeline.core.oracle.fit import fit_model
from pipeline.stages import config
from pipeline.stages.generate_regression import generate_regression
from pipeline.store import files

VISITS = {
    "name": "visits",
    "covariates": [
        {"name": "age", "dist": "normal"},
        {"name": "health", "dist": "categorical", "levels": ["good", "poor"], "probs": [0.7, 0.3]},
    ],
    "count": {"intercept": 0.5, "age": 0.2, "health[poor]": 0.6},
    "zero": {"intercept": -0.7, "age": 0.4},
}
REG = {"data": {"regression": {"n": 300, "replicates": 2, "scenarios": [VISITS]}}}


def scenario(**changes) -> dict:
    return {"data": {"regression": {"scenarios": [{**VISITS, **changes}]}}}


BAD = [
    ("unknown-term", scenario(count={"intercept": 1.0, "income": 0.1}),
     "data.regression.scenarios[0].count.income", "is not a covariate column"),
    ("level-not-column", scenario(zero={"intercept": 1.0, "health[good]": 0.1}),
     "data.regression.scenarios[0].zero.'health[good]'", "is not a covariate column"),
    ("text-coefficient", scenario(zero={"intercept": "big"}),
     "data.regression.scenarios[0].zero.intercept", "must be a number"),
    ("empty-part", scenario(zero={}), "data.regression.scenarios[0].zero", "at least one"),
    ("bad-sd", scenario(covariates=[{"name": "age", "dist": "normal", "sd": -1.0}]),
     "data.regression.scenarios[0].covariates", "sd"),
    ("unknown-dist", scenario(covariates=[{"name": "age", "dist": "gamma"}]),
     "data.regression.scenarios[0].covariates[0].dist", "must be one of"),
    ("same-name", scenario(name="blog"), "data.regression.scenarios[0].name", "duplicate"),
    ("rows", {"data": {"regression": {"n": 0}}}, "data.regression.n", "must be in"),
    ("batch", {"sweep": {"regression": {"batch_sizes": [0]}}},
     "sweep.regression.batch_sizes[0]", ">= 1"),
    ("variants", {"sweep": {"regression": {"standardize": []}}},
     "sweep.regression.standardize", "true and/or false"),
]  # fmt: skip


@pytest.mark.parametrize("overrides, key, problem", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_regression_params_name_the_key(write_params, overrides, key, problem):
    assert problem in config_error(write_params(merge(REG, overrides)), key)


SECOND_ONLY = [  # the first scenario is fine, the second fails only in its last replicate
    ("rate", [VISITS, {**VISITS, "name": "big", "count": {"intercept": 0.5, "age": 20.0}}],
     "(big), replicate 0:", "count part: rate reaches"),
    ("dispersion", [VISITS, {**VISITS, "name": "wide", "family": "zinb", "dispersion": 1e308}],
     "(wide), replicate 0:", "dispersion 1e+308 makes the gamma-mixed Poisson rate overflow"),
]  # fmt: skip


@pytest.mark.parametrize("scenarios, where, problem", [c[1:] for c in SECOND_ONLY],
                         ids=[c[0] for c in SECOND_ONLY])  # fmt: skip
def test_a_scenario_that_cannot_be_drawn_is_one_line_and_writes_nothing(
    scenarios, where, problem, write_params, stage_env, tmp_path
):
    """Issue 21 items 12 and 13: exp(0.5 + 20 * age) passes 1e6 within a few SDs of age; an
    NB dispersion of 1e308 overflows the gamma-mixed rate (was a ValueError traceback). Both
    were refused only after the intercept-only datasets, earlier scenarios and the MLflow store
    were written; now before anything is."""
    scenarios = [copy.deepcopy(s) for s in scenarios]  # shared objects: YAML aliases, refused
    path = write_params(merge(REG, {"data": {"regression": {"scenarios": scenarios}}}))
    out = subprocess.run([sys.executable, "-m", "pipeline.generate", "--params", str(path),
                          "--workdir", str(tmp_path)], env=stage_env, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert lines[0].startswith("error: data.regression.scenarios[1] " + where), lines[0]
    assert problem in lines[0], lines[0]
    assert not (tmp_path / "data").exists() and not (tmp_path / "mlruns").exists()


@pytest.mark.parametrize("alpha", [1e5, 1e20])
def test_a_huge_but_finite_dispersion_generates(alpha, write_params, stage_env, tmp_path):
    """Issue 21 item 12: 1e5 wrote every file, then crashed formatting its summary line."""
    nb = {**copy.deepcopy(VISITS), "name": "wide", "family": "zinb", "dispersion": alpha}
    path = write_params(merge(REG, {"data": {"regression": {"scenarios": [nb]}}}))
    out = subprocess.run([sys.executable, "-m", "pipeline.generate", "--params", str(path),
                          "--workdir", str(tmp_path)], env=stage_env, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "regression wide (zinb)" in out.stdout


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("reg")
    path = workdir / "params.yaml"
    import yaml

    path.write_text(yaml.safe_dump(merge(TINY, REG)))
    params = config.load(path)
    stamp = params.digest(*config.STAGE_BLOCKS["generate"])
    layout = files.Layout(workdir)
    summary = generate_regression(params, layout, stamp)
    return params, layout, stamp, summary


def test_files_hold_the_design_and_the_oracle(generated):
    params, layout, stamp, summary = generated
    rows = files.read(layout.reg_dataset("visits"), stamp)
    assert rows.columns == ["replicate", "age", "health[poor]", "y"]
    assert rows.height == 2 * 300 and rows["y"].dtype == pl.Int64
    assert files.read(layout.reg_summary, stamp).equals(summary)
    # 2 replicates × (2 zero + 3 count coefficients), zero part first as in the oracle.
    assert summary.height == 10
    first = summary.filter(pl.col("replicate") == 0)
    assert list(zip(first["part"], first["term"])) == [
        ("zero", "intercept"), ("zero", "age"),
        ("count", "intercept"), ("count", "age"), ("count", "health[poor]"),
    ]  # fmt: skip
    assert first["truth"].to_list() == [-0.7, 0.4, 0.5, 0.2, 0.6]
    for rep in (0, 1):
        mine = summary.filter(pl.col("replicate") == rep)
        X, Z, y = matrices(rows.filter(pl.col("replicate") == rep),
                           ["intercept", "age", "health[poor]"], ["intercept", "age"])  # fmt: skip
        fit = fit_model("zip", fit_data(X, Z, y))
        assert (mine["oracle_status"] == "converged").all()
        assert np.allclose(mine["estimate"].to_numpy(), np.r_[fit.gamma, fit.beta], atol=1e-12)
        assert np.allclose(mine["se"].to_numpy(), np.r_[fit.se_gamma, fit.se_beta], rtol=1e-10)


def test_the_same_params_give_the_same_data_and_scenarios_are_independent(generated, tmp_path):
    params, layout, stamp, summary = generated
    other = files.Layout(tmp_path)
    again = generate_regression(params, other, stamp)
    assert again.equals(summary)
    assert files.read(other.reg_dataset("visits"), stamp).equals(
        files.read(layout.reg_dataset("visits"), stamp)
    )
    # Adding a scenario in front changes no other scenario's data (streams keyed by name).
    raw = config.as_dict(params)
    extra = {**VISITS, "name": "first"}
    raw["data"]["regression"]["scenarios"].insert(0, extra)
    import yaml

    path = tmp_path / "more.yaml"
    path.write_text(yaml.safe_dump(raw))
    more = config.load(path)
    stamp2 = more.digest(*config.STAGE_BLOCKS["generate"])
    generate_regression(more, files.Layout(tmp_path / "more"), stamp2)
    assert files.read(files.Layout(tmp_path / "more").reg_dataset("visits"), stamp2).equals(
        files.read(layout.reg_dataset("visits"), stamp)
    )
