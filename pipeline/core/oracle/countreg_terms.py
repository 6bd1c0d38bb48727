"""What one point of a count-family regression is worth: log-likelihood, scores, Hessian.

Parameters are ordered [γ (q, zero part), β (p, count part), log α (NB families)] everywhere,
as in statsmodels; s = Zγ, η = Xβ (see `count_terms` for the families and their derivatives).
The per-observation weights in (s, η, a) come from `count_terms.family_terms`, called in
float64 on torch views of numpy arrays once per evaluation, and are assembled by the chain rule:
gradient Zᵀ(w ℓ_s), Xᵀ(w ℓ_η), Σ w ℓ_a; Hessian Zᵀdiag(w ℓ_ss)Z, Zᵀdiag(w ℓ_sη)X, Zᵀ(w ℓ_sa),
Xᵀdiag(w ℓ_ηη)X, Xᵀ(w ℓ_ηa), Σ w ℓ_aa, with w the frequency weights. log α = −inf (α̂ = 0, the
boundary) means the nested family (`count_terms.POISSON_LIMIT`): its values, and the limits 0
of the log α derivatives. `countreg` fits with these. Core layer: pure functions, no I/O.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from pipeline.core.laws.count_terms import (
    POISSON_LIMIT,
    check_family,
    family_terms,
    has_dispersion,
    zero_part,
)
from pipeline.core.oracle.zipreg_terms import design_arrays, inverse


class CountData(NamedTuple):
    """Validated data of one fit, rows of zero weight dropped; torch views built once."""

    family: str
    X: np.ndarray  # (n, p)
    Z: np.ndarray  # (n, q)
    XT: np.ndarray  # contiguous transposes: the fast layout for the Hessian products
    ZT: np.ndarray
    y: np.ndarray
    w: np.ndarray  # frequency weights, all > 0
    y_t: torch.Tensor
    lgy_t: torch.Tensor  # lgamma(y + 1): data only, computed once
    zero_t: torch.Tensor


class Point(NamedTuple):
    """The weighted total log-likelihood at one parameter vector, and what the fit reuses."""

    ll: float
    grad: np.ndarray | None  # (k,), order >= 1
    hess: np.ndarray | None  # (k, k), order 2
    s: np.ndarray  # linear predictors (s empty without a zero part)
    eta: np.ndarray
    size: float  # Σ w |ℓ_i|: the scale of rounding in ll


def n_coef(family: str, q: int, p: int) -> int:
    """Number of parameters: q + p (+ 1 for log α)."""
    return q + p + int(has_dispersion(family))


def check_designs(family: str, X, Z, y=None):
    """Validated float64 (X, Z[, y]) as `zipreg_terms.design_arrays`, plus the family's rules:
    X has columns; Z has none for poisson/nb and some for the others.

    Raises:
        ValueError: on an unknown family or a design the family cannot take.
    """
    check_family(family)
    arrays = design_arrays(X, Z) if y is None else design_arrays(X, Z, y)
    X, Z = arrays[0], arrays[1]
    if X.shape[1] == 0:
        raise ValueError("X needs at least one column")
    if zero_part(family) is None and Z.shape[1] > 0:
        raise ValueError(f"family {family!r} has no zero part: Z must have 0 columns")
    if zero_part(family) is not None and Z.shape[1] == 0:
        raise ValueError(f"family {family!r} needs at least one zero-part column in Z")
    return arrays


def check_weights(weights, n: int) -> np.ndarray:
    """Frequency weights as float64 (n,), default ones.

    Raises:
        ValueError: unless finite, non-negative, of shape (n,) and with a positive sum.
    """
    if weights is None:
        return np.ones(n)
    w = np.asarray(weights, dtype=float)
    if w.shape != (n,) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be finite, non-negative, shape ({n},), not all zero")
    return w


def check_params(family: str, q: int, p: int, params) -> np.ndarray:
    """params as float64 (k,); only log α may be −inf (the boundary)."""
    theta = np.asarray(params, dtype=float)
    k = n_coef(family, q, p)
    if theta.shape != (k,):
        raise ValueError(f"params must have shape ({k},) for {family!r}, got {theta.shape}")
    if not np.isfinite(theta[: q + p]).all() or (k > q + p and not theta[-1] < np.inf):
        raise ValueError("params must be finite (log alpha may be -inf)")
    return theta


def count_data(family: str, X, Z, y, w) -> CountData:
    """`CountData` of validated arrays, keeping the rows of positive weight."""
    keep = w > 0
    if not keep.all():
        X, Z, y, w = X[keep], Z[keep], y[keep], w[keep]
    y_t = torch.from_numpy(y)
    return CountData(family, X, Z, np.ascontiguousarray(X.T), np.ascontiguousarray(Z.T), y, w,
                     y_t, torch.lgamma(y_t + 1), y_t == 0)  # fmt: skip


def nested(data: CountData, theta) -> tuple[CountData, np.ndarray]:
    """The nested family's data and parameters at log α = −inf, else the inputs unchanged."""
    if has_dispersion(data.family) and theta[-1] == -np.inf:
        return data._replace(family=POISSON_LIMIT[data.family]), theta[:-1]
    return data, theta


def _predictors(family: str, X, Z, theta):
    """(s, eta) as numpy and (s, eta, a) as torch float64 views (s a 0-d zero when q = 0)."""
    q, p = Z.shape[1], X.shape[1]
    s, eta = Z @ theta[:q], X @ theta[q : q + p]
    a = torch.tensor(theta[-1], dtype=torch.float64) if has_dispersion(family) else None
    s_t = torch.from_numpy(s) if q else torch.zeros((), dtype=torch.float64)
    return s, eta, (s_t, torch.from_numpy(eta), a)


def terms(data: CountData, theta, order: int):
    """(family_terms as numpy arrays (None where absent), s, eta) at theta (finite log α)."""
    s, eta, (s_t, eta_t, a_t) = _predictors(data.family, data.X, data.Z, theta)
    t = family_terms(data.family, data.y_t, data.lgy_t, data.zero_t, s_t, eta_t, a_t, order=order)
    return t._replace(**{k: v.numpy() for k, v in t._asdict().items() if v is not None}), s, eta


def evaluate(data: CountData, theta, order: int = 2) -> Point:
    """Weighted total log-likelihood, and its gradient (order >= 1) and Hessian (order 2).

    Args:
        data: the `CountData`; theta: (k,) parameters, log α finite; order: 0, 1 or 2.

    Returns:
        The `Point`.
    """
    t, s, eta = terms(data, theta, order)
    w = data.w
    with np.errstate(invalid="ignore", over="ignore"):  # -inf terms at wild points: ll = -inf
        wll = w * t.ll
        ll, size = float(np.nan_to_num(wll.sum(), nan=-np.inf)), float(np.abs(wll).sum())
    if order == 0:
        return Point(ll, None, None, s, eta, size)
    q, disp = data.Z.shape[1], has_dispersion(data.family)
    grad = [data.ZT @ (w * t.d_s)] if q else []
    grad.append(data.XT @ (w * t.d_eta))
    if disp:
        grad.append(np.array([w @ t.d_a]))
    grad = np.concatenate(grad)
    if order == 1:
        return Point(ll, grad, None, s, eta, size)
    XT, ZT, k, b = data.XT, data.ZT, len(grad), slice(q, len(grad) - disp)
    hess = np.empty((k, k))
    hess[b, b] = (XT * (w * t.d_eta_eta)) @ data.X
    if q:
        hess[:q, :q] = (ZT * (w * t.d_ss)) @ data.Z
        hess[:q, b] = (ZT * (w * t.d_s_eta)) @ data.X
        hess[b, :q] = hess[:q, b].T
    if disp:
        cross = [ZT @ (w * t.d_s_a)] if q else []
        hess[-1, :-1] = hess[:-1, -1] = np.concatenate([*cross, XT @ (w * t.d_eta_a)])
        hess[-1, -1] = w @ t.d_a_a
    return Point(ll, grad, hess, s, eta, size)


def _setup(family, X, Z, y, params, weights=None):
    """Validated (full data, nested-or-full data, its params, whether at the boundary)."""
    X, Z, y = check_designs(family, X, Z, y)
    theta = check_params(family, Z.shape[1], X.shape[1], params)
    data = count_data(family, X, Z, y, check_weights(weights, len(y)))
    sub, sub_theta = nested(data, theta)
    return data, sub, sub_theta, sub is not data


def loglik_terms(family: str, X, Z, y, params) -> np.ndarray:
    """Per-observation log P(Y_i = y_i), lgamma(y + 1) included.

    Args:
        family: one of `count_terms.FAMILIES`.
        X: (n, p) count design; Z: (n, q) zero design (q = 0 for poisson/nb); y: (n,) counts.
        params: (k,) [γ, β, (log α)]; log α = −inf is the nested (Poisson-limit) family.

    Returns:
        (n,) float64 log-probabilities.
    """
    _, sub, theta, _ = _setup(family, X, Z, y, params)
    return terms(sub, theta, 0)[0].ll


def gradient_hessian(
    family: str, X, Z, y, params, *, weights=None
) -> tuple[float, np.ndarray, np.ndarray]:
    """Analytic weighted total log-likelihood, gradient and Hessian in [γ, β, (log α)].

    Args:
        family, X, Z, y, params: as in `loglik_terms`.
        weights: (n,) non-negative frequency weights (default ones).

    Returns:
        (log-likelihood, gradient (k,), Hessian (k, k)); at log α = −inf the log α entries
        are their limits, 0.
    """
    _, sub, theta, boundary = _setup(family, X, Z, y, params, weights)
    point = evaluate(sub, theta, 2)
    if not boundary:
        return point.ll, point.grad, point.hess
    return point.ll, np.r_[point.grad, 0.0], np.pad(point.hess, ((0, 1), (0, 1)))


def scores(family: str, X, Z, y, params) -> np.ndarray:
    """Per-observation gradients of log P(Y_i = y_i) (sandwich SEs, Vuong tests).

    Args:
        family, X, Z, y, params: as in `loglik_terms`.

    Returns:
        (n, k) array whose column sums are the gradient; the log α column is 0 at −inf.
    """
    data, sub, theta, boundary = _setup(family, X, Z, y, params)
    return score_matrix(sub, theta, boundary)


def score_matrix(data: CountData, theta, boundary: bool = False) -> np.ndarray:
    """(n, k) per-observation gradients at finite theta; with `boundary`, a zero log α column
    is appended (data and theta are then the nested family's)."""
    t, _, _ = terms(data, theta, 1)
    cols = [data.Z * t.d_s[:, None]] if data.Z.shape[1] else []
    cols.append(data.X * t.d_eta[:, None])
    if has_dispersion(data.family):
        cols.append(t.d_a[:, None])
    if boundary:
        cols.append(np.zeros((len(data.y), 1)))
    return np.hstack(cols)


def expected_frequencies(family: str, X, Z, params, values) -> np.ndarray:
    """Σ_i P(Y_i = v) for each v in `values` (rootograms), one value at a time.

    Args:
        family, X, Z, params: as in `loglik_terms`.
        values: non-negative integer counts.

    Returns:
        float64 array with the shape of `values`.
    """
    X, Z = check_designs(family, X, Z)
    theta = check_params(family, Z.shape[1], X.shape[1], params)
    v = np.asarray(values, dtype=float)
    if not np.isfinite(v).all() or (v < 0).any() or (v != np.floor(v)).any():
        raise ValueError("values must be non-negative integers")
    if has_dispersion(family) and theta[-1] == -np.inf:
        family, theta = POISSON_LIMIT[family], theta[:-1]
    _, _, (s_t, eta_t, a_t) = _predictors(family, X, Z, theta)
    out = np.empty(v.size)
    for k, val in enumerate(v.ravel()):  # no n x K temporaries
        y = torch.tensor(val, dtype=torch.float64)
        ll = family_terms(family, y, torch.lgamma(y + 1), y == 0, s_t, eta_t, a_t, order=0).ll
        out[k] = float(ll.exp().sum())
    return out.reshape(v.shape)


def blocks(family: str, q: int, p: int, boundary: bool) -> list[np.ndarray]:
    """Index sets of the parameters whose information is inverted together: one set, or the
    zero part and the count part of a hurdle (their cross block is exactly 0); log α left out
    at the boundary."""
    k = n_coef(family, q, p) - int(boundary)
    if zero_part(family) == "hurdle":
        return [np.arange(q), np.arange(q, k)]
    return [np.arange(k)]


def block_inverse(info, parts) -> np.ndarray:
    """Inverse of a block-diagonal `info` block by block over `parts` (index arrays that
    partition it): 0 between blocks, NaN in the rows and columns of a block that is numerically
    singular (`zipreg_terms.inverse`).

    Args:
        info: (k, k) symmetric matrix; parts: list of index arrays.

    Returns:
        (k, k) matrix.
    """
    out = np.zeros(info.shape)
    for idx in parts:
        inv = inverse(info[np.ix_(idx, idx)])
        if inv is None:
            out[idx, :] = out[:, idx] = np.nan
        else:
            out[np.ix_(idx, idx)] = inv
    return out
