"""What goes into the batched ZIP-regression engine (`reg_engine`) and what comes out.

Out: the per-chunk report its callback sees (`RegChunkReport`) and the batch's `RegResult`.
In: stacked designs and their scaling, as follows.

D datasets of one size n and the same columns become (D, n, ·) tensors, each dataset's zero
counts first (`stack_designs`), so the engine can compute row blocks of zeros only and of
positives only by their own branch. `scalings` gives the change of parameters that fits on
standardised covariates (unit SD, centred where the part has an intercept) and maps the
results back. Pure torch and numpy: no I/O, no module state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Designs:
    """D datasets of equal size n, stacked (build with `stack_designs`).

    Attributes:
        X: count-part designs, (D, n, p).  Z: zero-part designs, (D, n, q).
        y: counts as floats, (D, n, 1).  zero: y == 0, (D, n, 1).  log_fact: log y!, (D, n, 1).
        zeros: the number of zero counts of each dataset; `stack_designs` puts a dataset's
            zero rows first, so row blocks below min(zeros) hold only zeros and row blocks
            from max(zeros) on only positive counts, and each is computed by its own
            branch alone (the likelihood does not depend on the order of the rows).
        values: the distinct counts of all datasets, (1, K, 1); value_index: each row's
            position in it, (D, n, 1). Terms that depend on the count and a per-fit parameter
            only (the NB's lgamma and digamma in θ) are computed once per distinct count.
    """

    X: torch.Tensor
    Z: torch.Tensor
    y: torch.Tensor
    zero: torch.Tensor
    log_fact: torch.Tensor
    zeros: tuple[int, ...] = ()
    values: torch.Tensor | None = None
    value_index: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(D, n, q, p)."""
        return (*self.X.shape[:2], self.Z.shape[2], self.X.shape[2])


def stack_designs(Xs, Zs, ys, *, device="cpu", dtype=torch.float64) -> Designs:
    """Stack D datasets (same n, same columns) into `Designs`.

    Args:
        Xs, Zs: sequences of (n, p) and (n, q) arrays.
        ys: sequence of (n,) non-negative integer counts.
        device, dtype: where and in which precision to compute.

    Returns:
        The `Designs`.

    Raises:
        ValueError: on ragged shapes, non-finite designs or counts that are not counts.
    """
    try:
        X, Z = (torch.as_tensor(np.stack([np.asarray(a, float) for a in m])) for m in (Xs, Zs))
        y = np.stack([np.asarray(a) for a in ys])
    except ValueError as err:  # numpy: ragged datasets
        raise ValueError(f"need datasets of one shape: {err}") from None
    if X.ndim != 3 or Z.ndim != 3 or y.ndim != 2 or not X.shape[:2] == Z.shape[:2] == y.shape:
        raise ValueError(f"need (D, n, p), (D, n, q), (D, n); got {X.shape}, {Z.shape}, {y.shape}")
    if not (bool(X.isfinite().all()) and bool(Z.isfinite().all())):
        raise ValueError("designs must be finite")
    if not (np.all(y >= 0) and np.all(np.floor(y) == y)):
        raise ValueError("counts must be non-negative integers")
    order = torch.as_tensor(np.argsort(y > 0, axis=1, kind="stable"))  # zero rows first
    X, Z = (torch.take_along_dim(M, order.unsqueeze(-1), 1) for M in (X, Z))
    y = np.take_along_axis(y, order.numpy(), 1)
    zeros = tuple(int(k) for k in (y == 0).sum(1))
    y = torch.as_tensor(y, dtype=torch.float64).unsqueeze(-1)
    cast = lambda t: t.to(device=device, dtype=dtype).contiguous()  # noqa: E731
    zero = (y == 0).to(device)
    values, index = torch.unique(y, return_inverse=True)
    return Designs(cast(X), cast(Z), cast(y), zero, cast(torch.lgamma(y + 1)), zeros,
                   cast(values.reshape(1, -1, 1)), index.to(device))  # fmt: skip


def scalings(data: Designs, standardize) -> torch.Tensor:
    """The standardisation of each dataset's covariates, as a change of parameters.

    Non-intercept columns are scaled to unit SD and, where the part has an intercept column,
    centred; constant columns are left as they are.

    Args:
        data: the stacked designs.
        standardize: a bool, or one per dataset.

    Returns:
        (D, P, P) block-diagonal T with Xβ = X̃ T⁻¹β: original = T @ fitting-scale parameters
        (the identity for datasets not standardised).
    """
    D, n, q, p = data.shape
    eye = torch.eye(q + p, dtype=data.X.dtype, device=data.X.device).repeat(D, 1, 1)
    chosen = torch.as_tensor(np.broadcast_to(np.asarray(standardize, bool), (D,)).copy(),
                             device=data.X.device)  # fmt: skip
    if not bool(chosen.any()):
        return eye
    T = eye.clone()
    for offset, M in ((0, data.Z), (q, data.X)):
        if M.shape[2] == 0:  # no zero part (poisson, nb)
            continue
        mean, sd = M.mean(1), M.std(1, correction=0)  # (D, k)
        ones = (M == 1).all(1)  # intercept columns
        for j in range(M.shape[2]):
            if bool(ones[:, j].any()):
                continue
            ok = sd[:, j] > 0  # a constant column (e.g. zero padding) is left as it is
            scale, shift = torch.where(ok, sd[:, j], 1.0), torch.where(ok, mean[:, j], 0.0)
            T[:, offset + j, offset + j] = 1 / scale
            # Centre only where the part has an intercept to absorb the shift.
            for d, k in ones.nonzero().tolist():
                T[d, offset + k, offset + j] = -shift[d] / scale[d]
    return torch.where(chosen[:, None, None], T, eye)


@dataclass(frozen=True)
class RegChunkReport:
    """What the callback sees after each chunk of steps (arrays: one entry per fit).

    Attributes:
        step: optimizer steps taken so far.  n_active: fits still running.
        nll: current mean NLL (mini-batch runs: of the last batch) or the final one.
        status: "running" or the final status.
    """

    step: int
    n_active: int
    nll: np.ndarray
    status: np.ndarray


@dataclass(frozen=True)
class RegResult:
    """Outcome of `fit_regression`; arrays have B rows (one per fit).

    Attributes:
        params: final (γ, β) on the original scale, (B, q + p), zero part first.
        nll: full-data mean NLL at `params`.
        steps: optimizer updates taken to reach the final state.
        status: "converged", "max_steps", "diverged" or "stopped".
        grad_norm: Euclidean norm of the full-data gradient on the fitting scale.
        history_step: (T,) recorded steps 0, k, 2k, ... up to the last step any fit ran.
        history_nll: (B, T) full-data NLL, NaN after a fit stopped.
        history_params: (B, q + p, T) on the original scale, NaN after a fit stopped.
    """

    params: np.ndarray
    nll: np.ndarray
    steps: np.ndarray
    status: np.ndarray
    grad_norm: np.ndarray
    history_step: np.ndarray
    history_nll: np.ndarray
    history_params: np.ndarray
