"""Tests of pipeline/stages/fit_families.py: a histogram and its expanded rows give the same
report, one family alone, a failing family keeps its row, bad input, and the MLflow run.

The stage is called directly (`analyse_families`) as `fit_counts.main` will call it; the
rule itself is tested in tests/core/test_model_choice.py.
"""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from pipeline.core.errors import UserError
from pipeline.stages import config
from pipeline.stages import fit_families as stage

ONE = {"count": ["intercept"], "zero": ["intercept"]}


def args_for(tmp_path, no_mlflow=True):
    return argparse.Namespace(file=tmp_path / "counts.csv", where=None, no_mlflow=no_mlflow,
                              workdir=tmp_path)  # fmt: skip


def counts(seed=0, n=600):
    rng = np.random.default_rng(seed)
    mu = 2.0
    return rng.negative_binomial(1 / 0.7, 1 / (1 + 0.7 * mu), n) * (rng.random(n) > 0.3)


def run_hist(tmp_path, params, y, family="all", **kw):
    values, freqs = np.unique(y, return_counts=True)
    ones = np.ones((len(values), 1))
    source = {"file": "counts.csv", "column": "count", "where": None, "rows": len(y)}
    return stage.analyse_families(args_for(tmp_path, **kw), params, ones, ones, values, freqs,
                                  ONE, family, source)  # fmt: skip


@pytest.fixture
def params(tiny_params):
    return config.load(tiny_params)


def test_histogram_equals_expanded_rows(tmp_path, params):
    y = counts()
    hist = run_hist(tmp_path, params, y)
    ones = np.ones((len(y), 1))
    full = stage.analyse_families(args_for(tmp_path), params, ones, ones, y, None, ONE, "all",
                                  {"file": "counts.csv", "column": "count"})  # fmt: skip
    for a, b in zip(hist["frequencies"], full["frequencies"], strict=True):
        assert a["label"] == b["label"] and a["observed"] == b["observed"]
        assert [a[f] for f in stage.FAMILIES] == pytest.approx([b[f] for f in stage.FAMILIES])
    for f, m in hist["models"].items():
        other = full["models"][f]
        for key in ("loglik", "aic", "bic", "parameters"):
            assert m[key] == pytest.approx(other[key], rel=1e-9)
        assert m["gof"]["statistic"] == pytest.approx(other["gof"]["statistic"], rel=1e-6)
        for a, b in zip(m["count"], other["count"]):  # sandwich SEs: weighted = expanded
            assert a["robust_se"] == pytest.approx(b["robust_se"], rel=1e-6)
    for key, t in hist["lr_tests"].items():
        assert t["statistic"] == pytest.approx(full["lr_tests"][key]["statistic"], abs=1e-6)
    assert hist["recommendation"]["family"] == full["recommendation"]["family"]
    assert hist["data"] == pytest.approx(full["data"])
    assert hist["text"].startswith("Count families (all): counts.csv, column 'count'")


def test_one_family(tmp_path, params):
    r = run_hist(tmp_path, params, counts(), family="zinb")
    assert list(r["models"]) == ["zinb"] and r["recommendation"] is None
    assert r["detail"] == "zinb" and "Recommendation" not in r["text"]
    assert "dispersion: log(alpha)" in r["text"]


def test_a_failing_family_keeps_its_row(tmp_path, params, monkeypatch):
    real = stage.fit_model

    def flaky(family, *a, **kw):
        if family == "hurdle_nb":
            raise np.linalg.LinAlgError("singular matrix")
        return real(family, *a, **kw)

    monkeypatch.setattr(stage, "fit_model", flaky)
    r = run_hist(tmp_path, params, counts())
    assert r["models"]["hurdle_nb"]["status"] == "failed"
    assert "hurdle NB       fit failed: LinAlgError: singular matrix" in r["text"]
    assert r["recommendation"]["family"] in ("zinb", "nb", "zip", "hurdle_poisson")
    assert "hurdle_nb" not in {k for t in r["lr_tests"] for k in t.split("_vs_")}


def test_bad_input_is_one_line(tmp_path, params):
    with pytest.raises(UserError, match="--family 'zinbb'"):
        run_hist(tmp_path, params, counts(), family="zinbb")
    with pytest.raises(UserError, match="all counts are zero"):
        run_hist(tmp_path, params, np.zeros(50, np.int64))


def test_mlflow_run_holds_text_json_table_and_rootograms(tmp_path, params, isolated_mlflow):
    r = run_hist(tmp_path, params, counts(), no_mlflow=False)
    client = MlflowClient(tracking_uri=isolated_mlflow)
    run = client.get_run(r["mlflow_run_id"])
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert names == {"fit_counts.txt", "fit_counts.json", "frequencies.md", "rootogram.png"}
    assert run.data.metrics["models.nb.loglik"] == pytest.approx(r["models"]["nb"]["loglik"])
    assert run.data.params["family"] == "all" and run.info.status == "FINISHED"
    assert run.data.tags["zip.recommended"] == r["recommendation"]["family"]
