"""Tests for pipeline.core.laws.count_terms: derivatives against autograd, NB2 against mpmath.

Tolerances follow from float64 (eps = 2.2e-16), not from measurement: every value here is a
sum of at most ~8 terms, none larger than `_scale` (1 + y(1 + |η| + log(1 + y)) + μ + |value|,
plus θ(3 + |log θ| + log(1 + y + θ)) where θ <= 100 takes lgamma/digamma/trigamma differences;
the series branch keeps θ-sized terms out), each rounded to a few ulps: |error| <= 16 eps scale.
Where a reference has an error of its own (autograd's trigamma, autograd's cancellation at
zero-inflated zeros) it is added, and said where.
"""

import itertools
import math

import mpmath
import numpy as np
import pytest
import torch

from pipeline.core.laws.count_dists import family_log_prob
from pipeline.core.laws.count_parts import nb_terms, poisson_terms
from pipeline.core.laws.count_terms import (
    FAMILIES,
    family_terms,
    has_dispersion,
    zero_part,
)

F64 = torch.float64
EPS = float(torch.finfo(F64).eps)
TOL = 16  # ulps of the scale, see the module docstring

# θ = 1/α on both sides of the switch to the series at θ = 100 (α = 0.0099, 0.0101).
MUS = [1e-8, 1e-3, 1.0, 30.0, 1e4]
ALPHAS = [1e-12, 1e-6, 0.0099, 0.0101, 1.0, 1e3]
LOGITS = [-30.0, -25.0, -3.0, 0.0, 3.0, 25.0, 30.0]
COUNTS = [0, 1, 7, 100, 1e5]
FIRST = ("d_s", "d_eta", "d_a")


def _grid(counts, logits, mus, alphas):
    """Flat float64 tensors (y, s, η, a) over the product of the four lists."""
    logs = ([math.log(m) for m in mus], [math.log(a) for a in alphas])
    rows = torch.tensor(list(itertools.product(counts, logits, *logs)), dtype=F64)
    return rows.unbind(1)


def _keys(family):
    return ("s",) * bool(zero_part(family)) + ("eta",) + ("a",) * has_dispersion(family)


def _name(k, j):
    return "d_ss" if k == j == "s" else f"d_{k}_{j}"


def _terms(family, y, s, eta, a, order):
    return family_terms(family, y, torch.lgamma(y + 1), y == 0, s, eta, a, order=order)


def _autograd(family, y, s, eta, a):
    """ll and its first and second derivatives by autograd of family_terms(order=0)."""
    leaves = {k: t.clone().requires_grad_() for k, t in zip(("s", "eta", "a"), (s, eta, a))}
    ll = _terms(family, y, leaves["s"], leaves["eta"], leaves["a"], 0).ll
    keys = _keys(family)
    first = torch.autograd.grad(ll.sum(), [leaves[k] for k in keys], create_graph=True)
    out = {"ll": ll.detach(), **{f"d_{k}": g.detach() for k, g in zip(keys, first)}}
    for i, k in enumerate(keys):
        wrt = [leaves[j] for j in keys[i:]]
        second = torch.autograd.grad(first[i].sum(), wrt, retain_graph=True, allow_unused=True)
        for j, h in zip(keys[i:], second):  # None: a hurdle's s and count part do not mix
            out[_name(k, j)] = torch.zeros_like(ll) if h is None else h.detach()
    return out


def _scale(y, eta, ref, a=None):
    """1 + y(1 + |η| + log(1 + y)) + μ + |ref|, plus, where θ = e^−a <= 100 (the lgamma,
    digamma and trigamma differences), θ(3 + |log θ| + log(1 + y + θ)), which bounds
    θ(|ψ(θ)| + |ψ(y + θ)| + θψ'(θ))."""
    y, eta, ref = (np.asarray(t, dtype=float) for t in (y, eta, ref))
    scale = 1 + y * (1 + np.abs(eta) + np.log1p(y)) + np.exp(eta) + np.abs(ref)
    if a is not None:
        theta = np.minimum(np.exp(-np.asarray(a, dtype=float)), 100.0)
        scale = scale + theta * (3 + np.abs(np.log(theta)) + np.log1p(y + theta))
    return scale


def _assert_within(actual, expected, y, eta, what, a=None, extra=0.0):
    """|actual − expected| <= 16 eps · scale + extra (the reference's own error), elementwise."""
    actual, expected = np.asarray(actual, dtype=float), np.asarray(expected, dtype=float)
    assert np.isfinite(actual).all(), what
    excess = np.abs(actual - expected) / (TOL * EPS * _scale(y, eta, expected, a) + extra)
    i = int(np.argmax(excess))
    at = [np.broadcast_to(np.asarray(t), excess.shape)[i] for t in (y, eta)]
    assert excess[i] <= 1, (
        f"{what}: {actual[i]!r} vs {expected[i]!r} at y = {at[0]}, eta = {at[1]} "
        f"({excess[i]:.3g} x tolerance)"
    )


# --- derivatives against autograd ----------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_derivatives_match_autograd(family):
    y, s, eta, a = _grid(COUNTS, LOGITS, MUS, ALPHAS)
    expected = _autograd(family, y, s, eta, a)
    nb_a = a if has_dispersion(family) else None
    # Autograd's second derivative of lgamma is torch.polygamma(1, ·), off by up to 4.9e-10
    # relative (vs mpmath on [1e-3, 1e3]); in ∂²ℓ/∂a² it multiplies θ², and θ²ψ'(x) <= θ + 1
    # for x >= θ, so the reference carries up to 1e-9 · 2(θ + 1) where θ <= 100.
    theta = torch.exp(-a).clamp(max=100).numpy()
    trigamma_error = 2e-9 * (theta + 1) if has_dispersion(family) else 0.0
    # Autograd differentiates softplus(s − L0) + L0 (zero-inflated, y = 0), whose η-terms
    # μσ(t) − μ cancel: its second derivatives carry ~eps μ² more.
    inflation_error = TOL * EPS * eta.exp().numpy() ** 2 if zero_part(family) == "inflation" else 0
    for order in (1, 2):
        terms = _terms(family, y, s, eta, a, order)
        _assert_within(terms.ll, expected["ll"], y, eta, f"order {order} ll", nb_a)
        for name, ref in expected.items():
            if name != "ll" and (order == 2 or name in FIRST):
                extra = (trigamma_error if name == "d_a_a" else 0.0) + (
                    inflation_error if name not in FIRST else 0.0
                )
                what = f"order {order} {name}"
                _assert_within(getattr(terms, name), ref, y, eta, what, nb_a, extra)
            elif name != "ll":
                assert getattr(terms, name) is None
        absent = [k for k in ("s", "eta", "a") if k not in _keys(family)]
        assert all(getattr(terms, f"d_{k}") is None for k in absent)


@pytest.mark.parametrize("family", FAMILIES)
def test_log_likelihood_matches_family_log_prob(family):
    # family_log_prob composes the zero part itself (and is checked against mpmath there).
    y, s, eta, a = _grid(COUNTS, LOGITS, MUS, ALPHAS)
    expected = family_log_prob(family, y, zero_logits=s, log_mean=eta, log_dispersion=a)
    nb_a = a if has_dispersion(family) else None
    _assert_within(_terms(family, y, s, eta, a, 0).ll, expected, y, eta, "ll", nb_a)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["zero", "positive"])
def test_single_kind_blocks_match_mixed(family, kind):
    counts = [0] if kind == "zero" else [1, 7, 100, 1e5]
    y, s, eta, a = _grid(counts, LOGITS, MUS, ALPHAS)
    lgy = torch.lgamma(y + 1)
    mixed = family_terms(family, y, lgy, y == 0, s, eta, a, order=2)
    block = family_terms(family, y, lgy, None, s, eta, a, order=2, kind=kind)
    for name in mixed._fields:
        if getattr(mixed, name) is not None:
            expected = getattr(mixed, name).expand_as(y)
            _assert_within(getattr(block, name).expand_as(y), expected, y, eta, name, a)


# --- NB2 against a 50-digit reference ------------------------------------------------------

MP_ALPHAS = [1e-14, 1e-10, 1e-6, 1e-3, 0.0099, 0.0101, 0.1, 1.0, 10.0, 100.0]
MP_MUS = [1e-6, 1e-2, 1.0, 10.0, 1e3, 1e5]
MP_COUNTS = [0, 1, 3, 10, 100, 1e3, 1e4, 1e5]
NB_NAMES = ["ll", "d_eta", "d_a", "d_eta_eta", "d_eta_a", "d_a_a"]


def _mp_nb(y, eta, a):
    """NB2 log-pmf at mpf (η, a), written from the textbook form."""
    theta, mu = mpmath.exp(-a), mpmath.exp(eta)
    lgammas = mpmath.loggamma(y + theta) - mpmath.loggamma(theta) - mpmath.loggamma(y + 1)
    return lgammas - theta * mpmath.log1p(mu / theta) + y * (eta - mpmath.log(theta + mu))


def _mp_derivatives(log_pmf, y, s, eta, a):
    """{name: array} of log_pmf(y, s, η, a) and its (η, a)-derivatives up to second order, by
    mpmath.diff at 50 digits at the exact float inputs, row by row."""
    orders = [(1, 0), (0, 1), (2, 0), (1, 1), (0, 2)]
    rows = []
    with mpmath.workdps(50):
        for k, z, h, g in zip(*(t.tolist() for t in (y, s, eta, a))):
            point, z = (mpmath.mpf(h), mpmath.mpf(g)), mpmath.mpf(z)

            def f(e, b, k=k, z=z):
                return log_pmf(k, z, e, b)

            rows.append([float(f(*point))] + [float(mpmath.diff(f, point, n)) for n in orders])
    return dict(zip(NB_NAMES, np.array(rows).T))


def test_nb_terms_match_mpmath():
    y, s, eta, a = _grid(MP_COUNTS, [0.0], MP_MUS, MP_ALPHAS)
    expected = _mp_derivatives(lambda k, _, e, b: _mp_nb(k, e, b), y, s, eta, a)
    terms = nb_terms(y, torch.lgamma(y + 1), eta, a, order=2)
    for name in NB_NAMES:
        _assert_within(getattr(terms, name), expected[name], y, eta, name, a)


def _mp_hurdle(family, y, s, eta, a):
    mu = mpmath.exp(eta)
    if has_dispersion(family):
        log_f, log_f0 = _mp_nb(y, eta, a), _mp_nb(0, eta, a)
    else:
        log_f, log_f0 = y * eta - mu - mpmath.loggamma(y + 1), -mu
    if y == 0:
        return -mpmath.log1p(mpmath.exp(s))
    return log_f - mpmath.log(-mpmath.expm1(log_f0)) - mpmath.log1p(mpmath.exp(-s))


@pytest.mark.parametrize("family", ["hurdle_poisson", "hurdle_nb"])
@pytest.mark.parametrize("mu", [1e-8, 1e-12])
def test_hurdle_accurate_when_count_part_rarely_positive(family, mu):
    # P(0) of the count part is 1 - 1e-8 (1e-12): log(1 - f(0)) and r = f(0)/(1 - f(0)) ~ 1/μ
    # must not cancel. ∂ℓ/∂η at y = 1 is about -μ/2, a difference of O(1) terms, so it is
    # accurate to eps absolute (relative ~eps/μ), which is what the scale allows.
    y, s, eta, a = _grid([0, 1, 2, 5, 100], [-3.0, 0.0, 3.0], [mu], [1e-6, 1.0, 100.0])
    expected = _mp_derivatives(lambda *args: _mp_hurdle(family, *args), y, s, eta, a)
    terms = _terms(family, y, s, eta, a, 2)
    for name in NB_NAMES if has_dispersion(family) else ["ll", "d_eta", "d_eta_eta"]:
        _assert_within(getattr(terms, name), expected[name], y, eta, name, a)


# --- the Poisson limit α → 0 ---------------------------------------------------------------

LIMIT_COUNTS = [0, 1, 2, 3, 10, 100, 1e3]
LIMIT_MUS = [1e-6, 1e-3, 0.5, 3.0, 10.0, 100.0, 1e3]


@pytest.mark.parametrize("alpha", [1e-10, 1e-14])
def test_dispersion_score_tends_to_poisson_overdispersion_score(alpha):
    # ∂ℓ/∂a = αc₁ + 2α²c₂ + …, ∂²ℓ/∂a² = αc₁ + 4α²c₂ + … with c₁ = ((y − μ)² − y)/2 and
    # |c₂| <= (1 + y + μ)³/3 (mpmath at 150 digits on this grid), and ∂²ℓ/∂η∂a → −α(y − μ)μ.
    # Relative accuracy as α → 0 needs every term proportional to α: the terms are of size
    # α((y + μ)² + y), whence the rounding scale.
    y, _, eta, a = _grid(LIMIT_COUNTS, [0.0], LIMIT_MUS, [alpha])
    terms = nb_terms(y, torch.lgamma(y + 1), eta, a, order=2)
    yn, mu = y.numpy(), eta.exp().numpy()
    score = ((yn - mu) ** 2 - yn) / 2
    scale = TOL * EPS * ((yn + mu) ** 2 + yn + 1) + 2 * alpha * (1 + yn + mu) ** 3
    for name, limit in [("d_a", score), ("d_a_a", score), ("d_eta_a", -(yn - mu) * mu)]:
        ratio = getattr(terms, name).numpy() / alpha
        np.testing.assert_array_less(np.abs(ratio - limit), scale, err_msg=name)


@pytest.mark.parametrize("alpha", [1e-14, 1e-100, 1e-300])
def test_log_likelihood_tends_to_poisson(alpha):
    # a = log α carries an ulp of |a|, which moves θ and αμ by |a| eps relative; the NB2 differs
    # from the Poisson by about α((y − μ)² − y)/2.
    y, _, eta, a = _grid(LIMIT_COUNTS, [0.0], LIMIT_MUS, [alpha])
    lgy = torch.lgamma(y + 1)
    nb, poisson = nb_terms(y, lgy, eta, a, order=2), poisson_terms(y, lgy, eta, order=2)
    yn, mu, ref = y.numpy(), eta.exp().numpy(), poisson.ll.numpy()
    amplified = TOL * EPS * (1 + np.abs(a.numpy())) * _scale(yn, eta.numpy(), ref)
    np.testing.assert_array_less(
        np.abs(nb.ll.numpy() - ref), amplified + alpha * (1 + yn + mu) ** 2
    )
    # ∂ℓ/∂η = (y − μ)/(1 + αμ)
    gap = np.abs(nb.d_eta.numpy() - poisson.d_eta.numpy())
    np.testing.assert_array_less(gap, TOL * EPS * (1 + yn + mu) + alpha * mu * np.abs(yn - mu))


@pytest.mark.parametrize("family", ["nb", "zinb", "hurdle_nb"])
def test_terms_finite_down_to_tiny_dispersion(family):
    # Newton on log α walks towards -inf on Poisson-like data (α̂ = 0 about half the time).
    y, s, eta, a = _grid(COUNTS, [-3.0, 3.0], MUS, [1e-100, 1e-200, 1e-300])
    terms = _terms(family, y, s, eta, a, 2)
    for name in terms._fields:
        value = getattr(terms, name)
        assert value is None or value.isfinite().all(), name
