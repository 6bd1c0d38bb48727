"""The count families through the whole study: generate → sweep → aggregate on tiny params
with a ZINB, a hurdle Poisson and an NB scenario (MLflow fit runs on), checked for what each
layer must carry: the family, the dispersion (log α fitted, α reported), the oracle's
boundary status, and the report's sections."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from mlflow.tracking import MlflowClient
from test_aggregate import run_chain

from pipeline.stages import config
from pipeline.store import files
from pipeline.store.files import Layout

X = {"name": "x", "dist": "normal"}
SCENARIOS = [
    {"name": "zinb", "family": "zinb", "dispersion": 0.5, "covariates": [dict(X)],
     "count": {"intercept": 1.0, "x": 0.3}, "zero": {"intercept": -1.0}},
    {"name": "hurdle", "family": "hurdle_poisson", "covariates": [dict(X)],
     "count": {"intercept": 0.8, "x": 0.2}, "zero": {"intercept": 0.5, "x": -0.5}},
    {"name": "nb", "family": "nb", "dispersion": 1.0, "covariates": [dict(X)],
     "count": {"intercept": 0.5, "x": 0.4}},
]  # fmt: skip
FAMILIES = {"zinb": "zinb", "hurdle": "hurdle_poisson", "nb": "nb"}
EXTRA = {
    "data": {"regression": {"n": 400, "replicates": 2, "scenarios": SCENARIOS}},
    "sweep": {"lr_grid": [0.1], "inits": 1,
              "regression": {"inits": 1, "standardize": [True], "batch_sizes": [None]}},
    "fit": {"max_steps": 3000},
    "tracking": {"log_fits": True, "fit_plots": False},
}  # fmt: skip


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("families") / "a"
    run_chain(workdir, "test-families", EXTRA)
    return workdir


def test_summary_carries_family_and_dispersion(chain):
    summary = pl.read_parquet(Layout(chain).reg_summary.path)
    fam = dict(summary.select("scenario", "family").unique().iter_rows())
    assert fam == FAMILIES
    disp = summary.filter(pl.col("part") == "dispersion")
    assert set(disp["scenario"]) == {"zinb", "nb"}
    truth = dict(disp.select("scenario", "truth").unique().iter_rows())
    assert truth["zinb"] == pytest.approx(math.log(0.5)) and truth["nb"] == pytest.approx(0.0)
    assert summary.filter(pl.col("scenario") == "nb", pl.col("part") == "zero").height == 0
    assert set(summary["oracle_status"]) <= {"converged", "boundary"}


def test_converged_fits_reach_their_oracle(chain):
    fits = pl.read_parquet(Layout(chain).reg("fits").path)
    assert dict(fits.select("scenario", "family").unique().iter_rows()) == FAMILIES
    done = fits.filter(pl.col("status") == "converged")
    assert done.height >= 4  # Adam at lr 0.1 converges on these small problems
    # The recovery target: every converged full-batch fit within 0.01 oracle SE.
    assert done["max_err_se"].max() < 0.01
    assert np.all(np.abs(done["nll_gap"].to_numpy()) < 1e-8)


def test_report_has_each_family_and_alpha_on_its_scale(chain):
    params = config.load(chain / "params.yaml")
    stamp = params.digest(*config.STAGE_BLOCKS["aggregate"])
    recovery = files.read(Layout(chain).report("reg_recovery"), stamp)
    alpha = recovery.filter(pl.col("term") == "alpha")
    assert set(alpha["scenario"]) == {"zinb", "nb"}
    assert alpha.filter(pl.col("scenario") == "zinb")["truth"][0] == pytest.approx(0.5)
    text = (chain / "reports" / "recovery.md").read_text()
    for heading in ("### zinb (ZINB)", "### hurdle (hurdle Poisson)", "### nb (NB)"):
        assert heading in text


def test_fit_runs_name_their_family(chain):
    client = MlflowClient(tracking_uri=f"sqlite:///{chain}/mlruns/mlflow.db")
    (exp,) = [e for e in client.search_experiments() if e.name != "Default"]
    runs = client.search_runs([exp.experiment_id], "tags.`zip.model` = 'zinb-regression'")
    assert len(runs) == 2  # 2 replicates × 1 init × 1 variant × 1 trial
    assert {r.data.params["family"] for r in runs} == {"zinb"}
    # The estimate is the last point of its history, which MLflow shows as its value.
    assert all("dispersion.log_alpha" in r.data.metrics for r in runs)
