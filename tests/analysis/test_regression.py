"""The sweep's regression fits: starts, the combined batch, the tables of a variant."""

import dataclasses

import numpy as np
import polars as pl
import pytest

from pipeline.analysis.reg_batch import combine, run_combined
from pipeline.analysis.regression import build_reg_problem, matrices, reg_tables, standard_starts
from pipeline.core.descent.design_engine import fit_designs
from pipeline.core.model import fit_data
from pipeline.core.oracle.fit import fit_model
from pipeline.stages.generate_regression import oracle_rows


class Cfg:
    inits = 2
    init_sd = 0.5


class Fit:
    momentum, max_steps, tol, window, grad_tol = 0.0, 400, 1e-10, 10, 1e-8
    record_every, chunk_steps, device = 10, 50, "cpu"


def scenario_frames(name: str, columns: int, seed: int, shift: float, n: int = 400):
    """A scenario's rows and summary (2 replicates) as the data stage writes them."""
    rng = np.random.default_rng(seed)
    rows, summary = [], []
    terms = [f"x{j}" for j in range(columns)]
    for rep in range(2):
        cols = {t: rng.normal(shift, 1.0, n) for t in terms}
        X = np.column_stack([np.ones(n), *cols.values()])
        Z = X[:, :2]
        beta = np.r_[0.5 - 0.2 * shift * columns, [0.2] * columns]
        gamma = np.r_[-0.5 - 0.3 * shift, 0.3]
        gate = rng.random(n) < 1 / (1 + np.exp(-Z @ gamma))
        y = np.where(gate, 0, rng.poisson(np.exp(X @ beta)))
        rows.append(pl.DataFrame({"replicate": [rep] * n, **cols, "y": y}))
        names = [("zero", "intercept"), ("zero", "x0")]
        names += [("count", "intercept")] + [("count", t) for t in terms]
        summary += oracle_rows(name, rep, f"s{rep}", X, Z, y, names, [*gamma, *beta])
    return pl.concat(rows), pl.DataFrame(summary)


@pytest.fixture(scope="module")
def problems():
    out = []
    for name, cols, shift in (("wide", 3, 0.0), ("shifted", 1, 3.0)):
        rows, summary = scenario_frames(name, cols, seed=len(name), shift=shift)
        out.append(build_reg_problem(name, summary, rows, seed=0, cfg=Cfg()))
    return out


def test_standard_starts_are_standard_normal_draws_on_the_standardised_scale():
    rng = np.random.default_rng(0)
    x = rng.normal(50.0, 10.0, 500)
    X = np.column_stack([np.ones(500), x])
    start = standard_starts(X, X, 4, 0.5, np.random.default_rng(1))
    draw = np.random.default_rng(1)
    z_draw, x_draw = draw.normal(0, 0.5, (4, 2)), draw.normal(0, 0.5, (4, 2))
    # slope = b / sd(x); intercept absorbs -b mean / sd: the linear predictor is the same.
    for offset, raw in ((0, z_draw), (2, x_draw)):
        slope = raw[:, 1] / x.std()
        assert np.allclose(start[:, offset + 1], slope)
        assert np.allclose(start[:, offset], raw[:, 0] - raw[:, 1] * x.mean() / x.std())


def test_problem_holds_the_oracle_and_the_truth(problems):
    wide = problems[0]
    assert wide.names[:2] == (("zero", "intercept"), ("zero", "x0"))
    assert wide.fits.height == 2 * Cfg.inits and wide.start.shape == (4, 6)
    X, Z, y = wide.arrays[1]
    fit = fit_model("zip", fit_data(X, Z, y))
    assert np.allclose(wide.oracle[-1], np.r_[fit.gamma, fit.beta], atol=1e-12)


def test_the_combined_batch_equals_one_engine_call_per_scenario_and_variant(problems):
    (combined,) = combine(problems, (False, True))  # one family: one batch
    together = run_combined(combined, Fit, 0.1, "adam", None, 0)
    assert len(together) == 4
    for problem, standardize, part in together:
        alone = fit_designs(problem.data, problem.fits["dataset"].to_numpy(), problem.start,
                            0.1, max_steps=Fit.max_steps, standardize=standardize)  # fmt: skip
        assert (part.status == alone.status).all() and (part.steps == alone.steps).all()
        # Zero padding adds exact zeros to the products, but the sums may round differently;
        # Adam turns such rounding into full steps once a fit oscillates near its optimum
        # (see tests/core/test_design_engine.py), so unconverged fits are compared loosely.
        done = part.status == "converged"
        assert np.allclose(part.params[done], alone.params[done], rtol=0, atol=1e-9)
        assert np.allclose(part.params, alone.params, rtol=0, atol=1e-6)
        # The batch records until its last fit stops: a group's own paths, then NaN.
        width = alone.history_params.shape[2]
        assert np.allclose(part.history_params[:, :, :width], alone.history_params, rtol=0,
                           atol=1e-6, equal_nan=True)  # fmt: skip
        assert np.isnan(part.history_params[:, :, width:]).all()


def test_tables_of_a_variant(problems):
    wide = problems[0]
    (combined,) = combine([wide], (True,))
    ((_, _, result),) = run_combined(combined, Fit, 0.1, "adam", None, 0)
    fits, coefs, histories = reg_tables(wide, result, True, None)
    assert fits.height == 4 and coefs.height == 4 * 6
    assert (fits["status"] == "converged").all()
    assert fits["max_err_se"].max() < 0.01  # the target for converged fits
    assert fits["batch_size"].is_null().all() and fits["standardize"].all()
    err = (coefs["estimate"] - coefs["oracle"]) / coefs["se_oracle"]
    assert np.allclose(coefs["err_se"].to_numpy(), err.to_numpy())
    # se_gd is the observed-information SE at the GD estimate: the oracle's, to rounding.
    assert np.allclose(coefs["se_gd"].to_numpy(), coefs["se_oracle"].to_numpy(), rtol=1e-5)
    last = histories.group_by("scenario", "replicate", "init").agg(pl.col("step").max())
    assert sorted(last["step"].to_list()) == sorted(fits["steps"].to_list())
    X, Z, y = matrices(pl.DataFrame({"replicate": [0], "x0": [1.5], "y": [2]}),
                       ["intercept", "x0"], ["intercept"])  # fmt: skip
    assert X.tolist() == [[1.0, 1.5]] and Z.tolist() == [[1.0]] and y.tolist() == [2]


def exposed_frames(n: int = 400, seed: int = 5):
    """A scenario with an exposure `t` ~ U(0.5, 4) (log t the count offset), 2 replicates."""
    rng = np.random.default_rng(seed)
    rows, summary = [], []
    gamma, beta = np.r_[-1.0], np.r_[0.3, 0.4]
    names = [("zero", "intercept"), ("count", "intercept"), ("count", "x0")]
    for rep in range(2):
        x, t = rng.normal(0, 1, n), rng.uniform(0.5, 4.0, n)
        X, Z = np.column_stack([np.ones(n), x]), np.ones((n, 1))
        gate = rng.random(n) < 1 / (1 + np.exp(-Z @ gamma))
        y = np.where(gate, 0, rng.poisson(np.exp(X @ beta) * t))
        rows.append(pl.DataFrame({"replicate": [rep] * n, "x0": x, "t": t, "y": y}))
        summary += oracle_rows("exposed", rep, f"s{rep}", X, Z, y, names, [*gamma, *beta],
                               offset=np.log(t))  # fmt: skip
    return pl.concat(rows), pl.DataFrame(summary)


def test_an_exposure_scenario_fits_with_its_offset_and_leaves_others_bitwise(problems):
    rows, summary = exposed_frames()
    exposed = build_reg_problem("exposed", summary, rows, seed=0, cfg=Cfg(), offset="t")
    X, Z, y = exposed.arrays[0]
    assert np.array_equal(
        exposed.count_offsets[0], np.log(rows.filter(pl.col("replicate") == 0)["t"])
    )
    with_offset = fit_model("zip", fit_data(X, Z, y, offset_x=exposed.count_offsets[0]))
    assert np.allclose(exposed.oracle[0], with_offset.params, atol=1e-12)
    # GD with the offset reaches the oracle fitted with it (and its SEs at the estimate).
    (combined,) = combine([exposed, problems[0]], (True,))
    results = run_combined(combined, Fit, 0.1, "adam", None, 0)
    fits, coefs, _ = reg_tables(exposed, results[0][2], True, None)
    assert (fits["status"] == "converged").all() and fits["max_err_se"].max() < 0.01
    assert np.allclose(coefs["se_gd"].to_numpy(), coefs["se_oracle"].to_numpy(), rtol=1e-5)
    # Beside one with an exposure, a scenario without gets a zero offset, which adds exactly
    # nothing: its fits follow bit for bit the path they follow with no offset at all.
    wide = problems[0]
    zeros = dataclasses.replace(wide, count_offsets=tuple(np.zeros(len(a[2])) for a in wide.arrays))
    (plain,) = combine([wide], (True,))
    (zeroed,) = combine([zeros], (True,))
    assert plain.data.count_offset is None and zeroed.data.count_offset is not None
    alone = run_combined(plain, Fit, 0.1, "adam", None, 0)[0][2]
    offset = run_combined(zeroed, Fit, 0.1, "adam", None, 0)[0][2]
    assert np.array_equal(offset.params, alone.params) and np.array_equal(offset.nll, alone.nll)
    assert np.array_equal(offset.steps, alone.steps)
