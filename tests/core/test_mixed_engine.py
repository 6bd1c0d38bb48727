"""Batched gradient descent on the GLMMs' quadrature likelihood (`descent.mixed_engine`):
converged fits reach the oracle (`oracle.mixed`) on every parameter, log σ included; a fit's
path does not depend on its batch; divergence, pruning and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.descent.mixed_engine import fit_mixed_gd
from pipeline.core.descent.outcome import StopRule
from pipeline.core.model import fit_data
from pipeline.core.oracle import mixed


def _simulated(parts, seed=5, groups=12):
    """A ZIP with site intercepts: groups of 3..14 rows, σ 0.7 in each random part."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(3, 15, groups)
    g = np.repeat(np.arange(groups), sizes)
    n = len(g)
    x = rng.normal(size=n)
    X = np.c_[np.ones(n), x]
    b = rng.normal(0, 0.7, groups)[g] if "count" in parts else 0.0
    c = rng.normal(0, 0.7, groups)[g] if "zero" in parts else 0.0
    pi = 1 / (1 + np.exp(-(-0.8 + c)))
    y = rng.poisson(np.exp(0.5 + 0.4 * x + b)) * (rng.uniform(size=n) > pi)
    return fit_data(X, X[:, :1], y), g


@pytest.mark.parametrize(("parts", "groups"), [(("count",), 12), (("zero",), 25),
                                               (("count", "zero"), 12)])  # fmt: skip
def test_converged_fits_are_at_the_oracle_on_every_parameter(parts, groups):
    """Issue 20's bar: every converged fit within 0.01 oracle SE of the oracle, log σ
    included (measured: ≤ 1e-7 SE; the stop rule's 1e-10 nats/obs bounds the distance at
    ~sqrt(2 n 1e-10) ≈ 1e-4 SE)."""
    data, groups = _simulated(parts, groups=groups)  # 12 groups put σ̂ of the zero part at 0
    oracle = mixed.fit_mixed("zip", data, groups, parts)
    assert oracle.status == "converged", oracle.message
    mp = mixed.mixed_problem("zip", data, groups, parts)
    rng = np.random.default_rng(0)
    starts = oracle.params + rng.normal(0, 0.5, (4, len(oracle.params)))
    res = fit_mixed_gd(mp, starts, [0.05, 0.1, 0.1, 0.2], rule=StopRule(max_steps=3000))
    assert (res.status == "converged").all(), res.status
    err = np.abs(res.params - oracle.params) / oracle.se
    assert err.max() < 0.01
    # Its final NLL is the oracle's marginal log-likelihood per observation, to rounding.
    np.testing.assert_allclose(res.nll, -oracle.loglik / data.n, rtol=1e-9)


def test_a_fit_ends_alike_alone_or_in_a_batch_and_a_diverging_neighbour_changes_nothing():
    data, groups = _simulated(("count",))
    mp = mixed.mixed_problem("zip", data, groups, ("count",))
    oracle = mixed.fit_mixed("zip", data, groups, ("count",))
    rng = np.random.default_rng(1)
    starts = oracle.params + rng.normal(0, 0.5, (4, 4))
    lrs = np.array([0.1, 0.2, 0.1, 50.0])  # the last diverges at once
    rule = StopRule(max_steps=2000)
    batch = fit_mixed_gd(mp, starts, lrs, rule=rule)
    assert list(batch.status) == ["converged"] * 3 + ["diverged"]
    # reported at its last finite state: the start
    assert batch.steps[3] == 0 and np.array_equal(batch.params[3], starts[3])
    for i in range(3):
        alone = fit_mixed_gd(mp, starts[i : i + 1], lrs[i : i + 1], rule=rule)
        assert alone.status[0] == batch.status[i] and alone.steps[0] == batch.steps[i]
        np.testing.assert_allclose(alone.params[0], batch.params[i], rtol=0, atol=1e-12)


def test_callback_stops_the_running_fits():
    data, groups = _simulated(("count",))
    mp = mixed.mixed_problem("zip", data, groups, ("count",))
    starts = np.zeros((2, 4))
    seen = []

    def callback(report):
        seen.append(report.step)
        return report.step >= 20

    res = fit_mixed_gd(mp, starts, 0.01, rule=StopRule(chunk_steps=10), callback=callback)
    assert seen == [10, 20] and list(res.status) == ["stopped", "stopped"]
    assert (res.steps == 20).all()


@pytest.mark.parametrize(
    ("starts", "lr", "match"),
    [(np.zeros((2, 3)), 0.1, "starts must be"), (np.full((1, 4), np.nan), 0.1, "finite"),
     (np.zeros((1, 4)), -1.0, "lr must be positive")],
)  # fmt: skip
def test_bad_input_is_a_value_error(starts, lr, match):
    data, groups = _simulated(("count",))
    mp = mixed.mixed_problem("zip", data, groups, ("count",))
    with pytest.raises(ValueError, match=match):
        fit_mixed_gd(mp, starts, lr)


@pytest.mark.parametrize("parts", [("count",), ("zero",), ("count", "zero")])
@pytest.mark.parametrize("family", ["zip", "zinb", "hurdle_nb"])
def test_the_descents_gradient_vanishes_where_the_oracle_stops(family, parts):
    """`loglik_and_score` (points held at the modes, no autograd) against autograd through
    the modes (`marginal_loglik`). The value is the same. The gradients differ by how much
    the quadrature depends on where its points sit: at arbitrary parameters on these small
    groups by up to 4e-4 of the largest component (measured 3.6e-4; 1e-12 on Salamanders'
    larger groups), so the test allows 2e-3; at the oracle's optimum the held-point gradient
    nearly vanishes too: the point where it does lies cov x gradient away, at most 1e-5 SE
    (measured ≤ 2.5e-6), so a descent that stops there stops at the oracle for any purpose
    (issue 20 asks 0.01 SE). Checked where the information is well conditioned (every SE
    below 100: hurdle_nb's dispersion here drifts to its α = 0 boundary, SE ~1e11)."""
    import torch

    data, groups = _simulated(parts, groups=25)
    mp = mixed.mixed_problem(family, data, groups, parts)
    rng = np.random.default_rng(3)
    theta = torch.tensor(rng.normal(0, 0.3, (3, mp.k_fixed + mp.d)))
    ll, grad, _ = mixed.loglik_and_score(mp, theta)
    t = theta.clone().requires_grad_(True)
    ll2, _ = mixed.marginal_loglik(mp, t, graph_steps=1)
    (grad2,) = torch.autograd.grad(ll2.sum(), t)
    np.testing.assert_allclose(ll.numpy(), ll2.detach().numpy(), rtol=1e-13)
    scale = grad2.abs().max().item()
    np.testing.assert_allclose(grad.numpy(), grad2.numpy(), rtol=0, atol=2e-3 * scale)
    oracle = mixed.fit_mixed(family, data, groups, parts)
    if oracle.status == "converged" and oracle.se.max() < 100:
        at_optimum = mixed.loglik_and_score(mp, torch.tensor(oracle.params)[None])[1][0]
        shift = oracle.cov @ at_optimum.numpy()  # one Newton step to where it vanishes
        assert np.abs(shift / oracle.se).max() < 1e-5


def _same_design(seed: int, groups: np.ndarray):
    """A ZIP dataset on the given groups (σ 0.6 in the count part): the study's replicates."""
    rng = np.random.default_rng(seed)
    n = len(groups)
    x = rng.normal(size=n)
    X = np.c_[np.ones(n), x]
    b = rng.normal(0, 0.6, groups.max() + 1)[groups]
    y = rng.poisson(np.exp(0.5 + 0.4 * x + b)) * (rng.uniform(size=n) > 0.3)
    return fit_data(X, X[:, :1], y)


def test_datasets_of_one_design_fit_in_one_batch_as_alone():
    """Stacked (`stack_problems`: each fit its own dataset's rows) is alone, fit by fit: the
    same stop step and parameters within 1e-12 (only the vectorised-exp rounding of the module
    docstring differs), while fits that end early leave the batch (its rows go with them)."""
    groups = np.repeat(np.arange(10), np.arange(3, 13))
    datasets = [_same_design(seed, groups) for seed in (1, 2, 3)]
    problems = [mixed.mixed_problem("zip", d, groups, ("count",)) for d in datasets]
    index = [0, 1, 2, 0, 2]
    rng = np.random.default_rng(4)
    starts = rng.normal(0, 0.5, (len(index), 4))
    lrs = np.array([0.1, 0.2, 0.05, 50.0, 0.1])  # the fourth diverges at once
    stacked = mixed.stack_problems(problems, index)
    batch = fit_mixed_gd(stacked, starts, lrs, rule=StopRule(max_steps=3000))
    assert batch.status[3] == "diverged" and (np.delete(batch.status, 3) == "converged").all()
    assert len(set(batch.steps.tolist())) > 2  # fits left at different steps
    for b, d in enumerate(index):
        alone = fit_mixed_gd(problems[d], starts[b : b + 1], lrs[b : b + 1],
                             rule=StopRule(max_steps=3000))  # fmt: skip
        assert alone.steps[0] == batch.steps[b] and alone.status[0] == batch.status[b]
        np.testing.assert_allclose(batch.params[b], alone.params[0], rtol=0, atol=1e-12)
    oracle = mixed.fit_mixed("zip", datasets[1], groups, ("count",))
    assert np.abs((batch.params[1] - oracle.params) / oracle.se).max() < 0.01


def test_stacking_refuses_problems_of_different_designs():
    groups = np.repeat(np.arange(10), np.arange(3, 13))
    a = mixed.mixed_problem("zip", _same_design(1, groups), groups, ("count",))
    other = np.repeat(np.arange(10), np.arange(12, 2, -1))
    b = mixed.mixed_problem("zip", _same_design(2, other), other, ("count",))
    with pytest.raises(ValueError, match="share family, parts, columns and groups"):
        mixed.stack_problems([a, b], [0, 1])
    with pytest.raises(ValueError, match="one dataset per fit"):
        fit_mixed_gd(mixed.stack_problems([a], [0, 0]), np.zeros((1, 4)), 0.1)
