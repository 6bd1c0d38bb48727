"""The count parts of the families: log f(y) of the Poisson and of the negative binomial NB2,
with their derivatives in η = log μ and a = log α, in torch (`count_terms` builds the zero
parts on them).

NB2 (mean μ, dispersion α, size θ = 1/α): L = lgamma(y + θ) − lgamma(θ) − log y!
− θ·log1p(αμ) + y(η − log1p(αμ)) − y·log θ. Precision for tiny α (DESIGN §7): the lgamma,
digamma and trigamma differences in θ cancel catastrophically as θ → ∞. Above θ =
`_ASYMPTOTIC` they are taken from their Stirling-type series, written so that every O(y) term
cancels analytically (e.g. ∂L/∂a = −θ(log1p(u) − u) + … with u = (y − μ)/(θ + μ)): the
absolute error stays ~eps·(y + μ), as for the Poisson, and ∂L/∂a → α((y − μ)² − y)/2 (the
Poisson score for overdispersion) without cancellation. Pure functions of tensors: no I/O, no
module state.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

_ASYMPTOTIC = 100.0  # θ above which the series replace lgamma/digamma/trigamma differences


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


def _trigamma(x):
    """ψ'(x) for x > 0 to ~3e-16 relative (torch.polygamma(1, x) is off by up to 5e-10 on
    [0.1, 10]): ψ'(x) = 1/x² + ψ'(x + 1) until x >= 20, then the asymptotic series."""
    acc = torch.zeros_like(x)
    for _ in range(20):
        acc = acc + torch.where(x < 20, x.reciprocal().square(), 0.0)
        x = torch.where(x < 20, x + 1, x)
    inv2 = (x * x).reciprocal()
    tail = inv2 / x * (1 / 6 - inv2 * (1 / 30 - inv2 * (1 / 42 - inv2 * (1 / 30 - inv2 * 5 / 66))))
    return acc + 1 / x + inv2 / 2 + tail


def poisson_terms(y, lgy, eta, order: int) -> Terms:
    """log f(y) of the Poisson with μ = e^η, and its η-derivatives up to `order` (0, 1, 2)."""
    mu = eta.exp()
    ll = y * eta - mu - lgy
    if order == 0:
        return Terms(ll)
    d = y - mu
    return Terms(ll, d_eta=d, d_eta_eta=-mu if order > 1 else None)


def _nb_zero(eta, a, order: int) -> Terms:
    """`nb_terms` at y = 0: L0 = −θ log1p(αμ) and its derivatives, with no lgamma/digamma."""
    theta, mu = (-a).exp(), eta.exp()
    m = mu * a.exp()  # αμ (α is one per fit: one exp per fit, not per observation)
    return _nb_zero_from(theta, mu, m, torch.log1p(m), order)


def nb_zero_first(theta, mu, m, l1p) -> Terms:
    """f(0)'s terms to first order from `nb_terms`' own intermediates (a hurdle's positive
    rows need both f(y) and f(0): no second exp and log1p per row)."""
    return _nb_zero_from(theta, mu, m, l1p, 1)


def _nb_zero_from(theta, mu, m, l1p, order: int) -> Terms:
    t_l1p = theta * l1p  # θ log(1 + αμ) → μ as α → 0
    if order == 0:
        return Terms(-t_l1p)
    d_eta = -mu / (1 + m)
    d_a = t_l1p + d_eta  # θ log1p(αμ) − μ/(1 + αμ) ≈ αμ²/2
    if order == 1:
        return Terms(-t_l1p, d_eta=d_eta, d_a=d_a)
    d_eta_a = -d_eta * m / (1 + m)  # αμ²/(1 + αμ)²
    return Terms(-t_l1p, d_eta=d_eta, d_a=d_a, d_eta_eta=d_eta / (1 + m), d_eta_a=d_eta_a,
                 d_a_a=-d_a + d_eta_a)  # fmt: skip


def _log1p_minus(u):
    """log1p(u) − u, to full relative precision also for tiny |u|: below 1e-3 (where the
    difference of the two keeps only ~eps/|u| of it) the series to u⁷, whose first omitted
    term u⁸/8 is < 1e-18 of u²/2 there."""
    small = u.abs() < 1e-3
    v = torch.where(small, u, 0.0)
    series = v * v * (-1 / 2 + v * (1 / 3 + v * (-1 / 4 + v * (1 / 5 + v * (-1 / 6 + v / 7)))))
    return torch.where(small, series, torch.log1p(u) - u)


def _pick(big, which: str, large, small):
    """torch.where(big, large(), small()), evaluating only the branch(es) needed."""
    if which == "big":
        return large()
    if which == "small":
        return small()
    return torch.where(big, large(), small())


def nb_count_parts(y, a):
    """The parts of `nb_terms` that depend on (y, θ) only, for every θ <= `_ASYMPTOTIC`:
    (lgamma(y + θ) − lgamma(θ) − y log θ, ψ(y + θ) − ψ(θ)). A caller with many rows of few
    distinct counts (the engine) computes them once per distinct count and fit and gathers
    them (`nb_terms(pre=...)`), instead of two lgamma and two digamma per row and fit.

    Returns:
        The pair, or None when some θ > `_ASYMPTOTIC` (then `nb_terms` uses its series).
    """
    theta = (-a).exp()
    if bool((theta > _ASYMPTOTIC).any()):
        return None
    g = torch.lgamma(y + theta) - torch.lgamma(theta) - y * torch.log(theta)
    return g, torch.digamma(y + theta) - torch.digamma(theta)


def nb_terms(y, lgy, eta, a, order: int, pre=None, with_zero: bool = False):
    """log f(y) of the NB2 with μ = e^η, α = e^a, and its (η, a)-derivatives up to `order`.

    Args:
        y, lgy: counts (float) and lgamma(y + 1), broadcast against eta; a 0-dim zero `y`
            takes the closed forms of f(0).
        eta, a: log mean and log dispersion (a broadcasts, e.g. one per fit).
        order: 0 (value), 1 (gradient), 2 (gradient and Hessian).
        pre: `nb_count_parts(y, a)` when computed already (every θ <= `_ASYMPTOTIC`).
        with_zero: also return f(0)'s first-order terms (order 1 only).

    Returns:
        The `Terms` (d_s entries None); with `with_zero`, (terms at y, terms at 0).
    """
    if y.dim() == 0 and float(y) == 0.0:
        return _nb_zero(eta, a, order)
    theta = (-a).exp()
    if pre is not None and bool((theta > _ASYMPTOTIC).any()):
        raise ValueError("pre holds the small-theta parts only")
    mu = eta.exp()
    m = mu * a.exp()  # αμ (α is one per fit: one exp per fit, not per observation)
    l1p = torch.log1p(m)  # log(1 + αμ) = log((θ + μ)/θ)
    big = theta > _ASYMPTOTIC
    # θ is one per fit: usually every fit is on one side and only that branch is computed.
    which = "big" if bool(big.all()) else "small" if not bool(big.any()) else "both"
    # Each branch sees only the θ it is accurate for, so neither makes NaN or inf.
    tb = torch.where(big, theta, _ASYMPTOTIC) if which == "both" else theta
    ts = torch.where(big, _ASYMPTOTIC, theta) if which == "both" else theta

    def g_big():
        # lgamma(y + θ) − lgamma(θ) − y log θ, by Stirling: θ(log1p(x) − x) + (y − ½)log1p(x)
        # + S(y + θ) − S(θ), each part free of O(y log θ) cancellation.
        x = y / tb
        log1p_x = torch.log1p(x)
        return (tb * (log1p_x - x) + (y - 0.5) * log1p_x + _series_lgamma(y + tb)
                - _series_lgamma(tb))  # fmt: skip

    def g_small():
        if pre is not None:
            return pre[0]
        return torch.lgamma(y + ts) - torch.lgamma(ts) - y * torch.log(ts)

    ll = _pick(big, which, g_big, g_small) - lgy - theta * l1p + y * (eta - l1p)
    if order == 0:
        return Terms(ll)
    e = (y - mu) / (1 + m)  # ∂L/∂η = θ(y − μ)/(θ + μ)
    # (y − μ)/(θ + μ) > −1, for the large-θ series only
    log1p_u_minus_u = _log1p_minus(e / theta) if which != "small" else None
    psi = None
    if which != "big":
        psi = pre[1] if pre is not None else torch.digamma(y + ts) - torch.digamma(ts)

    def d_a_big():
        # ∂L/∂a = −θ(ψ(y + θ) − ψ(θ)) + θ log1p(αμ) + (y − μ)/(1 + αμ), by the series:
        return (-tb * log1p_u_minus_u - y / (2 * (y + tb))
                - tb * (_series_digamma(y + tb) - _series_digamma(tb)))  # fmt: skip

    def d_a_small():
        return -ts * psi + ts * l1p + e

    d_a = _pick(big, which, d_a_big, d_a_small)
    if order == 1:
        terms = Terms(ll, d_eta=e, d_a=d_a)
        return (terms, nb_zero_first(theta, mu, m, l1p)) if with_zero else terms
    d_eta_eta = -mu * (1 + y / theta) / (1 + m) ** 2
    d_eta_a = -e * m / (1 + m)

    def d_aa_big():
        # θ(ψ(y+θ) − ψ(θ)) + θ²(ψ'(y+θ) − ψ'(θ)) − θ log1p(αμ) + μ/(1 + αμ), by the series:
        yb = y + tb
        return (tb * log1p_u_minus_u + (e * y + y / 2) / yb - y * (y + 2 * tb) / (2 * yb * yb)
                + tb * (_series_digamma(yb) - _series_digamma(tb))
                + tb * (tb * (_series_trigamma(yb) - _series_trigamma(tb))))  # fmt: skip

    def d_aa_small():
        trig = _trigamma(y + ts) - _trigamma(ts)
        return ts * psi + ts * ts * trig - ts * l1p + mu / (1 + m)

    d_a_a = _pick(big, which, d_aa_big, d_aa_small) + d_eta_a
    return Terms(ll, d_eta=e, d_a=d_a, d_eta_eta=d_eta_eta, d_eta_a=d_eta_a, d_a_a=d_a_a)
