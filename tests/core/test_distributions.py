"""Tests for pipeline.core.laws.distributions against mpmath, scipy, torch's Poisson and
sampling."""

import mpmath
import numpy as np
import pytest
import torch
from conftest import pooled_chisquare_p
from scipy import stats

from pipeline.core.laws.distributions import ZeroInflatedPoisson, zip_log_prob, zip_mixture

GATES = [0.0, 1e-12, 0.2, 0.5, 0.8, 1 - 1e-12, 1.0]
RATES = [1e-10, 1e-3, 0.5, 5.0, 100.0, 1e4]
COUNTS = [0, 1, 2, 5, 10, 100, 1e4, 1e6]
GRID_SHAPE = (len(GATES), len(RATES), len(COUNTS))
F64 = torch.float64


def _grid():
    """Gate, rate and count tensors shaped to broadcast to GRID_SHAPE, in float64."""
    gate = torch.tensor(GATES, dtype=F64).view(-1, 1, 1)
    rate = torch.tensor(RATES, dtype=F64).view(1, -1, 1)
    count = torch.tensor(COUNTS, dtype=F64).view(1, 1, -1)
    return gate, rate, count


def _mp_log_prob(count, gate_logits, log_rate):
    """ZIP log-pmf at 50 digits from the exact float inputs, so only the function's error shows."""
    s, eta = mpmath.mpf(gate_logits), mpmath.mpf(log_rate)
    rate = mpmath.exp(eta)
    log_gate = -mpmath.log1p(mpmath.exp(-s)) if s != mpmath.inf else mpmath.mpf(0)
    log_keep = -mpmath.log1p(mpmath.exp(s)) if s != -mpmath.inf else mpmath.mpf(0)
    if count == 0:
        return float(mpmath.log(mpmath.exp(log_gate) + mpmath.exp(log_keep - rate)))
    return float(log_keep + count * eta - rate - mpmath.loggamma(count + 1))


def _mp_reference(count, gate_logits, log_rate):
    with mpmath.workdps(50):
        args = torch.broadcast_tensors(count.double(), gate_logits.double(), log_rate.double())
        flat = zip(*(a.flatten().tolist() for a in args), strict=True)
        return np.array([_mp_log_prob(*xs) for xs in flat]).reshape(args[0].shape)


def _zip_pmf(gate, rate, kmax):
    """pmf over 0..kmax from scipy, in float64."""
    pmf = (1 - gate) * stats.poisson.pmf(np.arange(kmax + 1), rate)
    pmf[0] += gate
    return pmf


# --- log_prob accuracy -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "rtol", "atol"),
    [
        (torch.float64, 1e-9, 1e-10),
        # float32: output rounding (6e-8) plus L = log(y / rate) rounded, i.e. eta shifted by
        # eps |L|, which moves log p by |y - rate| eps |L| (<= 6e-7 relative on this grid).
        (torch.float32, 2e-6, 2e-6),
    ],
)
def test_log_prob_matches_mpmath(dtype, rtol, atol):
    gate, rate, count = _grid()
    gate_logits, log_rate = torch.logit(gate).to(dtype), torch.log(rate).to(dtype)
    actual = zip_log_prob(count.to(dtype), gate_logits, log_rate)
    assert actual.dtype == dtype and actual.shape == GRID_SHAPE
    expected = _mp_reference(count, gate_logits, log_rate)
    # Exactly the gate = 1, y > 0 cells are -inf, and must come out as -inf.
    assert np.isneginf(expected).sum() == len(RATES) * (len(COUNTS) - 1)
    assert np.array_equal(np.isneginf(actual.numpy()), np.isneginf(expected))
    np.testing.assert_allclose(actual.double().numpy(), expected, rtol=rtol, atol=atol)


def test_class_matches_scipy():
    gate, rate, count = _grid()
    actual = ZeroInflatedPoisson(rate, gate=gate).log_prob(count).numpy()
    g, r, y = (a.numpy() for a in torch.broadcast_tensors(gate, rate, count))
    with np.errstate(divide="ignore"):
        log_keep = np.log1p(-g)
        positive = log_keep + stats.poisson.logpmf(y, r)
        zero = np.logaddexp(np.log(g), log_keep - r)
    expected = np.where(y == 0, zero, positive)
    np.testing.assert_allclose(actual, expected, rtol=1e-9, atol=1e-10)


# --- gradients ---------------------------------------------------------------------------------


def _leaf(tensor, dtype, shape=GRID_SHAPE):
    return tensor.to(dtype).expand(shape).clone().requires_grad_()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gradients_finite_wherever_value_finite(dtype):
    gate, rate, count = _grid()
    gate_logits, log_rate = _leaf(torch.logit(gate), dtype), _leaf(torch.log(rate), dtype)
    value = zip_log_prob(count.to(dtype), gate_logits, log_rate)
    finite = value.isfinite()
    assert finite.sum() == value.numel() - len(RATES) * (len(COUNTS) - 1)
    grads = torch.autograd.grad(value[finite].sum(), [gate_logits, log_rate])
    for grad in grads:
        assert grad[finite].isfinite().all()


def test_gradients_match_closed_form():
    gate, rate, count = _grid()
    gate_logits, log_rate = _leaf(torch.logit(gate), F64), _leaf(torch.log(rate), F64)
    value = zip_log_prob(count, gate_logits, log_rate)
    finite = value.isfinite()
    grad_s, grad_eta = (
        g.numpy() for g in torch.autograd.grad(value[finite].sum(), [gate_logits, log_rate])
    )
    g, r, y = (a.numpy() for a in torch.broadcast_tensors(gate, rate, count))
    log_p0 = _mp_reference(torch.zeros(()), gate_logits.detach(), log_rate.detach())
    with np.errstate(divide="ignore"):
        log_gate, log_keep = np.log(g), np.log1p(-g)
        # d/ds log p0 = pi (1 - pi) (1 - e^-rate) / p0;  d/deta log p0 = -(1 - pi) rate e^-rate / p0
        zero_s = np.exp(log_gate + log_keep + np.log(-np.expm1(-r)) - log_p0)
        zero_eta = -np.exp(log_keep + np.log(r) - r - log_p0)
    expected_s = np.where(y == 0, zero_s, -g)
    expected_eta = np.where(y == 0, zero_eta, y - r)
    f = finite.numpy()
    np.testing.assert_allclose(grad_s[f], expected_s[f], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(grad_eta[f], expected_eta[f], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_class_gradients_finite_inside_parameter_space(dtype):
    # gate exactly 0 or 1 is left out: logit has infinite slope there (see the class docstring).
    # In float32, 1 - 1e-12 rounds to 1, so the inner gates depend on the dtype.
    _, rate, count = _grid()
    inner = [g for g in GATES if 0 < torch.tensor(g, dtype=dtype) < 1]
    shape = (len(inner), len(RATES), len(COUNTS))
    gate = _leaf(torch.tensor(inner, dtype=F64).view(-1, 1, 1), dtype, shape)
    rate = _leaf(rate, dtype, shape)
    value = ZeroInflatedPoisson(rate, gate=gate).log_prob(count.to(dtype))
    assert value.isfinite().all()
    for grad in torch.autograd.grad(value.sum(), [gate, rate]):
        assert grad.isfinite().all()


# --- identities --------------------------------------------------------------------------------


def test_gate_and_logits_give_the_same_log_prob():
    gate, rate, count = _grid()
    from_gate = ZeroInflatedPoisson(rate, gate=gate).log_prob(count)
    from_logits = ZeroInflatedPoisson(rate, gate_logits=torch.logit(gate)).log_prob(count)
    assert torch.equal(from_gate, from_logits)


@pytest.mark.parametrize("given", ["gate", "gate_logits"])
def test_reading_moments_first_does_not_change_log_prob(given):
    gate, rate, count = _grid()
    param = gate if given == "gate" else torch.logit(gate)
    fresh = ZeroInflatedPoisson(rate, **{given: param}).log_prob(count)
    dist = ZeroInflatedPoisson(rate, **{given: param})
    _ = dist.mean, dist.variance, dist.gate, dist.gate_logits
    assert torch.equal(dist.log_prob(count), fresh)


def test_gate_zero_is_poisson():
    _, rate, count = _grid()
    actual = ZeroInflatedPoisson(rate, gate=torch.zeros(())).log_prob(count)
    expected = torch.distributions.Poisson(rate).log_prob(count)
    np.testing.assert_allclose(actual.numpy(), expected.numpy(), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("param", [{"gate": 1.0}, {"gate_logits": float("inf")}])
def test_gate_one_is_point_mass_at_zero(param):
    dist = ZeroInflatedPoisson(torch.tensor(RATES, dtype=F64).unsqueeze(-1), **param)
    log_prob = dist.log_prob(torch.tensor(COUNTS, dtype=F64))
    assert (log_prob[:, 0] == 0).all() and (log_prob[:, 1:] == -torch.inf).all()
    torch.manual_seed(0)
    assert (dist.sample((1000,)) == 0).all()


# --- sampling and moments ----------------------------------------------------------------------

GOF_CASES = [(0.2, 3.0), (0.8, 3.0), (0.5, 5.0), (0.05, 0.7)]
GOF_DRAWS = 20_000


def _gof_pvalue(samples, gate, rate):
    """Chi-square p-value of integer samples against ZIP(gate, rate), cells pooled to >= 5."""
    kmax = int(rate + 20 * rate**0.5 + 20)
    dist = ZeroInflatedPoisson(torch.tensor(rate, dtype=F64), gate=torch.tensor(gate, dtype=F64))
    pmf = dist.log_prob(torch.arange(kmax + 1, dtype=F64)).exp().numpy()
    return pooled_chisquare_p(samples, pmf)


# Fixed seeds make these deterministic; under H0 each case would fail with probability 1e-3.
@pytest.mark.parametrize(("gate", "rate"), GOF_CASES)
def test_sampling_goodness_of_fit(gate, rate):
    torch.manual_seed(1234)
    dist = ZeroInflatedPoisson(torch.tensor(rate), gate=torch.tensor(gate))
    samples = dist.sample((GOF_DRAWS,))
    assert samples.dtype == torch.float32 and (samples == samples.round()).all()
    assert _gof_pvalue(samples.long().numpy(), gate, rate) > 1e-3


@pytest.mark.parametrize("gate", [0.2, 0.8])
def test_blog_sampler_fails_goodness_of_fit(gate):
    # bernoulli(pi) * poisson(rate) zeroes with probability 1 - pi: a ZIP with gate 1 - pi.
    torch.manual_seed(1234)
    rate = 3.0
    samples = torch.bernoulli(torch.full((GOF_DRAWS,), gate)) * torch.poisson(
        torch.full((GOF_DRAWS,), rate)
    )
    assert _gof_pvalue(samples.long().numpy(), gate, rate) < 1e-6


MOMENT_CASES = [(0.0, 3.0), (0.2, 3.0), (0.5, 0.7), (0.8, 100.0), (1.0, 5.0), (1 - 1e-12, 5.0)]


@pytest.mark.parametrize(("gate", "rate"), MOMENT_CASES)
def test_moments_match_pmf_sum(gate, rate):
    kmax = int(rate + 40 * rate**0.5 + 40)
    support = np.arange(kmax + 1)
    pmf = _zip_pmf(gate, rate, kmax)
    dist = ZeroInflatedPoisson(torch.tensor(rate, dtype=F64), gate=torch.tensor(gate, dtype=F64))
    mean = (support * pmf).sum()
    np.testing.assert_allclose(dist.mean.item(), mean, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(
        dist.variance.item(), ((support - mean) ** 2 * pmf).sum(), rtol=1e-10
    )


@pytest.mark.parametrize(("gate", "rate"), GOF_CASES)
def test_moments_match_samples(gate, rate):
    torch.manual_seed(99)
    dist = ZeroInflatedPoisson(torch.tensor(rate, dtype=F64), gate=torch.tensor(gate, dtype=F64))
    samples = dist.sample((200_000,)).numpy()
    n = len(samples)
    mean, var = dist.mean.item(), dist.variance.item()
    kmax = int(rate + 40 * rate**0.5 + 40)
    fourth = ((np.arange(kmax + 1) - mean) ** 4 * _zip_pmf(gate, rate, kmax)).sum()
    # 5 standard errors: false alarm ~6e-7 per check under H0.
    assert abs(samples.mean() - mean) < 5 * (var / n) ** 0.5
    assert abs(samples.var() - var) < 5 * ((fourth - var**2) / n) ** 0.5


# --- the mixture formulation -------------------------------------------------------------------


@pytest.mark.parametrize("given", ["gate", "gate_logits"])
def test_mixture_matches_class(given):
    gate, rate, count = _grid()
    param = gate if given == "gate" else torch.logit(gate)
    mixture = zip_mixture(rate, **{given: param})
    assert mixture.batch_shape == (len(GATES), len(RATES), 1)
    expected = ZeroInflatedPoisson(rate, **{given: param}).log_prob(count).numpy()
    np.testing.assert_allclose(mixture.log_prob(count).numpy(), expected, rtol=1e-9, atol=1e-10)


def test_mixture_mean_matches_class():
    gate, rate, _ = _grid()
    expected = ZeroInflatedPoisson(rate, gate=gate).mean.numpy()
    np.testing.assert_allclose(zip_mixture(rate, gate=gate).mean.numpy(), expected, rtol=1e-12)


# --- shapes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("given", ["gate", "gate_logits"])
def test_broadcast_expand_and_sample_shapes(given):
    rate = torch.tensor([[0.5], [3.0], [20.0]], dtype=F64)
    gate = torch.tensor([[0.0, 0.2, 0.7, 1.0]], dtype=F64)
    param = gate if given == "gate" else torch.logit(gate)
    other = "gate_logits" if given == "gate" else "gate"
    dist = ZeroInflatedPoisson(rate, **{given: param})
    assert dist.batch_shape == (3, 4) and dist.event_shape == ()
    expanded = dist.expand((2, 3, 4))
    # Only the given parameter is carried over; the other stays lazy.
    assert given in expanded.__dict__ and other not in expanded.__dict__
    assert expanded.batch_shape == (2, 3, 4)
    value = torch.arange(12, dtype=F64).view(3, 4) % 5
    log_prob = dist.log_prob(value)
    for i in range(3):
        for j in range(4):
            single = ZeroInflatedPoisson(rate[i, 0], **{given: param[0, j]})
            assert log_prob[i, j] == single.log_prob(value[i, j])

    assert torch.equal(expanded.log_prob(value), log_prob.expand(2, 3, 4))
    assert torch.equal(expanded.mean, dist.mean.expand(2, 3, 4))

    torch.manual_seed(0)
    assert dist.sample().shape == (3, 4)
    assert dist.sample((5,)).shape == (5, 3, 4)
    assert expanded.sample((7,)).shape == (7, 2, 3, 4)
    assert zip_mixture(rate, **{given: param}).sample((5,)).shape == (5, 3, 4)


# --- argument checking -------------------------------------------------------------------------


@pytest.mark.parametrize("build", [ZeroInflatedPoisson, zip_mixture])
@pytest.mark.parametrize("params", [{}, {"gate": 0.5, "gate_logits": 0.0}])
def test_needs_exactly_one_of_gate_and_logits(build, params):
    with pytest.raises(ValueError, match="exactly one"):
        build(torch.tensor(1.0), **params)


@pytest.mark.parametrize(("rate", "gate"), [(-1.0, 0.5), (1.0, 1.5), (1.0, -0.1)])
def test_validation_rejects_bad_parameters(rate, gate):
    with pytest.raises(ValueError):
        ZeroInflatedPoisson(torch.tensor(rate), gate=torch.tensor(gate), validate_args=True)


@pytest.mark.parametrize("value", [-1.0, 1.5])
def test_validation_rejects_values_outside_support(value):
    dist = ZeroInflatedPoisson(torch.tensor(2.0), gate=torch.tensor(0.3), validate_args=True)
    with pytest.raises(ValueError):
        dist.log_prob(torch.tensor(value))
