"""The bookkeeping both descent engines share: when a fit stops (`StopRule`), what the callback
sees after each chunk of steps (`ChunkReport`) and what a batch of fits returns (`FitResult`).

Parameters are reported zero part first, θ = (γ, β[, log α]): the zero part's linear predictor
s = zᵀγ is logit π (logit P(Y > 0) in a hurdle), the count part's η = xᵀβ is log λ. The
intercept-only ZIP (`engine.fit_zip`) is the one-column design of both parts, θ = (s, η), and
its results carry the named views π̂ = σ(s) and λ̂ = e^η. `Outcome` collects the final states
and recorded histories of an engine that drops finished fits from its batch (both do).

Pure torch and numpy: no I/O, no module state.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from pipeline.core.descent import optim

# "stalled" (design engine only): the stop rule held on a plateau at infinity, the zero part
# saturated (`design_engine.SATURATED_LOGIT`), not at a finite maximum.
STATUSES = ("running", "converged", "max_steps", "diverged", "stopped", "stalled")
RUNNING, CONVERGED, MAX_STEPS, DIVERGED, STOPPED, STALLED = range(len(STATUSES))


def require(ok, what: str, value) -> None:
    """Raise `ValueError("<what>, got <value>")` unless `ok` (the engines' input checks)."""
    if not ok:
        raise ValueError(f"{what}, got {value!r}")


@dataclass(frozen=True)
class StopRule:
    """When each fit stops, and how often the engine records and reports.

    A fit is "converged" once |change of its mean NLL| < `tol` on `window` consecutive steps
    and its gradient norm is below `grad_tol` ("stalled" instead where the zero part is
    saturated); "max_steps" after `max_steps` updates; "diverged" when its loss, gradient or
    parameters stop being finite or leave the engine's range (the engine reports it at its
    last finite state, one step back).

    Attributes:
        max_steps: most optimizer updates per fit (>= 0).
        tol, window, grad_tol: the convergence test (NLL in nats per observation).
        record_every: histories are recorded every this many steps (step 0 is the start).
        chunk_steps: the callback runs after every this many steps.

    Raises:
        ValueError: on a count that is not an integer of its range.
    """

    max_steps: int = 500
    tol: float = 1e-10
    window: int = 10
    grad_tol: float = 1e-8
    record_every: int = 10
    chunk_steps: int = 50

    def __post_init__(self):
        for name in ("max_steps", "window", "record_every", "chunk_steps"):
            value, low = getattr(self, name), 0 if name == "max_steps" else 1
            require(int(value) == value and value >= low, f"{name} must be an integer >= {low}",
                    value)  # fmt: skip

    def status(self, t: int, loss, prev_loss, streak, grad_norm, finite=None, saturated=None,
               converge: bool = True) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """Each fit's status after step `t` (elementwise over any shape of fits).

        Args:
            t: steps taken so far.
            loss, prev_loss: mean NLL now and one step back (NaN at the start).
            streak: consecutive steps so far with |change of NLL| < tol (int64).
            grad_norm: the gradient norms.
            finite: False where a fit diverged; None when every fit is finite.
            saturated: True where the zero part is saturated ("stalled"); None: never.
            converge: apply the convergence test (off for mini-batch steps, whose noise never
                lets the loss settle).

        Returns:
            (status codes: RUNNING or the final status, the updated streak).
        """
        streak = torch.where((loss - prev_loss).abs() < self.tol, streak + 1, 0)
        status = torch.full_like(streak, MAX_STEPS if t >= self.max_steps else RUNNING)
        if converge:
            flat = (streak >= self.window) & (grad_norm < self.grad_tol)
            done = CONVERGED if saturated is None else torch.where(saturated, STALLED, CONVERGED)
            status = torch.where(flat, done, status)
        if finite is not None:
            status = torch.where(finite, status, DIVERGED)
        return status, streak


@dataclass(frozen=True)
class ChunkReport:
    """What the callback sees after each chunk of steps (arrays: one entry per fit).

    Attributes:
        step: optimizer steps taken so far by the fits still running.
        n_active: number of fits still running.
        nll: current mean NLL of running fits (mini-batch runs: of the last batch), the final
            one of finished fits.
        status: "running" or the final status.
        params: current (running) or final (finished) θ on the original scale, (B, P).
    """

    step: int
    n_active: int
    nll: np.ndarray
    status: np.ndarray
    params: np.ndarray

    @property
    def pi(self) -> np.ndarray:
        """π̂ = σ(s) of an intercept-only fit, (B,)."""
        return _sigmoid(self.params[:, 0])

    @property
    def lam(self) -> np.ndarray:
        """λ̂ = e^η of an intercept-only fit, (B,)."""
        return _exp(self.params[:, 1])


@dataclass(frozen=True)
class FitResult:
    """Outcome of a batch of fits; arrays have B rows (one per fit).

    Attributes:
        params: final θ on the original scale, (B, P), zero part first (diverged: the last
            finite state).
        nll: full-data mean NLL at `params`.
        steps: optimizer updates taken to reach the final state (int64).
        status: "converged", "max_steps", "diverged", "stopped" (the callback stopped the run)
            or "stalled".
        grad_norm: Euclidean norm of the full-data gradient at the final state (on the
            fitting scale).
        history_step: (T,) recorded steps 0, k, 2k, ... up to the last step any fit ran.
        history_nll: (B, T) full-data NLL, NaN after a fit stopped.
        history_params: (B, P, T) on the original scale, NaN after a fit stopped. The final
            state is there only if `steps` is a multiple of k: append (`steps`, `params`) to
            draw a trajectory to its end.

    Views of an intercept-only fit, θ = (s, η): `pi`, `lam` (B,) and `history_pi`,
    `history_lam` (B, T).
    """

    params: np.ndarray
    nll: np.ndarray
    steps: np.ndarray
    status: np.ndarray
    grad_norm: np.ndarray
    history_step: np.ndarray
    history_nll: np.ndarray
    history_params: np.ndarray

    @cached_property
    def pi(self) -> np.ndarray:
        return _sigmoid(self.params[:, 0])

    @cached_property
    def lam(self) -> np.ndarray:
        return _exp(self.params[:, 1])

    @cached_property
    def history_pi(self) -> np.ndarray:
        return _sigmoid(self.history_params[:, 0])

    @cached_property
    def history_lam(self) -> np.ndarray:
        return _exp(self.history_params[:, 1])

    def select(self, rows, cols=slice(None)) -> FitResult:
        """The fits `rows` (an index or slice), parameters `cols` only."""
        return FitResult(
            params=self.params[rows][:, cols], nll=self.nll[rows], steps=self.steps[rows],
            status=self.status[rows], grad_norm=self.grad_norm[rows],
            history_step=self.history_step, history_nll=self.history_nll[rows],
            history_params=self.history_params[rows][:, cols],
        )  # fmt: skip


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return torch.sigmoid(torch.from_numpy(np.ascontiguousarray(x))).numpy()


def _exp(x: np.ndarray) -> np.ndarray:
    return torch.exp(torch.from_numpy(np.ascontiguousarray(x))).numpy()


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.cpu().numpy()


def status_names(status: torch.Tensor) -> np.ndarray:
    """Status codes as names (numpy strings)."""
    return np.asarray(STATUSES)[_numpy(status)]


def to_result(params, nll, steps, status, grad_norm, history_step, history_nll,
              history_params) -> FitResult:  # fmt: skip
    """A `FitResult` from the engine's tensors (status as codes), moved to numpy."""
    return FitResult(
        params=_numpy(params), nll=_numpy(nll), steps=_numpy(steps), status=status_names(status),
        grad_norm=_numpy(grad_norm), history_step=np.asarray(history_step, dtype=np.int64),
        history_nll=_numpy(history_nll), history_params=_numpy(history_params),
    )  # fmt: skip


class Outcome:
    """Final states of finished fits and the recorded histories, collected during a run of an
    engine that drops finished fits from its batch (`engine.fit_zip`, `design_engine.fit_designs`,
    `mixed_engine.fit_mixed_gd`; θ as (P, B) columns)."""

    def __init__(self, size: int, n_params: int, device, dtype):
        self.params = torch.full((n_params, size), torch.nan, device=device, dtype=dtype)
        self.nll = torch.full((size,), torch.nan, device=device, dtype=dtype)
        self.grad_norm = self.nll.clone()
        self.steps = torch.zeros(size, device=device, dtype=torch.int64)
        self.status = torch.full_like(self.steps, RUNNING)
        self.records = []

    def record(self, t, ids, loss, params):
        self.records.append((t, ids, loss, params))

    def finish(self, ids, status, params, loss, grad_norm, steps):
        self.params[:, ids], self.nll[ids], self.grad_norm[ids] = params, loss, grad_norm
        self.status[ids], self.steps[ids] = status, steps

    def check(self, rule: StopRule, t, finite, active, params, loss, prev_loss, gnorm, streak,
              last):  # fmt: skip
        """After evaluating step `t`: record it (every `rule.record_every` steps), decide each
        fit's status (`rule.status`) and retire the finished fits (`retire`).

        Returns:
            (indices of the fits still running or None when none finished, the new streak).
        """
        all_finite = bool(finite.all())
        if t % rule.record_every == 0:
            ok = slice(None) if all_finite else finite.nonzero().squeeze(1)
            self.record(t, active[ok], loss[ok], params[:, ok])
        finite = None if all_finite else finite
        status, streak = rule.status(t, loss, prev_loss, streak, gnorm, finite)
        return self.retire(t, status, finite, active, params, loss, gnorm, last), streak

    def retire(self, t, status, finite, active, params, loss, gnorm, last):
        """Record the fits whose `status` is final; returns the indices of those still
        running, or None when none finished. A diverged fit (`finite` False; None: all
        finite) is recorded at its last finite state `last` = (params, loss, gnorm) one step
        back, except at step 0."""
        done = status != RUNNING
        if not bool(done.any()):
            return None
        stop, keep = done.nonzero().squeeze(1), (~done).nonzero().squeeze(1)
        state = [x.index_select(-1, stop) for x in (params, loss, gnorm)]
        steps = torch.full_like(stop, t)
        if finite is not None and t > 0:  # diverged: report the last finite state, a step back
            ok = finite.index_select(0, stop)
            state = [torch.where(ok, x, y.index_select(-1, stop)) for x, y in zip(state, last)]
            steps -= (~ok).long()
        self.finish(active[stop], status[stop], *state, steps)
        return keep

    def stopped(self, callback, t, chunk_steps, active, params, loss, gnorm) -> bool:
        """Run `callback` every `chunk_steps` steps; when it returns True, record the fits still
        running as "stopped" and say so."""
        if callback is None or t == 0 or t % chunk_steps:
            return False
        if callback(self.report(t, active, params, loss)):
            self.finish(active, STOPPED, params, loss, gnorm, t)
            return True
        return False

    def report(self, t, active, params, loss) -> ChunkReport:
        state, nll, status = self.params.clone(), self.nll.clone(), self.status.clone()
        state[:, active], nll[active] = params, loss
        return ChunkReport(t, len(active), _numpy(nll), status_names(status), _numpy(state.T))

    def result(self) -> FitResult:
        size, width = len(self.nll), len(self.records)
        rows = torch.cat([ids for _, ids, _, _ in self.records])
        cols = torch.cat([torch.full_like(ids, j) for j, (_, ids, _, _) in enumerate(self.records)])
        history = torch.full((1 + len(self.params), size, width), torch.nan, dtype=self.nll.dtype,
                             device=rows.device)  # fmt: skip
        history[0, rows, cols] = torch.cat([loss for _, _, loss, _ in self.records])
        history[1:, rows, cols] = torch.cat([params for *_, params in self.records], -1)
        return to_result(self.params.T, self.nll, self.steps, self.status, self.grad_norm,
                         [t for t, *_ in self.records], history[0],
                         history[1:].permute(1, 0, 2))  # fmt: skip


def descend(rule: StopRule, outcome: Outcome, params, lr, evaluate, *, optimizer: str,
            momentum: float = 0.0, callback=None, compact=None) -> FitResult:  # fmt: skip
    """The loop of the engines that drop finished fits from their batch.

    Each step: `evaluate(params)` -> (loss (B,), grad (P, B), grad norm (B,), finite (B,)) of
    the fits still running; record, decide and retire them (`Outcome.check`), compact the
    batch (and the engine's own per-fit state: `compact(keep)`), run the callback, take one
    optimizer step (`optim.step`).

    Args:
        rule: the `StopRule`; outcome: the `Outcome` to fill; params: (P, B) starts; lr: (B,).
        optimizer, momentum: as `optim.step`; callback: as the engines'.

    Returns:
        `outcome.result()`.
    """
    active = torch.arange(params.shape[-1], device=params.device)  # ids of the fits running
    opt_state = optim.init_state(optimizer, params)
    prev_loss = torch.full_like(lr, torch.nan)
    streak = torch.zeros_like(active)  # consecutive steps with |change of NLL| < tol
    last = ()  # (params, loss, grad norm) one step back, for fits that diverge
    t = 0
    while True:
        loss, grad, gnorm, finite = evaluate(params)
        keep, streak = outcome.check(rule, t, finite, active, params, loss, prev_loss, gnorm,
                                     streak, last)  # fmt: skip
        if keep is not None:
            active, params, grad, loss, gnorm, lr, streak = (
                x.index_select(-1, keep) for x in (active, params, grad, loss, gnorm, lr, streak)
            )
            opt_state = optim.select_state(opt_state, keep)
            if compact is not None:
                compact(keep)
        if len(active) == 0:
            break
        if outcome.stopped(callback, t, rule.chunk_steps, active, params, loss, gnorm):
            break
        last, prev_loss = (params, loss, gnorm), loss
        t += 1
        params, opt_state = optim.step(optimizer, params, grad, opt_state, lr, t, momentum)
    return outcome.result()
