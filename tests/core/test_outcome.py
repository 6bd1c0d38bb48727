"""The descent bookkeeping both engines share (`outcome`): the stop rule, the result type and
its intercept-only views."""

import numpy as np
import pytest
import torch

from pipeline.core.descent.outcome import STATUSES, FitResult, StopRule, status_names, to_result


def _codes(*names):
    return torch.tensor([STATUSES.index(n) for n in names])


def test_the_stop_rule_converges_after_a_flat_window_with_a_small_gradient():
    rule = StopRule(max_steps=100, tol=1e-10, window=3, grad_tol=1e-8)
    loss = torch.tensor([1.0, 1.0, 1.0])
    grad = torch.tensor([1e-9, 1e-3, 1e-9])
    streak = torch.tensor([2, 5, 1])  # the first fit completes its window now
    status, streak = rule.status(7, loss, loss + 1e-12, streak, grad)
    assert streak.tolist() == [3, 6, 2]
    assert status_names(status).tolist() == ["converged", "running", "running"]
    # A change of the loss above tol restarts the streak.
    _, again = rule.status(8, loss, loss + 1e-6, streak, grad)
    assert again.tolist() == [0, 0, 0]


def test_saturated_fits_are_stalled_and_divergence_and_the_budget_take_precedence():
    rule = StopRule(max_steps=10, window=1)
    loss, grad = torch.zeros(4), torch.zeros(4)
    streak = torch.ones(4, dtype=torch.int64)
    saturated = torch.tensor([True, False, False, False])
    finite = torch.tensor([True, True, False, True])
    status, _ = rule.status(3, loss, loss, streak, grad, finite, saturated)
    assert status_names(status).tolist() == ["stalled", "converged", "diverged", "converged"]
    # Mini-batch steps: no convergence test, only the budget and divergence.
    status, _ = rule.status(10, loss, loss, streak, grad, finite, saturated, converge=False)
    assert status_names(status).tolist() == ["max_steps", "max_steps", "diverged", "max_steps"]


@pytest.mark.parametrize("field, value", [("max_steps", -1), ("window", 0), ("record_every", 1.5),
                                          ("chunk_steps", 0)])  # fmt: skip
def test_bad_schedules_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        StopRule(**{field: value})


def test_results_move_to_numpy_and_give_the_intercept_only_views():
    params = torch.tensor([[0.0, 1.0], [2.0, -1.0], [-1.0, 0.5]], dtype=torch.float64)
    history = torch.stack([params, params + 1.0], -1)  # (B, P, T)
    result = to_result(params, torch.ones(3), torch.tensor([4, 5, 6]),
                       _codes("converged", "max_steps", "diverged"), torch.zeros(3), [0, 10],
                       torch.ones(3, 2), history)  # fmt: skip
    assert isinstance(result, FitResult) and result.status.tolist() == ["converged", "max_steps",
                                                                       "diverged"]  # fmt: skip
    np.testing.assert_allclose(result.pi, 1 / (1 + np.exp(-params[:, 0].numpy())), rtol=1e-15)
    np.testing.assert_allclose(result.lam, np.exp(params[:, 1].numpy()), rtol=1e-15)
    assert result.history_pi.shape == result.history_lam.shape == (3, 2)
    np.testing.assert_allclose(result.history_lam[:, 1], np.exp(params[:, 1].numpy() + 1.0))
    part = result.select(slice(1, 3), [1])
    assert part.params.shape == (2, 1) and part.history_params.shape == (2, 1, 2)
    assert part.steps.tolist() == [5, 6] and part.history_step.tolist() == [0, 10]
