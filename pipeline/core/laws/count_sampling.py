"""Exact samplers of the count families, written once for numpy and torch.

`draw(family, xp, draws, s, eta, a)` takes the predictors of `count_terms` (s: zero-part logit,
η = log μ, a = log α) as float64 arrays of `xp` (numpy or torch) and the variates from `draws`
(`numpy_draws` or `torch_draws`), so `count_dists.sample_counts` and the torch Distributions
draw from the same law. Every element takes a fixed number of variates (bounded time):

    NB2: Poisson(λ), λ ~ Gamma(shape θ = 1/α, scale αμ).
    Y | Y > 0: NB2 is a sum of N ~ Poisson(Λ) logarithmic(p) counts, p = αμ/(1 + αμ),
        Λ = θ log1p(αμ) = −log f(0), so Y = 0 iff N = 0. Given N >= 1, the first arrival of a
        unit Poisson process on [0, Λ], T = −log1p(u expm1(−Λ)), has density e^−t/(1 − e^−Λ)
        and the later ones are Poisson(Λ − T): Y = L₁ + NB2(size (Λ − T)/log1p(αμ), same p).
        The Poisson is the limit p → 0: Y = 1 + Poisson(μ − T).
    logarithmic(p): ⌊1 + log V / log(1 − (1 − p)^W)⌋, V, W uniform on (0, 1] (Kemp 1981: a
        geometric with a random parameter).

Nothing is rejected, so a count part with f(0) = 1 − 1e-12 costs what f(0) = 0.5 does: drawing
NB2 until positive would take 1/(1 − f(0)) tries, and inverting the NB2 cdf needs an accurate
tail quantile that torch lacks. No module state; randomness comes from the caller's generator.
"""

from __future__ import annotations

import functools
import math
from types import SimpleNamespace

import torch

from pipeline.core.model import family as family_of


def numpy_draws(rng, shape):
    """The variates of `draw` from a numpy Generator: uniforms on [0, 1), gammas, Poissons."""
    return SimpleNamespace(
        uniform=lambda: rng.random(shape), gamma=rng.standard_gamma, poisson=rng.poisson
    )


def torch_draws(shape, generator=None, device=None):
    """The variates of `draw` from a torch.Generator (torch's global one if None), float64."""
    return SimpleNamespace(
        uniform=lambda: torch.rand(shape, generator=generator, dtype=torch.float64, device=device),
        gamma=functools.partial(torch._standard_gamma, generator=generator),
        poisson=functools.partial(torch.poisson, generator=generator),
    )


def _log1mexp(xp, z):
    """log(1 − e^z) for z <= 0 (Mächler 2012)."""
    return xp.where(z > -math.log(2), xp.log(-xp.expm1(z)), xp.log1p(-xp.exp(z)))


def _draw_positive(xp, draws, eta, a):
    """Y | Y > 0 for the Poisson (a None) or NB2 count part (module docstring)."""
    lam = xp.exp(eta)
    if a is not None:
        x = xp.exp(a + eta)  # αμ, the gamma scale
        l1p = xp.log1p(x)  # −log(1 − p)
        live = x > 0  # α = 0 (or αμ below 1e-308): the Poisson
        lam = lam * xp.where(live, l1p / xp.where(live, x, 1.0), 1.0)  # Λ = θ log1p(αμ)
    first = -xp.log1p(draws.uniform() * xp.expm1(-lam))
    rest = xp.where(first < lam, lam - first, 0.0)
    if a is None:
        return 1 + draws.poisson(rest)
    v, w = 1 - draws.uniform(), 1 - draws.uniform()
    head = xp.floor(1 + xp.log(v) / _log1mexp(xp, -l1p * w))
    size = xp.where(live, rest / xp.where(live, l1p, 1.0), 1.0)
    return head + draws.poisson(xp.where(live, draws.gamma(size) * x, rest))


def draw(family, xp, draws, s, eta, a):
    """One count of `family` per element of eta.

    Variates, one per element each, in this order: a uniform for the zero part (zip, zinb,
    hurdles: a structural zero, resp. a positive count, where logit(u) < s); then poisson/zip a
    Poisson; nb/zinb a gamma and a Poisson; hurdle_poisson a uniform and a Poisson; hurdle_nb
    three uniforms, a gamma and a Poisson. Elements that end at 0 draw their count part too.

    Args:
        family: one of `count_terms.FAMILIES`.
        xp: the numpy or torch module, matching the arrays.
        draws: `numpy_draws(...)` or `torch_draws(...)`, shaped like eta.
        s, eta, a: float64 predictors of eta's shape; s None without a zero part, a None
            without a dispersion (a = -inf: α = 0, the Poisson).

    Returns:
        Counts: int64 (numpy Poisson part) or float64 arrays of eta's shape.
    """
    part = family_of(family).zero
    if part is not None:
        u = draws.uniform()
        hit = xp.log(u) - xp.log1p(-u) < s  # probability sigmoid(s), on the grid of u
    if part == "hurdle":
        return xp.where(hit, _draw_positive(xp, draws, eta, a), 0)
    if a is None:
        y = draws.poisson(xp.exp(eta))
    else:
        theta = xp.exp(-a)
        finite = xp.isfinite(theta)
        gamma = draws.gamma(xp.where(finite, theta, 1.0))
        y = draws.poisson(xp.where(finite, gamma * xp.exp(a + eta), xp.exp(eta)))
    return xp.where(hit, 0, y) if part == "inflation" else y
