"""One step's worth of the batched regression engine: the mean NLL of every fit, its gradient,
and the checks the stop rules read (`reg_engine.fit_regression` loops over it).

θ of shape (D, P, F): D datasets, P = q + p (+1: log α) parameters, F fits per dataset; the
linear predictors of a dataset's fits are one `bmm` per part, computed in row blocks that hold
zeros only, positives only, or both (`reg_designs.stack_designs` sorts zeros first). The ZIP
runs its hand-written branch (`_zip_block`); every other family `count_terms.family_terms`
(analytic first derivatives), with the NB's lgamma/digamma in (y, θ) gathered from one
evaluation per distinct count and fit. Pure torch: no I/O, no module state.
"""

from __future__ import annotations

import math

import torch

from pipeline.core.descent.engine import MAX_LOG_RATE
from pipeline.core.descent.reg_designs import Designs
from pipeline.core.laws.count_parts import nb_count_parts
from pipeline.core.laws.count_terms import family_terms
from pipeline.core.laws.distributions import softplus

# Rows per block of the per-observation work: (D, rows, F) temporaries of ~2^16 elements
# (512 kB in float64) stay in cache and under glibc's mmap threshold. One (D, n, F) pass
# allocated fresh per op costs ~4x more on these machines (page faults on every new tensor).
BLOCK_ELEMENTS = 2**16
# |s| beyond which every observation's zero part is saturated (π or P(Y > 0) within 3e-7 of
# 0 or 1): there the gradient in γ vanishes without a finite maximum, e.g. the ZINB sliding
# into its NB limit π → 0. A fit the stop rule would call converged there is "stalled".
SATURATED_LOGIT = 15.0


def loss_grad(data: Designs, theta: torch.Tensor, rows=None, family: str = "zip"):
    """Mean NLL (D, F), gradient (D, P, F), whether every |η| <= MAX_LOG_RATE (D, F) and
    whether the zero part is saturated, every |s| > SATURATED_LOGIT (D, F)."""
    X, Z, y, zero, log_fact = data.X, data.Z, data.y, data.zero, data.log_fact
    index = data.value_index
    if rows is not None:
        X, Z, y, zero, log_fact = (a[:, rows] for a in (X, Z, y, zero, log_fact))
        index = None if index is None else index[:, rows]
    D, m, q = Z.shape
    p = X.shape[2]
    split = rows is None and data.zeros
    only_zero, only_positive = (min(data.zeros), max(data.zeros)) if split else (0, m)
    F = theta.shape[2]
    gamma, beta = theta[:, :q], theta[:, q : q + p]
    log_alpha = theta[:, q + p :] if theta.shape[1] > q + p else None  # (D, 1, F)
    # The NB's lgamma and digamma in (y, θ): once per distinct count and fit, then gathered.
    parts = None
    if log_alpha is not None and index is not None:
        parts = nb_count_parts(data.values, log_alpha)  # (D, K, F) each, or None
    total = theta.new_zeros(D, F)
    low, high = theta.new_full((D, F), torch.inf), theta.new_zeros(D, F)
    s_low = theta.new_full((D, F), torch.inf if q else 0.0)
    g_gamma, g_beta = torch.zeros_like(gamma), torch.zeros_like(beta)
    g_alpha = None if log_alpha is None else torch.zeros_like(log_alpha)
    step = max(1, BLOCK_ELEMENTS // max(1, D * F))
    # Row ranges computed by one branch alone: zeros everywhere, mixed, positives everywhere.
    cuts = [
        (0, only_zero, "zero"),
        (only_zero, only_positive, "mixed"),
        (only_positive, m, "positive"),
    ]
    blocks = [(r, min(r + step, e), kind) for b, e, kind in cuts for r in range(b, e, step)]
    for r, e, kind in blocks:
        Zr, Xr, yr, zr, lf = (a[:, r:e] for a in (Z, X, y, zero, log_fact))
        eta = torch.bmm(Xr, beta)  # (D, rows, F)
        s = torch.bmm(Zr, gamma) if q else None
        if family == "zip":
            nll, g_s, g_eta, lam = _zip_block(kind, s, eta, yr, zr, lf)
        else:
            pre = None
            if parts is not None and kind != "zero":
                at = index[:, r:e].expand(-1, -1, F)
                pre = (parts[0].gather(1, at), parts[1].gather(1, at))
            t = family_terms(family, yr, lf, zr, s, eta, log_alpha, order=1, kind=kind,
                             pre=pre)  # fmt: skip
            nll, g_s, g_eta, lam = -t.ll, None if t.d_s is None else -t.d_s, -t.d_eta, None
            if g_alpha is not None:
                g_alpha -= t.d_a.sum(1, keepdim=True)
        total += nll.sum(1)
        small, big = torch.aminmax(eta.exp() if lam is None else lam, dim=1)
        low, high = torch.minimum(low, small), torch.maximum(high, big)
        if q:
            s_low = torch.minimum(s_low, s.abs().amin(1))
            g_gamma.baddbmm_(Zr.mT, g_s)
        g_beta.baddbmm_(Xr.mT, g_eta)
    # |η| <= MAX_LOG_RATE read off λ = e^η (one pass instead of |η| and its max).
    in_range = (high <= math.exp(MAX_LOG_RATE)) & (low >= math.exp(-MAX_LOG_RATE))
    parts = [g_gamma, g_beta] if g_alpha is None else [g_gamma, g_beta, g_alpha]
    return total / m, torch.cat(parts, 1) / m, in_range, s_low > SATURATED_LOGIT


def _zip_block(kind: str, s, eta, yr, zr, lf):
    """The ZIP's hand-written (NLL, ∂/∂s, ∂/∂η, λ) of one row block (module docstring)."""
    lam = eta.exp()
    if kind == "zero":
        u = s + lam
        sig_u = torch.sigmoid(u)
        return softplus(s) + lam - softplus(u), torch.sigmoid(s) - sig_u, lam - lam * sig_u, lam
    if kind == "positive":
        return softplus(s) + lam - (yr * eta - lf), torch.sigmoid(s), lam - yr, lam
    sig_u = torch.sigmoid(s + lam)
    nll = softplus(s) + lam - torch.where(zr, softplus(s + lam), yr * eta - lf)
    g_s = torch.sigmoid(s) - torch.where(zr, sig_u, 0.0)
    g_eta = torch.where(zr, lam * (1 - sig_u), lam - yr)
    return nll, g_s, g_eta, lam
