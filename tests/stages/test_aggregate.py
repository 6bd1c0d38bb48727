"""The aggregate stage on tiny params: generate → sweep → aggregate run in-process in tmp dirs.

The stage's numbers are checked against a direct numpy computation from the sweep's per-fit
table (`data/fits.parquet`), not against `pipeline.analysis.recovery` itself; the whole chain is run
twice from scratch to check that `reports/recovery.parquet` is byte-identical.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from conftest import TINY, merge

from pipeline.core.errors import UserError
from pipeline.stages import aggregate, generate, sweep
from pipeline.store import files
from pipeline.store.files import Layout

# 2 scenarios × 3 replicates × 3 inits at three learning rates: at 300 steps lr 0.1 and 3 give
# a mix of converged and max_steps fits, lr 30 diverges in most fits (checked on these seeds).
OVERRIDES = {
    "data": {"replicates": 3},
    "fit": {"max_steps": 300, "chunk_steps": 100},
    "sweep": {"lr_grid": [0.1, 3.0, 30.0], "inits": 3},
    "tracking": {"fit_plots": False},
}
ENV = {
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GIT_PYTHON_REFRESH": "quiet",
    "DO_NOT_TRACK": "1",
    "MPLBACKEND": "Agg",
    "CI": "true",
}


def run_chain(workdir: Path, invocation: str, extra: dict | None = None) -> Path:
    """generate → sweep → aggregate in `workdir` with its own MLflow store; returns params."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "params.yaml"
    path.write_text(yaml.safe_dump(merge(merge(TINY, OVERRIDES), extra or {}), sort_keys=False))
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("ZIP_INVOCATION", invocation)
        for key, value in ENV.items():
            mp.setenv(key, value)
        mp.chdir(workdir)
        argv = ["--params", str(path), "--workdir", str(workdir)]
        for stage in (generate, sweep, aggregate):
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                assert stage.main(argv) == 0
            (workdir / f"{stage.__name__.rsplit('.', 1)[-1]}.out").write_text(printed.getvalue())
    return path


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("chain") / "a"
    run_chain(workdir, "test-a")
    return workdir


def fits_and_reports(workdir: Path):
    fits = pl.read_parquet(workdir / "data" / "fits.parquet")
    recovery = pl.read_parquet(workdir / "reports" / "recovery.parquet")
    statistics = pl.read_parquet(workdir / "reports" / "statistics.parquet")
    return fits, recovery, statistics


def groups(fits: pl.DataFrame):
    for key in sorted(set(fits.select("scenario", "optimizer", "lr").rows())):
        mask = (
            (fits["scenario"] == key[0]) & (fits["optimizer"] == key[1]) & (fits["lr"] == key[2])
        ).to_numpy()
        yield key, {c: fits[c].to_numpy()[mask] for c in fits.columns}


def test_optimisation_numbers_match_a_direct_numpy_computation(chain):
    fits, recovery, _ = fits_and_reports(chain)
    assert set(fits["status"].unique()) >= {"converged", "max_steps", "diverged"}
    checked = 0
    for (scenario, optimizer, lr), g in groups(fits):
        row = recovery.filter(
            (pl.col("scenario") == scenario) & (pl.col("optimizer") == optimizer)
            & (pl.col("lr") == lr)
        ).row(0, named=True)  # fmt: skip
        status, n = g["status"], len(g["status"])
        assert row["fits"] == n
        for name in ("converged", "max_steps", "diverged"):
            p = np.mean(status == name)
            assert row[name] == pytest.approx(p, abs=1e-15)
            assert row[f"{name}_se"] == pytest.approx(math.sqrt(p * (1 - p) / n), abs=1e-15)
        steps = g["steps"][status == "converged"]
        if steps.size:
            assert row["steps_median"] == pytest.approx(np.median(steps))
            assert row["steps_p90"] == pytest.approx(np.percentile(steps, 90))
        else:
            assert row["steps_median"] is None
        ok = status != "diverged"
        gap = g["nll_gap"]
        # The objective: 1 per fit not recovered (converged, both errors within 1 SE), else
        # 1e-6 x steps / max_steps.
        within = (np.abs(g["err_pi_se"]) <= 1) & (np.abs(g["err_lambda_se"]) <= 1)
        done = (status == "converged") & within
        assert row["recovered"] == pytest.approx(done.mean(), abs=1e-15)
        charged = np.where(done, 1e-6 * g["steps"] / OVERRIDES["fit"]["max_steps"], 1.0)
        assert row["objective"] == pytest.approx(charged.mean(), rel=1e-12, abs=1e-15)
        if ok.any():
            assert row["gap_median"] == pytest.approx(np.median(gap[ok]), rel=1e-12, abs=1e-15)
            assert row["gap_max"] == pytest.approx(gap[ok].max(), rel=1e-12)
            err = np.abs(g["err_pi_se"][ok])  # the sweep's own signed errors, in SEs
            assert row["err_pi_median"] == pytest.approx(np.median(err), rel=1e-9, abs=1e-12)
            assert row["err_pi_max"] == pytest.approx(err.max(), rel=1e-9)
            checked += 1
    assert checked >= 4


def wald_se(pi: float, lam: float, n: int) -> tuple[float, float]:
    """SEs from the DESIGN §2 Fisher information in (pi, lambda), inverted by numpy."""
    e = math.exp(-lam)
    p0 = pi + (1 - pi) * e
    info = np.array(
        [[(1 - e) / ((1 - pi) * p0), -e / p0], [-e / p0, (1 - pi) / lam - pi * (1 - pi) * e / p0]]
    )
    cov = np.linalg.inv(info) / n
    return math.sqrt(cov[0, 0]), math.sqrt(cov[1, 1])


def test_statistics_match_a_direct_numpy_computation(chain):
    fits, _, statistics = fits_and_reports(chain)
    n = TINY["data"]["n"]
    for (scenario, optimizer, lr), g in groups(fits):
        best = {}
        for i in np.argsort(g["nll_final"], kind="stable"):
            if g["status"][i] != "diverged" and g["replicate"][i] not in best:
                best[g["replicate"][i]] = i
        reps = sorted(set(g["replicate"]))
        for par, est_col, truth_col in (("pi", "pi_hat", "pi_true"),
                                        ("lambda", "lambda_hat", "lambda_true")):  # fmt: skip
            row = statistics.filter(
                (pl.col("scenario") == scenario) & (pl.col("lr") == lr)
                & (pl.col("optimizer") == optimizer) & (pl.col("parameter") == par)
            ).row(0, named=True)  # fmt: skip
            truth = g[truth_col][0]
            est = np.array([g[est_col][best[r]] for r in reps if r in best])
            assert row["datasets"] == len(reps) and row["estimates"] == len(est)
            if len(est) == 0:
                continue
            assert row["bias"] == pytest.approx(est.mean() - truth, rel=1e-9, abs=1e-12)
            assert row["rmse"] == pytest.approx(np.sqrt(((est - truth) ** 2).mean()), rel=1e-9)
            if len(est) > 1:
                assert row["sd"] == pytest.approx(est.std(ddof=1), rel=1e-9)
            hits = 0
            for r in reps:
                if r not in best:
                    continue
                i = best[r]
                se = wald_se(g["pi_hat"][i], g["lambda_hat"][i], n)[0 if par == "pi" else 1]
                hits += abs(g[est_col][i] - truth) <= 1.959963984540054 * se
            assert row["cover"] == pytest.approx(hits / len(reps))
            mle = g[f"mle_{par}"][[np.flatnonzero(g["replicate"] == r)[0] for r in reps]]
            assert row["mle_bias"] == pytest.approx(mle.mean() - truth, rel=1e-9, abs=1e-12)


def test_objective_per_trial_is_the_fit_weighted_mean_over_scenarios(chain):
    from pipeline.tracking.runs import Tracker

    _, recovery, _ = fits_and_reports(chain)
    tracker = Tracker(TINY["tracking"]["experiment"], root=chain)
    trials = tracker.search("tags.`zip.level` = 'trial'")
    assert len(trials) == len(OVERRIDES["sweep"]["lr_grid"])
    for run in trials:
        lr = float(run.data.params["lr"])
        part = recovery.filter(pl.col("lr") == lr)
        mean = (part["objective"] * part["fits"]).sum() / part["fits"].sum()
        assert mean == pytest.approx(run.data.metrics["objective"], rel=1e-12, abs=1e-15)


def test_the_printed_best_the_tag_optunas_best_trial_and_the_report_agree(chain):
    """The sweep's printed best, its stage run's `zip.best_lr`, the Optuna study's best trial and
    the report's best line (and the aggregate's printed best) name one learning rate."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from pipeline.stages import config
    from pipeline.tracking.runs import Tracker

    params = config.load(chain / "params.yaml")
    _, _, name = params.study("sweep")
    storage = JournalStorage(JournalFileBackend(str(chain / "mlruns" / "optuna.log")))
    study = optuna.load_study(study_name=name, storage=storage)
    best = study.best_trial
    assert study.metric_names == ["share not recovered + 1e-06 x steps/max_steps"]
    assert 0 <= best.value <= 1 + 1e-6
    assert all(0 <= t.value <= 1 + 1e-6 for t in study.trials)  # bounded, whatever diverged
    lr = best.params["lr"]
    printed = re.search(r"^best: trial (\d+), adam lr=(\S+), ", (chain / "sweep.out").read_text(),
                        re.M)  # fmt: skip
    assert printed and (int(printed[1]), float(printed[2])) == (best.number, lr)
    tracker = Tracker(TINY["tracking"]["experiment"], root=chain)
    (run,) = tracker.search("tags.`zip.stage` = 'sweep' and tags.`zip.level` = 'stage'")
    assert float(run.data.tags["zip.best_lr"]) == lr
    report = Layout(chain).report_text.read_text()
    assert (
        f"- **The study**: best lr {lr:g} (adam) by the objective: the most fits recovered, "
        "then the fewest steps" in report
    )
    assert (
        f"best: adam lr={lr:g}, objective {best.value:.4g} "
        in (chain / "aggregate.out").read_text()
    )
    # The grid's learning rates are not tied: the choice is not an accident of tie-breaking.
    values = sorted(t.value for t in study.trials)
    assert values[0] < values[1]


def test_outputs_stage_run_and_blog_table(chain):
    layout = Layout(chain)
    params_hash = files.read_meta(layout.report("recovery"))["zip.params_hash"]
    blog = files.read(layout.report("blog_table"), params_hash)
    assert blog.height == TINY["blog"]["inits"]
    assert {"err", "mixture", "lambda", "mixture_init", "lambda_init"} <= set(blog.columns)
    text = layout.report_text.read_text()
    for heading in ("## Summary", "## Best learning rate", "## Optimisation", "## Statistics",
                    "## The blog's table"):  # fmt: skip
        assert heading in text
    assert "lr 30: diverges in" in text
    assert "data/histories.parquet" in text
    figures = sorted(p.name for p in layout.figures.glob("*.png"))
    assert set(aggregate.FIGURES) <= set(figures) and aggregate.REACH_FIGURE in figures
    from pipeline.tracking.runs import Tracker

    tracker = Tracker(TINY["tracking"]["experiment"], root=chain)
    (run,) = tracker.search("tags.`zip.stage` = 'aggregate'")
    assert run.info.status == "FINISHED" and run.data.tags["zip.params_hash"] == params_hash
    logged = {f.path for f in tracker.client.list_artifacts(run.info.run_id, "reports")}
    assert {"reports/recovery.parquet", "reports/recovery.md", "reports/figures"} <= logged


def test_mlflow_is_a_sink_holding_the_parquet_numbers(chain):
    """Every fit of data/fits.parquet is one FINISHED fit run with the same outcome, and its
    logged `nll` history is the parquet history thinned (MLflow is written, never read)."""
    from pipeline.tracking.runs import Tracker

    fits = pl.read_parquet(chain / "data" / "fits.parquet")
    histories = pl.read_parquet(chain / "data" / "histories.parquet")
    tracker = Tracker(TINY["tracking"]["experiment"], root=chain)
    runs = {r.info.run_id: r for r in tracker.search("tags.`zip.level` = 'fit'")}
    assert fits["run_id"].n_unique() == fits.height and set(fits["run_id"]) <= set(runs)
    for row in fits.iter_rows(named=True):
        run = runs[row["run_id"]]
        assert run.info.status == "FINISHED" and run.data.tags["zip.status"] == row["status"]
        # One value per quantity: an estimate is its history's last point (MLflow's value).
        for key, column in (("pi", "pi_hat"), ("lambda", "lambda_hat"), ("nll", "nll_final")):
            assert column not in run.data.metrics
            if math.isfinite(row[column]):
                assert run.data.metrics[key] == row[column]  # float64 end to end: exact
    row = fits.filter(pl.col("status") == "converged").row(0, named=True)
    path = histories.filter(
        (pl.col("trial") == row["trial"]) & (pl.col("scenario") == row["scenario"])
        & (pl.col("replicate") == row["replicate"]) & (pl.col("init") == row["init"])
    )  # fmt: skip
    logged = tracker.client.get_metric_history(row["run_id"], "nll")
    by_step = dict(zip(path["step"].to_list(), path["nll"].to_list()))
    assert len(logged) == min(path.height, TINY["tracking"]["max_points"])
    assert {m.step for m in logged} <= set(by_step) and max(m.step for m in logged) == row["steps"]
    assert all(m.value == by_step[m.step] for m in logged)


def test_the_invocation_run_summarises_its_stages(chain):
    from pipeline.tracking.runs import Tracker, git_commit

    tracker = Tracker(TINY["tracking"]["experiment"], root=chain)
    (inv,) = tracker.search("tags.`zip.level` = 'invocation'")
    stages = {r.data.tags["zip.stage"]: r for r in tracker.search("tags.`zip.level` = 'stage'")}
    assert set(stages) == {"generate", "sweep", "aggregate"}
    tags, metrics = inv.data.tags, inv.data.metrics
    for name, run in stages.items():
        assert tags[f"zip.stage.{name}"] == run.info.run_id
        assert run.data.tags["mlflow.parentRunId"] == inv.info.run_id
        assert metrics[f"{name}.seconds"] > 0
    fits = pl.read_parquet(chain / "data" / "fits.parquet").height
    assert metrics["sweep.fits"] == fits == metrics["aggregate.fits"]
    assert inv.data.params["git_commit"] == git_commit() == tags["mlflow.source.git.commit"]
    assert inv.data.params["params_hash"] == tags["zip.params_hash"]
    assert [a.path for a in tracker.client.list_artifacts(inv.info.run_id)] == ["recovery.md"]
    inputs = {d.dataset.name for d in stages["aggregate"].inputs.dataset_inputs}
    assert {"fits", "histories", "summary"} <= inputs
    inputs = {d.dataset.name for d in stages["sweep"].inputs.dataset_inputs}
    assert {"summary", "histograms"} <= inputs


@pytest.mark.parametrize("page", [3, 10, 40])
def test_the_ui_pages_never_show_a_child_without_its_parent(chain, page):
    """MLflow's runs table loads the newest `page` runs and fetches their direct parents only:
    every run it then shows has its parent shown, or is an invocation (top level)."""
    from pipeline.tracking.runs import Tracker

    tracker = Tracker(TINY["tracking"]["experiment"], root=chain)
    runs = tracker.client.search_runs([tracker.experiment_id], max_results=page)
    shown = {r.info.run_id: r for r in runs}
    parents = {r.data.tags.get("mlflow.parentRunId") for r in runs} - {None}
    shown.update({p: tracker.client.get_run(p) for p in parents})
    for run in shown.values():
        parent = run.data.tags.get("mlflow.parentRunId")
        assert parent in shown or run.data.tags["zip.level"] == "invocation", run.info.run_name


def test_report_is_the_same_without_fit_tracking(chain, tmp_path):
    """`tracking.log_fits: false` changes no table and drops no figure (parquet is the lineage)."""
    run_chain(tmp_path / "c", "test-c", {"tracking": {"log_fits": False}})
    for name in ("recovery.parquet", "statistics.parquet", "blog_table.parquet"):
        a = pl.read_parquet(chain / "reports" / name)
        b = pl.read_parquet(tmp_path / "c" / "reports" / name)
        assert a.equals(b), name
    figures = {p.name for p in (chain / "reports" / "figures").glob("*.png")}
    assert figures == {p.name for p in (tmp_path / "c" / "reports" / "figures").glob("*.png")}
    text = (tmp_path / "c" / "reports" / "recovery.md").read_text()
    assert "come within 0.1 SE of the exact MLE" in text and "reach_mle.png" in text


def test_missing_or_stale_inputs_are_one_line_errors(chain, tmp_path):
    from pipeline.stages import config

    params = config.load(chain / "params.yaml")
    with pytest.raises(UserError, match="summary.parquet: missing"):
        aggregate.load_inputs(params, tmp_path)
    shutil.copytree(chain / "data", tmp_path / "data")
    (tmp_path / "data" / "fits.parquet").unlink()
    with pytest.raises(UserError, match="fits.parquet: missing"):
        aggregate.load_inputs(params, tmp_path)
    stale = tmp_path / "stale.yaml"
    stale.write_text(yaml.safe_dump(merge(TINY, {**OVERRIDES, "sweep": {
        **OVERRIDES["sweep"], "inits": 4}}), sort_keys=False))  # fmt: skip
    shutil.copy(chain / "data" / "fits.parquet", tmp_path / "data" / "fits.parquet")
    with pytest.raises(UserError, match="written for other params"):
        aggregate.load_inputs(config.load(stale), tmp_path)


def test_two_chains_from_scratch_give_identical_recovery_parquet(chain, tmp_path):
    run_chain(tmp_path / "b", "test-b")
    for name in ("recovery.parquet", "statistics.parquet", "blog_table.parquet"):
        a, b = chain / "reports" / name, tmp_path / "b" / "reports" / name
        assert pl.read_parquet(a).equals(pl.read_parquet(b)), name
        assert a.read_bytes() == b.read_bytes(), name


def test_the_report_says_what_made_it():
    """Issue 19 item 5: a report a reviewer can cite names its commit, date and versions."""
    import re
    from importlib import metadata

    from pipeline.stages.aggregate import CITED_PACKAGES, provenance
    from pipeline.tracking.runs import git_commit

    line = provenance()
    assert line.startswith(f"Made by commit `{git_commit()[:12]}` on ")
    assert re.search(r" on \d{4}-\d\d-\d\d \(UTC\) with Python 3\.\d+\.\d+, ", line)
    for name in CITED_PACKAGES:
        assert f"{name} {metadata.version(name)}" in line
