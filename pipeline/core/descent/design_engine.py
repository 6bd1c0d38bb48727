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
|η| > `MAX_LOG_RATE`. A finished fit leaves the batch at the step it ends: the others are laid
out anew (`_Layout`), so a straggler costs its own steps only. A fit's result does not depend
on the others in its batch, to the bit: the row blocks are fixed row ranges, the slots are
padded to whole SIMD vectors, and the branches of zero-only, positive-only and mixed blocks
round alike (tests: each fit alone equals the batch).

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
from collections.abc import Callable

import numpy as np
import torch

from pipeline.core.descent import optim
from pipeline.core.descent.designs import StackedDesigns, scalings
from pipeline.core.descent.engine import MAX_LOG_RATE
from pipeline.core.descent.outcome import (
    RUNNING,
    STOPPED,
    ChunkReport,
    FitResult,
    Outcome,
    StopRule,
    require,
)
from pipeline.core.laws.count_parts import nb_count_parts
from pipeline.core.laws.count_terms import check_family, family_terms, has_dispersion, zero_part
from pipeline.core.laws.distributions import softplus

# Rows per block of the per-observation work, fixed so that a fit's sums do not depend on the
# others in its batch: (D, rows, F) temporaries stay in cache. One (D, n, F) pass allocated
# fresh per op costs ~4x more on these machines (page faults on every new tensor; see
# `allocator.keep_heap`). 512 rather than 256: a few stragglers (F = 16 slots) run ops of
# 8k elements, not 4k, where each op's fixed cost dominates (ZINB on n = 4,406: 3.7 against
# 4.9 ms a step); at ten datasets × 16 slots it costs 5-9 % a step (benchmarks/README.md).
BLOCK_ROWS = 512
# Slots per dataset are padded to a multiple of this many bytes (two AVX-512 vectors), so no
# fit's elements fall in a vectorised kernel's scalar tail (`_Layout`).
LANE_BYTES = 128
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

    T = scalings(data, standardize)
    if P > q + p:  # log α is not rescaled
        T = torch.nn.functional.pad(T, (0, 1, 0, 1))
        T[:, -1, -1] = 1.0
    T_inv = torch.linalg.inv(T)
    if bool(np.any(standardize)):  # X̃ = X T_x, Z̃ = Z T_z: X̃ θ̃ = X T θ̃ = X θ originally
        data = dataclasses.replace(
            data, X=torch.bmm(data.X, T[:, q : q + p, q : q + p]), Z=torch.bmm(data.Z, T[:, :q, :q])
        )
    d_all = torch.as_tensor(index.copy(), device=dev)
    start = torch.einsum("bij,bj->bi", T_inv[d_all], start)  # (B, P) on the fitting scale
    outcome = Outcome(B, P, dev, dtype)
    # The active fits: their ids, and per fit the state an update needs, (B_a, ...).
    ids = torch.arange(B, device=dev)
    flat = {"theta": start, "lr": lr, "prev": torch.full((B,), torch.nan, dtype=dtype, device=dev),
            "streak": torch.zeros(B, dtype=torch.int64, device=dev)}  # fmt: skip
    flat.update({f"opt:{k}": v for k, v in optim.init_state(optimizer, start).items()})
    lay = _Layout(data, T, index, dtype)
    shuffle = torch.Generator().manual_seed(int(shuffle_seed))
    order, cursor = None, n
    t = 0
    state = lay.spread_all(flat)
    theta = state.pop("theta")
    state["last"] = theta
    while True:
        rows = None
        if not full:
            if cursor + batch_size > n:
                order, cursor = torch.randperm(n, generator=shuffle).to(dev), 0
            rows = order[cursor : cursor + batch_size]
            cursor += batch_size
        loss, grad, in_range, saturated = loss_grad(lay.data, theta, rows, family)
        gnorm = torch.linalg.vector_norm(grad, dim=1)
        finite = (loss + gnorm).isfinite() & in_range
        if t % rule.record_every == 0:
            seen = loss if full else loss_grad(lay.data, theta, None, family)[0]
            outcome.record(t, ids, lay.gather(seen), lay.original(theta).T)
        new, streak = rule.status(t, loss, state["prev"], state["streak"], gnorm, finite,
                                  saturated, converge=full)  # fmt: skip
        new = torch.where(lay.real, new, RUNNING)  # padding slots never end
        ended = new != RUNNING
        if bool(ended.any()):
            back = ended & ~finite & (t > 0)  # diverged: the last finite state, a step back
            final = torch.where(back.unsqueeze(1), state["last"], theta)
            if full and not bool(back.any()):
                f_loss, f_gnorm = loss, gnorm
            else:  # the full-data NLL and gradient at the final state
                f_loss, f_grad, _, _ = loss_grad(lay.data, final, None, family)
                f_gnorm = torch.linalg.vector_norm(f_grad, dim=1)
            stop = lay.gather(ended).nonzero().squeeze(1)
            outcome.finish(ids[stop], lay.gather(new)[stop], lay.original(final)[stop].T,
                           lay.gather(f_loss)[stop], lay.gather(f_gnorm)[stop],
                           t - lay.gather(back)[stop].long())  # fmt: skip
            keep = lay.gather(~ended).nonzero().squeeze(1)
            if len(keep) == 0:
                break
        if callback is not None and t > 0 and t % rule.chunk_steps == 0:
            if callback(outcome.report(t, ids, lay.original(theta).T, lay.gather(loss))):
                f_loss, f_grad, _, _ = (loss, grad, 0, 0) if full else loss_grad(
                    lay.data, theta, None, family)  # fmt: skip
                f_gnorm = torch.linalg.vector_norm(f_grad, dim=1)
                outcome.finish(ids, STOPPED, lay.original(theta).T, lay.gather(f_loss),
                               lay.gather(f_gnorm), t)  # fmt: skip
                break
        state.update(prev=loss, last=theta, streak=streak)
        t += 1
        opt_state = {k[4:]: v for k, v in state.items() if k.startswith("opt:")}
        theta, opt_state = optim.step(optimizer, theta, grad, opt_state,
                                      state["lr"].unsqueeze(1), t, momentum)  # fmt: skip
        state.update({f"opt:{k}": v for k, v in opt_state.items()})
        if bool(ended.any()):  # finished fits leave the batch: a new layout of the others
            state["theta"] = theta
            flat = {k: lay.gather(v).index_select(0, keep) for k, v in state.items()}
            ids = ids.index_select(0, keep)
            lay = _Layout(data, T, index[ids.cpu().numpy()], dtype)
            state = lay.spread_all(flat)
            theta = state.pop("theta")
    result = outcome.result()
    # As the engine reports them: no parameters where the recorded NLL is not a number.
    hist = np.where(np.isnan(result.history_nll)[:, None], np.nan, result.history_params)
    return dataclasses.replace(result, history_params=hist)


class _Layout:
    """Where the active fits sit: dataset d's fits in slots f of (D_a, ·, F) tensors, D_a the
    datasets with an active fit, F a multiple of `LANES` (padding slots hold zeros and never
    run).

    The padding is what makes a fit's arithmetic independent of the others in its batch: every
    (D_a, rows, F) tensor then has a multiple of the SIMD width as its row length, so torch's
    vectorised kernels never run a scalar tail (whose `exp`, `log1p` may round differently)
    over some fit's elements, and the row blocks of `loss_grad` are fixed row ranges.
    """

    def __init__(self, data: StackedDesigns, T: torch.Tensor, index: np.ndarray, dtype):
        used, local = np.unique(index, return_inverse=True)
        slot, F = _slots(local, len(used))
        lanes = LANE_BYTES // (torch.finfo(dtype).bits // 8)
        self.F = -(-F // lanes) * lanes
        dev = data.X.device
        self.d = torch.as_tensor(local.reshape(-1), device=dev)
        self.f = torch.as_tensor(slot, device=dev)
        self.data = data if len(used) == data.X.shape[0] else _select(data, used)
        self.T = T if len(used) == T.shape[0] else T[torch.as_tensor(used, device=dev)]
        self.real = torch.zeros(len(used), self.F, dtype=torch.bool, device=dev)
        self.real[self.d, self.f] = True

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """(D_a, [P,] F) -> (B_a, [P])."""
        return x[self.d, :, self.f] if x.ndim == 3 else x[self.d, self.f]

    def spread(self, flat: torch.Tensor) -> torch.Tensor:
        """(B_a, [P]) -> (D_a, [P,] F), zeros in the padding."""
        if flat.ndim == 1:
            out = flat.new_zeros(self.real.shape)
            out[self.d, self.f] = flat
            return out
        out = flat.new_zeros(self.real.shape[0], flat.shape[1], self.F)
        out[self.d, :, self.f] = flat
        return out

    def spread_all(self, flat: dict) -> dict:
        return {k: self.spread(v) for k, v in flat.items()}

    def original(self, theta: torch.Tensor) -> torch.Tensor:
        """(D_a, P, F) on the fitting scale -> (B_a, P) on the original one."""
        return torch.bmm(self.T, theta)[self.d, :, self.f]


def _select(data: StackedDesigns, used: np.ndarray) -> StackedDesigns:
    """The datasets `used` of `data` (the fits of the others have all finished)."""
    keep = torch.as_tensor(used, device=data.X.device)
    fields = {}
    for field in dataclasses.fields(data):
        value = getattr(data, field.name)
        if field.name == "zeros":
            value = tuple(value[i] for i in used)
        elif isinstance(value, torch.Tensor) and field.name != "values":
            value = value.index_select(0, keep)
        fields[field.name] = value
    return StackedDesigns(**fields)


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
    low, high = theta.new_full((D, F), torch.inf), theta.new_full((D, F), -torch.inf)
    s_low = theta.new_full((D, F), torch.inf if q else 0.0)
    g_gamma, g_beta = torch.zeros_like(gamma), torch.zeros_like(beta)
    g_alpha = None if log_alpha is None else torch.zeros_like(log_alpha)
    # Fixed row ranges, each computed by one branch: zeros everywhere, mixed, positives
    # everywhere (the branches agree to the bit on the rows they share).
    blocks = [(r, min(r + BLOCK_ROWS, m)) for r in range(0, m, BLOCK_ROWS)]
    blocks = [(r, e, "zero" if e <= only_zero else "positive" if r >= only_positive else "mixed")
              for r, e in blocks]  # fmt: skip
    for r, e, kind in blocks:
        Zr, Xr, yr, zr, lf = (a[:, r:e] for a in (Z, X, y, zero, log_fact))
        eta = torch.bmm(Xr, beta)  # (D, rows, F)
        s = torch.bmm(Zr, gamma) if q else None
        if offsets[0] is not None:
            eta = eta + offsets[0][:, r:e]
        if offsets[1] is not None:
            s = s + offsets[1][:, r:e]
        if family == "zip":
            nll, g_s, g_eta = _zip_block(kind, s, eta, yr, zr, lf)
        else:
            pre = None
            if parts is not None and kind != "zero":
                at = index[:, r:e].expand(-1, -1, F)
                pre = (parts[0].gather(1, at), parts[1].gather(1, at))
            t = family_terms(family, yr, lf, zr, s, eta, log_alpha, order=1, kind=kind,
                             pre=pre)  # fmt: skip
            nll, g_s, g_eta = -t.ll, None if t.d_s is None else -t.d_s, -t.d_eta
            if g_alpha is not None:
                wa = t.d_a if w is None else t.d_a * w[:, r:e]
                g_alpha -= wa.sum(1, keepdim=True)
        if w is not None:  # a row of weight w is w identical rows
            wr = w[:, r:e]
            nll, g_eta = nll * wr, g_eta * wr
            g_s = None if g_s is None else g_s * wr
        total += nll.sum(1)
        # amax and amin: one aminmax over rows costs 4-8x the two on these machines.
        low, high = torch.minimum(low, eta.amin(1)), torch.maximum(high, eta.amax(1))
        if q:
            s_low = torch.minimum(s_low, s.abs().amin(1))
            g_gamma.baddbmm_(Zr.mT, g_s)
        g_beta.baddbmm_(Xr.mT, g_eta)
    in_range = (high <= MAX_LOG_RATE) & (low >= -MAX_LOG_RATE)  # every |η| <= MAX_LOG_RATE
    parts = [g_gamma, g_beta] if g_alpha is None else [g_gamma, g_beta, g_alpha]
    size = m if w is None else w.sum(1)  # rows, or expanded rows (D, 1)
    grad = torch.cat(parts, 1) / (size if w is None else size.unsqueeze(1))
    return total / size, grad, in_range, s_low > SATURATED_LOGIT


def _zip_block(kind: str, s, eta, yr, zr, lf):
    """The ZIP's hand-written (NLL, ∂/∂s, ∂/∂η) of one row block (module docstring)."""
    lam = eta.exp()
    if kind == "zero":
        u = s + lam
        sig_u = torch.sigmoid(u)
        return softplus(s) + lam - softplus(u), torch.sigmoid(s) - sig_u, lam - lam * sig_u
    if kind == "positive":
        return softplus(s) + lam - (yr * eta - lf), torch.sigmoid(s), lam - yr
    sig_u = torch.sigmoid(s + lam)
    nll = softplus(s) + lam - torch.where(zr, softplus(s + lam), yr * eta - lf)
    g_s = torch.sigmoid(s) - torch.where(zr, sig_u, 0.0)
    g_eta = torch.where(zr, lam - lam * sig_u, lam - yr)  # as in the "zero" branch, bit for bit
    return nll, g_s, g_eta
