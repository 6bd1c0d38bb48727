"""The float64 Newton oracle: `fit_model(family, data)` for every count family and design.

Families and parametrisation as in `core.model` (s = Zγ + o_z zero part, η = Xβ + o_x log
mean, a = log α); parameters in [γ, β, (log α)] order; the likelihood, scores, Hessian and
covariances from `terms`, the damped Newton from `newton`. The intercept-only ZIP and Poisson
(both designs one constant column, no offsets, no start given) take the closed form of
`mle.zip_estimate` instead of Newton (scikit-learn's solver="auto": the caller does not
choose). Each family with a dispersion is fitted after its nested α = 0 family (nb after
poisson, zinb after zip, hurdle_nb after hurdle_poisson): when the one-sided score for α at
α = 0 is <= 0 the MLE is on the boundary α̂ = 0 and the nested estimates are returned with
log α = −inf; otherwise Newton runs from them and a moment estimate of α. A hurdle's
log-likelihood is a logistic part plus a zero-truncated count part, so the two are fitted
apart (the count part stays right when the zero part separates). Weights are frequency
weights: a fit on (values, frequencies) is the fit on the expanded data. Core layer: pure
functions, no I/O, no module state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg.lapack
from scipy.special import expit

from pipeline.core.errors import NotIdentifiableError
from pipeline.core.model import Family, FitData, family, nested
from pipeline.core.oracle.mle import zip_estimate
from pipeline.core.oracle.newton import ALPHA_FLOOR, Run, newton
from pipeline.core.oracle.terms import (
    Prepared,
    at_boundary,
    check_params,
    covariances,
    evaluate,
    prepare,
    terms,
)

STATUSES = ("converged", "max_iter", "singular", "separated", "boundary")

_TINY_ALPHA = 1e-10  # α at which the one-sided score d l / d α at 0 is evaluated (d_a / α)
_ALPHA_START = (1e-3, 10.0)  # the moment estimate of α is clipped to this range
_RANK_TOL = 1e-12  # pivot of the normalised Gram matrix: a column's residual below 1e-6 of it


@dataclass(frozen=True, eq=False)
class OracleFit:
    """A fit of the Newton oracle.

    Attributes:
        family: the `Family`.
        params: (k,) estimates [γ (q), β (p), (log α)], log α −inf when α̂ = 0 (boundary).
        q: number of zero-part coefficients (0 without a zero part).
        cov: (k, k) model-based covariance, the inverse observed information (log α included),
            NaN where singular; at the boundary the log α row and column are NaN and the rest
            is the nested model's.
        robust_cov: (k, k) HC0 sandwich covariance over all parameters (NaN as `cov`).
        loglik: total weighted log-likelihood; nll: −loglik / Σ weights.
        grad_norm: max |gradient of the mean log-likelihood| at the estimate.
        iterations: Newton iterations taken (nested fits and both hurdle parts included; 0
            for the closed form).
        status: one of STATUSES; message: one readable line saying what happened.
    """

    family: Family
    params: np.ndarray
    q: int
    cov: np.ndarray
    robust_cov: np.ndarray
    loglik: float
    nll: float
    grad_norm: float
    iterations: int
    status: str
    message: str

    @property
    def gamma(self) -> np.ndarray:
        """Zero-part coefficients (q,) (empty without a zero part)."""
        return self.params[: self.q]

    @property
    def beta(self) -> np.ndarray:
        """Count-part coefficients (p,)."""
        return self.params[self.q : len(self.params) - int(self.family.dispersion)]

    @property
    def log_alpha(self) -> float | None:
        """log α (−inf at the boundary), None without a dispersion."""
        return float(self.params[-1]) if self.family.dispersion else None

    @property
    def alpha(self) -> float | None:
        """exp(log α): 0.0 at the boundary, None without a dispersion."""
        return None if self.log_alpha is None else math.exp(self.log_alpha)

    @property
    def se(self) -> np.ndarray:
        """Model-based standard errors, sqrt(diag(cov))."""
        with np.errstate(invalid="ignore"):
            return np.sqrt(np.diag(self.cov))

    @property
    def robust_se(self) -> np.ndarray:
        """Robust (HC0 sandwich) standard errors."""
        with np.errstate(invalid="ignore"):
            return np.sqrt(np.diag(self.robust_cov))

    @property
    def se_gamma(self) -> np.ndarray:
        return self.se[: self.q]

    @property
    def se_beta(self) -> np.ndarray:
        return self.se[self.q : len(self.params) - int(self.family.dispersion)]

    @property
    def n_params(self) -> int:
        """Free parameters estimated (log α counted at the boundary too)."""
        return len(self.params)

    @property
    def pi(self) -> float:
        """π̂ of the intercept-only model on the ones-design: σ(γ₀) for zip/zinb, 0 without a
        zero part. A hurdle has no structural zero: its γ₀ is logit P(Y > 0)."""
        self._intercept_only()
        if self.family.zero == "hurdle":
            raise ValueError("a hurdle has no structural-zero probability pi (gamma is P(Y>0))")
        return float(expit(self.gamma[0])) if self.q else 0.0

    @property
    def lam(self) -> float:
        """λ̂ = exp(β₀) of the intercept-only model on the ones-design."""
        self._intercept_only()
        return math.exp(self.beta[0])

    def _intercept_only(self) -> None:
        if len(self.beta) != 1 or self.q > 1:
            raise ValueError("pi and lam are views of an intercept-only fit")


def independent_columns(A) -> np.ndarray:
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


def _logit_start(data: Prepared, share: float) -> np.ndarray:
    """γ with Zγ ≈ logit(share) − o_z (exactly, when Z spans the constant)."""
    share = float(np.clip(share, 0.01, 0.99))
    gram = (data.ZT * data.w) @ data.Z
    target = math.log(share / (1 - share)) - data.oz
    return np.linalg.lstsq(gram, data.ZT @ (data.w * target), rcond=None)[0]


def _poisson_start(data: Prepared, steps: int) -> np.ndarray:
    """β of a weighted log-linear least-squares guess, then `steps` Newton steps of the Poisson
    (4 are enough for a start)."""
    pois = data._replace(family=family("poisson"), Z=data.Z[:, :0], ZT=data.ZT[:0])
    gram = (pois.XT * pois.w) @ pois.X
    target = np.log(pois.y + 0.5) - pois.ox
    beta = np.linalg.lstsq(gram, pois.XT @ (pois.w * target), rcond=None)[0]
    return beta if steps == 0 else newton(pois, beta, np.arange(len(beta)), steps).theta


def _start(data: Prepared) -> np.ndarray:
    """Default start of a family without a dispersion."""
    positive = data.y > 0
    share_positive = float(data.w[positive].sum() / data.w.sum())
    if data.family.zero is None:
        return _poisson_start(data, 0)
    beta = _poisson_start(data.rows(positive), 4)
    if data.family.zero == "hurdle":
        return np.r_[_logit_start(data, share_positive), beta]
    with np.errstate(over="ignore"):
        p0 = float(data.w @ np.exp(-np.exp(data.X @ beta + data.ox)) / data.w.sum())
    pi = (1 - share_positive - p0) / max(1 - p0, 1e-12)
    return np.r_[_logit_start(data, pi), beta]


def _closed_form(data: Prepared) -> Run | None:
    """The exact MLE of the intercept-only ZIP or Poisson (None: not that case, or the ZIP's
    maximum is on the boundary π = 0, which Newton reports as separation)."""
    fam, X, Z = data.family, data.X, data.Z

    def constant(A) -> bool:
        return A.shape[1] == 1 and bool((A == A[0, 0]).all()) and A[0, 0] != 0

    simple = fam.name in ("poisson", "zip") and constant(X) and (fam.zero is None or constant(Z))
    if not simple or data.ox.any() or data.oz.any():
        return None
    w, y = data.w, data.y
    n, n_pos, total = float(w.sum()), float(w[y > 0].sum()), float(w @ y)
    if fam.zero is None:
        theta = np.array([math.log(total / n) / X[0, 0]])
    else:
        pi, lam = zip_estimate(n, n_pos, total)
        if pi <= 0:
            return None
        theta = np.array([math.log(pi / (1 - pi)) / Z[0, 0], math.log(lam) / X[0, 0]])
    ll = evaluate(data, theta, 0).ll
    return Run(theta, ll, "converged", "converged: closed form (intercept-only)", 0)


def _run(data: Prepared, theta, max_iter: int) -> Run:
    """Newton from theta; a hurdle's zero part and count part (on the positives) apart."""
    q, k = data.Z.shape[1], len(theta)
    if data.family.zero != "hurdle":
        return newton(data, theta, np.arange(k), max_iter)
    zero = newton(data, theta, np.arange(q), max_iter)
    count = newton(data.rows(data.y > 0), zero.theta, np.arange(q, k), max_iter)
    theta = count.theta
    statuses = {zero.status, count.status}
    status = next(s for s in ("separated", "boundary", "max_iter", "converged") if s in statuses)
    message = f"zero part {zero.message}; count part {count.message}"
    ll = evaluate(data, theta, 0).ll
    return Run(theta, ll, status, message, zero.iterations + count.iterations)


def alpha_score(data: Prepared, theta_nested) -> float:
    """One-sided score d l / d α at α = 0 of a family with a dispersion, at the nested model's
    parameters: Σ w d_a / α at a tiny α (for the NB, Σ w ((y − μ)² − y)/2)."""
    t, _, _ = terms(data, np.r_[theta_nested, math.log(_TINY_ALPHA)], 1)
    return float(data.w @ t.d_a / _TINY_ALPHA)


def _moment_log_alpha(data: Prepared, theta_nested) -> float:
    """log α from the excess variance over the nested model's, clipped to `_ALPHA_START`."""
    q, y, w = data.Z.shape[1], data.y, data.w
    with np.errstate(over="ignore", invalid="ignore"):
        mu = np.exp(data.X @ theta_nested[q:] + data.ox)
        mean, base, scale = mu, mu, mu * mu  # Var = μ + αμ² over the Poisson's μ
        if data.family.zero == "inflation":
            pi = expit(data.Z @ theta_nested[:q] + data.oz)
            mean = (1 - pi) * mu
            base, scale = mean * (1 + pi * mu), (1 - pi) * mu * mu
        elif data.family.zero == "hurdle":
            w = w * (y > 0)  # the positives, as if untruncated: a start needs no more
        alpha = (w @ ((y - mean) ** 2 - base)) / (w @ scale)
    alpha = alpha if np.isfinite(alpha) else 0.1
    return math.log(float(np.clip(alpha, *_ALPHA_START)))


def _boundary(nest: Run, score: float, iterations: int, how: str) -> Run:
    """The nested fit as the boundary estimate α̂ = 0 (status kept when it did not converge)."""
    status = "boundary" if nest.status == "converged" else nest.status
    text = f"alpha_hat = 0 (the Poisson limit): {how}, score for alpha at 0 = {score:.3g}"
    return Run(np.r_[nest.theta, -np.inf], nest.ll, status, f"{text}; {nest.message}", iterations)


def _estimate(data: Prepared, start, max_iter: int) -> Run:
    """The MLE of data.family from `start` (None: the closed form or the default start)."""
    if not data.family.dispersion:
        if start is None:
            closed = _closed_form(data)
            if closed is not None:
                return closed
        return _run(data, _start(data) if start is None else start, max_iter)
    inner = data._replace(family=nested(data.family))
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


def fit_model(fam, data: FitData, *, start=None, max_iter: int = 200) -> OracleFit:
    """Maximum-likelihood fit of `fam` to `data` by damped Newton-Raphson in float64 (the
    closed form for the intercept-only ZIP and Poisson).

    Args:
        fam: a family name or `Family`.
        data: the `FitData` (a family without a zero part ignores its Z).
        start: optional (k,) [γ, β, (log α)]; log α −inf (or below log 1e-8) starts from the
            nested family. Default: the nested family's fit and a moment estimate of α.
        max_iter: Newton iteration limit of each run.

    Returns:
        The `OracleFit`; status "boundary" when α̂ = 0, "separated" when a coefficient runs off
        to ±inf, "singular" (NaN covariances) for collinear columns (fixed at 0) or singular
        information.

    Raises:
        NotIdentifiableError: when every count of positive weight is zero.
        ValueError: on an unknown family, a zero part without Z columns, or a bad start.
    """
    prep = prepare(fam, data)
    fam = prep.family
    X, Z, y = prep.X, prep.Z, prep.y
    p, q = X.shape[1], Z.shape[1]
    if not (y > 0).any():
        raise NotIdentifiableError("all counts are zero: the regression is not identifiable")
    keep_z = independent_columns(Z)
    keep_x = independent_columns(X[y > 0] if fam.zero == "hurdle" else X)
    dropped = len(keep_z) < q or len(keep_x) < p
    theta = None
    if start is not None:
        theta = check_params(fam, q, p, start)
        theta = np.r_[theta[:q][keep_z], theta[q : q + p][keep_x], theta[q + p :]]
    sub = prepare(fam, prep.data.columns(keep_x, keep_z)) if dropped else prep
    run = _estimate(sub, theta, max_iter)
    gamma, beta, qz = np.zeros(q), np.zeros(p), len(keep_z)
    gamma[keep_z], beta[keep_x] = run.theta[:qz], run.theta[qz : qz + len(keep_x)]
    params = np.r_[gamma, beta, run.theta[-1:] if fam.dispersion else []]
    inner, inner_theta = at_boundary(prep, params)
    point = evaluate(inner, inner_theta, 1)
    k = len(params)
    cov, robust = (np.full((k, k), np.nan),) * 2 if dropped else covariances(prep, params)
    status, message = run.status, run.message
    kk = len(inner_theta)
    if dropped:
        lost = [f"zero {j}" for j in sorted(set(range(q)) - set(keep_z))]
        lost += [f"count {j}" for j in sorted(set(range(p)) - set(keep_x))]
        message = f"collinear columns ({', '.join(lost)}) fixed at 0; {message}"
    elif np.isnan(cov[:kk, :kk]).any():
        message = f"singular information at the estimate; {message}"
    if np.isnan(cov[:kk, :kk]).any() and status != "separated":
        status = "singular"
    total = float(prep.w.sum())
    return OracleFit(fam, params, q, cov, robust, point.ll, -point.ll / total,
                     float(np.abs(point.grad).max() / total), run.iterations, status,
                     message)  # fmt: skip
