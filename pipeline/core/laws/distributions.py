"""The zero-inflated Poisson (ZIP): a stable log-probability, a torch Distribution, a mixture form.

`zip_log_prob` is the project's one ZIP log-pmf: the engine, the exact-MLE oracle, inference,
figures and the sampler tests all evaluate it (numpy callers through `zip_log_pmf`).
Pure functions of tensors: no I/O, no module state. Randomness comes from torch's global RNG
(``torch.manual_seed``), as everywhere in ``torch.distributions``.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.distributions import Categorical, Distribution, MixtureSameFamily, Poisson, constraints
from torch.distributions.utils import broadcast_all, lazy_property

# Stirling series of stirlerr(y) = lgamma(y + 1) - (y + 1/2) log y + y - log(2 pi) / 2, in powers
# of 1/y^2 (Loader 2000). Five terms leave < 1e-16 relative error for y > 15.
_STIRLING = (1 / 12, -1 / 360, 1 / 1260, -1 / 1680, 1 / 1188)
_STIRLING_MIN = 15.0
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def softplus(x):
    """log(1 + e^x), exact to float64 rounding everywhere.

    torch's default switches to x itself above x = 20, which drops e^-20 ~ 2e-9: visible in
    float64 log-probabilities (and it makes the autograd slope exactly 1 instead of
    sigmoid(x)). Above 40, e^-x < 5e-18 is below float64 resolution of x.
    """
    return F.softplus(x, threshold=40.0)


def _log_factorial_remainder(count):
    """lgamma(y + 1) - y log y + y = stirlerr(y) + log(2 pi y) / 2, in float64, for y > 0."""
    y = count.double()
    exact = torch.lgamma(y + 1) - torch.xlogy(y, y) + y
    large = y.clamp(min=_STIRLING_MIN)
    inv_sq = large.reciprocal().square()
    series = torch.zeros_like(large)
    for coef in reversed(_STIRLING):
        series = series * inv_sq + coef
    stirling = series / large + 0.5 * torch.log(large) + _HALF_LOG_2PI
    return torch.where(y > _STIRLING_MIN, stirling, exact)


def zip_log_prob(value, gate_logits, log_rate):
    """Elementwise log-probability of a zero-inflated Poisson, stable in float32 and float64.

    With s = gate_logits and eta = log_rate (broadcast against value):
    log p(0) = logaddexp(-softplus(-s), -softplus(s) - exp(eta)) and, for y > 0,
    log p(y) = -softplus(s) - bd0(y, lambda) - c(y), where bd0(y, lambda) = y log(y / lambda)
    + lambda - y is Loader's (2000) deviance term and c(y) = lgamma(y + 1) - y log y + y.

    The plain form y eta - exp(eta) - lgamma(y + 1) subtracts numbers of size y log y, which loses
    ~1e-3 absolute in float32 at y = lambda = 1e4. Here c(y) and log y depend on the data only, so
    they are computed in float64 (log y carried as a float pair) and cast down; the terms that
    carry the gradient stay in the working dtype, written as bd0 = y (L + expm1(-L)) with
    L = log(y / lambda), so neither exp(eta) nor y eta appears as a large intermediate.

    Infinite logits are exact limits: s = +inf is a point mass at 0, s = -inf is Poisson.
    Gradients w.r.t. gate_logits and log_rate are finite wherever the value is finite.

    Args:
        value: counts (non-negative integers, any real or integer dtype).
        gate_logits: logit of the structural-zero probability pi, may be +-inf.
        log_rate: log of the Poisson rate lambda.

    Returns:
        Tensor of log-probabilities, in the promoted dtype of gate_logits and log_rate.
    """
    gate_logits, log_rate = torch.as_tensor(gate_logits), torch.as_tensor(log_rate)
    dtype = torch.promote_types(gate_logits.dtype, log_rate.dtype)
    value = torch.as_tensor(value, device=log_rate.device).to(dtype)
    is_zero = value == 0
    # The y > 0 branch sees y = 1 where y = 0, so both branches of the final where stay finite
    # (a NaN on the untaken branch would still poison the gradient).
    count = torch.where(is_zero, torch.ones_like(value), value)

    log_count = torch.log(count.double())
    log_count_hi = log_count.to(dtype)
    log_count_lo = (log_count - log_count_hi.double()).to(dtype)
    # Exact subtraction when eta is near log y (Sterbenz); the low part restores float64 log y.
    log_ratio = (log_count_hi - log_rate) + log_count_lo
    deviance = count * (log_ratio + torch.expm1(-log_ratio))
    log_poisson = -deviance - _log_factorial_remainder(count).to(dtype)

    log_keep = -softplus(gate_logits)  # log(1 - pi)
    log_nonzero = log_keep + log_poisson
    log_zero = torch.logaddexp(-softplus(-gate_logits), log_keep - torch.exp(log_rate))
    return torch.where(is_zero, log_zero, log_nonzero)


def zip_log_pmf(values, pi, lam) -> np.ndarray:
    """`zip_log_prob` for numpy callers: log P(Y = value) at (pi, lambda), in float64.

    pi = 0 (Poisson), pi = 1 (all zeros) and lambda = 0 are exact limits: their logits and
    log-rates are +-inf, which `zip_log_prob` takes as such.

    Args:
        values: non-negative integer counts (array-like).
        pi: probability of a structural zero in [0, 1], broadcast against `values`.
        lam: Poisson rate >= 0, broadcast against `values`.

    Returns:
        float64 array of log-probabilities, shape broadcast(values, pi, lam).
    """
    pi, lam = np.asarray(pi, dtype=float), np.asarray(lam, dtype=float)
    with np.errstate(divide="ignore"):
        gate_logits = np.log(pi) - np.log1p(-pi)
        log_rate = np.log(lam)
    value = torch.as_tensor(np.asarray(values, dtype=float))
    out = zip_log_prob(value, torch.as_tensor(gate_logits), torch.as_tensor(log_rate))
    return out.numpy()


class ZeroInflatedPoisson(Distribution):
    r"""Zero-inflated Poisson distribution.

    .. math::
        P(Y = 0) = \pi + (1 - \pi) e^{-\lambda}, \qquad
        P(Y = k) = (1 - \pi) \frac{\lambda^k e^{-\lambda}}{k!}, \quad k = 1, 2, \dots

    ``gate`` is :math:`\pi`, the probability of a *structural* zero, ``rate`` is :math:`\lambda`.
    Mean :math:`(1 - \pi)\lambda`, variance :math:`(1 - \pi)\lambda(1 + \pi\lambda)`.

    ``log_prob`` is always computed from ``gate_logits`` and ``log(rate)`` by :func:`zip_log_prob`,
    whichever of ``gate`` / ``gate_logits`` was given, so it does not depend on what was cached.
    ``rate`` may be 0 (point mass at 0, as in ``torch.distributions.Poisson``); gradients are
    finite inside the parameter space, but at ``rate = 0`` or ``gate`` exactly 0 or 1 the maps
    ``log`` / ``logit`` have infinite slope: optimise ``gate_logits`` and a log-rate instead.

    Args:
        rate: Poisson rate, >= 0.
        gate: probability of a structural zero, in [0, 1].
        gate_logits: logit of ``gate``; give exactly one of ``gate`` and ``gate_logits``.
        validate_args: as in ``torch.distributions.Distribution``.
    """

    arg_constraints = {
        "rate": constraints.nonnegative,
        "gate": constraints.unit_interval,
        "gate_logits": constraints.real,
    }
    support = constraints.nonnegative_integer
    has_enumerate_support = False

    def __init__(self, rate, *, gate=None, gate_logits=None, validate_args=None):
        if (gate is None) == (gate_logits is None):
            raise ValueError("Give exactly one of `gate` or `gate_logits`.")
        if gate is not None:
            self.rate, self.gate = broadcast_all(rate, gate)
        else:
            self.rate, self.gate_logits = broadcast_all(rate, gate_logits)
        super().__init__(self.rate.shape, validate_args=validate_args)

    @lazy_property
    def gate(self):
        return torch.sigmoid(self.gate_logits)

    @lazy_property
    def gate_logits(self):
        return torch.logit(self.gate)  # +-inf at gate 0 / 1, which zip_log_prob handles

    @property
    def mean(self):
        # sigmoid(-s) keeps 1 - pi accurate when pi is close to 1.
        return torch.sigmoid(-self.gate_logits) * self.rate

    @property
    def variance(self):
        return self.mean * (1 + self.gate * self.rate)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(ZeroInflatedPoisson, _instance)
        batch_shape = torch.Size(batch_shape)
        new.rate = self.rate.expand(batch_shape)
        for name in ("gate", "gate_logits"):
            if name in self.__dict__:
                setattr(new, name, getattr(self, name).expand(batch_shape))
        super(ZeroInflatedPoisson, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def sample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            structural = torch.bernoulli(self.gate.expand(shape)).bool()
            return torch.where(structural, 0.0, torch.poisson(self.rate.expand(shape)))

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return zip_log_prob(value, self.gate_logits, torch.log(self.rate))


def zip_mixture(rate, *, gate=None, gate_logits=None):
    """The ZIP as a two-component mixture: Poisson(0), a point mass at 0, and Poisson(rate).

    Built on ``MixtureSameFamily(Categorical, Poisson)``, the first formulation of the blog. The
    mixture weights are passed as log-weights [log pi, log(1 - pi)] (not ``probs``, which
    ``Categorical`` clamps away from 0 and 1), so pi = 0 and pi = 1 are exact. ``Poisson(0)`` gives
    log_prob 0 at y = 0 and -inf above, so no special zero component is needed.

    Args:
        rate: Poisson rate, >= 0.
        gate: probability of a structural zero, in [0, 1].
        gate_logits: logit of ``gate``; give exactly one of ``gate`` and ``gate_logits``.

    Returns:
        A ``MixtureSameFamily`` with the broadcast batch shape of ``rate`` and the gate.
    """
    if (gate is None) == (gate_logits is None):
        raise ValueError("Give exactly one of `gate` or `gate_logits`.")
    if gate is not None:
        rate, gate = broadcast_all(rate, gate)
        log_weights = [torch.log(gate), torch.log1p(-gate)]
    else:
        rate, gate_logits = broadcast_all(rate, gate_logits)
        log_weights = [-softplus(-gate_logits), -softplus(gate_logits)]
    components = Poisson(torch.stack([torch.zeros_like(rate), rate], dim=-1))
    return MixtureSameFamily(Categorical(logits=torch.stack(log_weights, dim=-1)), components)
