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

Precision for tiny α (DESIGN §7): the lgamma, digamma and trigamma differences in θ cancel
catastrophically as θ → ∞. Above θ = `_ASYMPTOTIC` they are taken from their Stirling-type
series, written so that every O(y) term cancels analytically (e.g. ∂L/∂a = −θ(log1p(u) − u)
+ … with u = (y − μ)/(θ + μ)): the absolute error stays ~eps·(y + μ), as for the Poisson, and
∂ℓ/∂a → α((y − μ)² − y)/2 (the Poisson score for overdispersion) without cancellation.
Pure functions of tensors: no I/O, no module state.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

FAMILIES = ("poisson", "nb", "zip", "zinb", "hurdle_poisson", "hurdle_nb")
# The nested baseline of each family with a dispersion (α → 0 on the boundary).
POISSON_LIMIT = {"nb": "poisson", "zinb": "zip", "hurdle_nb": "hurdle_poisson"}

_ASYMPTOTIC = 100.0  # θ above which the series replace lgamma/digamma/trigamma differences
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def check_family(family: str) -> None:
    """Raise ValueError naming the known families when `family` is not one of them."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r} (known: {', '.join(FAMILIES)})")


def zero_part(family: str) -> str | None:
    """'inflation' (zip, zinb), 'hurdle' (hurdle_*) or None (poisson, nb)."""
    check_family(family)
    if family.startswith("hurdle"):
        return "hurdle"
    return "inflation" if family.startswith("zi") else None


def has_dispersion(family: str) -> bool:
    """Whether the family has the NB dispersion log α as a parameter."""
    check_family(family)
    return family in POISSON_LIMIT


class Terms(NamedTuple):
    """Per-observation values: the log-likelihood and derivatives (None where not asked,
    or where the parameter is absent). Keys: s (zero part), eta (count part), a (log α)."""

    ll: torch.Tensor
    d_s: torch.Tensor | None = None
    d_eta: torch.Tensor | None = None
    d_a: torch.Tensor | None = None
    d_ss: torch.Tensor | None = None
    d_s_eta: torch.Tensor | None = None
    d_s_a: torch.Tensor | None = None
    d_eta_eta: torch.Tensor | None = None
    d_eta_a: torch.Tensor | None = None
    d_a_a: torch.Tensor | None = None


def _series_lgamma(z):
    """lgamma(z) − (z − ½)log z + z − log(2π)/2 for z >= 100 (truncation < 1e-21)."""
    inv2 = (z * z).reciprocal()
    return (1 / 12 - inv2 * (1 / 360 - inv2 * (1 / 1260 - inv2 / 1680))) / z


def _series_digamma(z):
    """ψ(z) − log z + 1/(2z) for z >= 100 (truncation < 1e-18)."""
    inv2 = (z * z).reciprocal()
    return -inv2 * (1 / 12 - inv2 * (1 / 120 - inv2 / 252))


def _series_trigamma(z):
    """ψ'(z) − 1/z − 1/(2z²) for z >= 100 (truncation < 1e-19)."""
    inv2 = (z * z).reciprocal()
    return inv2 / z * (1 / 6 - inv2 * (1 / 30 - inv2 / 42))


def poisson_terms(y, lgy, eta, order: int) -> Terms:
    """log f(y) of the Poisson with μ = e^η, and its η-derivatives up to `order` (0, 1, 2)."""
    mu = eta.exp()
    ll = y * eta - mu - lgy
    if order == 0:
        return Terms(ll)
    d = y - mu
    return Terms(ll, d_eta=d, d_eta_eta=-mu if order > 1 else None)


def nb_terms(y, lgy, eta, a, order: int) -> Terms:
    """log f(y) of the NB2 with μ = e^η, α = e^a, and its (η, a)-derivatives up to `order`.

    Args:
        y, lgy: counts (float) and lgamma(y + 1), broadcast against eta.
        eta, a: log mean and log dispersion (a broadcasts, e.g. one per fit).
        order: 0 (value), 1 (gradient), 2 (gradient and Hessian).

    Returns:
        The `Terms` (d_s entries None).
    """
    theta = (-a).exp()
    m = (a + eta).exp()  # αμ
    mu = eta.exp()
    l1p = torch.log1p(m)  # log(1 + αμ) = log((θ + μ)/θ)
    big = theta > _ASYMPTOTIC
    # Each branch sees only the θ it is accurate for, so neither makes NaN or inf.
    tb = torch.where(big, theta, _ASYMPTOTIC)
    ts = torch.where(big, _ASYMPTOTIC, theta)
    x = y / tb
    log1p_x = torch.log1p(x)
    # lgamma(y + θ) − lgamma(θ) − y log θ, by Stirling: θ(log1p(x) − x) + (y − ½)log1p(x)
    # + S(y + θ) − S(θ), each part free of O(y log θ) cancellation.
    g_big = tb * (log1p_x - x) + (y - 0.5) * log1p_x + _series_lgamma(y + tb) - _series_lgamma(tb)
    g_small = torch.lgamma(y + ts) - torch.lgamma(ts) - y * torch.log(ts)
    ll = torch.where(big, g_big, g_small) - lgy - theta * l1p + y * (eta - l1p)
    if order == 0:
        return Terms(ll)
    e = (y - mu) / (1 + m)  # ∂L/∂η = θ(y − μ)/(θ + μ)
    u = e / theta  # (y − μ)/(θ + μ) > −1
    log1p_u_minus_u = torch.log1p(u) - u
    # ∂L/∂a = −θ(ψ(y + θ) − ψ(θ)) + θ log1p(αμ) + (y − μ)/(1 + αμ); the series form:
    d_a_big = (-tb * log1p_u_minus_u - y / (2 * (y + tb))
               - tb * (_series_digamma(y + tb) - _series_digamma(tb)))  # fmt: skip
    psi = torch.digamma(y + ts) - torch.digamma(ts)
    d_a_small = -ts * psi + ts * l1p + e
    d_a = torch.where(big, d_a_big, d_a_small)
    if order == 1:
        return Terms(ll, d_eta=e, d_a=d_a)
    d_eta_eta = -mu * (1 + y / theta) / (1 + m) ** 2
    d_eta_a = -e * m / (1 + m)
    # ∂²L/∂a² = θ(ψ(y+θ) − ψ(θ)) + θ²(ψ'(y+θ) − ψ'(θ)) − θ log1p(αμ) + μ/(1 + αμ) − e αμ/(1 + αμ)
    yb = y + tb
    d_aa_big = (tb * log1p_u_minus_u + (e * y + y / 2) / yb - y * (y + 2 * tb) / (2 * yb * yb)
                + tb * (_series_digamma(yb) - _series_digamma(tb))
                + tb * tb * (_series_trigamma(yb) - _series_trigamma(tb)))  # fmt: skip
    trig = torch.polygamma(1, y + ts) - torch.polygamma(1, ts)
    d_aa_small = ts * psi + ts * ts * trig - ts * l1p + mu / (1 + m)
    d_a_a = torch.where(big, d_aa_big, d_aa_small) + d_eta_a
    return Terms(ll, d_eta=e, d_a=d_a, d_eta_eta=d_eta_eta, d_eta_a=d_eta_a, d_a_a=d_a_a)


def count_terms(family: str, y, lgy, eta, a, order: int) -> Terms:
    """The count part of `family` at y: Poisson terms, or NB2 terms when it has a dispersion."""
    if has_dispersion(family):
        return nb_terms(y, lgy, eta, a, order)
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
                 kind: str = "mixed") -> Terms:  # fmt: skip
    """Per-observation log-likelihood of `family` and its derivatives in (s, η, a).

    Args:
        family: one of `FAMILIES`.
        y, lgy, zero: counts (float), lgamma(y + 1) and y == 0 (bool), broadcast together.
        s, eta: zero-part and count-part linear predictors (s ignored without a zero part).
        a: log α (NB families; broadcasts); ignored otherwise.
        order: 0, 1 or 2.
        kind: "mixed"; or "zero" / "positive" when every y is 0 / > 0, which skips the
            branch that is never taken (the engine's row blocks).

    Returns:
        The `Terms`; derivatives of absent parameters are None.
    """
    part = zero_part(family)
    a = a if has_dispersion(family) else None
    keys = ("eta",) if a is None else ("eta", "a")
    if part is None:
        return count_terms(family, y, lgy, eta, a, order)
    if kind == "zero":
        zero = torch.ones((), dtype=torch.bool, device=eta.device)
    elif kind == "positive":
        zero = torch.zeros((), dtype=torch.bool, device=eta.device)
    softplus = torch.nn.functional.softplus
    if part == "hurdle" and kind == "zero":  # only the logistic part: P(Y = 0) = σ(−s)
        sig, sigc = _sig(s)
        out = {"d_s": -sig, **{f"d_{k}": torch.zeros_like(eta) for k in keys}} if order else {}
        if order > 1:
            out["d_ss"] = -sig * sigc
            out.update({f"d_s_{k}": torch.zeros_like(eta) for k in keys})
            out.update({f"d_{k}_{j}": torch.zeros_like(eta) for k, j in _pairs(keys)})
        return Terms(-softplus(s), **out)
    y0 = torch.zeros((), dtype=eta.dtype, device=eta.device)
    c0 = count_terms(family, y0, y0, eta, a, order) if kind != "positive" or part == "hurdle" \
        else None  # fmt: skip
    c = c0 if kind == "zero" else count_terms(family, y, lgy, eta, a, order)
    sig, sigc = _sig(s)
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
