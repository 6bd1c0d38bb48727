"""The sweep stage in-process on tiny params: runs in the store, fits table, determinism,
pruning, divergence, bad storage.

The datasets are generated once per module (`pipeline.stages.generate`) and copied into each test's
workdir together with a freshly migrated, empty MLflow store (migrating one costs ~3 s).
"""

from __future__ import annotations

import collections
import json
import shutil

import numpy as np
import optuna
import polars as pl
import pytest
import yaml
from conftest import TINY, merge
from mlflow.tracking import MlflowClient
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from pipeline.core.errors import UserError
from pipeline.stages import cli, config, generate, sweep
from pipeline.store import files
from pipeline.store.files import Layout

FIT_COLUMNS = (
    "study trial optimizer lr scenario replicate init data_seed init_seed pi_true lambda_true "
    "pi0 lambda0 pi_hat lambda_hat nll_final nll_gap steps status grad_norm mle_pi mle_lambda "
    "mle_nll se_pi se_lambda boundary err_pi_se err_lambda_se run_id"
).split()
QUIET = {"tracking": {"log_fits": False, "fit_plots": False}}
# The settings these tests count on, whatever the shared tiny params say.
BASE = {
    "fit": {"max_steps": 60, "chunk_steps": 20, "record_every": 10},
    "sweep": {"inits": 2, "optimizers": ["adam"]},
}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Tiny datasets and an empty migrated MLflow store, made once."""
    base = tmp_path_factory.mktemp("sweep-data")
    params = base / "params.yaml"
    params.write_text(yaml.safe_dump(merge(TINY, {"tracking": {"experiment": "template"}})))
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("CI", "true")
        generate.main(["--params", str(params), "--workdir", str(base)])
    return base


@pytest.fixture
def stage(prepared, tmp_path, isolated_mlflow):
    """`stage(overrides, *args, workdir=None)`: run the sweep in-process on tiny params."""

    def run_stage(overrides=None, *args, workdir=None):
        workdir = workdir or tmp_path / "work"
        if not (workdir / "data").exists():
            shutil.copytree(prepared / "data", workdir / "data")
            (workdir / "mlruns").mkdir()
            shutil.copy(prepared / "mlruns" / "mlflow.db", workdir / "mlruns" / "mlflow.db")
        path = workdir / "params.yaml"
        path.write_text(yaml.safe_dump(merge(merge(TINY, BASE), overrides or {})))
        assert sweep.main(["--params", str(path), "--workdir", str(workdir), *args]) == 0
        params = config.load(path)
        cfg, stamp, name = params.study("tune" if "--tune" in args else "sweep")
        storage = JournalStorage(JournalFileBackend(str(workdir / "mlruns" / "optuna.log")))
        return workdir, params, optuna.load_study(study_name=name, storage=storage)

    return run_stage


def _runs(workdir, experiment="zip-test"):
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id], max_results=10000)


def test_grid_logs_every_run_and_a_diverging_lr_does_not_stop_it(stage):
    workdir, params, study = stage({"sweep": {"lr_grid": [0.1, 1.0, 1000.0]}})
    client, runs = _runs(workdir)
    levels = collections.Counter((r.data.tags["zip.level"], r.info.status) for r in runs)
    data = params.data
    fits = 3 * len(data.scenarios) * data.replicates * 2  # trials × datasets × inits
    assert levels == {("invocation", "FINISHED"): 1, ("stage", "FINISHED"): 1,
                      ("trial", "FINISHED"): 3, ("fit", "FINISHED"): fits}  # fmt: skip
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert [t.params["lr"] for t in trials] == [0.1, 1.0, 1000.0]
    # lr = 1000 (Adam moves log λ by ~1000 per step): every fit diverges, 1 each.
    diverged = trials[2]
    assert diverged.user_attrs["share_diverged"] == 1.0 and diverged.value == 1.0
    # In 60 steps no fit converges, so none is recovered: 1 each too (bounded, never a gap).
    assert [t.user_attrs["share_diverged"] for t in trials[:2]] == [0.0, 0.0]
    assert trials[0].value == trials[1].value == 1.0

    stamp = params.digest(*config.STAGE_BLOCKS["sweep"])
    table = files.read(Layout(workdir).fits(), stamp)
    paths = files.read(Layout(workdir).histories(), stamp)
    # every fit's path ends at its final state
    key = ["trial", "scenario", "replicate", "init"]
    last = paths.group_by(key).agg(pl.all().sort_by("step").last())
    both = table.join(last, on=key).filter(pl.col("status") != "diverged")
    assert both.height == table.filter(pl.col("status") != "diverged").height > 0
    assert (both["step"] == both["steps"]).all() and (both["nll"] == both["nll_final"]).all()
    assert table.height == fits and set(FIT_COLUMNS) <= set(table.columns)
    assert table.filter(pl.col("lr") == 1000.0)["status"].unique().to_list() == ["diverged"]
    fit_runs = {r.info.run_id: r for r in runs if r.data.tags["zip.level"] == "fit"}
    assert set(table["run_id"]) == set(fit_runs)

    row = table.filter(pl.col("lr") == 0.1).row(0, named=True)
    run = fit_runs[row["run_id"]]
    assert run.data.tags["zip.status"] == row["status"]
    assert float(run.data.params["pi0"]) == row["pi0"] and run.data.params["optimizer"] == "adam"
    assert run.data.metrics["nll_gap"] == pytest.approx(row["nll_gap"])
    for key in ("nll", "pi", "lambda"):
        history = client.get_metric_history(run.info.run_id, key)
        steps = sorted(m.step for m in history)
        assert 2 <= len(steps) <= params.tracking.max_points and steps[-1] == row["steps"]
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["convergence.png"]

    trial_run = next(r for r in runs if r.data.tags.get("zip.trial") == "0"
                     and r.data.tags["zip.level"] == "trial")  # fmt: skip
    history = client.get_metric_history(trial_run.info.run_id, "intermediate")
    assert [m.step for m in history] == [20, 40, 60]  # chunks of 20 steps, then the objective
    assert history[-1].value == pytest.approx(trials[0].value)
    names = {a.path for a in client.list_artifacts(trial_run.info.run_id, "figures")}
    assert names == {"figures/trajectories.png", "figures/pmf_vs_data.png"}
    stage_run = next(r for r in runs if r.data.tags["zip.level"] == "stage")
    assert stage_run.data.params["best_lr"] in ("0.1", "1.0")
    assert stage_run.data.tags["zip.study"] == study.study_name
    figures = {a.path for a in client.list_artifacts(stage_run.info.run_id, "figures")}
    assert figures == {"figures/optimization_history.png", "figures/lr_vs_objective.png"}


def test_same_params_same_trials_in_a_fresh_workdir(stage, tmp_path):
    a = stage(QUIET, workdir=tmp_path / "a")
    b = stage(QUIET, workdir=tmp_path / "b")
    assert [(t.params, t.value) for t in a[2].trials] == [(t.params, t.value) for t in b[2].trials]
    tables = [pl.read_parquet(w / "data" / "fits.parquet").drop("run_id") for w, *_ in (a, b)]
    assert tables[0].equals(tables[1])
    assert a[2].study_name == b[2].study_name  # same params: same study name


def test_rerun_resumes_and_changed_params_start_a_new_study(stage, tmp_path):
    workdir, _, first = stage(QUIET)
    _, _, again = stage(QUIET, workdir=workdir)
    assert len(again.trials) == len(first.trials) == 2  # nothing repeated
    _, _, other = stage(merge(QUIET, {"sweep": {"inits": 1}}), workdir=workdir)
    assert other.study_name != first.study_name and len(other.trials) == 2


def test_tpe_suggestions_are_seeded(stage, tmp_path):
    tune = merge(QUIET, {"tune": {"n_trials": 3, "pruner": "none"}})
    a = stage(tune, "--tune", workdir=tmp_path / "a")[2]
    b = stage(tune, "--tune", workdir=tmp_path / "b")[2]
    lrs = [t.params["lr"] for t in a.trials]
    assert len(set(lrs)) == 3 and lrs == [t.params["lr"] for t in b.trials]
    assert all(0.01 <= lr <= 1.0 for lr in lrs)
    assert (tmp_path / "a" / "data" / "tune_fits.parquet").exists()
    assert not (tmp_path / "a" / "data" / "fits.parquet").exists()


def test_a_hopeless_lr_is_pruned_and_left_out_of_the_table(stage):
    overrides = merge(
        QUIET,
        {
            "sweep": {
                "lr_grid": [0.3, 0.1, 1e-6],
                "pruner": "median",
                "pruner_startup_trials": 2,
                "pruner_warmup_steps": 20,
            }
        },
    )
    workdir, params, study = stage(overrides)
    states = [(t.params["lr"], t.state.name) for t in study.trials]
    assert states == [(0.3, "COMPLETE"), (0.1, "COMPLETE"), (1e-6, "PRUNED")]
    pruned = study.trials[2]
    assert max(pruned.intermediate_values) < params.fit.max_steps  # stopped early
    rows = pl.read_parquet(workdir / "data" / "trials" / study.study_name / "00002.parquet")
    assert set(rows["status"]) == {"stopped"}
    table = pl.read_parquet(workdir / "data" / "fits.parquet")
    assert sorted(table["trial"].unique()) == [0, 1]
    _, runs = _runs(workdir)
    tags = {r.data.tags["zip.trial"]: r.data.tags["zip.state"] for r in runs
            if r.data.tags["zip.level"] == "trial"}  # fmt: skip
    assert tags == {"0": "complete", "1": "complete", "2": "pruned"}


def test_bad_storage_url_is_one_line_exit_2(stage, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPTUNA_STORAGE", "nosuchdb://nowhere/x")
    with pytest.raises(UserError, match="Optuna storage 'nosuchdb://nowhere/x' cannot be opened"):
        stage(QUIET)
    workdir = tmp_path / "work"
    argv = ["--params", str(workdir / "params.yaml"), "--workdir", str(workdir)]
    with pytest.raises(SystemExit) as exit_info:
        cli.run(sweep.main, argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and err.startswith("error: ")
    monkeypatch.setenv("OPTUNA_STORAGE", "postgresql://zip:s3cret@127.0.0.1:9/optuna")
    with pytest.raises(UserError, match="cannot be opened") as info:
        sweep.main(argv)
    assert "s3cret" not in str(info.value) and "zip:***@" in str(info.value)
    monkeypatch.setenv("OPTUNA_STORAGE", f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    with pytest.raises(UserError, match="is MLflow's store"):
        sweep.main(argv)
    _, runs = _runs(workdir, "template")  # nothing was started
    assert all(r.info.status == "FINISHED" for r in runs)


def test_fit_histories_keep_the_final_step(stage):
    workdir, params, study = stage(
        {
            "sweep": {"lr_grid": [0.3]},
            "fit": {"max_steps": 45},
            "tracking": {"fit_plots": False, "max_points": 3},
        }
    )
    client, runs = _runs(workdir)
    for run in (r for r in runs if r.data.tags["zip.level"] == "fit"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "pi")]
        assert len(steps) == 3 and max(steps) == run.data.metrics["steps"] and min(steps) == 0
    assert np.isfinite(study.best_value)


def test_a_torn_journal_resumes_to_the_same_fits_table(stage, tmp_path, capsys):
    """Issue 21, item 2: a write cut short by a full disk (or a killed writer) left a torn last
    record; every resume died with a JSONDecodeError. Now it is dropped and the grid done."""
    workdir, _, study = stage(QUIET)
    whole = pl.read_parquet(workdir / "data" / "fits.parquet").drop("run_id")
    assert len(study.trials) == 2
    journal = workdir / "mlruns" / "optuna.log"
    lines = journal.read_bytes().split(b"\n")[:-1]
    records = [json.loads(line) for line in lines]
    first_done = next(i for i, r in enumerate(records) if r["op_code"] == 6 and r["state"] == 1)
    # The journal as a full disk left it: one trial done, the next record torn half way.
    torn = lines[first_done + 1]
    journal.write_bytes(b"\n".join(lines[: first_done + 1]) + b"\n" + torn[: len(torn) // 2])
    (workdir / "data" / "fits.parquet").unlink()
    capsys.readouterr()
    _, _, resumed = stage(QUIET, workdir=workdir)
    assert "dropped 1 torn record(s)" in capsys.readouterr().err
    assert [t.state.name for t in resumed.trials] == ["COMPLETE", "COMPLETE"]
    assert pl.read_parquet(workdir / "data" / "fits.parquet").drop("run_id").equals(whole)


def test_workers_are_bounded_in_one_line(stage, tmp_path):
    """Issue 21, item 10: `--workers 99999999999999999999` was accepted even on a finished
    study and grew memory without bound (a plan per worker)."""
    workdir, params, study = stage(QUIET)
    argv = ["--params", str(workdir / "params.yaml"), "--workdir", str(workdir)]
    most = sweep.max_workers()
    for bad in ("99999999999999999999", str(most + 1), "0"):
        with pytest.raises(UserError, match=rf"--workers: must be between 1 and {most} .* {bad}$"):
            sweep.main([*argv, "--workers", bad])
    # Within the bound on a finished study: no worker starts, the tables are assembled again.
    assert sweep.main([*argv, "--workers", str(most)]) == 0
    assert len(optuna.load_study(study_name=study.study_name, storage=study._storage).trials) == 2
