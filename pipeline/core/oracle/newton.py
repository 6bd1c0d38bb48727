"""Damped Newton ascent of a count model's log-likelihood (`terms.evaluate`) over any subset of
the parameters [γ, β, (log α)] (`fit` fits the two parts of a hurdle apart).

The one Newton loop of the oracle: a Levenberg-damped direction (`newton_direction`), a trust
region of 5 on every linear predictor (and on log α), an Armijo line search, convergence on a
squared Newton decrement <= 1e-20 (the step is < 1e-10 standard errors). A coefficient that
keeps running past a shift of 30 on its linear predictor while the likelihood only creeps up
is separation; log α that keeps falling below log(1e-8) the same way is the α → 0 boundary
(the Poisson limit). Core layer: pure functions, no I/O, no module state.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import scipy.linalg

from pipeline.core.oracle.terms import Point, Prepared, evaluate

DECREMENT_TOL = 1e-20  # squared Newton step in standard-error units: ~1e-10 SE from the optimum
ALPHA_FLOOR = math.log(1e-8)  # log α below which a falling log α means α̂ = 0
_NEWTON_REGION = 1e-6  # decrement below which a full Newton step is trusted (line search is noise)
_RUNOFF = 30.0  # logit/log shift of one coefficient beyond which a probability is 0/1 in float64
_MAX_MOVE = 5.0  # largest change of any s_i, eta_i or of log α in one step
_RUNOFF_STEPS = 3  # consecutive growing steps past _RUNOFF (or ALPHA_FLOOR) that decide
_CREEP = 1e-9  # mean log-likelihood gain per step of a runaway parameter
_CAPPED_STEPS = 20  # consecutive trust-region-capped outward steps past _RUNOFF that decide


class Run(NamedTuple):
    """Where a Newton run ended: parameters, weighted log-likelihood, status, one line, steps."""

    theta: np.ndarray
    ll: float
    status: str
    message: str
    iterations: int


def newton_direction(grad, hess):
    """Newton direction for ascent; Levenberg-damped (in diagonally scaled coordinates) when
    -H is not positive definite.

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


def newton(data: Prepared, theta, free, max_iter: int) -> Run:
    """Damped Newton ascent of the log-likelihood over the parameters `free`, others fixed.

    Args:
        data: the `Prepared` data; theta: (k,) start (finite); free: indices that move;
        max_iter: iteration limit.

    Returns:
        The `Run`; status "converged", "max_iter", "separated" (a coefficient runs off) or
        "boundary" (log α runs off to −inf).
    """
    with np.errstate(over="ignore", invalid="ignore"):  # wild trial points give -inf/NaN ll
        return _loop(data, np.asarray(theta, dtype=float).copy(), np.asarray(free), max_iter)


def _move(data: Prepared, step) -> float:
    """Largest change of a linear predictor (or of log α) that `step` makes."""
    q, p = data.Z.shape[1], data.X.shape[1]
    moves = [np.abs(data.X @ step[q : q + p]).max(initial=0)]
    if q:
        moves.append(np.abs(data.Z @ step[:q]).max(initial=0))
    if data.family.dispersion:
        moves.append(abs(step[-1]))
    return max(moves)


def _loop(data: Prepared, theta, free, max_iter):
    point = evaluate(data, theta)
    total_weight, streak, capped_streak, last = float(data.w.sum()), 0, 0, None
    sizes = _column_sizes(data)
    for it in range(max_iter):
        grad = point.grad[free]
        step_free, dec = newton_direction(grad, point.hess[np.ix_(free, free)])
        if dec <= DECREMENT_TOL:
            return Run(theta, point.ll, "converged", f"converged: Newton decrement {dec:.1e}", it)
        step = np.zeros_like(theta)
        step[free] = step_free
        move = _move(data, step)
        capped = move > _MAX_MOVE
        if capped:  # far from the optimum: a trust region on the linear predictors
            step *= _MAX_MOVE / move
        slack = 64 * np.finfo(float).eps * point.size  # rounding of the summed log-likelihood
        slope, t = float(point.grad @ step), 1.0
        while t > 1e-14:
            new = theta + t * step
            trial = evaluate(data, new)
            gain = trial.ll - point.ll
            if gain >= 1e-4 * t * slope or (dec < _NEWTON_REGION and gain >= -slack):
                break
            t *= 0.5
        else:
            if dec < _NEWTON_REGION:
                return Run(theta, point.ll, "converged",
                           f"converged to rounding (decrement {dec:.1e})", it)  # fmt: skip
            return Run(theta, point.ll, "max_iter", "the line search stalled before convergence",
                       it)  # fmt: skip
        hit = _runoff(data, new, trial, free, sizes)
        # A genuine optimum is approached with shrinking steps, and far from any optimum the
        # likelihood gains much more than _CREEP per observation: a parameter that keeps moving
        # out by >= 0.5 per step while the likelihood only creeps up is running to infinity.
        # Or (quasi-complete separation on a continuous regressor: the likelihood creeps up
        # geometrically, too slowly for _CREEP within max_iter) the Newton step wants to go
        # beyond the trust region step after step: near a finite optimum it shrinks to 0.
        runaway = hit is not None and _growth(hit, theta, new, sizes) >= 0.5
        grows = runaway and gain <= _CREEP * total_weight
        same = hit is not None and hit[0] == last
        streak = streak + 1 if grows and same else int(grows)
        pushed = runaway and capped
        capped_streak = capped_streak + 1 if pushed and same else int(pushed)
        last = hit[0] if runaway else None
        theta, point = new, trial
        if streak >= _RUNOFF_STEPS or capped_streak >= _CAPPED_STEPS:
            if hit[2] == "dispersion":
                text = f"log alpha runs off to -inf (now {theta[-1]:.1f}; alpha -> 0)"
                return Run(theta, point.ll, "boundary", text, it + 1)
            return Run(theta, point.ll, "separated",
                       f"separation: {hit[1]} (likelihood still rising)", it + 1)  # fmt: skip
    return Run(theta, point.ll, "max_iter", f"no convergence in {max_iter} iterations", max_iter)


def _column_sizes(data: Prepared) -> np.ndarray:
    """Largest |entry| of each design column, in parameter order (1 for log α)."""
    sizes = [np.abs(data.Z).max(axis=0, initial=0), np.abs(data.X).max(axis=0, initial=0)]
    return np.concatenate([*sizes, np.ones(int(data.family.dispersion))])


def _growth(hit, old, new, sizes) -> float:
    """How far the runaway parameter moved outwards in this step, on its predictor's scale."""
    j = hit[0]
    if hit[2] == "dispersion":
        return float(old[j] - new[j])
    return float((abs(new[j]) - abs(old[j])) * sizes[j])


def _runoff(data: Prepared, theta, point: Point, free, sizes):
    """(index, message, kind) of a free parameter that drives a probability to 0/1 or the mean
    to 0 numerically, or of log α below ALPHA_FLOOR, else None."""
    q, p = data.Z.shape[1], data.X.shape[1]
    movable = np.zeros(len(theta), dtype=bool)
    movable[free] = True
    part = data.family.zero
    zero_gone = q > 0 and np.abs(point.s).max(initial=0) > _RUNOFF
    mean_gone = point.eta.min(initial=0) < -_RUNOFF
    for name, gone, first, width in (("zero", zero_gone, 0, q), ("count", mean_gone, q, p)):
        idx = np.arange(first, first + width)
        idx = idx[movable[idx]]
        if not gone or not len(idx):
            continue
        shift = np.abs(theta[idx]) * sizes[idx]
        j = int(idx[np.argmax(shift)])
        if shift.max() > _RUNOFF:
            up = theta[j] > 0
            if name == "count":
                limit = "mu -> 0"
            elif part == "hurdle":
                limit = "P(Y>0) -> 1" if up else "P(Y>0) -> 0"
            else:
                limit = "pi -> 1" if up else "pi -> 0"
            side = "+inf" if up else "-inf"
            return j, f"{name}-part coefficient {j - first} runs off to {side} ({limit})", name
    k = len(theta) - 1
    if data.family.dispersion and movable[k] and theta[k] < ALPHA_FLOOR:
        return k, "log alpha runs off to -inf", "dispersion"
    return None
