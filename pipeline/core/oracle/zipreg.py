"""Float64 Newton-Raphson oracle for zero-inflated Poisson (ZIP) regression.

log lambda_i = x_i' beta (count part, X n x p), logit pi_i = z_i' gamma (zero part, Z n x q),
pi_i the probability of a structural zero; parameters in [gamma, beta] order, the likelihood,
gradient and Hessian from `zipreg_terms`. A design Z with no columns means the plain Poisson.
Converged means a squared Newton decrement <= 1e-20 (the step is < 1e-10 standard errors);
separation means one coefficient keeps running past a shift of 30 on the logit/log scale while
the likelihood only creeps up. Core layer: numpy/scipy only, pure functions, no I/O, no module
state.
"""

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.linalg.lapack

from pipeline.core.errors import NotIdentifiableError
from pipeline.core.oracle.zipreg_terms import (
    Split,
    derivatives,
    design_arrays,
    evaluate,
    inverse,
    split,
)

STATUSES = ("converged", "max_iter", "singular", "separated")

_DECREMENT_TOL = 1e-20  # squared Newton step in standard-error units: ~1e-10 SE from the optimum
_NEWTON_REGION = 1e-6  # decrement below which a full Newton step is trusted (line search is noise)
_RUNOFF = 30.0  # logit/log shift of one coefficient beyond which pi or lambda is numerically 0/1
_MAX_MOVE = 5.0  # largest change of any s_i or eta_i in one step
_RUNOFF_STEPS = 3  # consecutive growing steps past _RUNOFF that mean separation
_CREEP = 1e-9  # mean log-likelihood gain per step of a runaway coefficient (~e^-30 in fact)
_RANK_TOL = 1e-12  # pivot of the normalised Gram matrix: a column's residual below 1e-6 of it


@dataclass(frozen=True)
class RegFit:
    """A ZIP (or Poisson, q = 0) regression fit.

    Attributes:
        gamma, beta: zero-part (q,) and count-part (p,) coefficients.
        loglik: total log-likelihood; nll: -loglik / n.
        cov: (q+p, q+p) inverse observed information, NaN when singular.
        se_gamma, se_beta: square roots of the diagonal of `cov`.
        grad_norm: max |gradient| of the mean log-likelihood at the estimate.
        iterations: Newton iterations taken.
        status: one of STATUSES; message: one readable line saying what happened.
    """

    gamma: np.ndarray
    beta: np.ndarray
    loglik: float
    nll: float
    cov: np.ndarray
    se_gamma: np.ndarray
    se_beta: np.ndarray
    grad_norm: float
    iterations: int
    status: str
    message: str


def newton_direction(grad, hess):
    """Newton direction for ascent; Levenberg-damped (in diagonally scaled coordinates) when
    -H is not positive definite (also used by `countreg`).

    Args:
        grad, hess: gradient (k,) and Hessian (k, k) of the log-likelihood.

    Returns:
        (direction (k,), squared Newton decrement, or inf when damped or gradient ascent).
    """
    info = -hess
    d = np.abs(np.diag(info))
    scale = 1.0 / np.sqrt(np.where(d > 0, d, 1.0))
    a, g = info * scale[:, None] * scale[None, :], grad * scale
    tau = 0.0
    while True:
        try:
            c = scipy.linalg.cho_factor(a + tau * np.eye(len(g)))
            step = scipy.linalg.cho_solve(c, g)
            if np.isfinite(step).all():
                return step * scale, (float(g @ step) if tau == 0 else np.inf)
        except np.linalg.LinAlgError:
            pass
        tau = 1e-8 if tau == 0 else tau * 10
        if tau > 1e12:
            return grad, np.inf  # plain gradient ascent


def _runoff(d: Split, theta, cache):
    """(index into theta, its design's max |entry|, message) of a coefficient that drives pi to
    0/1 or lambda to 0 numerically, else None."""
    (s0, eta0, *_), (s1, eta1, *_), _, _ = cache
    q = d.Z0.shape[0]
    zero_gone = q > 0 and max(np.abs(s0).max(initial=0), np.abs(s1).max(initial=0)) > _RUNOFF
    rate_gone = min(eta0.min(initial=0), eta1.min(initial=0)) < -_RUNOFF
    for part, gone, A0, A1, first in (("zero", zero_gone, d.Z0, d.Z1, 0),
                                      ("count", rate_gone, d.X0, d.X1, q)):  # fmt: skip
        if gone:
            size = np.maximum(np.abs(A0).max(axis=1, initial=0), np.abs(A1).max(axis=1, initial=0))
            coef = theta[first : first + len(size)]
            j = int(np.argmax(np.abs(coef) * size))
            if abs(coef[j]) * size[j] > _RUNOFF:
                limit = (
                    ("pi -> 1" if coef[j] > 0 else "pi -> 0") if part == "zero" else "lambda -> 0"
                )
                side = "+inf" if coef[j] > 0 else "-inf"
                return (
                    first + j,
                    size[j],
                    f"{part}-part coefficient {j} runs off to {side} ({limit})",
                )
    return None


def _newton(d: Split, theta, max_iter):
    """Damped Newton ascent; returns (theta, status, message, iterations)."""
    with np.errstate(over="ignore"):  # sums of terms near -1e308 from a wild start are -inf
        return _newton_loop(d, theta, max_iter)


def _newton_loop(d: Split, theta, max_iter):
    ll0, ll1, cache = evaluate(d, theta)
    ll, streak, last = ll0.sum() + ll1.sum(), 0, None
    for it in range(max_iter):
        grad, hess = derivatives(d, cache)
        step, dec = newton_direction(grad, hess)
        if dec <= _DECREMENT_TOL:
            return theta, "converged", f"converged: Newton decrement {dec:.1e}", it
        q = d.Z0.shape[0]
        pairs = ((step[:q], d.Z0), (step[:q], d.Z1), (step[q:], d.X0), (step[q:], d.X1))
        move = max(np.abs(c @ A).max(initial=0) for c, A in pairs)
        if move > _MAX_MOVE:  # far from the optimum: a trust region on the linear predictors
            step = step * (_MAX_MOVE / move)
        slack = 64 * np.finfo(float).eps * (np.abs(ll0).sum() + np.abs(ll1).sum())  # rounding
        slope, t = float(grad @ step), 1.0
        while t > 1e-14:
            new = theta + t * step
            ll0, ll1, new_cache = evaluate(d, new)
            ll_new = ll0.sum() + ll1.sum()
            if ll_new >= ll + 1e-4 * t * slope or (dec < _NEWTON_REGION and ll_new >= ll - slack):
                break
            t *= 0.5
        else:
            if dec < _NEWTON_REGION:
                return theta, "converged", f"converged to rounding (decrement {dec:.1e})", it
            return theta, "max_iter", "the line search stalled before convergence", it
        hit = _runoff(d, new, new_cache)
        # Separation: the same coefficient keeps running away (its shift of the linear predictor
        # grows by >= 0.5 per step, past _RUNOFF) while the likelihood only creeps up, for
        # _RUNOFF_STEPS steps; a genuine optimum is approached with shrinking steps, and far
        # from any optimum the likelihood gains much more than _CREEP per observation.
        grows = hit is not None and (abs(new[hit[0]]) - abs(theta[hit[0]])) * hit[1] >= 0.5
        grows = grows and ll_new - ll <= _CREEP * (len(ll0) + len(ll1))
        streak = streak + 1 if grows and hit[0] == last else int(grows)
        last = hit[0] if grows else None
        theta, cache, ll = new, new_cache, ll_new
        if streak >= _RUNOFF_STEPS:
            return theta, "separated", f"separation: {hit[2]} (likelihood still rising)", it + 1
    return theta, "max_iter", f"no convergence in {max_iter} iterations", max_iter


def independent_columns(A):
    """Indices of a maximal set of linearly independent columns: pivoted Cholesky of the
    column-normalised Gram matrix, a pivot below the tolerance marking a collinear column.

    Args:
        A: (n, m) design.

    Returns:
        Sorted column indices (all-zero columns are never kept).
    """
    norms = np.linalg.norm(A, axis=0)
    if A.shape[1] == 0 or norms.max() == 0:
        return np.arange(0)
    An = A / np.where(norms > 0, norms, 1.0)
    _, piv, rank, _ = scipy.linalg.lapack.dpstrf(An.T @ An, tol=_RANK_TOL)
    return np.sort(piv[:rank] - 1)


def _start(d: Split):
    """beta from a rough Poisson fit to the positive counts, gamma from the excess-zero share."""
    q, ly = d.Z0.shape[0], np.log(d.y1)
    b0 = np.linalg.lstsq(d.X1 @ d.X1.T, d.X1 @ ly, rcond=None)[0]  # log-linear guess
    pos = Split(d.idx0[:0], d.idx1, d.X0[:, :0], d.Z0[:0, :0], d.X1, d.Z1[:0], d.y1, d.lgy1)
    beta = _newton(pos, b0, 4)[0]  # a rough Poisson fit is all a start needs
    n0, n1 = len(d.idx0), len(d.idx1)
    with np.errstate(over="ignore"):
        p0 = (np.exp(-np.exp(beta @ d.X0)).sum() + np.exp(-np.exp(beta @ d.X1)).sum()) / (n0 + n1)
    pi = float(np.clip((n0 / (n0 + n1) - p0) / max(1.0 - p0, 1e-12), 0.01, 0.99))
    gram = d.Z0 @ d.Z0.T + d.Z1 @ d.Z1.T
    rhs = (d.Z0.sum(axis=1) + d.Z1.sum(axis=1)) * np.log(pi / (1 - pi))
    return np.concatenate([np.linalg.lstsq(gram, rhs, rcond=None)[0][:q], beta])


def fit_zip_regression(X, Z, y, *, start=None, max_iter=100) -> RegFit:
    """Maximum-likelihood ZIP regression by damped Newton-Raphson in float64.

    Args:
        X: (n, p) count design; Z: (n, q) zero design; y: (n,) non-negative integer counts.
        start: optional (q+p,) starting [gamma, beta]; default: Poisson fit to the positive
            counts for beta, logit of the excess-zero share for the zero part.
        max_iter: Newton iteration limit.

    Returns:
        The `RegFit`; status "separated" when a coefficient runs off to +-inf, "singular"
        (NaN cov) for collinear columns (those coefficients fixed at 0) or singular information.

    Raises:
        NotIdentifiableError: when every count is zero.
        ValueError: on shape mismatches, non-finite designs, negative or non-integer y.
    """
    X, Z, y = design_arrays(X, Z, y)
    n, p, q = X.shape[0], X.shape[1], Z.shape[1]
    if p == 0:
        raise ValueError("X needs at least one column")
    if not (y > 0).any():
        raise NotIdentifiableError("all counts are zero: the regression is not identifiable")
    keep_z, keep_x = independent_columns(Z), independent_columns(X)
    dropped = len(keep_z) < q or len(keep_x) < p
    d = split(X[:, keep_x], Z[:, keep_z], y) if dropped else split(X, Z, y)
    if start is None:
        theta = _start(d)
    else:
        theta = np.asarray(start, dtype=float)
        if theta.shape != (q + p,):
            raise ValueError(f"start must have shape ({q + p},), got {theta.shape}")
        theta = np.concatenate([theta[:q][keep_z], theta[q:][keep_x]])
    theta, status, message, iters = _newton(d, theta, max_iter)
    gamma, beta = np.zeros(q), np.zeros(p)
    gamma[keep_z], beta[keep_x] = theta[: len(keep_z)], theta[len(keep_z) :]
    if dropped:
        d = split(X, Z, y)
    ll0, ll1, cache = evaluate(d, np.concatenate([gamma, beta]))
    grad, hess = derivatives(d, cache)
    inv = None if dropped else inverse(-hess)
    if dropped:
        lost = [f"zero {j}" for j in sorted(set(range(q)) - set(keep_z))]
        lost += [f"count {j}" for j in sorted(set(range(p)) - set(keep_x))]
        message = f"collinear columns ({', '.join(lost)}) fixed at 0; {message}"
    elif inv is None:
        message = f"singular information at the estimate; {message}"
    if inv is None and status != "separated":
        status = "singular"
    cov = np.full((q + p, q + p), np.nan) if inv is None else inv
    with np.errstate(invalid="ignore"):
        se = np.sqrt(np.diag(cov))
    ll = float(ll0.sum() + ll1.sum())
    return RegFit(gamma, beta, ll, -ll / n, cov, se[:q], se[q:], float(np.abs(grad).max() / n),
                  iters, status, message)  # fmt: skip


def fit_poisson_regression(X, y, *, max_iter=100) -> RegFit:
    """Poisson GLM (log link) by Newton: the nested baseline for LR tests (gamma empty).

    Args:
        X: (n, p) design; y: (n,) counts; max_iter: Newton iteration limit.

    Returns:
        The `RegFit` with q = 0.

    Raises:
        NotIdentifiableError: when every count is zero.
    """
    X = np.asarray(X, dtype=float)
    return fit_zip_regression(X, np.zeros((len(X), 0)), y, max_iter=max_iter)
