"""The aggregate stage's regression part: generate → sweep → aggregate on tiny params with one
regression scenario, checked against a direct numpy computation from `data/reg_fits.parquet`;
and the stage's reading rules (no scenario or no regression fits: nothing; stale: an error)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from conftest import TINY, merge
from reg_frames import fits_frame
from test_aggregate import run_chain

from pipeline.core.errors import UserError
from pipeline.stages import aggregate_regression, config
from pipeline.store import files
from pipeline.store.files import Layout

REG = {
    "data": {"regression": {"n": 300, "replicates": 2, "scenarios": [
        {"name": "reg", "covariates": [{"name": "x", "dist": "normal", "mean": 5.0, "sd": 2.0}],
         "count": {"intercept": 0.5, "x": 0.1}, "zero": {"intercept": -1.0}}]}},
    "sweep": {"lr_grid": [0.1, 3.0], "inits": 2,
              "regression": {"inits": 2, "standardize": [False, True], "batch_sizes": [None, 50]}},
    "tracking": {"log_fits": False},
}  # fmt: skip


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("reg_chain") / "a"
    run_chain(workdir, "test-reg", REG)
    return workdir


def test_regression_outputs_match_the_fits(chain):
    params = config.load(chain / "params.yaml")
    stamp = params.digest(*config.STAGE_BLOCKS["aggregate"])
    layout = Layout(chain)
    fits = pl.read_parquet(layout.reg("fits").path)
    table = files.read(layout.report("reg_optimisation"), stamp)
    recovery = files.read(layout.report("reg_recovery"), stamp)
    assert table["fits"].sum() == fits.height
    # 2 lr × 2 scales × 2 batch sizes, 2 datasets × 2 inits each; 3 coefficients
    assert table.height == 8 and set(table["fits"]) == {4} and recovery.height == 3
    assert set(recovery["scenario"]) == {"reg"}
    for row in table.iter_rows(named=True):
        batch = row["batch_size"]
        mine = fits.filter(
            (pl.col("lr") == row["lr"]) & (pl.col("standardize") == row["standardize"])
            & (pl.col("batch_size").is_null() if batch is None else pl.col("batch_size") == batch)
        )  # fmt: skip
        status, err = mine["status"].to_numpy(), mine["max_err_se"].to_numpy()
        ok = (status != "diverged") & np.isfinite(err)
        assert row["converged"] == pytest.approx(np.mean(status == "converged"))
        assert row["within_1se"] == pytest.approx(np.mean(ok & (err < 1.0)))
        if ok.any():
            assert row["err_median"] == pytest.approx(np.median(err[ok]))
    assert (layout.figures / "regression_error_vs_lr.png").stat().st_size > 0
    text = layout.report_text.read_text()
    assert "## Regression scenarios" in text and "### reg" in text
    assert text.index("## Figures") < text.index("## Regression scenarios")


def _params(tmp_path: Path, extra: dict) -> config.Params:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(merge(TINY, extra), sort_keys=False))
    return config.load(path)


def test_nothing_without_regression_scenarios_or_fits(tmp_path):
    assert aggregate_regression.load_regression(_params(tmp_path, {}), tmp_path) is None
    # scenarios but no `data/reg_fits.parquet` yet
    assert aggregate_regression.load_regression(_params(tmp_path, REG), tmp_path) is None
    assert aggregate_regression.aggregate_regression(None, tmp_path, None, "x") is None


def test_stale_regression_fits_are_refused(tmp_path):
    params = _params(tmp_path, REG)
    files.write(fits_frame(), Layout(tmp_path).reg("fits"), "not-the-sweep-stamp")
    with pytest.raises(UserError):
        aggregate_regression.load_regression(params, tmp_path)


def test_each_regression_fit_row_names_its_own_run(tmp_path_factory):
    """The trial hands each engine call's fit runs to the loggers as soon as that call ends
    (issue 19 item 3); the run ids, gathered call by call, must still land on their own rows:
    every row's run carries its scenario, replicate, start, scale and batch size."""
    from pipeline.tracking.runs import Tracker

    workdir = tmp_path_factory.mktemp("reg_runs") / "a"
    extra = merge(
        REG, {"sweep": {"lr_grid": [0.1]}, "tracking": {"log_fits": True, "fit_plots": False}}
    )
    run_chain(workdir, "test-reg-runs", extra)
    fits = pl.read_parquet(Layout(workdir).reg("fits").path)
    assert fits.height == 2 * 2 * 2 * 2 and fits["run_id"].n_unique() == fits.height
    tracker = Tracker(TINY["tracking"]["experiment"], root=workdir)
    runs = {r.info.run_id: r for r in tracker.search("tags.`zip.level` = 'fit'")}
    for row in fits.iter_rows(named=True):
        run = runs[row["run_id"]]
        scale = "std" if row["standardize"] else "raw"
        batch = "full" if row["batch_size"] is None else f"b{row['batch_size']}"
        want = f"{row['scenario']} rep={row['replicate']} start={row['init']} {scale} {batch}"
        assert run.info.run_name == want
        assert run.data.tags["zip.status"] == row["status"]
