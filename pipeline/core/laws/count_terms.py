"""Per-observation log-likelihoods of the count families and their derivatives, in torch.

Families (`FAMILIES`): the Poisson and the negative binomial NB2 (mean μ, dispersion α,
variance μ + αμ², size θ = 1/α) as plain count models, zero-inflated (`zip`, `zinb`) and as
hurdles (`hurdle_poisson`, `hurdle_nb`). Every family is written in up to three predictors
per observation:
    s = zᵀγ   zero part: logit π (π = P(structural zero)) when zero-inflated;
              logit P(Y > 0) when a hurdle (as in pscl's `hurdle` and statsmodels' `Logit`);
    η = xᵀβ   count part: log μ;
    a         log α (one per fit), NB families only; α → 0 (a → −∞) is the Poisson.

Count part, log f(y) = L (Poisson: yη − μ − log y!; NB2: lgamma(y + θ) − lgamma(θ) − log y!
− θ·log1p(αμ) + y(η − log1p(αμ)) − y·log θ), with L0 = log f(0). Zero parts:
    zero-inflated  y = 0: ℓ = logaddexp(s, L0) − softplus(s);   y > 0: ℓ = L − softplus(s)
    hurdle         y = 0: ℓ = −softplus(s);   y > 0: ℓ = L − log(1 − e^L0) − softplus(−s)
so with w = σ(s − L0) (the posterior share of structural zeros) and r = 1/expm1(−L0):
    ZI, y = 0: ℓ_s = w − σ(s), ℓ_k = (1 − w) L0_k, ℓ_ss = w(1 − w) − σ(s)σ(−s),
               ℓ_sk = −w(1 − w) L0_k, ℓ_kl = (1 − w) L0_kl + w(1 − w) L0_k L0_l;
    hurdle, y > 0: ℓ_s = σ(−s), ℓ_k = L_k + r L0_k, ℓ_kl = L_kl + r L0_kl + r(1 + r) L0_k L0_l;
for k, l in (η, a). The engine uses the first derivatives, the Newton oracle the second.

The count parts (and their precision for tiny α) are in `count_parts`.
Pure functions of tensors: no I/O, no module state.
"""

from __future__ import annotations

import torch

from pipeline.core.laws.count_parts import Terms, nb_terms, poisson_terms
from pipeline.core.laws.distributions import softplus as _softplus
from pipeline.core.laws.families import (  # noqa: F401 (re-exported: the families' names)
    FAMILIES,
    POISSON_LIMIT,
    check_family,
    has_dispersion,
    zero_part,
)
from pipeline.core.model import family as family_of


def count_terms(family: str, y, lgy, eta, a, order: int, pre=None) -> Terms:
    """The count part of `family` at y: Poisson terms, or NB2 terms when it has a dispersion
    (`pre`: `count_parts.nb_count_parts(y, a)` when the caller has it)."""
    if family_of(family).dispersion:
        return nb_terms(y, lgy, eta, a, order, pre)
    return poisson_terms(y, lgy, eta, order)


def _sig(x):
    return torch.sigmoid(x), torch.sigmoid(-x)


def _first(t: Terms, k: str):
    return getattr(t, f"d_{k}")


def _second(t: Terms, k: str, j: str):
    name = f"d_{k}_{j}"
    return getattr(t, name if name in Terms._fields else f"d_{j}_{k}")


def _pairs(keys):
    return [(k, j) for i, k in enumerate(keys) for j in keys[i:]]


def family_terms(family: str, y, lgy, zero, s, eta, a=None, *, order: int = 1,
                 kind: str = "mixed", pre=None) -> Terms:  # fmt: skip
    """Per-observation log-likelihood of `family` and its derivatives in (s, η, a).

    Args:
        family: one of `FAMILIES`.
        y, lgy, zero: counts (float), lgamma(y + 1) and y == 0 (bool), broadcast together.
        s, eta: zero-part and count-part linear predictors (s ignored without a zero part).
        a: log α (NB families; broadcasts); ignored otherwise.
        order: 0, 1 or 2.
        kind: "mixed"; or "zero" / "positive" when every y is 0 / > 0, which skips the
            branch that is never taken (the engine's row blocks).
        pre: `count_parts.nb_count_parts(y, a)` of the rows, when the caller has it.

    Returns:
        The `Terms`; derivatives of absent parameters are None.
    """
    fam = family_of(family)
    part = fam.zero
    a = a if fam.dispersion else None
    keys = ("eta",) if a is None else ("eta", "a")
    if part is None:
        if kind == "zero":  # every y is 0: the closed forms of f(0)
            y = lgy = torch.zeros((), dtype=eta.dtype, device=eta.device)
        return count_terms(family, y, lgy, eta, a, order, None if kind == "zero" else pre)
    if kind == "zero":
        zero = torch.ones((), dtype=torch.bool, device=eta.device)
    elif kind == "positive":
        zero = torch.zeros((), dtype=torch.bool, device=eta.device)
    softplus = _softplus  # exact to rounding: torch's default threshold drops e^-20 ~ 2e-9
    if part == "hurdle" and kind == "zero":  # only the logistic part: P(Y = 0) = σ(−s)
        sig, sigc = _sig(s)
        out = {"d_s": -sig, **{f"d_{k}": torch.zeros_like(eta) for k in keys}} if order else {}
        if order > 1:
            out["d_ss"] = -sig * sigc
            out.update({f"d_s_{k}": torch.zeros_like(eta) for k in keys})
            out.update({f"d_{k}_{j}": torch.zeros_like(eta) for k, j in _pairs(keys)})
        return Terms(-softplus(s), **out)
    y0 = torch.zeros((), dtype=eta.dtype, device=eta.device)
    # The NB hurdle's positive rows: f(0)'s terms from f(y)'s intermediates. (The Poisson's
    # f(0) = e^-μ costs one exp; taken from f(y) as y - (y - μ) it would round differently
    # from the mixed branch, and the engine's results would depend on its row blocks' kinds.)
    if part == "hurdle" and kind == "positive" and order == 1 and a is not None:
        c, c0 = nb_terms(y, lgy, eta, a, 1, pre, with_zero=True)
    else:
        c0 = count_terms(family, y0, y0, eta, a, order) \
            if kind != "positive" or part == "hurdle" else None  # fmt: skip
        c = c0 if kind == "zero" else count_terms(family, y, lgy, eta, a, order, pre)
    sig = torch.sigmoid(s)
    sigc = torch.sigmoid(-s) if order > 1 or part == "hurdle" else None  # σ(−s) when needed
    out = {}
    if part == "inflation":
        if c0 is None:  # positives only: ℓ = L − softplus(s)
            ll = c.ll - softplus(s)
            if order == 0:
                return Terms(ll)
            out = {"d_s": -sig, **{f"d_{k}": _first(c, k) for k in keys}}
            if order > 1:
                out["d_ss"] = -sig * sigc
                out.update({f"d_s_{k}": torch.zeros_like(ll) for k in keys})
                out.update({f"d_{k}_{j}": _second(c, k, j) for k, j in _pairs(keys)})
            return Terms(ll, **out)
        t = s - c0.ll
        ll = torch.where(zero, softplus(t) + c0.ll, c.ll) - softplus(s)
        if order == 0:
            return Terms(ll)
        w, v = _sig(t)
        out["d_s"] = torch.where(zero, w, 0.0) - sig
        for k in keys:
            out[f"d_{k}"] = torch.where(zero, v * _first(c0, k), _first(c, k))
        if order > 1:
            wv = torch.where(zero, w * v, 0.0)
            out["d_ss"] = wv - sig * sigc
            for k in keys:
                out[f"d_s_{k}"] = -wv * _first(c0, k)
            for k, j in _pairs(keys):
                zero_kj = v * _second(c0, k, j) + w * v * _first(c0, k) * _first(c0, j)
                out[f"d_{k}_{j}"] = torch.where(zero, zero_kj, _second(c, k, j))
        return Terms(ll, **out)
    # Hurdle: log(1 − f(0)) = log(−expm1(L0)) stays accurate when f(0) is near 1.
    trunc = torch.log(-torch.expm1(c0.ll))
    if kind == "positive" and order == 1:  # the engine's positive rows: no where() passes
        r = torch.expm1(-c0.ll).reciprocal()
        first = {f"d_{k}": _first(c, k) + r * _first(c0, k) for k in keys}
        return Terms(c.ll - trunc - softplus(-s), d_s=sigc, **first)
    ll = torch.where(zero, -softplus(s), c.ll - trunc - softplus(-s))
    if order == 0:
        return Terms(ll)
    r = torch.expm1(-c0.ll).reciprocal()  # f(0)/(1 − f(0))
    out["d_s"] = torch.where(zero, -sig, sigc)
    for k in keys:
        out[f"d_{k}"] = torch.where(zero, 0.0, _first(c, k) + r * _first(c0, k))
    if order > 1:
        out["d_ss"] = -sig * sigc
        for k in keys:
            out[f"d_s_{k}"] = torch.zeros_like(ll)
        for k, j in _pairs(keys):
            pos = (_second(c, k, j) + r * _second(c0, k, j)
                   + r * (1 + r) * _first(c0, k) * _first(c0, j))  # fmt: skip
            out[f"d_{k}_{j}"] = torch.where(zero, 0.0, pos)
    return Terms(ll, **out)
