"""Fit runs: the payloads built from a trial's rows and histories, the in-process `FitLogger`
(one FINISHED child run per fit) and the study summary on the stage run (`log_study`)."""

from __future__ import annotations

import math
import os
import pickle
import signal
from types import SimpleNamespace

import numpy as np
import optuna
import polars as pl
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial
from PIL import Image
from tracking_setup import EXPERIMENT, fresh_store, make_problem

from pipeline.analysis.objective import fit_histories, fit_rows, run_fits
from pipeline.stages import config
from pipeline.tracking import interrupts
from pipeline.tracking.fit_runs import FitLogger, fit_payloads, log_study
from pipeline.tracking.runs import Tracker

STUDY = "zip-lr-test"
TRIAL = 3
MAX_POINTS = 10


@pytest.fixture(scope="module")
def fitted():
    """One trial's fits (lr 1.0, Adam, 400 steps): three converge off the record grid, the
    rare-events init 1 runs to `max_steps`."""
    problem, _ = make_problem(inits=2)
    fit_cfg = config.FitConfig(max_steps=400, chunk_steps=50, record_every=10)
    result = run_fits(problem, fit_cfg, 1.0, "adam", None)
    rows = fit_rows(problem, result).with_columns(
        optimizer=pl.lit("adam"), lr=pl.lit(1.0, pl.Float64)
    )
    return SimpleNamespace(rows=rows, histories=fit_histories(result), fit_cfg=fit_cfg)


def _payloads(fitted, plots=False, max_points=MAX_POINTS):
    return fit_payloads(fitted.rows, fitted.histories, fit_cfg=fitted.fit_cfg,
                        max_points=max_points, plots=plots, trial=TRIAL, study=STUDY)  # fmt: skip


@pytest.fixture
def workdir(isolated_mlflow, tmp_path, pytestconfig, tmp_path_factory):
    return fresh_store(tmp_path, pytestconfig, tmp_path_factory)


@pytest.fixture
def tracker(workdir):
    return Tracker(EXPERIMENT, root=workdir)


# -- payloads ----------------------------------------------------------------------------------
def test_the_problem_mixes_converged_and_max_steps_fits(fitted):
    """What the payload tests below count on."""
    assert fitted.rows["status"].to_list() == ["converged"] * 3 + ["max_steps"]
    assert (fitted.rows["steps"].to_numpy()[:3] % 10 != 0).all()  # final step off the grid


def test_payload_names_tags_params_and_metrics(fitted):
    payloads = _payloads(fitted)
    assert [p["name"] for p in payloads] == [
        "blog rep=0 start=0", "blog rep=0 start=1", "rare-events rep=0 start=0",
        "rare-events rep=0 start=1",
    ]  # fmt: skip
    for p, r in zip(payloads, fitted.rows.iter_rows(named=True)):
        assert p["tags"] == {"status": r["status"], "trial": TRIAL, "study": STUDY,
                             "model": "zip-intercept"}  # fmt: skip
        assert p["params"] == {
            "scenario": r["scenario"], "pi_true": r["pi_true"], "lambda_true": r["lambda_true"],
            "n": 300, "replicate": 0, "data_seed": r["data_seed"], "init_seed": r["init_seed"],
            "pi0": r["pi0"], "lambda0": r["lambda0"], "lr": 1.0, "optimizer": "adam",
            "family": "zip", "form": "zip", "max_steps": 400, "tol": 1e-10,
        }  # fmt: skip
        # One value per quantity: the estimates and the final NLL are their histories' last
        # points (checked in the thinning test below), not metrics of their own.
        assert p["metrics"] == {
            "nll_gap": r["nll_gap"], "steps": r["steps"],
            "converged": 1.0 if r["status"] == "converged" else 0.0,
            "err_pi_se": r["err_pi_se"], "err_lambda_se": r["err_lambda_se"],
        }  # fmt: skip
    assert [p["params"]["pi_true"] for p in payloads] == [0.5, 0.5, 0.3, 0.3]
    assert [p["metrics"]["converged"] for p in payloads] == [1.0, 1.0, 1.0, 0.0]
    assert pickle.loads(pickle.dumps(payloads))[3]["name"] == "rare-events rep=0 start=1"


@pytest.mark.parametrize("max_points", [2, 5, MAX_POINTS, 1000])
def test_histories_are_thinned_to_max_points_keeping_first_and_final_step(fitted, max_points):
    payloads = _payloads(fitted, max_points=max_points)
    by_fit = fitted.histories.partition_by("fit", as_dict=True, maintain_order=True)
    for b, (p, r) in enumerate(zip(payloads, fitted.rows.iter_rows(named=True))):
        path = by_fit[(b,)]
        recorded = dict(zip(path["step"].to_list(), path.select("nll", "pi", "lambda").rows()))
        assert set(p["histories"]) == {"nll", "pi", "lambda"}
        for k, key in enumerate(("nll", "pi", "lambda")):
            steps, values = p["histories"][key]
            assert len(steps) == min(max_points, path.height)
            assert steps[0] == 0 and steps[-1] == r["steps"]  # the final step is always kept
            assert (np.diff(steps) > 0).all()
            assert values.tolist() == [recorded[s][k] for s in steps.tolist()]
        assert p["histories"]["nll"][1][-1] == r["nll_final"]
        assert p["histories"]["pi"][1][-1] == r["pi_hat"]
        assert p["histories"]["lambda"][1][-1] == r["lambda_hat"]


def test_a_fit_of_more_than_max_points_keeps_evenly_spread_steps(fitted):
    payloads = _payloads(fitted, max_points=5)
    # 41 recorded points (0, 10, ..., 400): indices 0, 10, 20, 30, 40.
    assert payloads[3]["histories"]["lambda"][0].tolist() == [0, 100, 200, 300, 400]


def test_plots_carry_the_thinned_paths_truth_and_axis_limits(fitted):
    payloads = _payloads(fitted, plots=True)
    rows = fitted.rows
    for scenario in ("blog", "rare-events"):
        part = rows.filter(pl.col("scenario") == scenario)
        lam_max = max(part[c].max() for c in ("lambda0", "lambda_true", "mle_lambda"))
        for p in payloads:
            if p["params"]["scenario"] == scenario:
                assert p["plot"]["lam_hi"] == math.ceil(1.2 * lam_max)
    for p, r in zip(payloads, rows.iter_rows(named=True)):
        plot, (steps, nll) = p["plot"], p["histories"]["nll"]
        np.testing.assert_array_equal(plot["steps"], steps)
        np.testing.assert_array_equal(plot["gap"], nll - r["mle_nll"])
        np.testing.assert_array_equal(plot["pi"], p["histories"]["pi"][1])
        np.testing.assert_array_equal(plot["lam"], p["histories"]["lambda"][1])
        assert (plot["pi_true"], plot["lam_true"]) == (r["pi_true"], r["lambda_true"])
        assert (plot["mle_pi"], plot["mle_lam"]) == (r["mle_pi"], r["mle_lambda"])
        assert plot["max_step"] == 400 and plot["scenario"] == r["scenario"]
    assert payloads[3]["plot"]["title"] == "rep 0 init 1 · lr 1 · max_steps @ 400"
    assert payloads[0]["plot"]["title"] == f"rep 0 init 0 · lr 1 · converged @ {rows['steps'][0]}"
    assert all(p["plot"] is None for p in _payloads(fitted, plots=False))


# -- FitLogger ---------------------------------------------------------------------------------
@pytest.mark.parametrize("plots", [False, True])
def test_fit_logger_logs_one_finished_child_run_per_payload(fitted, tracker, workdir, plots):
    payloads = _payloads(fitted, plots=plots)
    parent = tracker.start(f"trial-{TRIAL}", "trial")
    logger = FitLogger(tracker, EXPERIMENT, workdir, processes=1)
    try:
        run_ids = logger.submit(payloads, parent).get()
    finally:
        logger.close()
    assert len(set(run_ids)) == len(payloads) == 4
    children = tracker.search(f"tags.`mlflow.parentRunId` = '{parent}'")
    assert {r.info.run_id for r in children} == set(run_ids)
    client = tracker.client
    for run_id, p in zip(run_ids, payloads):
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and run.info.run_name == p["name"]
        tags = run.data.tags
        assert (tags["zip.level"], tags["zip.status"]) == ("fit", p["tags"]["status"])
        assert (tags["zip.trial"], tags["zip.study"]) == (str(TRIAL), STUDY)
        assert tags["zip.pid"] == str(os.getpid())  # logged in this process
        params = run.data.params
        assert (params["scenario"], params["optimizer"], params["family"]) == (
            p["params"]["scenario"], "adam", "zip",
        )  # fmt: skip
        assert tags["zip.model"] == "zip-intercept"
        assert len(tags["mlflow.source.git.commit"]) == 40 and tags["mlflow.source.name"]
        assert (params["lr"], params["max_steps"], params["tol"]) == ("1.0", "400", "1e-10")
        assert float(params["pi0"]) == p["params"]["pi0"]
        assert int(params["init_seed"]) == p["params"]["init_seed"]
        metrics = run.data.metrics
        for key, value in p["metrics"].items():
            assert metrics[key] == pytest.approx(value, rel=1e-15, abs=0), key
        for key, (steps, values) in p["histories"].items():
            history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
            assert [s for s, _ in history] == steps.tolist()
            np.testing.assert_array_equal([v for _, v in history], values)
        artifacts = [a.path for a in client.list_artifacts(run_id)]
        assert artifacts == (["convergence.png"] if plots else [])
    if plots:
        png = client.download_artifacts(run_ids[0], "convergence.png", str(workdir))
        with Image.open(png) as image:
            assert (image.format, image.size) == ("PNG", (600, 192))  # 7.5 × 2.4 in at 80 dpi
    assert tracker.open_runs == {parent}


def test_fit_logger_with_few_payloads_logs_in_this_process(fitted, tracker, workdir):
    parent = tracker.start("trial", "trial")
    logger = FitLogger(tracker, EXPERIMENT, workdir, processes=2)
    try:  # 3 payloads < 2 per process: not worth starting logger processes
        run_ids = logger.submit(_payloads(fitted)[:3], parent).get()
    finally:
        logger.close()
    runs = [tracker.client.get_run(r) for r in run_ids]
    assert [r.data.tags["zip.pid"] for r in runs] == [str(os.getpid())] * 3
    assert [r.info.status for r in runs] == ["FINISHED"] * 3


def test_a_requested_stop_logs_no_fit_run(fitted, tracker, workdir):
    parent = tracker.start("trial", "trial")
    logger = FitLogger(tracker, EXPERIMENT, workdir, processes=1)
    restore = interrupts.install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)  # recorded, raised at the next safe point
        with pytest.raises(KeyboardInterrupt):
            logger.submit(_payloads(fitted), parent)
    finally:
        restore()
        logger.close()
    assert tracker.search(f"tags.`mlflow.parentRunId` = '{parent}'") == []
    assert tracker.open_runs == {parent}


# -- log_study ---------------------------------------------------------------------------------
DISTRIBUTIONS = {
    "lr": FloatDistribution(0.01, 1.0, log=True),
    "optimizer": CategoricalDistribution(["adam", "sgd"]),
}


def _study(*trials) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", study_name=STUDY)
    for lr, optimizer, state, value in trials:
        study.add_trial(create_trial(params={"lr": lr, "optimizer": optimizer},
                                     distributions=DISTRIBUTIONS, state=state,
                                     value=value))  # fmt: skip
    return study


def test_log_study_records_counts_best_trial_figures_and_table(tracker, tmp_path):
    study = _study(
        (0.1, "adam", TrialState.COMPLETE, 2e-2),
        (1.0, "sgd", TrialState.COMPLETE, 5e-3),
        (0.01, "adam", TrialState.PRUNED, None),
        (0.3, "adam", TrialState.FAIL, None),
        (0.5, "adam", TrialState.COMPLETE, 7e-2),
    )
    table = tmp_path / "fits.parquet"
    frame = pl.DataFrame({"trial": [0, 1], "lr": [0.1, 1.0]})
    frame.write_parquet(table)
    run_id = tracker.start("sweep", "stage")
    log_study(tracker, run_id, study, table)
    data = tracker.client.get_run(run_id).data
    assert data.params == {"best_lr": "1.0", "best_optimizer": "sgd", "best_trial": "1"}
    assert {k: data.tags[k] for k in ("zip.best_lr", "zip.best_optimizer", "zip.best_trial")} == {
        "zip.best_lr": "1.0", "zip.best_optimizer": "sgd", "zip.best_trial": "1",
    }  # fmt: skip
    assert data.metrics == {"trials_complete": 3, "trials_pruned": 1, "trials_fail": 1,
                            "best_objective": 5e-3}  # fmt: skip
    client = tracker.client
    figures = sorted(a.path for a in client.list_artifacts(run_id, "figures"))
    assert figures == ["figures/lr_vs_objective.png", "figures/optimization_history.png"]
    assert [a.path for a in client.list_artifacts(run_id, "data")] == ["data/fits.parquet"]
    copy = client.download_artifacts(run_id, "data/fits.parquet", str(tmp_path / "down"))
    assert pl.read_parquet(copy).equals(frame)


def test_log_study_without_a_complete_trial_logs_only_counts(tracker, tmp_path):
    study = _study((0.01, "adam", TrialState.PRUNED, None), (0.3, "sgd", TrialState.FAIL, None))
    run_id = tracker.start("sweep", "stage")
    log_study(tracker, run_id, study, tmp_path / "missing.parquet")  # not written: skipped
    data = tracker.client.get_run(run_id).data
    assert data.metrics == {"trials_complete": 0, "trials_pruned": 1, "trials_fail": 1}
    assert data.params == {}
    assert not any(k.startswith("zip.best") for k in data.tags)
    assert tracker.client.list_artifacts(run_id) == []
