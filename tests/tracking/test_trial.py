"""One trial of the sweep on a tiny problem: its fit rows and histories on disk, its objective,
its trial run with the `intermediate` history, pruning; an in-memory study, a tmp MLflow store."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import optuna
import polars as pl
import pytest
from optuna.trial import TrialState
from tracking_setup import EXPERIMENT, fresh_store, make_problem

from pipeline.stages import config
from pipeline.store import files
from pipeline.tracking import trial as trial_module
from pipeline.tracking.fit_runs import FitLogger
from pipeline.tracking.runs import Tracker
from pipeline.tracking.study import make_sampler
from pipeline.tracking.trial import TrialSetup, make_objective

STUDY = "zip-lr-test"
STAMP = "stamp-123"
FIT = config.FitConfig(max_steps=60, chunk_steps=20, record_every=10)


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return True


def run_trial(problem, workdir, pruner=None, log_fits=True, lr=0.1):
    """Trial 0 of an in-memory study on `problem`, logged to the store in `workdir`."""
    fitted, cfg = problem
    cfg = dataclasses.replace(cfg, lr_grid=(0.1, 1.0, 1000.0))
    tracking = config.TrackingConfig(experiment=EXPERIMENT, log_fits=log_fits, fit_plots=False,
                                     max_points=20)  # fmt: skip
    data = config.DataConfig(n=300, replicates=1, scenarios=(config.Scenario("blog", 0.5, 5),))
    params = config.Params(seed=0, data=data, fit=FIT, sweep=cfg, tracking=tracking)
    tracker = Tracker(EXPERIMENT, root=workdir)
    stage_run = tracker.start("sweep", "stage")
    logger = FitLogger(tracker, EXPERIMENT, workdir, processes=1)
    fits_logged: list[int] = []
    layout = files.Layout(workdir)
    setup = TrialSetup(params, cfg, fitted, tracker, logger, stage_run, STUDY, "sweep", layout,
                       STAMP, fits_logged.append)  # fmt: skip
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=make_sampler(cfg, 0), pruner=pruner)
    study.enqueue_trial({"lr": lr, "optimizer": "adam"})
    trial = study.ask()
    try:
        value, state = make_objective(setup)(trial), TrialState.COMPLETE
    except optuna.TrialPruned:
        value, state = None, TrialState.PRUNED
    finally:
        logger.close()
    return SimpleNamespace(
        value=value, trial=study.tell(trial, value, state=state), tracker=tracker,
        stage_run=stage_run, rows=files.read(layout.trial_fits(STUDY, 0), STAMP),
        paths=files.read(layout.trial_histories(STUDY, 0), STAMP), fits_logged=fits_logged,
        workdir=workdir,
    )  # fmt: skip


@pytest.fixture(scope="module")
def problem():
    return make_problem(inits=2)


@pytest.fixture(scope="module")
def complete(problem, pytestconfig, tmp_path_factory):
    """One complete trial at lr 0.1, figures and fit runs included (shared: ~3 s)."""
    workdir = tmp_path_factory.mktemp("trial")
    with pytest.MonkeyPatch.context() as mp:  # what `isolated_mlflow` does, for the module
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("ZIP_INVOCATION", raising=False)
        mp.setenv("MPLBACKEND", "Agg")
        mp.chdir(workdir)
        return run_trial(problem, fresh_store(workdir, pytestconfig, tmp_path_factory))


@pytest.fixture
def sweep(problem, isolated_mlflow, tmp_path, pytestconfig, tmp_path_factory, monkeypatch):
    """`sweep(**options)`: `run_trial` in `tmp_path`, without the trial figures (~2 s each,
    checked on `complete`)."""
    monkeypatch.setattr(trial_module, "trial_figures", lambda *args: {})
    workdir = fresh_store(tmp_path, pytestconfig, tmp_path_factory)
    return lambda **options: run_trial(problem, workdir, **options)


def _trial_run(out):
    (run,) = out.tracker.search("tags.`zip.level` = 'trial'")
    return run


def test_a_trial_writes_its_rows_and_returns_the_objective(complete):
    out = complete
    rows = out.rows
    assert rows.height == 4  # 2 datasets × 2 inits
    assert rows["study"].unique().to_list() == [STUDY] and rows["trial"].to_list() == [0] * 4
    assert rows["lr"].to_list() == [0.1] * 4 and rows["optimizer"].unique().to_list() == ["adam"]
    assert rows["status"].to_list() == ["max_steps"] * 4 and rows["steps"].to_list() == [60] * 4
    # The objective, from the written rows: none converged in 60 steps, so none recovered.
    assert out.value == 1.0 == out.trial.value
    assert out.trial.user_attrs["share_recovered"] == 0.0
    assert out.trial.user_attrs["share_max_steps"] == 1.0
    assert out.trial.user_attrs["share_converged"] == 0.0
    assert out.trial.user_attrs["fit_seconds"] > 0
    assert out.fits_logged == [4]
    folder = out.workdir / "data" / "trials" / STUDY
    assert sorted(p.name for p in folder.iterdir()) == ["00000.histories.parquet", "00000.parquet"]
    meta = files.read_meta(files.Layout(out.workdir).trial_fits(STUDY, 0))
    assert meta[files.STUDY_KEY] == STUDY and meta[files.HASH_KEY] == STAMP


def test_the_histories_file_holds_every_fit_path_ending_at_its_final_state(complete):
    out = complete
    key = ["trial", "scenario", "replicate", "init"]
    assert out.paths.columns == [*key, "step", "nll", "pi", "lambda"]
    assert out.paths.height == 4 * 7  # steps 0, 10, ..., 60 for each fit
    last = out.paths.group_by(key).agg(pl.all().sort_by("step").last())
    both = out.rows.join(last, on=key)
    assert both.height == 4
    assert (both["step"] == both["steps"]).all()
    assert (both["nll"] == both["nll_final"]).all() and (both["pi"] == both["pi_hat"]).all()
    assert (both["lambda"] == both["lambda_hat"]).all()
    assert out.paths.group_by(key).agg(pl.col("step").min())["step"].to_list() == [0] * 4


def test_the_trial_run_holds_params_metrics_and_the_intermediate_history(complete):
    out = complete
    run = _trial_run(out)
    tags = run.data.tags
    assert run.info.status == "FINISHED" and run.info.run_name == "trial-0 adam lr=0.1"
    assert tags["mlflow.parentRunId"] == out.stage_run
    assert (tags["zip.trial"], tags["zip.study"], tags["zip.stage"]) == ("0", STUDY, "sweep")
    assert tags["zip.state"] == "complete"
    assert out.trial.user_attrs["mlflow_run_id"] == run.info.run_id
    params = run.data.params
    assert (params["lr"], params["optimizer"], params["fits"], params["inits"]) == (
        "0.1", "adam", "4", "2",
    )  # fmt: skip
    assert (params["max_steps"], params["chunk_steps"], params["model"]) == ("60", "20", "zip")
    metrics = run.data.metrics
    assert metrics["objective"] == out.value
    assert metrics["share_max_steps"] == 1.0 and metrics["fit_runs_per_second"] > 0
    # Optuna's reports after each chunk, then the objective itself at the last step.
    client = out.tracker.client
    metric = client.get_metric_history(run.info.run_id, "intermediate")
    history = sorted((m.step, m.value) for m in metric)
    reported = sorted(out.trial.intermediate_values.items())
    assert [s for s, _ in reported] == [20, 40]
    assert history == [*reported, (60, out.value)]
    # Running fits within 1 SE count as recovered so far (0.5 + ...: 2 of 4); at the end none
    # has converged in 60 steps, so none is recovered: the objective is 1.
    assert reported[0][1] < 1 and reported[1][1] < 1 and out.value == 1.0
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"data", "figures"}
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert figures == {"figures/trajectories.png", "figures/pmf_vs_data.png"}
    data = [a.path for a in client.list_artifacts(run.info.run_id, "data")]
    assert sorted(data) == ["data/00000.histories.parquet", "data/00000.parquet"]


def test_fit_runs_nest_in_the_trial_run_and_their_ids_are_in_the_rows(complete):
    out = complete
    trial_run = _trial_run(out).info.run_id
    fits = out.tracker.search("tags.`zip.level` = 'fit'")
    assert {r.data.tags["mlflow.parentRunId"] for r in fits} == {trial_run}
    by_id = {r.info.run_id: r for r in fits}
    assert set(out.rows["run_id"]) == set(by_id) and len(by_id) == 4
    for row in out.rows.iter_rows(named=True):
        run = by_id[row["run_id"]]
        assert run.info.run_name == f"{row['scenario']} rep=0 start={row['init']}"
        # The final NLL is the last point of the `nll` history: MLflow's value of `nll`.
        assert run.data.metrics["nll"] == row["nll_final"]
        assert "nll_final" not in run.data.metrics and "pi_hat" not in run.data.metrics
        assert run.info.status == "FINISHED"
    # Dated so that, newest first, each run follows its parent (`runs.child_time`).
    stage = out.tracker.client.get_run(out.stage_run).info.start_time
    trial = _trial_run(out).info.start_time
    assert trial == stage - 1
    assert {r.info.start_time for r in fits} == {trial - 1}


def test_without_fit_logging_no_fit_run_and_no_rate_metric(sweep):
    out = sweep(log_fits=False)
    assert out.tracker.search("tags.`zip.level` = 'fit'") == []
    assert out.rows["run_id"].to_list() == [None] * 4
    metrics = _trial_run(out).data.metrics
    assert "fit_runs_per_second" not in metrics  # NaN: not logged
    assert metrics["objective"] == out.value


def test_a_trial_the_pruner_stops_is_written_logged_and_raises_pruned(sweep):
    out = sweep(pruner=AlwaysPrune())
    assert out.value is None and out.trial.state == TrialState.PRUNED
    # Stopped at the first report (step 20), every fit at its state there.
    assert out.rows["status"].to_list() == ["stopped"] * 4
    assert out.rows["steps"].to_list() == [20] * 4
    assert out.paths["step"].max() == 20
    run = _trial_run(out)
    assert run.info.status == "FINISHED" and run.data.tags["zip.state"] == "pruned"
    history = out.tracker.client.get_metric_history(run.info.run_id, "intermediate")
    assert [(m.step, m.value) for m in history] == [(20, out.trial.intermediate_values[20])]
    assert run.data.metrics["objective"] == history[0].value
    assert out.tracker.open_runs == {out.stage_run}


def test_a_diverging_learning_rate_costs_one_per_fit(sweep):
    out = sweep(lr=1.0e3)
    assert out.rows["status"].to_list() == ["diverged"] * 4
    assert out.value == 1.0
    assert _trial_run(out).data.metrics["share_diverged"] == 1.0
