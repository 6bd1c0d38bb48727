"""The batched design engine (`design_engine.fit_designs`) against the Newton oracle and the
intercept-only engine."""

import numpy as np
import pytest
import torch

from pipeline.core.descent import design_engine, designs
from pipeline.core.descent.engine import fit_zip, stack_histograms
from pipeline.core.histogram import histogram
from pipeline.core.model import fit_data
from pipeline.core.oracle.fit import fit_model

N = 2000


def dataset(seed: int, n: int = N, shift: float = 0.0):
    """Two covariates (one binary) in both parts; `shift` moves x off zero (conditioning)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(shift, 1.0, n)
    b = rng.binomial(1, 0.4, n).astype(float)
    X = np.column_stack([np.ones(n), x, b])
    Z = np.column_stack([np.ones(n), x])
    beta, gamma = np.array([0.8 - 0.3 * shift, 0.3, -0.4]), np.array([-0.5 - 0.7 * shift, 0.7])
    gate = rng.random(n) < 1 / (1 + np.exp(-Z @ gamma))
    y = np.where(gate, 0, rng.poisson(np.exp(X @ beta)))
    return X, Z, y


@pytest.fixture(scope="module")
def two():
    sets = [dataset(1), dataset(2)]
    oracles = [fit_model("zip", fit_data(*s)) for s in sets]
    assert all(o.status == "converged" for o in oracles)
    return sets, oracles


def starts(k: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 0.5, (k, 5))


def test_reaches_the_oracle_from_random_starts(two):
    sets, oracles = two
    data = designs.stack_designs(*zip(*sets))
    index = np.repeat([0, 1], 4)
    result = design_engine.fit_designs(data, index, starts(8), 0.1, max_steps=3000)
    assert (result.status == "converged").all()
    for b, d in enumerate(index):
        o = oracles[d]
        theta, se = np.r_[o.gamma, o.beta], np.r_[o.se_gamma, o.se_beta]
        # Converged: |ΔNLL| < 1e-10 and gradient < 1e-8, i.e. ~1e-6 SE from the optimum at
        # n = 2000 (SE ~ 0.03-0.1); 0.01 SE is the target, asserted with room to spare.
        assert np.abs(result.params[b] - theta).max() / se.min() < 1e-3
        assert result.nll[b] == pytest.approx(o.nll, abs=1e-10)


def test_standardised_fits_report_on_the_original_scale():
    X, Z, y = dataset(3, shift=20.0)  # x around 20: the raw problem is ill-conditioned
    oracle = fit_model("zip", fit_data(X, Z, y))
    data = designs.stack_designs([X], [Z], [y])
    start = np.zeros((2, 5))
    std = design_engine.fit_designs(data, [0, 0], start, 0.1, max_steps=3000, standardize=True)
    assert (std.status == "converged").all()
    theta = np.r_[oracle.gamma, oracle.beta]
    assert np.abs(std.params - theta).max() < 1e-5
    # The histories are on the original scale too: they start at the given start.
    assert np.allclose(std.history_params[:, :, 0], start, atol=1e-12)
    raw = design_engine.fit_designs(data, [0], start[:1], 0.1, max_steps=300)
    assert raw.status[0] != "converged"  # the point of standardising: raw GD is still far


def test_intercept_only_design_equals_the_closed_form_fast_path():
    rng = np.random.default_rng(7)
    ys = [
        np.where(rng.random(N) < p, 0, rng.poisson(lam, N)) for p, lam in ((0.4, 3.0), (0.1, 0.8))
    ]
    ones = np.ones((N, 1))
    data = designs.stack_designs([ones, ones], [ones, ones], ys)
    index = np.array([0, 0, 1, 1, 1])
    pi0, lam0 = rng.uniform(0.05, 0.95, 5), rng.uniform(0.3, 8.0, 5)
    lr = np.array([0.05, 0.1, 0.1, 0.3, 0.02])
    start = np.c_[np.log(pi0 / (1 - pi0)), np.log(lam0)]
    for optimizer in ("adam", "sgd", "rmsprop"):
        reg = design_engine.fit_designs(data, index, start, lr, optimizer=optimizer,
                                        max_steps=800)  # fmt: skip
        values, freqs = stack_histograms([histogram(y) for y in ys])
        fast = fit_zip(values, freqs, index, pi0, lam0, lr, optimizer=optimizer, max_steps=800)
        assert (reg.status == fast.status).all()
        assert (reg.steps == fast.steps).all()
        # Same updates; the two evaluate the same mean NLL by different sums (rows against
        # the histogram), so paths agree to accumulated rounding. Adam and RMSprop divide by
        # the gradient's running RMS: near an optimum they turn a gradient of 1e-15 (pure
        # rounding) into a step of size lr, so a fit still oscillating at max_steps follows
        # its rounding; those are compared by status and steps only.
        same = (reg.status == "converged") | (optimizer == "sgd")
        assert same.sum() >= 2
        logit = np.log(fast.pi / (1 - fast.pi))
        assert np.allclose(reg.params[same, 0], logit[same], rtol=0, atol=1e-9)
        assert np.allclose(reg.params[same, 1], np.log(fast.lam[same]), rtol=0, atol=1e-9)
        assert np.allclose(reg.nll[same], fast.nll[same], rtol=0, atol=1e-12)


def test_mini_batches_are_deterministic_for_a_seed(two):
    sets, _ = two
    data = designs.stack_designs(*zip(*sets))
    kw = dict(max_steps=60, batch_size=128, record_every=5)
    a = design_engine.fit_designs(data, [0, 1], starts(2), 0.05, shuffle_seed=11, **kw)
    b = design_engine.fit_designs(data, [0, 1], starts(2), 0.05, shuffle_seed=11, **kw)
    c = design_engine.fit_designs(data, [0, 1], starts(2), 0.05, shuffle_seed=12, **kw)
    assert np.array_equal(a.params, b.params) and np.array_equal(a.history_nll, b.history_nll)
    assert not np.allclose(a.params, c.params)
    # SGD noise: the convergence test is off, every fit runs its budget; the NLL is full-data.
    assert (a.status == "max_steps").all() and (a.steps == 60).all()
    full = design_engine.fit_designs(data, [0, 1], a.params, 1e-12, max_steps=0)
    assert np.allclose(a.nll, full.nll, rtol=0, atol=1e-12)


def test_a_diverging_learning_rate_marks_only_its_own_fits(two):
    sets, _ = two
    data = designs.stack_designs(*zip(*sets))
    index = np.array([0, 0, 1, 1])
    lr = np.array([0.05, 50.0, 0.05, 0.05])
    mixed = design_engine.fit_designs(data, index, starts(4), lr, optimizer="sgd", max_steps=400)
    assert mixed.status[1] == "diverged"
    assert np.isfinite(mixed.params[1]).all() and np.isfinite(mixed.nll[1])  # last finite state
    keep = [0, 2, 3]
    alone = design_engine.fit_designs(data, index[keep], starts(4)[keep], lr[keep],
                                      optimizer="sgd", max_steps=400)  # fmt: skip
    assert (mixed.status[keep] == alone.status).all()
    assert np.array_equal(mixed.params[keep], alone.params)
    assert np.array_equal(mixed.steps[keep], alone.steps)


def test_the_callback_can_stop_the_run(two):
    sets, _ = two
    data = designs.stack_designs(*zip(*sets))
    seen = []

    def stop(report):
        seen.append(report.step)
        return report.step >= 20

    result = design_engine.fit_designs(data, [0, 1], starts(2), 0.01, chunk_steps=10,
                                       max_steps=500, callback=stop)  # fmt: skip
    assert seen == [10, 20]
    assert (result.status == "stopped").all() and (result.steps == 20).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dataset_index": [2]}, "dataset_index"),
        ({"start": np.zeros((1, 4))}, "start must be"),
        ({"lr": -1.0}, "lr must be positive"),
        ({"batch_size": 0}, "batch_size"),
        ({"optimizer": "lbfgs"}, "unknown optimizer"),
        ({"max_steps": -1}, "max_steps"),
    ],
)
def test_bad_arguments_are_refused(two, kwargs, match):
    sets, _ = two
    data = designs.stack_designs(*zip(*sets))
    args = {"dataset_index": [0], "start": np.zeros((1, 5)), "lr": 0.1, **kwargs}
    with pytest.raises(ValueError, match=match):
        design_engine.fit_designs(data, args.pop("dataset_index"), args.pop("start"),
                                  args.pop("lr"), **args)  # fmt: skip


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(two):
    sets, _ = two
    cpu = design_engine.fit_designs(designs.stack_designs(*zip(*sets)), [0, 1], starts(2),
                                    0.1, max_steps=2000)  # fmt: skip
    gpu_data = designs.stack_designs(*zip(*sets), device="cuda")
    gpu = design_engine.fit_designs(gpu_data, [0, 1], starts(2), 0.1, max_steps=2000)
    assert (gpu.status == cpu.status).all()
    assert np.allclose(gpu.params, cpu.params, atol=1e-7)
