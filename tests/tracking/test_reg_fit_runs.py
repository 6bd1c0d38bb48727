"""Regression fit runs (`fit_runs`): payloads built by `fit_payloads(coefs=...)` from hand-made
`reg_tables` frames (2 fits × 3 coefficients), their PNG, and two runs logged through
`FitLogger` into a fresh store."""

from __future__ import annotations

import pickle
import re
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image
from tracking_setup import EXPERIMENT, fresh_store

from pipeline.report.convergence import ConvergencePlot
from pipeline.report.reg_convergence import RegressionPlot
from pipeline.tracking.fit_runs import FitLogger, _log_fits, coefficient_keys, fit_payloads
from pipeline.tracking.runs import Tracker

STUDY, TRIAL, MAX_POINTS = "zip-lr-test", 7, 3
FIT_CFG = SimpleNamespace(model="zip", max_steps=40, tol=1e-9)
MLFLOW_KEY = re.compile(r"^[\w\-. /]+$")
COEFS = (("zero", "intercept"), ("count", "intercept"), ("count", "health[poor]"))
# Fit 0 converges at step 25 (recorded 0, 10, 20, then its final step); fit 1 runs to 40.
STEPS = ([0, 10, 20, 25], [0, 10, 20, 30, 40])
ORACLE = np.array([-0.5, 1.0, 0.6])
SE = np.array([0.1, 0.05, 0.2])


def _keys(b: int) -> dict:
    return {"scenario": "visits", "replicate": 3, "init": b, "standardize": bool(b),
            "batch_size": [None, 64][b]}  # fmt: skip


def _frames():
    """(fits, coefs, histories) as the trial hands them over (its extra columns included)."""
    fits = pl.DataFrame(
        [{"study": STUDY, "trial": TRIAL, "optimizer": "adam", "lr": 0.05, **_keys(b), "n": 1000,
          "data_seed": 11, "init_seed": f"s{b}", "oracle_nll": 1.5,
          "nll_final": 1.5 + [1e-12, 1e-4][b], "nll_gap": [1e-12, 1e-4][b],
          "steps": STEPS[b][-1], "status": ["converged", "max_steps"][b],
          "grad_norm": 1e-7, "max_err_se": [0.01, 2.5][b]} for b in (0, 1)],
        schema_overrides={"batch_size": pl.Int64},
    )  # fmt: skip
    coefs, paths = [], []
    for b in (0, 1):
        start = np.array([0.2, -0.3, 0.1]) * (b + 1)
        final = ORACLE + SE * np.array([0.01, -0.005, 0.002]) * (1 + 249 * b)
        for j, (part, term) in enumerate(COEFS):
            err = (final[j] - ORACLE[j]) / SE[j]
            coefs.append({"trial": TRIAL, **_keys(b), "part": part, "term": term, "truth": 0.0,
                          "start": start[j], "estimate": final[j], "oracle": ORACLE[j],
                          "se_oracle": SE[j], "se_gd": SE[j], "err_se": err})  # fmt: skip
        steps = STEPS[b]
        for t, step in enumerate(steps):
            w = t / (len(steps) - 1)  # a straight path from the start to the final state
            nll = 1.5 + (1 - w) + w * [1e-12, 1e-4][b]
            for j, (part, term) in enumerate(COEFS):
                value = (1 - w) * start[j] + w * final[j]
                paths.append({"trial": TRIAL, **_keys(b), "step": step, "nll": nll,
                              "part": part, "term": term, "value": value})  # fmt: skip
    schema = {"batch_size": pl.Int64}
    return (
        fits,
        pl.DataFrame(coefs, schema_overrides=schema),
        pl.DataFrame(paths, schema_overrides=schema),
    )


def _payloads(plots=False, max_points=MAX_POINTS):
    fits, coefs, histories = _frames()
    return fit_payloads(fits, histories, coefs=coefs, fit_cfg=FIT_CFG, max_points=max_points,
                        plots=plots, trial=TRIAL, study=STUDY)  # fmt: skip


NAMES = ["zero.intercept", "count.intercept", "count.health_poor_"]


def test_coefficient_keys_are_valid_for_mlflow_and_distinct():
    got = coefficient_keys(["count", "count", "count", "zero"],
                           ["health[poor]", "health(poor)", "a:b", "x y/z"])  # fmt: skip
    assert got == ["count.health_poor_", "count.health_poor__2", "count.a_b", "zero.x_y_z"]
    assert all(MLFLOW_KEY.match(k) for k in got)


def test_names_tags_params_and_metrics():
    payloads = _payloads()
    fits, coefs, _ = _frames()
    assert [p["name"] for p in payloads] == [
        "visits rep=3 start=0 raw full",
        "visits rep=3 start=1 std b64",
    ]
    assert [p["tags"] for p in payloads] == [
        {"status": s, "trial": TRIAL, "study": STUDY, "model": "zip-regression"}
        for s in ("converged", "max_steps")
    ]
    for b, p in enumerate(payloads):
        r, c = fits.row(b, named=True), coefs.filter(pl.col("init") == b)
        assert p["params"] == {
            "scenario": "visits", "family": "zip", "n": 1000, "replicate": 3, "data_seed": 11,
            "init_seed_sequence": f"s{b}", "lr": 0.05, "optimizer": "adam", "standardize": bool(b),
            "batch_size": ["full", 64][b], "max_steps": 40, "tol": 1e-9,
            **{f"start.{n}": v for n, v in zip(NAMES, c["start"])},
        }  # fmt: skip
        assert all(MLFLOW_KEY.match(k) for k in [*p["params"], *p["metrics"], *p["histories"]])
        assert p["metrics"] == {
            "nll_gap": r["nll_gap"], "steps": r["steps"],
            "converged": 1.0 - b, "max_err_se": r["max_err_se"],
            **{f"err_se.{n}": v for n, v in zip(NAMES, c["err_se"])},
        }  # fmt: skip
        assert p["plot"] is None
    assert pickle.loads(pickle.dumps(payloads))[1]["name"] == "visits rep=3 start=1 std b64"


def test_payloads_follow_the_order_of_the_fits_rows():
    fits, coefs, histories = _frames()
    payloads = fit_payloads(fits.reverse(), histories, coefs=coefs, fit_cfg=FIT_CFG,
                            max_points=MAX_POINTS, plots=False, trial=TRIAL,
                            study=STUDY)  # fmt: skip
    assert [p["name"] for p in payloads] == [
        "visits rep=3 start=1 std b64",
        "visits rep=3 start=0 raw full",
    ]
    assert payloads[0]["metrics"]["steps"] == 40


@pytest.mark.parametrize("max_points", [2, MAX_POINTS, 1000])
def test_histories_are_thinned_keeping_the_first_and_last_step(max_points):
    payloads = _payloads(max_points=max_points)
    _, coefs, histories = _frames()
    for b, p in enumerate(payloads):
        assert list(p["histories"]) == ["nll", *NAMES]
        path = histories.filter(pl.col("init") == b)
        for key, (steps, values) in p["histories"].items():
            assert len(steps) == min(max_points, len(STEPS[b]))
            assert steps[0] == 0 and steps[-1] == STEPS[b][-1]
            if key == "nll":
                want = path.unique("step", maintain_order=True)
                recorded = dict(zip(want["step"], want["nll"]))
            else:
                part, term = COEFS[NAMES.index(key)]
                own = path.filter((pl.col("part") == part) & (pl.col("term") == term))
                recorded = dict(zip(own["step"], own["value"]))
            assert values.tolist() == [recorded[s] for s in steps.tolist()]
        final = coefs.filter(pl.col("init") == b)["estimate"].to_list()
        assert [p["histories"][n][1][-1] for n in NAMES] == final
    # 4 recorded points thinned to 3: indices 0, 2 (1.5 rounds to even), 3.
    assert _payloads()[0]["histories"]["nll"][0].tolist() == [0, 20, 25]
    assert _payloads()[1]["histories"]["count.intercept"][0].tolist() == [0, 20, 40]


def test_plot_carries_gaps_errors_in_oracle_ses_and_the_title():
    payloads = _payloads(plots=True)
    for p in payloads:
        plot = p["plot"]
        assert plot["kind"] == "regression" and plot["scenario"] == "visits"
        assert plot["max_step"] == 40 and plot["parts"] == ["zero", "count", "count"]
        assert plot["labels"] == ["π:intercept", "λ:intercept", "λ:health[poor]"]
        steps, nll = p["histories"]["nll"]
        np.testing.assert_array_equal(plot["steps"], steps)
        np.testing.assert_array_equal(plot["gap"], nll - 1.5)
        for j, (name, (err_steps, err)) in enumerate(zip(NAMES, plot["errors"])):
            np.testing.assert_array_equal(err_steps, p["histories"][name][0])
            np.testing.assert_allclose(err, (p["histories"][name][1] - ORACLE[j]) / SE[j])
            assert err[-1] == pytest.approx(p["metrics"][f"err_se.{name}"], rel=1e-12)
    assert payloads[0]["plot"]["title"] == "rep 3 init 0 · raw full · lr 0.05 · converged @ 25"
    assert payloads[1]["plot"]["title"] == "rep 3 init 1 · std b64 · lr 0.05 · max_steps @ 40"


def _recording(render, drawn: list):
    """`render` that also notes the renderer's type and the size of the PNG it wrote."""

    def wrapped(self, path, plot):
        render(self, path, plot)
        with Image.open(path) as image:
            drawn.append((type(self), image.format, image.size))

    return wrapped


def test_plots_are_drawn_by_the_renderer_of_their_kind(tmp_path, monkeypatch):
    """`_log_fits` dispatches on `plot["kind"]`: one reused renderer per kind, each writing a
    non-empty PNG (MLflow calls stubbed out)."""
    drawn = []
    for cls in (ConvergencePlot, RegressionPlot):
        monkeypatch.setattr(cls, "render", _recording(cls.render, drawn))
    stub = SimpleNamespace(start=lambda *a, **k: "run", log=lambda *a, **k: None,
                           log_artifact=lambda *a, **k: None, end=lambda *a: None)  # fmt: skip
    intercept = {"name": "fit-blog-0-0", "tags": {}, "params": {}, "metrics": {},
                 "histories": {}, "plot": {"steps": np.arange(3), "gap": np.ones(3),
                 "pi": np.full(3, 0.5), "lam": np.full(3, 2.0), "pi_true": 0.5, "lam_true": 2.0,
                 "mle_pi": 0.5, "mle_lam": 2.0, "max_step": 10, "lam_hi": 3.0,
                 "scenario": "blog", "title": "t"}}  # fmt: skip
    figures: dict = {}
    _log_fits(stub, figures, tmp_path, [*_payloads(plots=True), intercept], "parent")
    assert set(figures) == {None, "regression"}
    assert isinstance(figures["regression"], RegressionPlot)
    assert isinstance(figures[None], ConvergencePlot)
    assert drawn == [(RegressionPlot, "PNG", (640, 208))] * 2 + [
        (ConvergencePlot, "PNG", (600, 192))
    ]
    assert (tmp_path / "convergence.png").stat().st_size > 0


# -- logged through FitLogger -------------------------------------------------------------------
@pytest.fixture
def workdir(isolated_mlflow, tmp_path, pytestconfig, tmp_path_factory):
    return fresh_store(tmp_path, pytestconfig, tmp_path_factory)


def test_fit_logger_logs_regression_fits_with_their_png(workdir):
    tracker = Tracker(EXPERIMENT, root=workdir)
    payloads = _payloads(plots=True)
    parent = tracker.start(f"trial-{TRIAL}", "trial")
    logger = FitLogger(tracker, EXPERIMENT, workdir, processes=1)
    try:
        run_ids = logger.submit(payloads, parent).get()
    finally:
        logger.close()
    client = MlflowClient(tracking_uri=tracker.uri)
    assert len(set(run_ids)) == 2
    for run_id, p in zip(run_ids, payloads):
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and run.info.run_name == p["name"]
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert run.data.tags["zip.model"] == "zip-regression"
        assert run.data.tags["zip.status"] == p["tags"]["status"]
        params = run.data.params
        assert set(params) == set(p["params"])
        assert params["batch_size"] == str(p["params"]["batch_size"])
        assert float(params["start.count.health_poor_"]) == p["params"]["start.count.health_poor_"]
        for key, value in p["metrics"].items():
            assert run.data.metrics[key] == pytest.approx(value, rel=1e-15, abs=0), key
        for key, (steps, values) in p["histories"].items():
            history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
            assert [s for s, _ in history] == steps.tolist()
            np.testing.assert_array_equal([v for _, v in history], values)
        assert [a.path for a in client.list_artifacts(run_id)] == ["convergence.png"]
        png = client.download_artifacts(run_id, "convergence.png", str(workdir))
        with Image.open(png) as image:
            assert (image.format, image.size) == ("PNG", (640, 208))  # 8 × 2.6 in at 80 dpi
    assert tracker.open_runs == {parent}


def test_a_fit_with_random_intercepts_is_a_mixed_model_run():
    """A grouped scenario's fit (its coefficients end with part "random", log σ) is tagged
    `<family>-mixed` and names its random parts; log σ is one more start and error."""
    fits, coefs, histories = _frames()
    sigma = pl.col("term") == "health[poor]"
    relabel = (
        pl.when(sigma).then(pl.lit("random")).otherwise("part").alias("part"),
        pl.when(sigma).then(pl.lit("log_sigma_count")).otherwise("term").alias("term"),
    )
    coefs, histories = coefs.with_columns(*relabel), histories.with_columns(*relabel)
    payloads = fit_payloads(fits, histories, coefs=coefs, fit_cfg=FIT_CFG, max_points=MAX_POINTS,
                            plots=False, trial=TRIAL, study=STUDY)  # fmt: skip
    for p in payloads:
        assert p["tags"]["model"] == "zip-mixed" and p["params"]["random"] == "count"
        assert "start.random.log_sigma_count" in p["params"]
        assert "err_se.random.log_sigma_count" in p["metrics"]
