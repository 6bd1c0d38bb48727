"""Regression scenarios with an exposure t (`data.regression.scenarios[].exposure`): the
params check, the draw (count mean ∝ t), the stored column, the oracle fitted with the offset
log t, and scenarios without one drawn exactly as before."""

import hashlib
import json
import math

import numpy as np
import polars as pl
import pytest
import yaml
from conftest import TINY, config_error, generate_refusal, merge
from scipy import stats

from pipeline.core.model import fit_data
from pipeline.core.oracle.fit import fit_model
from pipeline.stages import config
from pipeline.stages.generate_regression import generate_regression, simulate
from pipeline.stages.params_file import as_raw
from pipeline.store import files

X = {"name": "x", "dist": "normal"}
EXPOSED = {"name": "exposed", "covariates": [X], "count": {"intercept": 0.3, "x": 0.4},
           "zero": {"intercept": -1.0, "x": 0.5},
           "exposure": {"dist": "uniform", "low": 0.5, "high": 4.0, "name": "years"}}  # fmt: skip
VISITS = {"name": "visits", "covariates": [X], "count": {"intercept": 0.5, "x": 0.2},
          "zero": {"intercept": -0.7}}  # fmt: skip
FALSE_ALARM = 1e-3  # per statistical test below


def params_of(tmp_path, scenarios, n=300, replicates=2, name="params.yaml"):
    path = tmp_path / name
    raw = merge(TINY, {"data": {"regression": {"n": n, "replicates": replicates,
                                               "scenarios": scenarios}}})  # fmt: skip
    raw = json.loads(json.dumps(raw))  # shared dicts would be written as YAML aliases
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return config.load(path)


def with_exposure(**exposure) -> dict:
    return {"data": {"regression": {"scenarios": [{**EXPOSED, "exposure": exposure}]}}}


KEY = "data.regression.scenarios[0].exposure"
BAD = [
    ("not-positive", with_exposure(dist="uniform", low=0.0, high=2.0), KEY, "low must be > 0"),
    ("negative", with_exposure(dist="uniform", low=-1.0, high=2.0), KEY, "low must be > 0"),
    ("empty-range", with_exposure(dist="uniform", low=2.0, high=1.0), KEY, "low must be < high"),
    ("law", with_exposure(dist="normal", low=1.0, high=2.0), f"{KEY}.dist", "must be one of"),
    ("no-range", with_exposure(dist="uniform"), f"{KEY}.low", "is required"),
    ("text", with_exposure(dist="uniform", low="1", high=2.0), f"{KEY}.low", "must be a number"),
    ("clash", with_exposure(dist="uniform", low=1.0, high=2.0, name="x"), KEY, "duplicate name"),
    ("bad-name", with_exposure(dist="uniform", low=1.0, high=2.0, name="a b"), f"{KEY}.name",
     "letters, digits"),
    ("unknown-key", with_exposure(dist="uniform", low=1.0, high=2.0, zero=True), f"{KEY}.zero",
     "unknown key"),
    ("a-coefficient", {"data": {"regression": {"scenarios": [
        {**EXPOSED, "count": {"intercept": 0.3, "years": 1.0}}]}}},
     "data.regression.scenarios[0].count.years", "is not a covariate column"),
]  # fmt: skip


@pytest.mark.parametrize("overrides, key, problem", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_exposures_name_the_key(write_params, overrides, key, problem):
    assert problem in config_error(write_params(overrides), key)


def test_a_bad_exposure_is_one_line_and_exit_2(write_params, stage_env, tmp_path):
    path = write_params(with_exposure(dist="uniform", low=0.0, high=2.0))
    line = generate_refusal(path, tmp_path, stage_env)
    assert line.startswith(f"error: {KEY}: ") and "low must be > 0" in line


def test_params_without_an_exposure_hash_as_before(tmp_path):
    # The key is left out of the hash while absent: old data directories stay current.
    params = params_of(tmp_path, [VISITS])
    (scenario,) = as_raw(params.data)["regression"]["scenarios"]
    assert "exposure" not in scenario
    exposed = params_of(tmp_path, [EXPOSED], name="exposed.yaml")
    assert as_raw(exposed.data)["regression"]["scenarios"][0]["exposure"] == {
        "dist": "uniform", "low": 0.5, "high": 4.0, "name": "years"}  # fmt: skip


@pytest.mark.parametrize("family", ["zip", "nb"])
def test_the_count_mean_scales_with_the_exposure(tmp_path, family):
    # Binned by exposure, each bin's total count against its expectation under
    # mean_i = (1 - pi_i) exp(x_i'beta) t_i, in units of its standard deviation (the law's
    # variance summed over ~2,000 rows: normal by the CLT); the sum of squares over the bins
    # is chi^2 with `bins` df. The same totals against means that ignore t (scaled to the
    # same overall total) must be far out: the test has the power to see a missing offset.
    extra = {"family": family, "dispersion": 0.5, "zero": {}} if family == "nb" else {}
    params = params_of(tmp_path, [{**EXPOSED, **extra}], n=20_000, replicates=1)
    values, X, _, beta, Z, _, gamma, y, _, offset = simulate(params, 0, 0)
    t = values["years"]
    assert np.allclose(offset, np.log(t)) and t.min() >= 0.5 and t.max() <= 4.0
    mu = np.exp(X @ beta) * t
    if family == "zip":
        pi = 1 / (1 + np.exp(-(Z @ gamma)))
        mean, var = (1 - pi) * mu, (1 - pi) * mu * (1 + pi * mu)
    else:
        mean, var = mu, mu + 0.5 * mu**2
    bins = 10
    edges = np.quantile(t, np.linspace(0, 1, bins + 1))
    which = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, bins - 1)

    def statistic(expected):
        o, e, v = (np.bincount(which, w, bins) for w in (y, expected, var))
        return float(np.sum((o - e) ** 2 / v))

    limit = stats.chi2.isf(FALSE_ALARM, bins)
    assert statistic(mean) < limit
    flat = mean / t * y.sum() / (mean / t).sum()  # same total, no exposure
    assert statistic(flat) > 10 * limit


def test_the_oracle_recovers_the_truth_with_the_offset(tmp_path):
    # 20,000 rows: every coefficient within 3.5 oracle SEs of the truth (two-sided 4.7e-4 per
    # coefficient, < 2e-3 for the four); fitted without the offset, the count intercept is
    # biased by about E log t ~ 0.7, dozens of SEs.
    params = params_of(tmp_path, [EXPOSED], n=20_000, replicates=1)
    layout = files.Layout(tmp_path / "work")
    stamp = params.digest(*config.STAGE_BLOCKS["generate"])
    summary = generate_regression(params, layout, stamp)
    assert (summary["oracle_status"] == "converged").all() and summary.height == 4
    z = ((summary["estimate"] - summary["truth"]) / summary["se"]).abs()
    assert z.max() < 3.5, summary
    rows = files.read(layout.reg_dataset("exposed"), stamp)
    assert rows.columns == ["replicate", "x", "years", "y"]
    X = np.column_stack([np.ones(rows.height), rows["x"].to_numpy()])
    y = rows["y"].to_numpy()
    plain = fit_model("zip", fit_data(X, X[:, :2], y))
    count_icpt = summary.filter(pl.col("part") == "count", pl.col("term") == "intercept")
    assert abs(plain.params[2] - count_icpt["truth"][0]) > 20 * count_icpt["se"][0]
    # The stored column is the exposure itself; the oracle used its log as the offset.
    again = fit_model("zip", fit_data(X, X[:, :2], y, offset_x=np.log(rows["years"].to_numpy())))
    assert np.allclose(again.params, summary["estimate"].to_numpy(), rtol=0, atol=1e-12)


def _digest(frame: pl.DataFrame) -> str:
    """The columns' raw bytes (names, dtypes and values), not a file format's."""
    h = hashlib.sha256()
    for name in frame.columns:
        h.update(name.encode() + str(frame[name].dtype).encode() + frame[name].to_numpy().tobytes())
    return h.hexdigest()[:16]


def test_a_scenario_without_exposure_draws_exactly_as_before(tmp_path):
    # Alone, or beside a scenario with an exposure: the same rows and oracle fits, bit for bit,
    # as before exposures existed (digest of this test's rows recorded on the parent commit).
    alone = params_of(tmp_path, [VISITS], name="alone.yaml")
    both = params_of(tmp_path, [EXPOSED, VISITS], name="both.yaml")
    out = {}
    for key, params in (("alone", alone), ("both", both)):
        layout = files.Layout(tmp_path / key)
        stamp = params.digest(*config.STAGE_BLOCKS["generate"])
        summary = generate_regression(params, layout, stamp)
        rows = files.read(layout.reg_dataset("visits"), stamp)
        out[key] = rows, summary.filter(pl.col("scenario") == "visits")
    assert out["alone"][0].equals(out["both"][0]) and out["alone"][1].equals(out["both"][1])
    assert out["alone"][0].columns == ["replicate", "x", "y"]
    assert _digest(out["alone"][0]) == PINNED
    assert math.isfinite(out["alone"][1]["oracle_nll"][0])


PINNED = "d826d6c8cb3add1e"  # parent commit 8d9b353, before exposures
