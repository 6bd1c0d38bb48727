"""Float64 Newton oracle for count-family regressions: Poisson, NB2, ZIP, ZINB and the hurdles.

Families and parametrisation as in `count_terms` (s = Zγ zero part, η = Xβ log mean, a = log α);
parameters in [γ, β, (log α)] order; the likelihood, scores and Hessian from `countreg_terms`,
the damped Newton from `countreg_newton` (zipreg's rules). Each family with a dispersion is
fitted after its nested Poisson-limit family (nb after poisson, zinb after zip, hurdle_nb after
hurdle_poisson): when the one-sided score for α at α = 0 is <= 0 the MLE is on the boundary
α̂ = 0 and the nested estimates are returned with log α = −inf; otherwise Newton runs from them
and a moment estimate of α. A hurdle's log-likelihood is a logistic part plus a zero-truncated
count part, so the two are fitted apart (the count part stays right when the zero part
separates). Weights are frequency weights: a fit on (values, frequencies) is the fit on the
expanded data. Core layer: pure functions, no I/O, no module state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from pipeline.core.errors import NotIdentifiableError
from pipeline.core.laws.count_terms import POISSON_LIMIT, has_dispersion, zero_part
from pipeline.core.oracle.countreg_newton import ALPHA_FLOOR, Run, newton
from pipeline.core.oracle.countreg_terms import (
    CountData,
    block_inverse,
    blocks,
    check_designs,
    check_params,
    check_weights,
    count_data,
    evaluate,
    expected_frequencies,
    gradient_hessian,
    loglik_terms,
    n_coef,
    nested,
    score_matrix,
    scores,
    terms,
)
from pipeline.core.oracle.zipreg import independent_columns

__all__ = ["STATUSES", "CountFit", "alpha_score", "expected_frequencies", "fit_count_regression",
           "gradient_hessian", "loglik_terms", "sandwich_covariance", "scores"]  # fmt: skip

STATUSES = ("converged", "max_iter", "singular", "separated", "boundary")

_TINY_ALPHA = 1e-10  # α at which the one-sided score d l / d α at 0 is evaluated (d_a / α)
_ALPHA_START = (1e-3, 10.0)  # the moment estimate of α is clipped to this range


@dataclass(frozen=True)
class CountFit:
    """A count-family regression fit.

    Attributes:
        family: one of `count_terms.FAMILIES`.
        gamma, beta: zero-part (q,) (empty for poisson/nb) and count-part (p,) coefficients.
        log_alpha: log of the NB2 dispersion, None without one, −inf when α̂ = 0 (boundary).
        loglik: total weighted log-likelihood; nll: −loglik / Σ weights.
        cov: (k, k) inverse observed information in `params` order, NaN where singular; at the
            boundary the log α row and column are NaN and the rest is the nested model's.
        grad_norm: max |gradient of the mean log-likelihood| at the estimate.
        iterations: Newton iterations taken (nested fits and both hurdle parts included).
        status: one of STATUSES; message: one readable line saying what happened.
    """

    family: str
    gamma: np.ndarray
    beta: np.ndarray
    log_alpha: float | None
    loglik: float
    nll: float
    cov: np.ndarray
    grad_norm: float
    iterations: int
    status: str
    message: str

    @property
    def params(self) -> np.ndarray:
        """[γ, β, (log α)] (log α −inf at the boundary)."""
        tail = [] if self.log_alpha is None else [self.log_alpha]
        return np.concatenate([self.gamma, self.beta, tail])

    @property
    def se(self) -> np.ndarray:
        """Standard errors, sqrt(diag(cov))."""
        with np.errstate(invalid="ignore"):
            return np.sqrt(np.diag(self.cov))

    @property
    def alpha(self) -> float | None:
        """exp(log α): 0.0 at the boundary, None without a dispersion."""
        return None if self.log_alpha is None else math.exp(self.log_alpha)

    @property
    def n_params(self) -> int:
        """Free parameters estimated (log α counted at the boundary too)."""
        return len(self.gamma) + len(self.beta) + int(self.log_alpha is not None)


def _rows(data: CountData, keep) -> CountData:
    return count_data(data.family, data.X[keep], data.Z[keep], data.y[keep], data.w[keep])


def _logit_start(data: CountData, share: float) -> np.ndarray:
    """γ with Zγ ≈ logit(share) (exactly, when Z spans the constant)."""
    share = float(np.clip(share, 0.01, 0.99))
    gram = (data.ZT * data.w) @ data.Z
    return np.linalg.lstsq(gram, data.ZT @ data.w * math.log(share / (1 - share)), rcond=None)[0]


def _poisson_start(data: CountData, steps: int) -> np.ndarray:
    """β of a weighted log-linear least-squares guess, then `steps` Newton steps of the Poisson
    (4 are enough for a start)."""
    pois = data._replace(family="poisson", Z=data.Z[:, :0], ZT=data.ZT[:0])
    gram = (pois.XT * pois.w) @ pois.X
    beta = np.linalg.lstsq(gram, pois.XT @ (pois.w * np.log(pois.y + 0.5)), rcond=None)[0]
    return beta if steps == 0 else newton(pois, beta, np.arange(len(beta)), steps).theta


def _start(data: CountData) -> np.ndarray:
    """Default start of a family without a dispersion (zipreg's for the ZIP)."""
    positive = data.y > 0
    share_positive = float(data.w[positive].sum() / data.w.sum())
    if data.family == "poisson":
        return _poisson_start(data, 0)
    beta = _poisson_start(_rows(data, positive), 4)
    if data.family == "hurdle_poisson":
        return np.r_[_logit_start(data, share_positive), beta]
    with np.errstate(over="ignore"):
        p0 = float(data.w @ np.exp(-np.exp(data.X @ beta)) / data.w.sum())
    pi = (1 - share_positive - p0) / max(1 - p0, 1e-12)
    return np.r_[_logit_start(data, pi), beta]


def _run(data: CountData, theta, max_iter: int) -> Run:
    """Newton from theta; a hurdle's zero part and count part (on the positives) apart."""
    q, k = data.Z.shape[1], len(theta)
    if zero_part(data.family) != "hurdle":
        return newton(data, theta, np.arange(k), max_iter)
    zero = newton(data, theta, np.arange(q), max_iter)
    count = newton(_rows(data, data.y > 0), zero.theta, np.arange(q, k), max_iter)
    theta = count.theta
    statuses = {zero.status, count.status}
    status = next(s for s in ("separated", "boundary", "max_iter", "converged") if s in statuses)
    message = f"zero part {zero.message}; count part {count.message}"
    ll = evaluate(data, theta, 0).ll
    return Run(theta, ll, status, message, zero.iterations + count.iterations)


def alpha_score(data: CountData, theta_nested) -> float:
    """One-sided score d l / d α at α = 0 of a family with a dispersion, at the nested model's
    parameters: Σ w d_a / α at a tiny α (for the NB, Σ w ((y − μ)² − y)/2)."""
    t, _, _ = terms(data, np.r_[theta_nested, math.log(_TINY_ALPHA)], 1)
    return float(data.w @ t.d_a / _TINY_ALPHA)


def _moment_log_alpha(data: CountData, theta_nested) -> float:
    """log α from the excess variance over the nested model's, clipped to `_ALPHA_START`."""
    q, y, w = data.Z.shape[1], data.y, data.w
    with np.errstate(over="ignore", invalid="ignore"):
        mu = np.exp(data.X @ theta_nested[q:])
        mean, base, scale = mu, mu, mu * mu  # Var = μ + αμ² over the Poisson's μ
        if zero_part(data.family) == "inflation":
            pi = expit(data.Z @ theta_nested[:q])
            mean = (1 - pi) * mu
            base, scale = mean * (1 + pi * mu), (1 - pi) * mu * mu
        elif zero_part(data.family) == "hurdle":
            w = w * (y > 0)  # the positives, as if untruncated: a start needs no more
        alpha = (w @ ((y - mean) ** 2 - base)) / (w @ scale)
    alpha = alpha if np.isfinite(alpha) else 0.1
    return math.log(float(np.clip(alpha, *_ALPHA_START)))


def _boundary(nest: Run, score: float, iterations: int, how: str) -> Run:
    """The nested fit as the boundary estimate α̂ = 0 (status kept when it did not converge)."""
    status = "boundary" if nest.status == "converged" else nest.status
    text = f"alpha_hat = 0 (the Poisson limit): {how}, score for alpha at 0 = {score:.3g}"
    return Run(np.r_[nest.theta, -np.inf], nest.ll, status, f"{text}; {nest.message}", iterations)


def _estimate(data: CountData, start, max_iter: int) -> Run:
    """The MLE of data.family from `start` (None: the default start)."""
    if not has_dispersion(data.family):
        return _run(data, _start(data) if start is None else start, max_iter)
    inner = data._replace(family=POISSON_LIMIT[data.family])
    nest, used = None, 0
    if start is None or start[-1] < ALPHA_FLOOR:
        nest = _estimate(inner, None if start is None else start[:-1], max_iter)
        score, used = alpha_score(data, nest.theta), nest.iterations
        if score <= 0:
            return _boundary(nest, score, used, "score <= 0 at the nested fit")
        start = np.r_[nest.theta, _moment_log_alpha(data, nest.theta)]
    run = _run(data, start, max_iter)
    if run.theta[-1] >= ALPHA_FLOOR:
        return run._replace(iterations=run.iterations + used)
    # log α ran off: the nested model's maximum is the supremum. Refit it from where the run
    # ended and keep the better of the two nested fits.
    again = _estimate(inner, run.theta[:-1], max_iter)
    used += run.iterations + again.iterations
    best = again if nest is None or again.ll > nest.ll else nest
    how = "log alpha ran below log(1e-8) with the likelihood only creeping up"
    return _boundary(best, alpha_score(data, best.theta), used, how)


def fit_count_regression(family, X, Z, y, *, weights=None, start=None, max_iter=200) -> CountFit:
    """Maximum-likelihood count regression of `family` by damped Newton-Raphson in float64.

    Args:
        family: one of `count_terms.FAMILIES`.
        X: (n, p) count design; Z: (n, q) zero design (q = 0 for poisson/nb, >= 1 otherwise);
            y: (n,) non-negative integer counts.
        weights: (n,) non-negative frequency weights (default ones).
        start: optional (k,) [γ, β, (log α)]; log α −inf (or below log 1e-8) starts from the
            nested family. Default: the nested family's fit and a moment estimate of α.
        max_iter: Newton iteration limit of each run.

    Returns:
        The `CountFit`; status "boundary" when α̂ = 0, "separated" when a coefficient runs off
        to ±inf, "singular" (NaN cov) for collinear columns (fixed at 0) or singular information.

    Raises:
        NotIdentifiableError: when every count of positive weight is zero.
        ValueError: on an unknown family, bad designs, counts, weights or start.
    """
    X, Z, y = check_designs(family, X, Z, y)
    n, p, q = X.shape[0], X.shape[1], Z.shape[1]
    w = check_weights(weights, n)
    if not (w[y > 0] > 0).any():
        raise NotIdentifiableError("all counts are zero: the regression is not identifiable")
    disp = has_dispersion(family)
    used = w > 0
    keep_z = independent_columns(Z[used])
    keep_x = independent_columns(X[used & (y > 0)] if zero_part(family) == "hurdle" else X[used])
    dropped = len(keep_z) < q or len(keep_x) < p
    theta = None
    if start is not None:
        theta = check_params(family, q, p, start)
        theta = np.r_[theta[:q][keep_z], theta[q : q + p][keep_x], theta[q + p :]]
    run = _estimate(count_data(family, X[:, keep_x], Z[:, keep_z], y, w), theta, max_iter)
    gamma, beta, qz = np.zeros(q), np.zeros(p), len(keep_z)
    gamma[keep_z], beta[keep_x] = run.theta[:qz], run.theta[qz : qz + len(keep_x)]
    params = np.r_[gamma, beta, run.theta[-1:] if disp else []]
    data, inner = nested(count_data(family, X, Z, y, w), params)
    point = evaluate(data, inner, 2)
    cov = np.full((n_coef(family, q, p),) * 2, np.nan)
    if not dropped:
        k = len(inner)
        cov[:k, :k] = block_inverse(-point.hess, blocks(data.family, q, p, False))
    status, message = run.status, run.message
    if dropped:
        lost = [f"zero {j}" for j in sorted(set(range(q)) - set(keep_z))]
        lost += [f"count {j}" for j in sorted(set(range(p)) - set(keep_x))]
        message = f"collinear columns ({', '.join(lost)}) fixed at 0; {message}"
    elif np.isnan(cov[: len(inner), : len(inner)]).any():
        message = f"singular information at the estimate; {message}"
    if np.isnan(cov[: len(inner), : len(inner)]).any() and status != "separated":
        status = "singular"
    total = float(w.sum())
    return CountFit(family, gamma, beta, float(params[-1]) if disp else None, point.ll,
                    -point.ll / total, cov, float(np.abs(point.grad).max() / total),
                    run.iterations, status, message)  # fmt: skip


def sandwich_covariance(family, X, Z, y, fit: CountFit, *, weights=None) -> np.ndarray:
    """Robust covariance H⁻¹ (Σ w g gᵀ) H⁻¹ at the fit (Huber-White).

    Args:
        family, X, Z, y, weights: the fit's data (as in `fit_count_regression`).
        fit: the `CountFit` of that data.

    Returns:
        (k, k) matrix, NaN where the information is singular (and in the log α row and column
        at the boundary, where the rest is the nested model's).
    """
    if fit.family != family:
        raise ValueError(f"the fit is of family {fit.family!r}, not {family!r}")
    X, Z, y = check_designs(family, X, Z, y)
    params = check_params(family, Z.shape[1], X.shape[1], fit.params)
    data, theta = nested(count_data(family, X, Z, y, check_weights(weights, len(y))), params)
    info = -evaluate(data, theta, 2).hess
    inv = block_inverse(info, blocks(data.family, Z.shape[1], X.shape[1], False))
    g = score_matrix(data, theta)
    ok = np.flatnonzero(np.isfinite(np.diag(inv)))
    bread = inv[np.ix_(ok, ok)]
    out = np.full((len(params),) * 2, np.nan)
    out[np.ix_(ok, ok)] = bread @ ((g[:, ok].T * data.w) @ g[:, ok]) @ bread
    return out
