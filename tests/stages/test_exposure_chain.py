"""A regression scenario with an exposure through the whole study (generate → sweep →
aggregate on tiny params): the exposure column stored, the fits judged against the oracle
fitted with the offset, the report naming the exposure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from test_aggregate import run_chain

from pipeline.store.files import Layout

SCENARIOS = [
    {"name": "exposed", "covariates": [{"name": "x", "dist": "normal"}],
     "count": {"intercept": 0.3, "x": 0.4}, "zero": {"intercept": -1.0},
     "exposure": {"dist": "uniform", "low": 0.5, "high": 4.0, "name": "years"}},
    {"name": "nb-exposed", "family": "nb", "dispersion": 0.5,
     "covariates": [{"name": "x", "dist": "normal"}], "count": {"intercept": 0.5, "x": 0.3},
     "exposure": {"dist": "uniform", "low": 1.0, "high": 2.0}},
]  # fmt: skip
EXTRA = {
    "data": {"regression": {"n": 400, "replicates": 2, "scenarios": SCENARIOS}},
    "sweep": {"lr_grid": [0.1], "inits": 1,
              "regression": {"inits": 1, "standardize": [True], "batch_sizes": [None]}},
    "fit": {"max_steps": 3000},
}  # fmt: skip


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("exposure") / "a"
    run_chain(workdir, "test-exposure", EXTRA)
    return workdir


def test_data_hold_the_exposure_and_the_fits_reach_the_offset_oracle(chain):
    layout = Layout(chain)
    rows = pl.read_parquet(layout.reg_dataset("exposed").path)
    assert rows.columns == ["replicate", "x", "years", "y"]
    assert pl.read_parquet(layout.reg_dataset("nb-exposed").path).columns == [
        "replicate", "x", "exposure", "y"]  # fmt: skip
    fits = pl.read_parquet(layout.reg("fits").path)
    assert set(fits["scenario"]) == {"exposed", "nb-exposed"}
    done = fits.filter(pl.col("status") == "converged")
    assert done.height == fits.height == 4
    # Judged against the oracle with the offset: at it to 0.01 SE and 1e-8 nats/obs. Without
    # the offset in the engine, the intercept would sit ~E log t (0.7, 0.4) away.
    assert done["max_err_se"].max() < 0.01
    assert np.all(np.abs(done["nll_gap"].to_numpy()) < 1e-8)


def test_the_report_names_the_exposure(chain):
    text = (chain / "reports" / "recovery.md").read_text()
    assert "### exposed (ZIP; exposure: years ~ U(0.5, 4), its log the count part's offset)" in text
    assert "- **nb-exposed** [exposure: exposure ~ U(1, 2), its log the count part's offset" in text
