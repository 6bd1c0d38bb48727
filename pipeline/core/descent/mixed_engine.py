"""Batched gradient descent on the marginal likelihood of count GLMMs (issue 20 item 3).

B fits of one `MixedProblem` (starts × learning rates) are one tensor program: each step
evaluates the adaptive Gauss–Hermite log-likelihood of every fit (`oracle.mixed`, the oracle's
own quadrature: a fit's gap to the oracle is then an optimisation gap, not a difference of
approximations) and its gradient with the points held where the modes put them, analytic
and without autograd (`loglik_and_score`: equal to the exact gradient to ~1e-12 relative,
tests/core/test_mixed_engine.py), and takes one optimizer step (`optim.step`). An earlier
version took the exact gradient by autograd through one graph-carrying Newton step of the
modes: as fast with one random part, 1.17x slower with two. Fits minimise the mean NLL per
observation,
−ℓ/Σw, over θ = [γ, β, (log α), log σ...]. The groups' modes are warm-started from the
previous step, so after the first step one or two Newton iterations find them.

Stopping and bookkeeping are the intercept-only engine's (`outcome.StopRule`, `Outcome`): a
finished fit leaves the batch at once, with its optimizer state and modes, so it costs nothing
afterwards. A fit's path depends on the others in its batch only through rounding (each
group's mode search stops on its own; the predictors are elementwise sums, not a BLAS product
whose kernel changes with the batch's shape; what remains is that torch's vectorised and
scalar exp/log differ in the last bit, and an element's position decides which it gets):
alone or in a batch, a fit ends at the same step within 1e-12. "diverged" when the
loss, gradient or parameters stop being finite or a predictor leaves `MAX_LOG_RATE` (reported
at the last finite state, one step back). Pure torch: no I/O, no module state.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from pipeline.core.descent import optim, outcome
from pipeline.core.descent.engine import MAX_LOG_RATE
from pipeline.core.descent.outcome import FitResult, Outcome, StopRule, descend, require
from pipeline.core.oracle.mixed import MixedProblem, loglik_and_score


def _loss_grad(mp: MixedProblem, params: torch.Tensor, nodes, modes, total):
    """Mean NLL (B,), its gradient (k, B) and the modes (B, G, d) at `params` (k, B): the
    quadrature's value and its gradient with the points held at the modes
    (`oracle.mixed.loglik_and_score`; equal to the exact gradient to ~1e-12 relative). A fit
    whose modes or quadrature fail (a non-finite predictor) gets a NaN loss."""
    ll, grad, modes = loglik_and_score(mp, params.T, nodes, modes)
    return -ll / total, -grad.T.contiguous() / total, modes


def fit_mixed_gd(
    mp: MixedProblem,
    starts,
    lr,
    *,
    optimizer: str = "adam",
    momentum: float = 0.0,
    rule: StopRule | None = None,
    nodes: int | None = None,
    callback: Callable[[outcome.ChunkReport], bool | None] | None = None,
) -> FitResult:
    """Fit B count GLMMs by full-batch gradient descent, all at once: to one dataset, or
    each to its own of datasets that share a design (`oracle.mixed.stack_problems`).

    Args:
        mp: the `MixedProblem` (`oracle.mixed.mixed_problem`), or a stacked one with one
            dataset per fit.
        starts: (B, k) initial parameters [γ, β, (log α), log σ...], finite.
        lr: (B,) or scalar learning rates.
        optimizer, momentum: as `engine.fit_zip`.
        rule: the `StopRule` (default: its defaults).
        nodes: quadrature points per random part (default: the oracle's).
        callback: called with a `ChunkReport` every `rule.chunk_steps` steps; True stops the
            fits still running ("stopped").

    Returns:
        The `FitResult` (params (B, k) on the original scale, NLL per observation).

    Raises:
        ValueError: on an unknown optimizer or invalid starts or learning rates.
    """
    optim.check_optimizer(optimizer, momentum)
    rule = rule or StopRule()
    starts = torch.as_tensor(np.asarray(starts, dtype=float), dtype=torch.float64)
    k = mp.k_fixed + mp.d
    require(starts.ndim == 2 and starts.shape[1] == k, f"starts must be (B, {k})",
            tuple(starts.shape))  # fmt: skip
    require(bool(starts.isfinite().all()), "starts must be finite", starts)
    B = starts.shape[0]
    lr = torch.as_tensor(lr, dtype=torch.float64).broadcast_to(B).clone()
    require(bool(((lr > 0) & lr.isfinite()).all()), "lr must be positive, finite", lr)
    require(not mp.stacked or mp.y.shape[0] == B, "a stacked problem needs one dataset per "
            "fit", tuple(mp.y.shape))  # fmt: skip
    q, p = mp.q, mp.p
    state = {"modes": None, "mp": mp}

    def evaluate(params):
        mp = state["mp"]
        total = mp.w.sum(-1)  # per fit: each fits its own rows when stacked
        loss, grad, modes = _loss_grad(mp, params, nodes, state["modes"], total)
        state["modes"] = modes if modes is not None else state["modes"]
        gnorm = torch.linalg.vector_norm(grad, dim=0)
        eta = (params[q : q + p].T[:, None, :] * mp.X).sum(-1)
        in_range = eta.abs().amax(-1) + mp.ox.abs().amax(-1) <= MAX_LOG_RATE
        return loss, grad, gnorm, (loss + gnorm + params.sum(0)).isfinite() & in_range

    def compact(keep):
        state["mp"] = state["mp"].take(keep)
        if state["modes"] is not None:
            state["modes"] = state["modes"].index_select(0, keep)

    record = Outcome(B, k, "cpu", torch.float64)
    return descend(rule, record, starts.T.contiguous(), lr, evaluate, optimizer=optimizer,
                   momentum=momentum, callback=callback, compact=compact)  # fmt: skip
