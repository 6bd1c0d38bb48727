"""Tests of the batched gradient-descent engine (`pipeline.core.descent.engine`); its likelihood and
optimizers have their own files (test_likelihood.py, test_optim.py).

References are independent of the engine: the closed-form exact MLE (`mle.exact_mle`), and
`torch.optim` run by hand on `histogram_nll`.
"""

import numpy as np
import pytest
import torch

from pipeline.core.descent.engine import MODELS, fit_zip, histogram_nll, stack_histograms
from pipeline.core.descent.outcome import ChunkReport
from pipeline.core.histogram import histogram
from pipeline.core.oracle.mle import exact_mle

N = 10_000
# (name, pi, lambda, data seed). Seed 4 of the Poisson case puts the MLE on the boundary pi = 0.
SCENARIOS = [
    ("blog", 0.5, 5.0, 0),
    ("rare-events", 0.3, 0.5, 1),
    ("mostly-zeros", 0.9, 3.0, 2),
    ("near-poisson", 0.02, 8.0, 3),
    ("poisson-boundary", 0.0, 3.0, 4),
]


def counts(pi: float, lam: float, seed: int, n: int = N) -> np.ndarray:
    """ZIP draws: a structural zero with probability pi, else Poisson(lam)."""
    rng = np.random.default_rng(seed)
    return rng.binomial(1, 1.0 - pi, n) * rng.poisson(lam, n)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Run this module on one intra-op thread, restored afterwards.

    The engine's tensors are small (B <= 40 here), and torch's exp/log kernels split even 2,048
    elements over threads; on 2 cores shared with other processes the thread handoffs made this
    file ~5x slower (measured: 26 s against 11 s). Results do not depend on the thread count.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def datasets():
    """Histograms and exact MLEs of every scenario, in `SCENARIOS` order."""
    hists = [histogram(counts(pi, lam, seed)) for _, pi, lam, seed in SCENARIOS]
    return hists, [exact_mle(h) for h in hists]


def random_inits(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """pi0 ~ U(0, 1), lam0 ~ U(0, 10), as the study draws them."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 1.0, size), rng.uniform(0.0, 10.0, size)


def test_stack_histograms_pads_with_zero_frequency():
    hists = [histogram([0, 0, 3]), histogram([1, 2, 2, 5, 7])]
    values, freqs = stack_histograms(hists, device="cpu", dtype=torch.float32)
    assert values.dtype == freqs.dtype == torch.float32
    assert values.tolist() == [[0, 3, 0, 0], [1, 2, 5, 7]]
    assert freqs.tolist() == [[2, 1, 0, 0], [1, 2, 1, 1]]


@pytest.mark.parametrize("case", range(4), ids=[s[0] for s in SCENARIOS[:4]])
def test_reaches_exact_mle_from_random_inits(datasets, case):
    hists, mles = datasets
    values, freqs = stack_histograms(hists)
    pi0, lam0 = random_inits(16, seed=case)
    result = fit_zip(values, freqs, np.full(16, case), pi0, lam0, 0.1, max_steps=5000)
    mle = mles[case]
    assert not mle.boundary
    assert (result.status == "converged").all(), result.status
    assert (result.nll - mle.nll).max() < 1e-12
    np.testing.assert_allclose(result.pi, mle.pi, rtol=1e-6)
    np.testing.assert_allclose(result.lam, mle.lam, rtol=1e-6)


def test_boundary_mle_is_approached_slowly(datasets):
    hists, mles = datasets
    mle = mles[4]
    assert mle.boundary and mle.pi == 0.0
    values, freqs = stack_histograms(hists[4:])
    pi0, lam0 = random_inits(16, seed=4)
    result = fit_zip(values, freqs, np.zeros(16, int), pi0, lam0, 0.1, max_steps=2000)
    # logit(pi) -> -inf and the gradient vanishes like pi, so constant-lr descent closes in
    # only sublinearly: after 2000 steps pi < 5e-3 and lambda is within 5e-3, not 1e-6
    # (measured: 3.6e-3, 3.1e-3; after 5000 steps 7.8e-4, 7.2e-4).
    assert (result.status == "max_steps").all()
    assert result.pi.max() < 5e-3
    np.testing.assert_allclose(result.lam, mle.lam, rtol=5e-3)
    assert (result.nll - mle.nll).max() < 5e-4
    assert (np.diff(result.history_pi, axis=1) < 0)[:, 10:].all()


def test_every_model_gives_the_same_fits(datasets):
    hists, _ = datasets
    values, freqs = stack_histograms(hists[:2])
    pi0, lam0 = random_inits(4, seed=7)
    index = np.array([0, 0, 1, 1])
    # A fixed number of steps compares whole trajectories, not just the end points.
    fits = {
        model: fit_zip(values, freqs, index, pi0, lam0, 0.1, model=model, max_steps=200, tol=0.0)
        for model in MODELS
    }
    for model in MODELS:
        np.testing.assert_allclose(fits[model].pi, fits["zip"].pi, rtol=1e-8, atol=0)
        np.testing.assert_allclose(fits[model].lam, fits["zip"].lam, rtol=1e-8, atol=0)
        np.testing.assert_allclose(fits[model].history_nll, fits["zip"].history_nll, rtol=1e-12)


TORCH_OPTIMIZERS = {
    "adam": (torch.optim.Adam, {}),
    "sgd": (torch.optim.SGD, {}),
    "sgd-momentum": (torch.optim.SGD, {"momentum": 0.9}),
    "rmsprop": (torch.optim.RMSprop, {}),
}


@pytest.mark.parametrize("name", TORCH_OPTIMIZERS)
@pytest.mark.parametrize("model", ["zip", "zip_autograd"])
def test_single_fit_follows_torch_optim(datasets, name, model):
    hists, _ = datasets
    values, freqs = stack_histograms(hists[:1])
    optimizer, kwargs = TORCH_OPTIMIZERS[name]
    lr, steps, pi0, lam0 = 0.02, 150, 0.8, 1.5
    result = fit_zip(values, freqs, [0], pi0, lam0, lr, optimizer=name.split("-")[0],
                     max_steps=steps, tol=0.0, grad_tol=0.0, record_every=1, model=model,
                     **kwargs)  # fmt: skip
    params = torch.tensor([np.log(pi0 / (1 - pi0)), np.log(lam0)], requires_grad=True)
    torch_opt = optimizer([params], lr=lr, **kwargs)
    path = []
    for _ in range(steps + 1):
        torch_opt.zero_grad()
        loss = histogram_nll(values[0], freqs[0], params[0], params[1], model=model)
        path.append(loss.item())
        loss.backward()
        torch_opt.step()
    assert result.status[0] == "max_steps" and result.steps[0] == steps
    np.testing.assert_allclose(result.history_nll[0], path, rtol=1e-12, atol=0)
    np.testing.assert_allclose(result.nll[0], path[-1], rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    ("optimizer", "good_lr", "huge_lr"),
    [("sgd", 0.3, 1e6), ("adam", 0.1, 1e3), ("rmsprop", 0.02, 1e3)],
)
def test_huge_learning_rate_diverges_and_the_rest_converge(datasets, optimizer, good_lr, huge_lr):
    hists, mles = datasets
    values, freqs = stack_histograms(hists[:1])
    pi0, lam0 = random_inits(8, seed=3)
    lr = np.where(np.arange(8) % 2 == 0, huge_lr, good_lr)
    result = fit_zip(values, freqs, np.zeros(8, int), pi0, lam0, lr, optimizer=optimizer,
                     max_steps=3000)  # fmt: skip
    huge = lr == huge_lr
    assert (result.status[huge] == "diverged").all()
    assert (result.status[~huge] == "converged").all()
    np.testing.assert_allclose(result.lam[~huge], mles[0].lam, rtol=1e-6)
    # Diverged fits are frozen at their last finite state and reported consistently.
    for field in ("pi", "lam", "nll", "grad_norm"):
        assert np.isfinite(getattr(result, field)).all(), field
    frozen = histogram_nll(values[0], freqs[0], torch.logit(torch.as_tensor(result.pi[huge])),
                           torch.log(torch.as_tensor(result.lam[huge])))  # fmt: skip
    np.testing.assert_allclose(frozen.numpy(), result.nll[huge], rtol=1e-9)
    assert (result.steps[huge] < 10).all()
    after = result.history_step[None, :] > result.steps[huge][:, None]
    assert np.isnan(result.history_nll[huge][after]).all()


def test_per_fit_learning_rates_equal_separate_runs(datasets):
    hists, _ = datasets
    values, freqs = stack_histograms(hists)
    pi0, lam0 = random_inits(6, seed=21)
    lr = np.array([0.003, 0.03, 0.1, 0.3, 1.0, 0.05])
    index = np.array([0, 1, 2, 3, 4, 0])
    batch = fit_zip(values, freqs, index, pi0, lam0, lr, max_steps=400)
    for b in range(6):
        alone = fit_zip(values, freqs, index[b : b + 1], pi0[b], lam0[b], lr[b], max_steps=400)
        assert alone.status[0] == batch.status[b] and alone.steps[0] == batch.steps[b]
        for field in ("pi", "lam", "nll"):
            np.testing.assert_allclose(getattr(alone, field)[0], getattr(batch, field)[b],
                                       rtol=1e-12, atol=0)  # fmt: skip
        width = len(alone.history_step)  # the batch records on until its last fit stops
        assert np.isnan(batch.history_nll[b, width:]).all()
        for field in ("history_nll", "history_pi", "history_lam"):
            np.testing.assert_allclose(getattr(alone, field)[0], getattr(batch, field)[b, :width],
                                       rtol=1e-12, atol=0)  # fmt: skip


def test_runs_are_deterministic(datasets):
    hists, _ = datasets
    values, freqs = stack_histograms(hists)
    pi0, lam0 = random_inits(40, seed=4)
    index, lr = np.arange(40) % 5, np.geomspace(1e-3, 3.0, 40)
    runs = [fit_zip(values, freqs, index, pi0, lam0, lr, max_steps=300) for _ in range(2)]
    for field in runs[0].__dataclass_fields__:
        np.testing.assert_array_equal(getattr(runs[0], field), getattr(runs[1], field))


def test_callback_reports_each_chunk_and_can_stop_the_run(datasets):
    hists, _ = datasets
    values, freqs = stack_histograms(hists[:1])
    pi0, lam0 = random_inits(5, seed=8)
    reports: list[ChunkReport] = []

    def callback(report: ChunkReport) -> bool:
        reports.append(report)
        return report.step >= 60

    result = fit_zip(values, freqs, np.zeros(5, int), pi0, lam0, 0.01, chunk_steps=30,
                     callback=callback)  # fmt: skip
    assert [r.step for r in reports] == [30, 60]
    assert all(r.n_active == 5 and (r.status == "running").all() for r in reports)
    assert reports[0].nll.shape == reports[0].pi.shape == reports[0].lam.shape == (5,)
    assert (reports[1].nll < reports[0].nll).all()
    assert (result.status == "stopped").all() and (result.steps == 60).all()
    np.testing.assert_array_equal(result.nll, reports[1].nll)
    np.testing.assert_array_equal(result.history_step, np.arange(0, 61, 10))


def test_max_steps_status_and_history_padding(datasets):
    hists, mles = datasets
    values, freqs = stack_histograms(hists[:1])
    mle = mles[0]
    # Fit 0 starts at the exact MLE and converges after `window` steps; fit 1 runs out. (Adam
    # would not stay put: its first steps have size ~lr whatever the size of the gradient.)
    result = fit_zip(values, freqs, [0, 0], [mle.pi, 0.1], [mle.lam, 9.0], 0.1, optimizer="sgd",
                     max_steps=35)  # fmt: skip
    assert result.status.tolist() == ["converged", "max_steps"]
    assert result.steps.tolist() == [10, 35]
    assert result.history_step.tolist() == [0, 10, 20, 30]
    for field in ("history_nll", "history_pi", "history_lam"):
        history = getattr(result, field)
        assert history.shape == (2, 4)
        assert np.isfinite(history[0, :2]).all() and np.isnan(history[0, 2:]).all()
        assert np.isfinite(history[1]).all()
    assert result.history_nll[0, 1] == result.nll[0]


def test_float32_runs_and_converges_with_a_looser_tolerance(datasets):
    hists, mles = datasets
    values, freqs = stack_histograms(hists[:1], dtype=torch.float32)
    pi0, lam0 = random_inits(4, seed=2)
    result = fit_zip(values, freqs, np.zeros(4, int), pi0, lam0, 0.05, dtype=torch.float32,
                     tol=1e-7, grad_tol=1e-4, max_steps=3000)  # fmt: skip
    assert result.pi.dtype == np.float32
    assert (result.status == "converged").all()
    np.testing.assert_allclose(result.lam, mles[0].lam, rtol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_gives_the_cpu_fits(datasets):
    hists, _ = datasets
    pi0, lam0 = random_inits(8, seed=9)
    fits = [fit_zip(*stack_histograms(hists, device=device), np.arange(8) % 5, pi0, lam0, 0.1,
                    max_steps=2000, device=device) for device in ("cpu", "cuda")]  # fmt: skip
    assert (fits[0].status == fits[1].status).all()
    np.testing.assert_allclose(fits[1].lam, fits[0].lam, rtol=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"optimizer": "lbfgs"}, "unknown optimizer"),
        ({"optimizer": "adam", "momentum": 0.9}, "momentum applies to 'sgd' only"),
        ({"model": "negbin"}, "model must be one of"),
        ({"pi0": 1.0}, "pi0"),
        ({"lam0": 0.0}, "lam0"),
        ({"lr": -0.1}, "lr"),
        ({"dataset_index": [1]}, "dataset_index"),
        ({"max_steps": -1}, "max_steps"),
    ],
)
def test_invalid_arguments_raise(kwargs, message):
    values, freqs = stack_histograms([histogram([0, 1, 2])])
    args = {"dataset_index": [0], "pi0": 0.5, "lam0": 1.0, "lr": 0.1} | kwargs
    with pytest.raises(ValueError, match=message):
        fit_zip(values, freqs, **args)
