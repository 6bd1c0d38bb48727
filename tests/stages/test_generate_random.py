"""Regression scenarios with random intercepts (`data.regression.scenarios[].random`, issue
20 item 4): the params check, the draw (groups, intercepts, counts), the stored group column,
the quadrature oracle's rows (log σ, its LR test and profile interval), and scenarios without
random intercepts drawn exactly as before."""

import json
import math

import numpy as np
import pytest
import yaml
from conftest import TINY, config_error, generate_refusal, merge
from scipy import stats

from pipeline.analysis.regression import build_reg_problem
from pipeline.stages import config
from pipeline.stages.generate_regression import generate_regression, simulate
from pipeline.stages.params_file import as_raw
from pipeline.store import files

X = {"name": "x", "dist": "normal"}
GROUPED = {"name": "grouped", "covariates": [X], "count": {"intercept": 1.0, "x": 0.3},
           "zero": {"intercept": -1.0},
           "random": {"groups": 12, "sizes": [5, 15], "count": 0.5, "nodes": 10}}  # fmt: skip
PLAIN = {"name": "plain", "covariates": [X], "count": {"intercept": 1.0, "x": 0.3},
         "zero": {"intercept": -1.0}}  # fmt: skip
FALSE_ALARM = 1e-3  # per statistical test below


def params_of(tmp_path, scenarios, replicates=2, name="params.yaml"):
    path = tmp_path / name
    raw = merge(TINY, {"data": {"regression": {"n": 200, "replicates": replicates,
                                               "scenarios": scenarios}}})  # fmt: skip
    path.write_text(yaml.safe_dump(json.loads(json.dumps(raw)), sort_keys=False))
    return config.load(path)


def with_random(scenario=GROUPED, **random) -> dict:
    return {"data": {"regression": {"scenarios": [{**scenario, "random": random}]}}}


KEY = "data.regression.scenarios[0].random"
BAD = [
    ("one-group", with_random(groups=1, sizes=[5, 5], count=0.5), f"{KEY}.groups",
     "at least two groups"),
    ("sizes-order", with_random(groups=4, sizes=[9, 3], count=0.5), f"{KEY}.sizes",
     "smallest <= largest"),
    ("all-singletons", with_random(groups=4, sizes=[1, 1], count=0.5), f"{KEY}.sizes",
     "largest >= 2"),
    ("negative-sd", with_random(groups=4, sizes=[3, 5], count=-0.1), f"{KEY}.count",
     "must be an SD"),
    ("huge-sd", with_random(groups=4, sizes=[3, 5], count=50.0), f"{KEY}.count", "must be an SD"),
    ("no-sd", with_random(groups=4, sizes=[3, 5]), KEY, "at least one random intercept"),
    ("text-sd", with_random(groups=4, sizes=[3, 5], count="big"), f"{KEY}.count",
     "must be a number"),
    ("nodes", with_random(groups=4, sizes=[3, 5], count=0.5, nodes=0), f"{KEY}.nodes",
     "quadrature points"),
    ("unknown-key", with_random(groups=4, sizes=[3, 5], count=0.5, slope=1.0), f"{KEY}.slope",
     "unknown key"),
    ("no-zero-part", with_random({**PLAIN, "family": "poisson", "zero": {}}, groups=4,
                                 sizes=[3, 5], zero=0.5), f"{KEY}.zero", "has no zero part"),
    ("group-column", {"data": {"regression": {"scenarios": [
        {**GROUPED, "covariates": [X, {"name": "group", "dist": "normal"}]}]}}},
     "data.regression.scenarios[0].covariates", "group column"),
]  # fmt: skip


@pytest.mark.parametrize("overrides, key, problem", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_random_intercepts_name_the_key(write_params, overrides, key, problem):
    assert problem in config_error(write_params(overrides), key)


def test_a_bad_random_block_is_one_line_and_exit_2(write_params, stage_env, tmp_path):
    path = write_params(with_random(groups=1, sizes=[5, 5], count=0.5))
    assert generate_refusal(path, tmp_path, stage_env).startswith(f"error: {KEY}.groups: ")


def test_params_without_random_intercepts_hash_and_draw_as_before(tmp_path):
    # The key is left out of the hash while absent, and the intercepts draw from a third
    # child stream: a scenario without them keeps its data byte for byte (the values below
    # were drawn before random intercepts existed, at commit 110f6a7).
    params = params_of(tmp_path, [PLAIN])
    assert "random" not in as_raw(params.data)["regression"]["scenarios"][0]
    values, *_, y, _, _ = simulate(params, 0, 0)
    assert "group" not in values
    assert y[:8].tolist() == PLAIN_FIRST_COUNTS
    assert round(float(values["x"][0]), 12) == PLAIN_FIRST_X


PLAIN_FIRST_COUNTS = [5, 1, 0, 0, 4, 1, 1, 4]
PLAIN_FIRST_X = 1.528712037172


def test_groups_sizes_and_intercepts(tmp_path):
    # Sizes run evenly from 5 to 15 over 12 groups, the same in every replicate; the count
    # part's log mean is shifted by one N(0, 0.5^2) draw per group. With the truth known,
    # each group's sum of y / E[y | b = 0] estimates e^{b_g}; over 200 groups of 15-25 rows
    # the log ratios' SD is sqrt(0.25 + Poisson noise) — checked against sigma = 0.5 by a
    # chi-square test on the standardised log ratios' sum of squares (dof = groups).
    spec = {**GROUPED, "random": {"groups": 200, "sizes": [15, 25], "count": 0.5}}
    params = params_of(tmp_path, [spec], replicates=1)
    values, X, _, beta, Z, _, gamma, y, _, _ = simulate(params, 0, 0)
    groups = values["group"]
    sizes = np.bincount(groups)
    assert sizes.tolist() == params.data.regression.scenarios[0].random.group_sizes
    assert sizes.min() == 15 and sizes.max() == 25 and len(y) == sizes.sum()
    pi = 1 / (1 + np.exp(-(Z @ gamma)))
    expected = np.bincount(groups, (1 - pi) * np.exp(X @ beta))
    observed = np.bincount(groups, y)
    log_ratio = np.log(np.maximum(observed, 0.5) / expected)
    # Var of log(sum y / E) given b ~ 1/E(sum y) (Poisson, delta method) plus the ZIP's extra
    # variance pi/(1-pi)·E per row, summed: the law of log_ratio is N(0, sigma^2 + noise).
    noise = (1 / expected) * (1 + np.bincount(groups, pi * (1 - pi) * np.exp(2 * (X @ beta)))
                              / expected)  # fmt: skip
    stat = float(np.sum(log_ratio**2 / (0.25 + noise)))
    dof = len(sizes)
    assert (
        stats.chi2.sf(stat, dof) > FALSE_ALARM / 2 and stats.chi2.cdf(stat, dof) > FALSE_ALARM / 2
    )
    # sigma = 0 would be far out: the same statistic with no group variance.
    assert stats.chi2.sf(float(np.sum(log_ratio**2 / noise)), dof) < 1e-12


def test_the_data_stage_stores_groups_and_the_quadrature_oracle(tmp_path):
    flat = {**GROUPED, "name": "flat", "random": {**GROUPED["random"], "count": 0.0}}
    params = params_of(tmp_path, [GROUPED, flat])
    layout = files.Layout(tmp_path / "work")
    stamp = params.digest(*config.STAGE_BLOCKS["generate"])
    summary = generate_regression(params, layout, stamp)
    rows = files.read(layout.reg_dataset("grouped"), stamp)
    assert rows.columns == ["replicate", "x", "group", "y"]
    assert rows.height == 2 * params.data.regression.scenarios[0].random.rows
    sigma = summary.filter(summary["part"] == "random")
    assert sigma["term"].unique().to_list() == ["log_sigma_count"]
    assert set(sigma["oracle_status"]) <= {"converged", "boundary"}
    grouped = sigma.filter(sigma["scenario"] == "grouped")
    assert np.allclose(grouped["truth"], math.log(0.5))
    # The profile interval holds the estimate; at the boundary its lower limit is log 0.
    for r in sigma.iter_rows(named=True):
        assert r["profile_lower"] <= r["estimate"] <= r["profile_upper"], r
        assert r["profile_level"] == 0.95 and 0 <= r["sigma_p"] <= 1
        if r["oracle_status"] == "boundary":
            assert r["estimate"] == -math.inf and r["sigma_lr"] == 0 and r["sigma_p"] == 1
            assert r["profile_lower"] == -math.inf
    flat = sigma.filter(sigma["scenario"] == "flat")
    assert (flat["truth"] == -math.inf).all()
    # Other rows have no sigma columns' values.
    assert summary.filter(summary["part"] != "random")["profile_lower"].is_null().all()
    # The sweep's problem: every replicate shares the groups; log sigma starts drawn last.
    problem = build_reg_problem("grouped", summary, rows, params.seed, params.sweep.regression,
                                random=params.data.regression.scenarios[0].random)  # fmt: skip
    assert problem.random == ("count",) and problem.nodes == 10
    assert problem.groups.tolist() == rows.filter(rows["replicate"] == 0)["group"].to_list()
    assert problem.start.shape[1] == 4 and problem.names[-1] == ("random", "log_sigma_count")
