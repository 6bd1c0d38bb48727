"""Tests of `pipeline.core.descent.likelihood`: the closed form, its gradient and the three models.

References are independent of the closed form: autograd through `distributions.zip_log_prob`
and through `MixtureSameFamily` over histograms and raw samples, scipy's Poisson pmf, and
mpmath at 40 digits where float64 autograd is itself inexact.
"""

import itertools
import math

import mpmath
import numpy as np
import pytest
import scipy.stats
import torch

from pipeline.core.descent import likelihood
from pipeline.core.descent.likelihood import MODELS, histogram_nll, nll_per_sample
from pipeline.core.histogram import histogram
from pipeline.core.laws.distributions import zip_log_prob


def counts(pi: float, lam: float, seed: int, n: int = 3000) -> np.ndarray:
    """ZIP draws: a structural zero with probability pi, else Poisson(lam)."""
    rng = np.random.default_rng(seed)
    return rng.binomial(1, 1.0 - pi, n) * rng.poisson(lam, n)


# The engine's scenarios (n = 10,000; seed 4 puts the Poisson case's MLE on the boundary),
# then edge cases.
DATA = {
    "blog": counts(0.5, 5.0, 0, 10_000),
    "rare-events": counts(0.3, 0.5, 1, 10_000),
    "mostly-zeros": counts(0.9, 3.0, 2, 10_000),
    "near-poisson": counts(0.02, 8.0, 3, 10_000),
    "poisson-boundary": counts(0.0, 3.0, 4, 10_000),
    "no-zeros": 1 + counts(0.0, 3.0, 3),
    "large-rate": counts(0.2, 1000.0, 4),
    "tiny": np.array([0, 0, 1]),
    "all-zeros": np.zeros(4, dtype=int),  # no MLE, but the loss and its gradient are finite
}
# s = logit(pi) and eta = log(lambda), |s| up to 30: torch's default softplus returned its
# argument above 20, dropping log1p(exp(-|s|)) < 2e-9 (found by these tests); the core's
# `distributions.softplus` keeps it up to 40.
GATE_LOGITS = [-30.0, -20.0, -4.0, -0.3, 0.0, 1.5, 6.0, 20.0, 30.0]
LOG_RATES = [-3.0, -0.5, 0.4, 1.6, math.log(1000.0), 8.0]
PARAMS = [(0.3, 1.5), (-4.0, -2.0), (6.0, 0.2), (-20.0, 2.1), (0.0, 4.0)]


def as_tensors(y):
    hist = histogram(y)
    return (
        torch.as_tensor(hist.values, dtype=torch.float64),
        torch.as_tensor(hist.freqs, dtype=torch.float64),
    )


def autograd_reference(values, freqs, s0: float, eta0: float):
    """Mean NLL of a histogram through `zip_log_prob` and its autograd gradient in (s, eta)."""
    s = torch.tensor(s0, dtype=torch.float64, requires_grad=True)
    eta = torch.tensor(eta0, dtype=torch.float64, requires_grad=True)
    loss = -(freqs * zip_log_prob(values, s, eta)).sum() / freqs.sum()
    grad_s, grad_eta = torch.autograd.grad(loss, (s, eta))
    return loss.item(), grad_s.item(), grad_eta.item()


@pytest.mark.parametrize("name", DATA)
def test_closed_form_loss_and_gradient_equal_autograd_on_zip_log_prob(name):
    values, freqs = as_tensors(DATA[name])
    stats = likelihood.sufficient_stats(values, freqs).unbind(-1)
    # the whole grid at once: closed_form is elementwise and broadcasts
    s = torch.tensor(GATE_LOGITS, dtype=torch.float64)[:, None]
    eta = torch.tensor(LOG_RATES, dtype=torch.float64)[None, :]
    loss, grad_s, grad_eta = likelihood.closed_form(s, eta, stats)
    assert loss.shape == grad_s.shape == grad_eta.shape == (len(GATE_LOGITS), len(LOG_RATES))
    for (i, s0), (j, eta0) in itertools.product(enumerate(GATE_LOGITS), enumerate(LOG_RATES)):
        ref = autograd_reference(values, freqs, s0, eta0)
        # float64; 1e-10 relative (measured worst 3e-13), with a floor of 1e-14 absolute: where
        # pi -> 1 explains every zero (all-zeros at s = 20) the loss, softplus(s) -
        # logaddexp(-lambda, s), is 1e-10 left from two terms of size 20, and sigmoid(s) -
        # sigmoid(u) likewise, so the closed form is exact only to ulps of 20 (measured 1.3e-15)
        got = (loss[i, j].item(), grad_s[i, j].item(), grad_eta[i, j].item())
        assert got == pytest.approx(ref, rel=1e-10, abs=1e-14), (s0, eta0)


def mpmath_reference(y, s0: float, eta0: float):
    """Mean NLL and its gradient in (s, eta) at 40 digits, from the ZIP pmf as written."""
    mpmath.mp.dps = 40
    values, freqs = np.unique(y, return_counts=True)

    def nll(s, eta):
        pi, lam = 1 / (1 + mpmath.exp(-s)), mpmath.exp(eta)
        total = 0
        for v, f in zip(values.tolist(), freqs.tolist()):
            keep = (1 - pi) * mpmath.exp(-lam) * lam**v / mpmath.factorial(v)
            total += f * mpmath.log(pi + keep if v == 0 else keep)
        return -total / len(y)

    s, eta = mpmath.mpf(s0), mpmath.mpf(eta0)
    grads = mpmath.diff(lambda a: nll(a, eta), s), mpmath.diff(lambda b: nll(s, b), eta)
    return [float(x) for x in (nll(s, eta), *grads)]


@pytest.mark.parametrize(("s0", "eta0"), [(25.0, -3.0), (-30.0, 1.0), (40.0, 2.0), (3.0, 0.5)])
def test_closed_form_against_mpmath_at_extreme_gates(s0, eta0):
    y = np.array([0, 0, 0, 1, 2, 2, 5, 9])
    values, freqs = as_tensors(y)
    stats = likelihood.sufficient_stats(values, freqs).unbind(-1)
    args = torch.tensor(s0, dtype=torch.float64), torch.tensor(eta0, dtype=torch.float64)
    got = [t.item() for t in likelihood.closed_form(*args, stats)]
    # float64 rounding of terms of size |s| and lambda: 1e-12 relative is ~1e4 ulps of margin
    assert got == pytest.approx(mpmath_reference(y, s0, eta0), rel=1e-12, abs=0)


@pytest.mark.parametrize("model", MODELS)
def test_histogram_and_per_sample_losses_and_gradients_agree(model):
    y = counts(0.4, 3.0, seed=11, n=3000)
    values, freqs = as_tensors(y)
    for s0, eta0 in PARAMS:
        s = torch.tensor(s0, dtype=torch.float64, requires_grad=True)
        eta = torch.tensor(eta0, dtype=torch.float64, requires_grad=True)
        reference = nll_per_sample(torch.as_tensor(y), s, eta)
        ref_grad = torch.autograd.grad(reference, (s, eta))
        loss = histogram_nll(values, freqs, s, eta, model=model)
        grad = torch.autograd.grad(loss, (s, eta))
        assert abs(loss.item() - reference.item()) < 1e-12
        for g, r in zip(grad, ref_grad):
            assert abs(g.item() - r.item()) < 1e-12


@pytest.mark.parametrize(("s0", "eta0"), PARAMS)
def test_nll_per_sample_against_scipy(s0, eta0):
    y = counts(0.4, 3.0, seed=12, n=500)
    pi, lam = 1 / (1 + math.exp(-s0)), math.exp(eta0)
    pmf = (1 - pi) * scipy.stats.poisson.pmf(y, lam) + pi * (y == 0)
    expected = -np.log(pmf).mean()
    got = nll_per_sample(
        y, torch.tensor(s0, dtype=torch.float64), torch.tensor(eta0, dtype=torch.float64)
    )
    # scipy's pmf and log lose ~1e-15 relative per sample; the mean of 500 stays < 1e-13
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_analytic_gradient_matches_autograd_and_the_three_models_agree():
    hists = [histogram(y) for y in DATA.values()]
    width = max(len(h.values) for h in hists)
    values = torch.zeros(len(hists), width, dtype=torch.float64)  # padded with frequency 0
    freqs = torch.zeros(len(hists), width, dtype=torch.float64)
    for b, h in enumerate(hists):
        values[b, : len(h.values)] = torch.as_tensor(h.values, dtype=torch.float64)
        freqs[b, : len(h.freqs)] = torch.as_tensor(h.freqs, dtype=torch.float64)
    rng = np.random.default_rng(5)
    params = torch.tensor(rng.uniform(-6, 6, (2, len(hists))), dtype=torch.float64)
    data = {"zip": (likelihood.sufficient_stats(values, freqs).T.contiguous(),)}
    data["zip_autograd"] = data["mixture"] = (values.T, freqs.T)
    results = {m: likelihood.loss_and_grad(m, params, data[m]) for m in MODELS}
    loss, grad = results["zip"]
    assert loss.shape == (len(hists),) and grad.shape == (2, len(hists))
    assert not loss.requires_grad and not grad.requires_grad
    for model in ("zip_autograd", "mixture"):
        # three float64 evaluations of one function: differences are rounding
        torch.testing.assert_close(results[model][0], loss, rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(results[model][1], grad, rtol=1e-12, atol=1e-13)
        for b in range(len(hists)):  # each fit's loss alone is its histogram_nll
            alone = histogram_nll(values[b], freqs[b], params[0, b], params[1, b], model=model)
            assert alone.item() == pytest.approx(loss[b].item(), rel=1e-12)


def test_sufficient_stats_by_hand():
    # [0, 0, 1, 3]: 2 zeros of 4, mean 1, mean log y! = (0 + 0 + 0 + log 6) / 4; a padding
    # entry of frequency 0 (value 0 or any other) changes nothing
    values = torch.tensor([[0.0, 1.0, 3.0, 0.0], [2.0, 5.0, 7.0, 9.0]], dtype=torch.float64)
    freqs = torch.tensor([[2.0, 1.0, 1.0, 0.0], [3.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    stats = likelihood.sufficient_stats(values, freqs)
    assert stats.shape == (2, 3) and stats.dtype == torch.float64
    expected = [[0.5, 1.0, math.log(6) / 4], [0.0, 11 / 4, (3 * math.log(2) + math.log(120)) / 4]]
    torch.testing.assert_close(
        stats, torch.tensor(expected, dtype=torch.float64), rtol=1e-15, atol=0
    )


def test_sufficient_stats_accumulate_in_float64():
    # n = 2**24 + 2 is a float32 but a float32 running sum 1 + 2**24 + 1 rounds to 2**24 (twice)
    # and the shares all come out wrong (checked: every entry differs); accumulating in
    # float64 and rounding once at the end gives the float32 nearest the exact ratios
    values = torch.tensor([0.0, 1.0, 12.0], dtype=torch.float32)
    freqs = torch.tensor([1.0, 2.0**24, 1.0], dtype=torch.float32)
    stats = likelihood.sufficient_stats(values, freqs)
    assert stats.dtype == torch.float32
    n = 2.0**24 + 2
    exact = torch.tensor([1 / n, (2.0**24 + 12) / n, math.lgamma(13) / n], dtype=torch.float64)
    assert torch.equal(stats, exact.float())


@pytest.mark.parametrize("name", ["blog", "no-zeros", "all-zeros"])
def test_loss_and_grad_match_histogram_nll_autograd(name):
    # autograd through the closed form's `where`s: finite (no NaN on an untaken branch) and
    # equal to the analytic gradient, also with no positive counts or no zeros
    values, freqs = as_tensors(DATA[name])
    s = torch.tensor([-1.0, 0.5], dtype=torch.float64, requires_grad=True)
    eta = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    loss = histogram_nll(values, freqs, s, eta, model="zip")  # one histogram, two fits
    assert loss.shape == (2,)
    grad_s, grad_eta = torch.autograd.grad(loss.sum(), (s, eta))
    stats = likelihood.sufficient_stats(values, freqs)[:, None].expand(3, 2)
    got_loss, got_grad = likelihood.loss_and_grad("zip", torch.stack([s, eta]).detach(), (stats,))
    torch.testing.assert_close(got_loss, loss.detach(), rtol=1e-15, atol=0)
    # the analytic gradient against autograd through the closed form itself: rounding only
    torch.testing.assert_close(got_grad, torch.stack([grad_s, grad_eta]), rtol=1e-12, atol=0)


@pytest.mark.parametrize("model", ["negbin", "ZIP"])
def test_unknown_models_raise(model):
    values, freqs = as_tensors(DATA["tiny"])
    s = eta = torch.tensor(0.0, dtype=torch.float64)
    with pytest.raises(ValueError, match=f"unknown model '{model}'"):
        histogram_nll(values, freqs, s, eta, model=model)
    with pytest.raises(ValueError, match=f"unknown model '{model}'"):
        likelihood.loss_and_grad(model, torch.zeros(2, 1), (values[:, None], freqs[:, None]))
