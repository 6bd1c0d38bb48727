"""The sweep's problem and objective: seeded inits, the objective and its parts, payloads."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from conftest import sweep_data

from pipeline.analysis.objective import (
    build_problem,
    draw_inits,
    fit_rows,
    init_seed,
    objective_parts,
    objective_value,
    run_fits,
)
from pipeline.core.histogram import histogram
from pipeline.stages import config


def test_init_seeds_differ_per_dataset_and_redraw_the_same_inits():
    seeds = {init_seed(0, s, r) for s in ("blog", "rare-events") for r in range(3)}
    assert len(seeds) == 6
    assert init_seed(0, "blog", 1) == init_seed(0, "blog", 1) != init_seed(1, "blog", 1)
    a = draw_inits(init_seed(0, "blog", 1), 4, (0.0, 1.0), (0.0, 10.0))
    b = draw_inits(init_seed(0, "blog", 1), 4, (0.0, 1.0), (0.0, 10.0))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_inits_stay_strictly_inside_closed_ranges():
    # U(0, 0 + 5e-324) can only return 0 or the smallest float: both ends are exercised.
    pi0, lam0 = draw_inits(3, 200, (0.0, 5e-324), (0.0, 5e-324))
    assert (pi0 > 0).all() and (pi0 < 1).all() and (lam0 > 0).all()
    pi0, _ = draw_inits(3, 200, (1 - 1e-16, 1.0), (1.0, 2.0))
    assert (pi0 < 1).all()


def test_objective_is_the_mean_charge():
    assert objective_value(np.array([1.0, 0.0, 1e-6])) == pytest.approx((1 + 1e-6) / 3)
    assert np.isnan(objective_value(np.array([])))


def _problem(inits=3):
    summary, hists = sweep_data((("blog", 0.5, 5.0), ("rare-events", 0.3, 0.5)), 2, 400, 1)
    rows = summary.to_dicts()
    rows.append({**rows[0], "scenario": "zeros", "identifiable": False})
    hists[("zeros", 0)] = histogram([0, 0, 0])
    cfg = config.SweepConfig(inits=inits)
    return build_problem(pl.DataFrame(rows), hists, 0, cfg), cfg


def test_problem_skips_unidentifiable_datasets_and_crosses_inits():
    problem, _ = _problem(inits=3)
    assert problem.skipped == ("zeros/0",)
    assert problem.fits.height == 4 * 3 and problem.values.shape[0] == 4
    assert problem.fits.group_by("scenario", "replicate").len()["len"].to_list() == [3] * 4


def test_fit_rows_parts_and_intermediate_values():
    problem, cfg = _problem(inits=2)
    fit = config.FitConfig(max_steps=300, chunk_steps=50)
    seen = []
    result = run_fits(problem, fit, 0.1, "adam", lambda s, v: seen.append((s, v)))
    rows = fit_rows(problem, result)
    parts = objective_parts(rows, fit.max_steps)
    # Reports every 50 steps while fits run; the objective so far falls as fits come within
    # 1 SE (a running fit there counts as recovered so far), bounded by 1 + 1e-6 throughout.
    assert [s for s, _ in seen] == list(range(50, 50 * len(seen) + 1, 50)) and len(seen) >= 2
    assert seen[-1][1] < seen[0][1] and all(0 <= v <= 1 + 1e-6 for _, v in seen)
    within = (rows["err_pi_se"].abs() <= 1) & (rows["err_lambda_se"].abs() <= 1)
    done = (rows["status"] == "converged") & within
    charges = np.where(done, 1e-6 * rows["steps"].to_numpy() / 300, 1.0)
    assert parts["objective"] == pytest.approx(charges.mean(), rel=1e-12)
    assert parts["share_recovered"] == done.mean() > 0
    assert 0 <= parts["share_converged"] <= 1 and parts["share_diverged"] == 0
    gap = rows["nll_gap"].to_numpy()
    assert (gap > -1e-12).all()  # never below the exact MLE beyond rounding
    err = (rows["pi_hat"] - rows["mle_pi"]) / rows["se_pi"]
    np.testing.assert_allclose(rows["err_pi_se"], err)


def test_a_callback_returning_true_stops_every_fit():
    problem, _ = _problem(inits=2)
    fit = config.FitConfig(max_steps=300, chunk_steps=20, tol=1e-300, grad_tol=1e-300)
    result = run_fits(problem, fit, 1e-6, "sgd", lambda s, v: s >= 40)
    assert set(result.status) == {"stopped"} and (result.steps == 40).all()


def test_signals_stop_at_safe_points_and_a_repeat_stops_at_once():
    import os
    import signal

    from pipeline.tracking import interrupts

    before = signal.getsignal(signal.SIGTERM)
    restore = interrupts.install()
    try:
        interrupts.check()  # nothing requested yet
        os.kill(os.getpid(), signal.SIGTERM)  # handled before os.kill returns (main thread)
        assert interrupts.requested()
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C after the SIGTERM: still one request
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)  # the same signal again: at once
    finally:
        restore()
    assert not interrupts.requested()
    assert signal.getsignal(signal.SIGTERM) == before
