"""What one point of a count model is worth: log-likelihood, scores, Hessian, covariances,
expected frequencies.

Parameters are ordered [γ (q, zero part), β (p, count part), log α (NB families)] everywhere,
as in statsmodels; s = Zγ + o_z, η = Xβ + o_x (`core.model`; see `count_terms` for the
families and their derivatives). The per-observation weights in (s, η, a) come from
`count_terms.family_terms`, called in float64 on torch views of numpy arrays once per
evaluation, and are assembled by the chain rule: gradient Zᵀ(w ℓ_s), Xᵀ(w ℓ_η), Σ w ℓ_a;
Hessian Zᵀdiag(w ℓ_ss)Z, Zᵀdiag(w ℓ_sη)X, Zᵀ(w ℓ_sa), Xᵀdiag(w ℓ_ηη)X, Xᵀ(w ℓ_ηa), Σ w ℓ_aa,
with w the frequency weights. log α = −inf (α̂ = 0, the boundary) means the nested family: its
values, and the limits 0 of the log α derivatives. A family without a zero part ignores the
data's Z (q = 0). Core layer: pure functions, no I/O, no module state.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from pipeline.core.laws.count_terms import family_terms
from pipeline.core.model import Family, FitData, family, nested

_SINGULAR_TOL = 1e-11  # smallest |eigenvalue| of the diagonally scaled information, relative


class Prepared(NamedTuple):
    """One family's data, rows of zero weight dropped; transposes and torch views built once."""

    family: Family
    X: np.ndarray  # (n, p)
    Z: np.ndarray  # (n, q), q = 0 without a zero part
    XT: np.ndarray  # contiguous transposes: the fast layout for the Hessian products
    ZT: np.ndarray
    y: np.ndarray
    w: np.ndarray  # frequency weights, all > 0
    ox: np.ndarray  # offsets of η and s
    oz: np.ndarray
    y_t: torch.Tensor
    lgy_t: torch.Tensor  # lgamma(y + 1): data only, computed once
    zero_t: torch.Tensor

    @property
    def data(self) -> FitData:
        return FitData(self.X, self.Z, self.y, self.w, self.ox, self.oz)

    def rows(self, keep) -> Prepared:
        return prepare(self.family, self.data.rows(keep))


class Point(NamedTuple):
    """The weighted total log-likelihood at one parameter vector, and what the fit reuses."""

    ll: float
    grad: np.ndarray | None  # (k,), order >= 1
    hess: np.ndarray | None  # (k, k), order 2
    s: np.ndarray  # linear predictors (s empty without a zero part)
    eta: np.ndarray
    size: float  # Σ w |ℓ_i|: the scale of rounding in ll


def zero_design(fam: Family, data: FitData) -> np.ndarray:
    """The zero design `fam` uses: the data's Z, or no columns without a zero part.

    Raises:
        ValueError: when `fam` has a zero part and Z has no columns.
    """
    if fam.zero is None:
        return data.Z[:, :0]
    if data.Z.shape[1] == 0:
        raise ValueError(f"family {fam.name!r} needs at least one zero-part column in Z")
    return data.Z


def prepare(fam, data: FitData) -> Prepared:
    """`Prepared` data of `fam` (a name or `Family`), keeping the rows of positive weight."""
    fam = family(fam)
    Z = zero_design(fam, data)
    keep = data.weights > 0
    X, y, w, ox, oz = data.X, data.y, data.weights, data.offset_x, data.offset_z
    if not keep.all():
        X, Z, y, w, ox, oz = X[keep], Z[keep], y[keep], w[keep], ox[keep], oz[keep]
    y_t = torch.from_numpy(y)
    return Prepared(fam, X, Z, np.ascontiguousarray(X.T), np.ascontiguousarray(Z.T), y, w, ox,
                    oz, y_t, torch.lgamma(y_t + 1), y_t == 0)  # fmt: skip


def n_params(fam, q: int, p: int) -> int:
    """Number of parameters: q + p (+ 1 for log α)."""
    return q + p + int(family(fam).dispersion)


def check_params(fam, q: int, p: int, params) -> np.ndarray:
    """params as float64 (k,); only log α may be −inf (the boundary).

    Raises:
        ValueError: on a wrong shape or a non-finite coefficient.
    """
    theta = np.asarray(params, dtype=float)
    k = n_params(fam, q, p)
    if theta.shape != (k,):
        name = family(fam).name
        raise ValueError(f"params must have shape ({k},) for {name!r}, got {theta.shape}")
    if not np.isfinite(theta[: q + p]).all() or (k > q + p and not theta[-1] < np.inf):
        raise ValueError("params must be finite (log alpha may be -inf)")
    return theta


def at_boundary(prep: Prepared, theta) -> tuple[Prepared, np.ndarray]:
    """The nested family's data and parameters at log α = −inf, else the inputs unchanged."""
    if prep.family.dispersion and theta[-1] == -np.inf:
        return prep._replace(family=nested(prep.family)), theta[:-1]
    return prep, theta


def _predictors(fam: Family, X, Z, ox, oz, theta):
    """(s, eta) as numpy and (s, eta, a) as torch float64 views (s a 0-d zero when q = 0)."""
    q, p = Z.shape[1], X.shape[1]
    s, eta = Z @ theta[:q] + oz, X @ theta[q : q + p] + ox
    a = torch.tensor(theta[-1], dtype=torch.float64) if fam.dispersion else None
    s_t = torch.from_numpy(s) if q else torch.zeros((), dtype=torch.float64)
    return s, eta, (s_t, torch.from_numpy(eta), a)


def terms(prep: Prepared, theta, order: int):
    """(family_terms as numpy arrays (None where absent), s, eta) at theta (finite log α)."""
    s, eta, (s_t, eta_t, a_t) = _predictors(prep.family, prep.X, prep.Z, prep.ox, prep.oz, theta)
    t = family_terms(prep.family.name, prep.y_t, prep.lgy_t, prep.zero_t, s_t, eta_t, a_t,
                     order=order)  # fmt: skip
    return t._replace(**{k: v.numpy() for k, v in t._asdict().items() if v is not None}), s, eta


def evaluate(prep: Prepared, theta, order: int = 2) -> Point:
    """Weighted total log-likelihood, and its gradient (order >= 1) and Hessian (order 2).

    Args:
        prep: the `Prepared` data; theta: (k,) parameters, log α finite; order: 0, 1 or 2.

    Returns:
        The `Point`.
    """
    t, s, eta = terms(prep, theta, order)
    w = prep.w
    with np.errstate(invalid="ignore", over="ignore"):  # -inf terms at wild points: ll = -inf
        wll = w * t.ll
        ll, size = float(np.nan_to_num(wll.sum(), nan=-np.inf)), float(np.abs(wll).sum())
    if order == 0:
        return Point(ll, None, None, s, eta, size)
    q, disp = prep.Z.shape[1], prep.family.dispersion
    grad = [prep.ZT @ (w * t.d_s)] if q else []
    grad.append(prep.XT @ (w * t.d_eta))
    if disp:
        grad.append(np.array([w @ t.d_a]))
    grad = np.concatenate(grad)
    if order == 1:
        return Point(ll, grad, None, s, eta, size)
    XT, ZT, k, b = prep.XT, prep.ZT, len(grad), slice(q, len(grad) - disp)
    hess = np.empty((k, k))
    hess[b, b] = (XT * (w * t.d_eta_eta)) @ prep.X
    if q:
        hess[:q, :q] = (ZT * (w * t.d_ss)) @ prep.Z
        hess[:q, b] = (ZT * (w * t.d_s_eta)) @ prep.X
        hess[b, :q] = hess[:q, b].T
    if disp:
        cross = [ZT @ (w * t.d_s_a)] if q else []
        hess[-1, :-1] = hess[:-1, -1] = np.concatenate([*cross, XT @ (w * t.d_eta_a)])
        hess[-1, -1] = w @ t.d_a_a
    return Point(ll, grad, hess, s, eta, size)


def score_matrix(prep: Prepared, theta, boundary: bool = False) -> np.ndarray:
    """(n, k) per-observation gradients (unweighted) at finite theta; with `boundary`, a zero
    log α column is appended (prep and theta are then the nested family's)."""
    t, _, _ = terms(prep, theta, 1)
    cols = [prep.Z * t.d_s[:, None]] if prep.Z.shape[1] else []
    cols.append(prep.X * t.d_eta[:, None])
    if prep.family.dispersion:
        cols.append(t.d_a[:, None])
    if boundary:
        cols.append(np.zeros((len(prep.y), 1)))
    return np.hstack(cols)


def inverse(info) -> np.ndarray | None:
    """Inverse of a symmetric matrix, computed in diagonally scaled coordinates.

    Args:
        info: a symmetric (k, k) matrix (the observed information).

    Returns:
        The inverse, or None when it is numerically singular (`_SINGULAR_TOL`).
    """
    d = np.abs(np.diag(info))
    scale = 1.0 / np.sqrt(np.where(d > 0, d, 1.0))
    vals, vecs = np.linalg.eigh(info * scale[:, None] * scale[None, :])
    if not np.isfinite(vals).all() or np.abs(vals).min() <= _SINGULAR_TOL * np.abs(vals).max():
        return None
    return (vecs / vals) @ vecs.T * scale[:, None] * scale[None, :]


def blocks(fam: Family, q: int, k: int) -> list[np.ndarray]:
    """Index sets of the k parameters whose information is inverted together: one set, or the
    zero part and the count part of a hurdle (their cross block is exactly 0)."""
    if fam.zero == "hurdle":
        return [np.arange(q), np.arange(q, k)]
    return [np.arange(k)]


def block_inverse(info, parts) -> np.ndarray:
    """Inverse of a block-diagonal `info` block by block over `parts` (index arrays that
    partition it): 0 between blocks, NaN in the rows and columns of a block that is numerically
    singular (`inverse`).

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


def covariances(prep: Prepared, params) -> tuple[np.ndarray, np.ndarray]:
    """Model-based and robust covariances at `params` (log α may be −inf).

    Model-based: the inverse observed information (−H)⁻¹, log α included (blockwise for a
    hurdle). Robust: the HC0 sandwich H⁻¹ (Σ w g gᵀ) H⁻¹ over the full parameter vector (θ's
    score included in the meat, unlike pscl's `sandwich`). Both NaN where the information is
    singular, and in the log α row and column at the boundary (the rest is the nested model's).

    Returns:
        (model-based (k, k), robust (k, k)).
    """
    sub, theta = at_boundary(prep, params)
    k, kk = len(params), len(theta)
    point = evaluate(sub, theta, 2)
    inv = block_inverse(-point.hess, blocks(sub.family, sub.Z.shape[1], kk))
    model, robust = np.full((k, k), np.nan), np.full((k, k), np.nan)
    model[:kk, :kk] = inv
    g = score_matrix(sub, theta)
    ok = np.flatnonzero(np.isfinite(np.diag(inv)))
    bread = inv[np.ix_(ok, ok)]
    robust[np.ix_(ok, ok)] = bread @ ((g[:, ok].T * sub.w) @ g[:, ok]) @ bread
    return model, robust


def _setup(fam, data: FitData, params):
    prep = prepare(fam, data)
    theta = check_params(prep.family, prep.Z.shape[1], prep.X.shape[1], params)
    sub, sub_theta = at_boundary(prep, theta)
    return prep, sub, sub_theta, sub is not prep


def loglik_terms(fam, data: FitData, params) -> np.ndarray:
    """Per-observation log P(Y_i = y_i), lgamma(y + 1) included, unweighted, every row.

    Args:
        fam: a family name or `Family`; data: the `FitData` (weights ignored).
        params: (k,) [γ, β, (log α)]; log α = −inf is the nested (Poisson-limit) family.

    Returns:
        (n,) float64 log-probabilities.
    """
    data = FitData(data.X, data.Z, data.y, np.ones(data.n), data.offset_x, data.offset_z)
    _, sub, theta, _ = _setup(fam, data, params)
    return terms(sub, theta, 0)[0].ll


def gradient_hessian(fam, data: FitData, params) -> tuple[float, np.ndarray, np.ndarray]:
    """Analytic weighted total log-likelihood, gradient and Hessian in [γ, β, (log α)].

    Args:
        fam, data, params: as in `loglik_terms` (the weights count here).

    Returns:
        (log-likelihood, gradient (k,), Hessian (k, k)); at log α = −inf the log α entries
        are their limits, 0.
    """
    _, sub, theta, boundary = _setup(fam, data, params)
    point = evaluate(sub, theta, 2)
    if not boundary:
        return point.ll, point.grad, point.hess
    return point.ll, np.r_[point.grad, 0.0], np.pad(point.hess, ((0, 1), (0, 1)))


def scores(fam, data: FitData, params) -> np.ndarray:
    """Per-observation gradients of log P(Y_i = y_i), unweighted, rows of positive weight
    (sandwich SEs, Vuong tests).

    Returns:
        (n, k) array whose weighted column sums are the gradient; the log α column is 0 at −inf.
    """
    _, sub, theta, boundary = _setup(fam, data, params)
    return score_matrix(sub, theta, boundary)


def expected_frequencies(fam, data: FitData, params, values) -> np.ndarray:
    """Σ_i w_i P(Y_i = v) for each v in `values` (rootograms), one value at a time.

    Args:
        fam, data, params: as in `gradient_hessian` (data.y is not used).
        values: non-negative integer counts.

    Returns:
        float64 array with the shape of `values`.
    """
    _, sub, theta, _ = _setup(fam, data, params)
    v = np.asarray(values, dtype=float)
    if not np.isfinite(v).all() or (v < 0).any() or (v != np.floor(v)).any():
        raise ValueError("values must be non-negative integers")
    _, _, (s_t, eta_t, a_t) = _predictors(sub.family, sub.X, sub.Z, sub.ox, sub.oz, theta)
    out = np.empty(v.size)
    for k, val in enumerate(v.ravel()):  # no n x K temporaries
        y = torch.tensor(val, dtype=torch.float64)
        ll = family_terms(sub.family.name, y, torch.lgamma(y + 1), y == 0, s_t, eta_t, a_t,
                          order=0).ll  # fmt: skip
        out[k] = float(sub.w @ ll.exp().numpy())
    return out.reshape(v.shape)
