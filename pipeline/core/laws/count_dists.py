"""The count families' log-pmf, their torch Distributions, and the numpy sampler entry.

`family_log_prob` is log P(Y = y) of every family in `count_terms.FAMILIES`, in its predictors:
s (zero-part logit), η = log μ, a = log α. NB2: mean μ, dispersion α, variance μ + αμ², size
θ = 1/α, f(0) = (1 + αμ)^−θ; α = 0 is the Poisson. Zero-inflated: gate π = P(structural zero).
Hurdle: nonzero p⁺ = P(Y > 0), and P(y) = p⁺ f(y)/(1 − f(0)) for y > 0.

Sampling is exact and in bounded time (`count_sampling`); `sample_counts` is the numpy entry
the simulation stage uses, the classes' `sample` the torch one. No module state.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch.distributions import Distribution, constraints
from torch.distributions.utils import broadcast_all, lazy_property

from pipeline.core.laws.count_sampling import draw, numpy_draws, torch_draws
from pipeline.core.laws.count_terms import family_terms
from pipeline.core.laws.distributions import softplus, zip_log_prob
from pipeline.core.model import family as family_of

_F64 = torch.float64
# α < e^−700 (1e-304) counts as e^−700, so θ stays finite; log f(y) moves by ~α((y − μ)² − y)/2.
_LOG_ALPHA_MIN = -700.0


def family_log_prob(family, value, *, zero_logits=None, log_mean, log_dispersion=None):
    """Elementwise log P(Y = value) of `family`, stable in float32 and float64.

    The NB2 part is `count_terms.family_terms(order=0)` in float64 (float32 lgamma differences
    lose ~1e-3 at y ~ 1e4), cast back; the Poisson part is `distributions.zip_log_prob`. The
    zero part uses `logaddexp` and an exact softplus: infinite logits are exact limits.

    Args:
        family: one of `count_terms.FAMILIES`.
        value: non-negative integer counts (any dtype), broadcast against the parameters.
        zero_logits: s: logit π (zip, zinb), logit P(Y > 0) (hurdles); ignored otherwise.
        log_mean: η = log μ of the count part (before truncation, for hurdles).
        log_dispersion: a = log α (nb, zinb, hurdle_nb; -inf: Poisson); ignored otherwise.

    Returns:
        Log-probabilities in the promoted dtype of the parameters used.

    Raises:
        ValueError: unknown family, missing parameter, or a value not a non-negative integer.
    """
    fam = family_of(family)
    part, nb = fam.zero, fam.dispersion
    needs = ("zero_logits " * bool(part) + "log_dispersion" * nb).strip()
    if (part and zero_logits is None) or (nb and log_dispersion is None):
        raise ValueError(f"family {family!r} needs {needs}")
    eta = torch.as_tensor(log_mean)
    s = torch.as_tensor(zero_logits, device=eta.device) if part else None
    a = torch.as_tensor(log_dispersion, device=eta.device) if nb else None
    dtype = functools.reduce(torch.promote_types, [t.dtype for t in (s, eta, a) if t is not None])
    dtype = dtype if dtype.is_floating_point else torch.get_default_dtype()
    value = torch.as_tensor(value, device=eta.device)
    y = value.to(_F64)
    if not ((y >= 0) & (y == y.floor()) & (y < math.inf)).all():
        raise ValueError("values must be non-negative integer counts")
    if family in ("poisson", "zip"):
        s = torch.full((), -math.inf, device=eta.device) if s is None else s
        return zip_log_prob(value, s.to(dtype), eta.to(dtype))
    zero = y == 0
    y_pos = torch.where(zero, 1.0, y)  # the y > 0 branch sees 1 at zeros: finite everywhere
    work = _F64 if nb else dtype
    eta = eta.to(work)
    log_f = zip_log_prob(y_pos, torch.full((), -math.inf, dtype=work, device=eta.device), eta)
    log_f0 = -eta.exp()
    if nb:  # α = 0 exactly stays the Poisson (αμ = e^(a + η) would carry an ulp of a + η)
        poisson, a = a == -math.inf, a.to(_F64).clamp(min=_LOG_ALPHA_MIN)
        terms = family_terms("nb", y_pos, torch.lgamma(y_pos + 1), None, None, eta, a, order=0)
        log_f = torch.where(poisson, log_f, terms.ll)
        log_f0 = torch.where(poisson, log_f0, -torch.exp(-a) * torch.log1p(torch.exp(a + eta)))
    if part is None:
        return torch.where(zero, log_f0, log_f).to(dtype)
    s = s.to(work)
    if part == "inflation":
        log_p0 = torch.logaddexp(-softplus(-s), log_f0 - softplus(s))
        return torch.where(zero, log_p0, log_f - softplus(s)).to(dtype)
    # log(1 − f(0)) = log(−expm1(log f(0))) stays accurate when f(0) is near 1.
    log_pos = log_f - torch.log(-torch.expm1(log_f0)) - softplus(-s)
    return torch.where(zero, -softplus(s), log_pos).to(dtype)


def sample_counts(family, rng, *, s=None, eta, log_alpha=None) -> np.ndarray:
    """One count per row of `family`, from a numpy Generator (the simulation stage's sampler).

    The rng is consumed in a fixed order, one variate per row per step (`count_sampling.draw`):
    zero part `random` (zip/zinb: structural zero, hurdles: positive, where logit(u) < s); then
    poisson, zip: `poisson`; nb, zinb: `standard_gamma`, `poisson`; hurdle_poisson: `random`,
    `poisson`; hurdle_nb: `random` ×3, `standard_gamma`, `poisson`. Every row draws its count
    part, zero or not, so the same seed gives the same counts whatever s is.

    Args:
        family: one of `count_terms.FAMILIES`.
        rng: numpy Generator.
        s: zero-part linear predictors (ignored for poisson and nb).
        eta: log means of the count part (before truncation), broadcast against s.
        log_alpha: log α, a scalar (NB families; -inf: α = 0, the Poisson).

    Returns:
        int64 array of counts, shape broadcast(s, eta).
    """
    fam = family_of(family)
    part, nb = fam.zero, fam.dispersion
    needs = ("s " * bool(part) + "log_alpha" * nb).strip()
    if (part and s is None) or (nb and log_alpha is None):
        raise ValueError(f"family {family!r} needs {needs}")
    eta = np.asarray(eta, dtype=float)
    if part:
        s, eta = np.broadcast_arrays(np.asarray(s, dtype=float), eta)
    a = np.full(eta.shape, float(log_alpha)) if nb else None
    with np.errstate(divide="ignore", over="ignore"):  # log 0 = -inf and e^701 = inf are meant
        counts = draw(family, np, numpy_draws(rng, eta.shape), s, eta, a)
    return np.asarray(counts).astype(np.int64)


def _lazy_pair(name, other, to_name, to_other):
    """Lazy properties `name` and `other`, each computed from the other, whichever was given."""

    def first(self):
        return to_name(getattr(self, other))

    def second(self):
        return to_other(getattr(self, name))

    first.__name__, second.__name__ = name, other
    return lazy_property(first), lazy_property(second)


class _CountDistribution(Distribution):
    """Parameters, log_prob (`family_log_prob`), exact sampler and moments of the classes below.

    Moments: mean p·m₁, variance p·v + p(1 − p)m₁², with p the probability that the count part
    is drawn (1, 1 − π or p⁺) and m₁, v its mean and variance (truncated, for hurdles).
    """

    support = constraints.nonnegative_integer
    family, _mean, _zero = "", "count_mean", None  # names of the mean and zero-part parameters

    def _setup(self, validate_args, **params):
        for name, other in (("dispersion", "log_dispersion"), (self._zero, f"{self._zero}_logits")):
            if other in params and (params[name] is None) == (params[other] is None):
                raise ValueError(f"Give exactly one of `{name}` or `{other}`.")
        given = {k: v for k, v in params.items() if v is not None}
        for name, tensor in zip(given, broadcast_all(*given.values())):
            setattr(self, name, tensor)
        super().__init__(tensor.shape, validate_args=validate_args)

    def _predictors(self):
        """(s or None, η, a or None), as `family_log_prob` takes them."""
        s = getattr(self, f"{self._zero}_logits") if self._zero else None
        a = self.log_dispersion if family_of(self.family).dispersion else None
        return s, torch.log(getattr(self, self._mean)), a

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(type(self), _instance)
        for name in self.arg_constraints:
            if name in self.__dict__:
                setattr(new, name, getattr(self, name).expand(batch_shape))
        super(_CountDistribution, new).__init__(torch.Size(batch_shape), validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        s, eta, a = self._predictors()
        return family_log_prob(self.family, value, zero_logits=s, log_mean=eta, log_dispersion=a)

    def sample(self, sample_shape=(), generator=None):
        """Exact draws (`count_sampling`) from `generator`, torch's global one if None."""
        shape = self._extended_shape(torch.Size(sample_shape))
        with torch.no_grad():
            predictors = self._predictors()
            s, eta, a = (t if t is None else t.to(_F64).expand(shape) for t in predictors)
            draws = torch_draws(shape, generator, eta.device)
            return draw(self.family, torch, draws, s, eta, a).to(predictors[1].dtype)

    def _moments(self):
        s, eta, a = self._predictors()
        mu = getattr(self, self._mean)
        alpha = self.dispersion if a is not None else torch.zeros_like(mu)
        m1, var = mu, mu + alpha * mu * mu
        if self._zero == "nonzero":  # truncated: var = (μ + αμ²)/(1 − f0) − f0 m₁²
            log_f0 = family_log_prob(
                "nb" if a is not None else "poisson", 0, log_mean=eta, log_dispersion=a
            )
            m1 = mu / -torch.expm1(log_f0)
            var = var / -torch.expm1(log_f0) - log_f0.exp() * m1 * m1
        q = torch.full_like(mu, math.inf) if s is None else s if self._zero == "nonzero" else -s
        on, off = torch.sigmoid(q), torch.sigmoid(-q)  # p = sigmoid(q), 1 − p: exact near 0, 1
        return on * m1, on * var + on * off * m1 * m1

    mean = property(lambda self: self._moments()[0])
    variance = property(lambda self: self._moments()[1])


class _NB2Part(_CountDistribution):
    arg_constraints = {"count_mean": constraints.nonnegative, "dispersion": constraints.nonnegative}
    arg_constraints["log_dispersion"] = constraints.real
    dispersion, log_dispersion = _lazy_pair("dispersion", "log_dispersion", torch.exp, torch.log)


class NegativeBinomial2(_NB2Part):
    """NB2 with mean μ, dispersion α (0: Poisson), variance μ + αμ², size θ = 1/α:
    P(y) = Γ(y + θ)/(Γ(θ) y!) (θ/(θ + μ))^θ (μ/(θ + μ))^y. All classes here keep μ as
    ``count_mean`` (``rate`` in `HurdlePoisson`); ``mean`` is the distribution's mean.

    Args:
        mean: μ >= 0.
        dispersion: α >= 0, or ``log_dispersion``: log α; give exactly one.
        validate_args: as in ``torch.distributions.Distribution``.
    """

    family = "nb"

    def __init__(self, mean, *, dispersion=None, log_dispersion=None, validate_args=None):
        disp = {"dispersion": dispersion, "log_dispersion": log_dispersion}
        self._setup(validate_args, count_mean=mean, **disp)


class ZeroInflatedNegativeBinomial(_NB2Part):
    """NB2 with structural zeros: P(0) = π + (1 − π)f(0), P(y) = (1 − π)f(y) for y > 0 (f the
    `NegativeBinomial2` pmf); mean (1 − π)μ, variance (1 − π)μ(1 + (α + π)μ).

    Args:
        mean: μ >= 0 of the NB2 part.
        dispersion: α >= 0, or ``log_dispersion``; give exactly one.
        gate: π in [0, 1], or ``gate_logits``: logit π; give exactly one.
        validate_args: as in ``torch.distributions.Distribution``.
    """

    arg_constraints = {**_NB2Part.arg_constraints, "gate": constraints.unit_interval}
    arg_constraints["gate_logits"] = constraints.real
    family, _zero = "zinb", "gate"
    gate, gate_logits = _lazy_pair("gate", "gate_logits", torch.sigmoid, torch.logit)

    def __init__(self, mean, *, dispersion=None, log_dispersion=None, gate=None,
                 gate_logits=None, validate_args=None):  # fmt: skip
        disp = {"dispersion": dispersion, "log_dispersion": log_dispersion}
        self._setup(validate_args, count_mean=mean, gate=gate, gate_logits=gate_logits, **disp)


class HurdlePoisson(_CountDistribution):
    """Logit hurdle over a zero-truncated Poisson: P(0) = 1 − p⁺ and, for y > 0,
    P(y) = p⁺ λ^y e^−λ / (y! (1 − e^−λ)).

    Args:
        rate: λ > 0 of the Poisson before truncation.
        nonzero: p⁺ = P(Y > 0) in [0, 1], or ``nonzero_logits``; give exactly one.
        validate_args: as in ``torch.distributions.Distribution``.
    """

    arg_constraints = {"rate": constraints.positive, "nonzero": constraints.unit_interval}
    arg_constraints["nonzero_logits"] = constraints.real
    family, _mean, _zero = "hurdle_poisson", "rate", "nonzero"
    nonzero, nonzero_logits = _lazy_pair("nonzero", "nonzero_logits", torch.sigmoid, torch.logit)

    def __init__(self, rate, *, nonzero=None, nonzero_logits=None, validate_args=None):
        self._setup(validate_args, rate=rate, nonzero=nonzero, nonzero_logits=nonzero_logits)


class HurdleNegativeBinomial(_NB2Part):
    """Logit hurdle over a zero-truncated NB2: P(0) = 1 − p⁺, P(y) = p⁺ f(y)/(1 − f(0)) for
    y > 0 (f the `NegativeBinomial2` pmf).

    Args:
        mean: μ > 0 of the NB2 before truncation.
        dispersion: α >= 0, or ``log_dispersion``; give exactly one.
        nonzero: p⁺ = P(Y > 0) in [0, 1], or ``nonzero_logits``; give exactly one.
        validate_args: as in ``torch.distributions.Distribution``.
    """

    arg_constraints = {**_NB2Part.arg_constraints, **HurdlePoisson.arg_constraints}
    arg_constraints["count_mean"] = arg_constraints.pop("rate")  # μ > 0
    family, _zero = "hurdle_nb", "nonzero"
    nonzero, nonzero_logits = _lazy_pair("nonzero", "nonzero_logits", torch.sigmoid, torch.logit)

    def __init__(self, mean, *, dispersion=None, log_dispersion=None, nonzero=None,
                 nonzero_logits=None, validate_args=None):  # fmt: skip
        disp = {"dispersion": dispersion, "log_dispersion": log_dispersion}
        zero = {"nonzero": nonzero, "nonzero_logits": nonzero_logits}
        self._setup(validate_args, count_mean=mean, **zero, **disp)
