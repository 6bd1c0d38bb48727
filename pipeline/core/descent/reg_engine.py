"""Batched gradient-descent fits of ZIP regressions: B fits as one tensor program.

Fit b has its own dataset, start, learning rate (and the batch shares one optimizer, as in
`engine`). Per observation, s = zᵀγ (zero part, logit π) and η = xᵀβ (count part, log λ);
fit b minimises its dataset's mean NLL over (γ, β) (DESIGN §7). The fits are laid out by
dataset in slots, θ of shape (D, P, F) with P = q + p parameters and F slots per dataset, so
the linear predictors of all of a dataset's fits are one matrix product, `bmm(Z, γ)` and
`bmm(X, β)`, (D, n, F), and the gradient is one more, `Zᵀ g_s` and `Xᵀ g_η`.

Per observation (−ℓ is the NLL term), with u = s + λ and σ(u) = P(structural zero | y = 0):
    y = 0:  −ℓ = softplus(s) + λ − softplus(u);   ∂/∂s = σ(s) − σ(u),  ∂/∂η = λ(1 − σ(u))
    y > 0:  −ℓ = softplus(s) − yη + λ + log y!;  ∂/∂s = σ(s),         ∂/∂η = λ − y

Stopping rules as in `engine`: "converged" once |change of the mean NLL| < `tol` on `window`
consecutive steps and the gradient norm (on the fitting scale) is below `grad_tol`; "stalled"
when that rule holds with the zero part saturated (`reg_loss.SATURATED_LOGIT`: a plateau at
infinity, not a maximum); "max_steps"; "diverged" when the loss, gradient or parameters stop
being finite or some |η| > `MAX_LOG_RATE`, reported at the last finite state; "stopped" by the
callback. A finished fit is frozen in its slot (fits are not compacted: a dataset's fits share
one product, so a finished fit costs its column until the batch ends).

Mini-batches (`batch_size`): each step uses `batch_size` rows of a permutation of the rows
that is redrawn every epoch from `shuffle_seed` (the same rows for every dataset, which
share n). The noise of the gradient never lets the loss settle, so the convergence test is
off: every fit runs its budget (or diverges), and the caller judges it by its full-data NLL
gap to the oracle at the end. Histories and the final state always carry full-data NLLs.

Standardisation (`standardize`, `reg_designs.scalings`): non-intercept columns are centred
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
from pipeline.core.descent.outcome import (
    CONVERGED,
    DIVERGED,
    MAX_STEPS,
    RUNNING,
    STALLED,
    STATUSES,
    STOPPED,
)
from pipeline.core.descent.reg_designs import Designs, RegChunkReport, RegResult, scalings
from pipeline.core.descent.reg_loss import loss_grad
from pipeline.core.laws.count_terms import check_family, has_dispersion, zero_part


def _require(ok, what: str, value) -> None:
    if not ok:
        raise ValueError(f"{what}, got {value!r}")


def _slots(index: np.ndarray, D: int) -> tuple[np.ndarray, int]:
    """Slot of each fit within its dataset, and the number of slots F."""
    slot = np.zeros(len(index), np.int64)
    seen = np.zeros(D, np.int64)
    for b, d in enumerate(index):
        slot[b], seen[d] = seen[d], seen[d] + 1
    return slot, int(seen.max(initial=1))


@torch.no_grad()
def fit_regression(
    data: Designs,
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
    callback: Callable[[RegChunkReport], bool | None] | None = None,
    family: str = "zip",
) -> RegResult:
    """Fit B ZIP regressions by gradient descent, all at once (see the module docstring).

    Args:
        data: the D datasets (`reg_designs.stack_designs`); computed on its device and dtype.
        dataset_index: (B,) ints, the dataset of each fit.
        start: (B, P) starting (γ, β[, log α]) on the original scale: P = q + p, plus one
            for the NB families' log dispersion.
        lr: (B,) or scalar learning rates.
        optimizer, momentum: as in `engine.fit_zip`.
        max_steps, tol, window, grad_tol: the stopping rules.
        record_every: histories are recorded every this many steps (step 0 is the start).
        chunk_steps: `callback` runs after every this many steps.
        batch_size: rows per step; None (or >= n) is full batch.
        shuffle_seed: seed of the epoch permutations (mini-batches only).
        standardize: fit on standardised covariates (results on the original scale); a bool,
            or one per dataset.
        callback: called with a `RegChunkReport`; returning True stops the run ("stopped").
        family: one of `count_terms.FAMILIES`; "zip" runs its hand-written branch, the others
            `count_terms.family_terms`. Families without a zero part need q = 0.

    Returns:
        The `RegResult`.

    Raises:
        ValueError: on an unknown optimizer or invalid inputs.
    """
    optim.check_optimizer(optimizer, momentum)
    for name, value in [("max_steps", max_steps), ("window", window),
                        ("record_every", record_every), ("chunk_steps", chunk_steps)]:  # fmt: skip
        low = 0 if name == "max_steps" else 1
        _require(int(value) == value and value >= low, f"{name} must be an integer >= {low}", value)
    D, n, q, p = data.shape
    check_family(family)
    _require((zero_part(family) is None) == (q == 0),
             f"family {family} needs a zero-part design with {'no' if q else '>= 1'} columns",
             q)  # fmt: skip
    P = q + p + int(has_dispersion(family))
    dev, dtype = data.X.device, data.X.dtype
    index = np.asarray(dataset_index)
    _require(index.ndim == 1 and index.dtype.kind in "iu" and len(index) > 0
             and bool(((index >= 0) & (index < D)).all()),
             f"dataset_index must be 1-D ints in [0, {D})", index)  # fmt: skip
    B = len(index)
    start = torch.as_tensor(np.asarray(start, float), dtype=dtype, device=dev)
    _require(start.shape == (B, P), f"start must be ({B}, {P})", tuple(start.shape))
    _require(bool(start.isfinite().all()), "start must be finite", start)
    lr = torch.as_tensor(lr, dtype=dtype, device=dev).broadcast_to(B)
    _require(bool(((lr > 0) & lr.isfinite()).all()), "lr must be positive, finite", lr)
    full = batch_size is None or batch_size >= n
    _require(full or (int(batch_size) == batch_size and batch_size >= 1),
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
        if t % record_every == 0:
            seen = loss if full else loss_grad(data, theta, None, family)[0]
            history.append((t, torch.where(running, seen, torch.nan), theta.clone()))
        streak = torch.where((loss - prev).abs() < tol, streak + 1, 0)
        new = torch.where(running, MAX_STEPS if t >= max_steps else RUNNING, status)
        if full:
            flat = running & (streak >= window) & (gnorm < grad_tol)
            new = torch.where(flat, torch.where(saturated, STALLED, CONVERGED), new)
        new = torch.where(running & ~finite, DIVERGED, new)
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
        if callback is not None and t > 0 and t % chunk_steps == 0:
            now = torch.where(running, loss, shown)[d_t, f_t].cpu().numpy()
            names = np.asarray(STATUSES)[status[d_t, f_t].cpu().numpy()]
            if callback(RegChunkReport(t, int(running.sum()), now, names)):
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


def _result(theta, T, d_t, f_t, nll, steps, status, gnorm, history) -> RegResult:
    def original(th):  # (D, P, F) on the fitting scale -> (B, P) original
        return torch.bmm(T, th)[d_t, :, f_t]

    hist_params = torch.stack([original(th) for _, _, th in history], -1)
    hist_nll = torch.stack([loss[d_t, f_t] for _, loss, _ in history], -1)
    hist_params = torch.where(hist_nll.isnan().unsqueeze(1), torch.nan, hist_params)
    cpu = lambda x: x.cpu().numpy()  # noqa: E731
    return RegResult(
        params=cpu(original(theta)),
        nll=cpu(nll[d_t, f_t]),
        steps=cpu(steps[d_t, f_t]),
        status=np.asarray(STATUSES)[cpu(status[d_t, f_t])],
        grad_norm=cpu(gnorm[d_t, f_t]),
        history_step=np.array([t for t, _, _ in history], dtype=np.int64),
        history_nll=cpu(hist_nll),
        history_params=cpu(hist_params),
    )
