"""Per-observation log-likelihood, gradient and Hessian of zero-inflated Poisson regression.

log lambda_i = x_i' beta (count part, X n x p), logit pi_i = z_i' gamma (zero part, Z n x q),
pi_i the probability of a structural zero. Parameters are ordered [gamma, beta] everywhere, as
in statsmodels. The analytic gradient and Hessian are those of DESIGN.md section 7, built from
per-observation weights in (s, eta) = (Z gamma, X beta). A design Z with no columns means the
plain Poisson (s = -inf). What a point of the likelihood is worth lives here: its terms, its
derivatives, the covariance and expected frequencies; `zipreg` fits with them. Core layer:
numpy/scipy only, pure functions, no I/O, no module state.
"""

from typing import NamedTuple

import numpy as np
from scipy.special import gammaln

_SINGULAR_TOL = 1e-11  # smallest |eigenvalue| of the diagonally scaled information, relative


def design_arrays(X, Z, y=None):
    """Validated float64 designs (and counts); Z may have zero columns (Poisson).

    Args:
        X: (n, p) count design; Z: (n, q) zero design; y: optional (n,) counts.

    Returns:
        (X, Z) or, with y, (X, Z, y), all float64.

    Raises:
        ValueError: on shape mismatches, non-finite designs, negative or non-integer y.
    """
    X, Z = np.asarray(X, dtype=float), np.asarray(Z, dtype=float)
    if X.ndim != 2 or Z.ndim != 2 or X.shape[0] != Z.shape[0]:
        raise ValueError(f"X and Z must be 2-D with equal rows, got {X.shape} and {Z.shape}")
    if not (np.isfinite(X).all() and np.isfinite(Z).all()):
        raise ValueError("X and Z must be finite")
    if y is None:
        return X, Z
    y = np.asarray(y)
    if y.shape != (X.shape[0],):
        raise ValueError(f"y must have shape ({X.shape[0]},), got {y.shape}")
    y = y.astype(float)
    if not np.isfinite(y).all() or (y < 0).any() or (y != np.floor(y)).any():
        raise ValueError("y must hold non-negative integer counts")
    return X, Z, y


def _params(X, Z, gamma, beta):
    gamma, beta = np.asarray(gamma, dtype=float), np.asarray(beta, dtype=float)
    if gamma.shape != (Z.shape[1],) or beta.shape != (X.shape[1],):
        raise ValueError(f"gamma/beta shapes {gamma.shape}/{beta.shape} do not match Z/X")
    return np.concatenate([gamma, beta])


class Split(NamedTuple):
    """The data split into zeros (0) and positives (1), each group with its own formula.
    Designs are stored transposed, (columns, rows): the fast layout for these products."""

    idx0: np.ndarray
    idx1: np.ndarray
    X0: np.ndarray
    Z0: np.ndarray
    X1: np.ndarray
    Z1: np.ndarray
    y1: np.ndarray
    lgy1: np.ndarray  # lgamma(y + 1) of the positives: data only, computed once


def split(X, Z, y) -> Split:
    """The data of `design_arrays` grouped into zeros and positives.

    Args:
        X, Z, y: float64 designs and counts.

    Returns:
        The `Split`.
    """
    idx0, idx1 = np.flatnonzero(y == 0), np.flatnonzero(y > 0)
    XT, ZT, y1 = np.ascontiguousarray(X.T), np.ascontiguousarray(Z.T), y[idx1]
    X0, Z0, X1, Z1 = (np.take(A, i, axis=1) for i in (idx0, idx1) for A in (XT, ZT))
    return Split(idx0, idx1, X0, Z0, X1, Z1, y1, gammaln(y1 + 1))


def _linear(ZT, XT, theta):
    """(s, eta, lam, exp(-|s|), softplus(s)) of one group; no Z columns: s = -inf (Poisson)."""
    q = ZT.shape[0]
    eta = theta[q:] @ XT
    with np.errstate(over="ignore"):
        lam = np.exp(eta)
    if q == 0:
        zeros = np.zeros_like(eta)
        return np.full_like(eta, -np.inf), eta, lam, zeros, zeros
    s = theta[:q] @ ZT
    a = np.exp(-np.abs(s))
    return s, eta, lam, a, np.maximum(s, 0.0) + np.log1p(a)


def evaluate(d: Split, theta):
    """Log-likelihood terms of each group and what the derivatives reuse. For y = 0,
    logaddexp(s, -lam) - softplus(s) is DESIGN's logaddexp(-softplus(-s), -softplus(s) - lam).

    Args:
        d: the `Split` data; theta: (q+p,) [gamma, beta].

    Returns:
        (log-likelihoods of the zeros, of the positives, cache for `derivatives`).
    """
    s0, _, lam0, _, sp0 = g0 = _linear(d.Z0, d.X0, theta)
    _, eta1, lam1, _, sp1 = g1 = _linear(d.Z1, d.X1, theta)
    t = s0 + lam0
    b = np.exp(-np.abs(t))
    ll0 = np.maximum(s0, -lam0) + np.log1p(b) - sp0
    with np.errstate(invalid="ignore"):  # inf - inf where lam overflows: -inf is the answer
        ll1 = np.nan_to_num(-sp1 + d.y1 * eta1 - lam1 - d.lgy1, nan=-np.inf)
    return ll0, ll1, (g0, g1, t, b)


def _sigmoids(x, e):
    """(sigmoid(x), sigmoid(-x)) from e = exp(-|x|), both to full relative precision."""
    big, small = 1.0 / (1.0 + e), e / (1.0 + e)
    pos = x >= 0
    return np.where(pos, big, small), np.where(pos, small, big)


def derivatives(d: Split, cache):
    """Analytic gradient and Hessian (DESIGN section 7) in [gamma, beta].

    Args:
        d: the `Split` data; cache: the third value `evaluate` returned at the point.

    Returns:
        (gradient (q+p,), Hessian (q+p, q+p)) of the total log-likelihood.
    """
    (s0, _, lam0, a0, _), (s1, _, lam1, a1, _), t, b = cache
    sig0, sigc0 = _sigmoids(s0, a0)
    sig1, sigc1 = _sigmoids(s1, a1)
    w, v = _sigmoids(t, b)  # P(structural zero | y = 0) and its complement
    wv = w * v
    h_se0 = lam0 * wv
    grad = np.concatenate(
        [d.Z0 @ (w - sig0) - d.Z1 @ sig1, d.X1 @ (d.y1 - lam1) - d.X0 @ (lam0 * v)]
    )
    h_zz = (d.Z0 * (wv - sig0 * sigc0)) @ d.Z0.T - (d.Z1 * (sig1 * sigc1)) @ d.Z1.T
    h_zx = (d.Z0 * h_se0) @ d.X0.T
    h_xx = (d.X0 * (lam0 * h_se0 - lam0 * v)) @ d.X0.T - (d.X1 * lam1) @ d.X1.T
    return grad, np.block([[h_zz, h_zx], [h_zx.T, h_xx]])


def loglik_terms(X, Z, y, gamma, beta) -> np.ndarray:
    """Per-observation ZIP log-likelihood, lgamma(y + 1) included.

    Args:
        X: (n, p) count design; Z: (n, q) zero design (q = 0: Poisson); y: (n,) counts.
        gamma, beta: (q,) and (p,) coefficients.

    Returns:
        (n,) float64 log-probabilities.
    """
    X, Z, y = design_arrays(X, Z, y)
    d = split(X, Z, y)
    ll0, ll1, _ = evaluate(d, _params(X, Z, gamma, beta))
    out = np.empty(len(y))
    out[d.idx0], out[d.idx1] = ll0, ll1
    return out


def gradient_hessian(X, Z, y, gamma, beta) -> tuple[float, np.ndarray, np.ndarray]:
    """Analytic total log-likelihood, gradient and Hessian in [gamma, beta].

    Args:
        X, Z, y, gamma, beta: as in `loglik_terms`.

    Returns:
        (total log-likelihood, gradient (q+p,), Hessian (q+p, q+p)).
    """
    X, Z, y = design_arrays(X, Z, y)
    d = split(X, Z, y)
    ll0, ll1, cache = evaluate(d, _params(X, Z, gamma, beta))
    return float(ll0.sum() + ll1.sum()), *derivatives(d, cache)


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


def covariance(X, Z, y, gamma, beta) -> np.ndarray:
    """Inverse observed information (-Hessian)^-1 at any point.

    Args:
        X, Z, y, gamma, beta: as in `loglik_terms`.

    Returns:
        (q+p, q+p) matrix, all NaN when the information is singular.
    """
    _, _, hess = gradient_hessian(X, Z, y, gamma, beta)
    inv = inverse(-hess)
    return np.full_like(hess, np.nan) if inv is None else inv


def expected_frequencies(X, Z, gamma, beta, values) -> np.ndarray:
    """Sum over observations of P(Y_i = v) for each v in `values` (rootograms).

    Args:
        X, Z, gamma, beta: as in `loglik_terms` (q = 0: Poisson).
        values: non-negative integer counts.

    Returns:
        float64 array with the shape of `values`.
    """
    X, Z = design_arrays(X, Z)
    theta = _params(X, Z, gamma, beta)
    v = np.asarray(values, dtype=float)
    if not np.isfinite(v).all() or (v < 0).any() or (v != np.floor(v)).any():
        raise ValueError("values must be non-negative integers")
    d = split(X, Z, np.zeros(len(X)))
    ll0, _, ((_, eta, lam, _, sp), *_) = evaluate(d, theta)
    out = np.empty(v.size)
    for k, val in enumerate(v.ravel()):  # one value at a time: no n x K temporaries
        log_p = ll0 if val == 0 else -sp + val * eta - lam - gammaln(val + 1)
        out[k] = np.exp(log_p).sum()
    return out.reshape(v.shape)
