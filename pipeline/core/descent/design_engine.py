"""Batched gradient-descent fits of count regressions on designs: B fits as one tensor program.

Fit b has its own dataset, start, learning rate (and the batch shares one optimizer, as in
`engine`), and one family of `count_terms.FAMILIES` for the whole batch. Per observation,
s = zᵀγ (+ zero offset; the zero part, logit π or logit P(Y > 0)) and η = xᵀβ (+ count offset;
log λ); fit b minimises its dataset's mean NLL over θ = (γ, β[, log α]) (DESIGN §7), weighted
by the rows' frequency weights when `StackedDesigns.weight` is set: Σ w ℓ / Σ w, the mean over
the expanded rows. The fits are laid out by dataset in slots, θ of shape (D, P, F) with P
parameters and F slots per dataset, so the linear predictors of all of a dataset's fits are
one matrix product, `bmm(Z, γ)` and `bmm(X, β)`, (D, n, F), and the gradient is one more,
`Zᵀ g_s` and `Xᵀ g_η`, computed in row blocks that hold zeros only, positives only, or both
(`stack_designs` sorts zeros first).

The ZIP runs a hand-written branch (`_zip_block`). Per observation (−ℓ is the NLL term), with
u = s + λ and σ(u) = P(structural zero | y = 0):
    y = 0:  −ℓ = softplus(s) + λ − softplus(u);   ∂/∂s = σ(s) − σ(u),  ∂/∂η = λ(1 − σ(u))
    y > 0:  −ℓ = softplus(s) − yη + λ + log y!;  ∂/∂s = σ(s),         ∂/∂η = λ − y
Every other family runs `count_terms.family_terms` (analytic first derivatives), with the NB's
lgamma/digamma in (y, θ) gathered from one evaluation per distinct count and fit.

Stopping rules: `outcome.StopRule`, "stalled" where it holds with the zero part saturated
(`SATURATED_LOGIT`: a plateau at infinity, not a maximum), "diverged" also when some
|η| > `MAX_LOG_RATE`. A finished fit is frozen in its slot (fits are not compacted: a dataset's
fits share one product, so a finished fit costs its column until the batch ends).

Mini-batches (`batch_size`): each step uses `batch_size` rows of a permutation of the rows
that is redrawn every epoch from `shuffle_seed` (the same rows for every dataset, which
share n). The noise of the gradient never lets the loss settle, so the convergence test is
off: every fit runs its budget (or diverges), and the caller judges it by its full-data NLL
gap to the oracle at the end. Histories and the final state always carry full-data NLLs.

Standardisation (`standardize`, `designs.scalings`): non-intercept columns are centred
(when the part has an intercept column) and scaled to unit SD per dataset; the fit runs on
that scale and every reported coefficient (final, histories) is mapped back to the original
one. Pure torch and numpy: no I/O, no module state; randomness only from `shuffle_seed`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import torch

from pipeline.core.descent import optim
from pipeline.core.descent.designs import StackedDesigns, scalings
from pipeline.core.descent.engine import MAX_LOG_RATE
from pipeline.core.descent.outcome import (
    MAX_STEPS,
    RUNNING,
    STOPPED,
    ChunkReport,
    FitResult,
    StopRule,
    require,
    status_names,
    to_result,
)
from pipeline.core.laws.count_parts import nb_count_parts
from pipeline.core.laws.count_terms import check_family, family_terms, has_dispersion, zero_part
from pipeline.core.laws.distributions import softplus

# Rows per block of the per-observation work: (D, rows, F) temporaries of ~2^16 elements
# (512 kB in float64) stay in cache and under glibc's mmap threshold. One (D, n, F) pass
# allocated fresh per op costs ~4x more on these machines (page faults on every new tensor).
BLOCK_ELEMENTS = 2**16
# |s| beyond which every observation's zero part is saturated (π or P(Y > 0) within 3e-7 of
# 0 or 1): there the gradient in γ vanishes without a finite maximum, e.g. the ZINB sliding
# into its NB limit π → 0. A fit the stop rule would call converged there is "stalled".
SATURATED_LOGIT = 15.0


def _slots(index: np.ndarray, D: int) -> tuple[np.ndarray, int]:
    """Slot of each fit within its dataset, and the number of slots F."""
    slot = np.zeros(len(index), np.int64)
    seen = np.zeros(D, np.int64)
    for b, d in enumerate(index):
        slot[b], seen[d] = seen[d], seen[d] + 1
    return slot, int(seen.max(initial=1))


@torch.no_grad()
def fit_designs(
    data: StackedDesigns,
    dataset_index,
    start,
    lr,
    *,
    optimizer: str = "adam",
    momentum: float = 0.0,
    max_steps: int = 500,
    tol: float = 1e-10,
    window: int = 10,
    grad_tol: float = 1e-8,
    record_every: int = 10,
    chunk_steps: int = 50,
    batch_size: int | None = None,
    shuffle_seed: int = 0,
    standardize=False,
    callback: Callable[[ChunkReport], bool | None] | None = None,
    family: str = "zip",
) -> FitResult:
    """Fit B count regressions of one family by gradient descent, all at once (see the module
    docstring).

    Args:
        data: the D datasets (`designs.stack_designs`); computed on its device and dtype.
        dataset_index: (B,) ints, the dataset of each fit.
        start: (B, P) starting (γ, β[, log α]) on the original scale: P = q + p, plus one
            for the NB families' log dispersion.
        lr: (B,) or scalar learning rates.
        optimizer, momentum: as in `engine.fit_zip`.
        max_steps, tol, window, grad_tol, record_every, chunk_steps: the `StopRule` and the
            recording and reporting schedule.
        batch_size: rows per step; None (or >= n) is full batch.
        shuffle_seed: seed of the epoch permutations (mini-batches only).
        standardize: fit on standardised covariates (results on the original scale); a bool,
            or one per dataset.
        callback: called with a `ChunkReport`; returning True stops the run ("stopped").
        family: one of `count_terms.FAMILIES`; "zip" runs its hand-written branch, the others
            `count_terms.family_terms`. Families without a zero part need q = 0.

    Returns:
        The `FitResult`, θ = (γ, β[, log α]) on the original scale.

    Raises:
        ValueError: on an unknown optimizer or invalid inputs.
    """
    optim.check_optimizer(optimizer, momentum)
    rule = StopRule(max_steps, tol, window, grad_tol, record_every, chunk_steps)
    D, n, q, p = data.shape
    check_family(family)
    require((zero_part(family) is None) == (q == 0),
            f"family {family} needs a zero-part design with {'no' if q else '>= 1'} columns",
            q)  # fmt: skip
    P = q + p + int(has_dispersion(family))
    dev, dtype = data.X.device, data.X.dtype
    index = np.asarray(dataset_index)
    require(index.ndim == 1 and index.dtype.kind in "iu" and len(index) > 0
            and bool(((index >= 0) & (index < D)).all()),
            f"dataset_index must be 1-D ints in [0, {D})", index)  # fmt: skip
    B = len(index)
    start = torch.as_tensor(np.asarray(start, float), dtype=dtype, device=dev)
    require(start.shape == (B, P), f"start must be ({B}, {P})", tuple(start.shape))
    require(bool(start.isfinite().all()), "start must be finite", start)
    lr = torch.as_tensor(lr, dtype=dtype, device=dev).broadcast_to(B)
    require(bool(((lr > 0) & lr.isfinite()).all()), "lr must be positive, finite", lr)
    full = batch_size is None or batch_size >= n
    require(full or (int(batch_size) == batch_size and batch_size >= 1),
            "batch_size must be a positive integer", batch_size)  # fmt: skip

    slot, F = _slots(index, D)
    d_t = torch.as_tensor(index.copy(), device=dev)
    f_t = torch.as_tensor(slot, device=dev)
    T = scalings(data, standardize)
    if P > q + p:  # log α is not rescaled
        T = torch.nn.functional.pad(T, (0, 1, 0, 1))
        T[:, -1, -1] = 1.0
    T_inv = torch.linalg.inv(T)
    if bool(np.any(standardize)):  # X̃ = X T_x, Z̃ = Z T_z: X̃ θ̃ = X T θ̃ = X θ originally
        data = dataclasses.replace(
            data, X=torch.bmm(data.X, T[:, q : q + p, q : q + p]), Z=torch.bmm(data.Z, T[:, :q, :q])
        )
    theta = torch.zeros(D, P, F, dtype=dtype, device=dev)
    theta[d_t, :, f_t] = torch.einsum("bij,bj->bi", T_inv[d_t], start)
    lr_slots = torch.zeros(D, 1, F, dtype=dtype, device=dev)
    lr_slots[d_t, 0, f_t] = lr
    used = torch.zeros(D, F, dtype=torch.bool, device=dev)
    used[d_t, f_t] = True
    status = torch.where(used, RUNNING, MAX_STEPS)  # empty slots: never run
    steps = torch.zeros(D, F, dtype=torch.int64, device=dev)
    shown = torch.full((D, F), torch.nan, dtype=dtype, device=dev)  # final NLL, for reports
    history: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    opt_state = optim.init_state(optimizer, theta)
    prev = torch.full((D, F), torch.nan, dtype=dtype, device=dev)
    streak = torch.zeros(D, F, dtype=torch.int64, device=dev)
    shuffle = torch.Generator().manual_seed(int(shuffle_seed))
    order, cursor = None, n
    last = theta
    t = 0
    while True:
        rows = None
        if not full:
            if cursor + batch_size > n:
                order, cursor = torch.randperm(n, generator=shuffle).to(dev), 0
            rows = order[cursor : cursor + batch_size]
            cursor += batch_size
        loss, grad, in_range, saturated = loss_grad(data, theta, rows, family)
        gnorm = torch.linalg.vector_norm(grad, dim=1)
        finite = (loss + gnorm).isfinite() & in_range
        running = status == RUNNING
        if t % rule.record_every == 0:
            seen = loss if full else loss_grad(data, theta, None, family)[0]
            history.append((t, torch.where(running, seen, torch.nan), theta.clone()))
        new, streak = rule.status(t, loss, prev, streak, gnorm, finite, saturated, converge=full)
        new = torch.where(running, new, status)
        ended = running & (new != RUNNING)
        if bool(ended.any()):
            back = ended & ~finite & (t > 0)  # diverged: the last finite state, a step back
            theta = torch.where(back.unsqueeze(1), last, theta)
            shown = torch.where(ended, loss, shown)
            steps = torch.where(ended, t - back.long(), steps)
            status = new
        running = status == RUNNING
        if not bool(running.any()):
            break
        if callback is not None and t > 0 and t % rule.chunk_steps == 0:
            now = torch.where(running, loss, shown)[d_t, f_t].cpu().numpy()
            state = torch.bmm(T, theta)[d_t, :, f_t].cpu().numpy()
            report = ChunkReport(t, int(running.sum()), now, status_names(status[d_t, f_t]), state)
            if callback(report):
                steps = torch.where(running, t, steps)
                status = torch.where(running, STOPPED, status)
                break
        prev, last = loss, theta
        t += 1
        stepped, opt_state = optim.step(optimizer, theta, grad, opt_state, lr_slots, t, momentum)
        theta = torch.where(running.unsqueeze(1), stepped, theta)
    # Final states on the full data, whatever the steps saw (mini-batch runs, diverged fits).
    loss, grad, _, _ = loss_grad(data, theta, None, family)
    gnorm = torch.linalg.vector_norm(grad, dim=1)
    return _result(theta, T, d_t, f_t, loss, steps, status, gnorm, history)


def _result(theta, T, d_t, f_t, nll, steps, status, gnorm, history) -> FitResult:
    def original(th):  # (D, P, F) on the fitting scale -> (B, P) original
        return torch.bmm(T, th)[d_t, :, f_t]

    hist_params = torch.stack([original(th) for _, _, th in history], -1)
    hist_nll = torch.stack([loss[d_t, f_t] for _, loss, _ in history], -1)
    hist_params = torch.where(hist_nll.isnan().unsqueeze(1), torch.nan, hist_params)
    pick = lambda x: x[d_t, f_t]  # noqa: E731
    return to_result(original(theta), pick(nll), pick(steps), pick(status), pick(gnorm),
                     [t for t, _, _ in history], hist_nll, hist_params)  # fmt: skip


def loss_grad(data: StackedDesigns, theta: torch.Tensor, rows=None, family: str = "zip"):
    """One step's worth of every fit: its (weighted) mean NLL and gradient, and the checks the
    stop rules read.

    Args:
        data: the stacked designs (zero rows first: `stack_designs`).
        theta: (D, P, F) parameters on the designs' scale.
        rows: None (every row) or the row indices of a mini-batch.
        family: one of `count_terms.FAMILIES`.

    Returns:
        Mean NLL (D, F), gradient (D, P, F), whether every |η| <= MAX_LOG_RATE (D, F) and
        whether the zero part is saturated, every |s| > SATURATED_LOGIT (D, F).
    """
    X, Z, y, zero, log_fact = data.X, data.Z, data.y, data.zero, data.log_fact
    index, w = data.value_index, data.weight
    offsets = (data.count_offset, data.zero_offset)
    if rows is not None:
        X, Z, y, zero, log_fact = (a[:, rows] for a in (X, Z, y, zero, log_fact))
        index = None if index is None else index[:, rows]
        w = None if w is None else w[:, rows]
        offsets = tuple(None if o is None else o[:, rows] for o in offsets)
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
        if offsets[0] is not None:
            eta = eta + offsets[0][:, r:e]
        if offsets[1] is not None:
            s = s + offsets[1][:, r:e]
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
                wa = t.d_a if w is None else t.d_a * w[:, r:e]
                g_alpha -= wa.sum(1, keepdim=True)
        if w is not None:  # a row of weight w is w identical rows
            wr = w[:, r:e]
            nll, g_eta = nll * wr, g_eta * wr
            g_s = None if g_s is None else g_s * wr
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
    size = m if w is None else w.sum(1)  # rows, or expanded rows (D, 1)
    grad = torch.cat(parts, 1) / (size if w is None else size.unsqueeze(1))
    return total / size, grad, in_range, s_low > SATURATED_LOGIT


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
