"""What a batch of fits returns: statuses, the per-chunk report, the final `FitResult`, and the
bookkeeping (`Outcome`) that collects final states and recorded histories while the engine runs.

Pure torch and numpy: no I/O, no module state.
"""

from dataclasses import dataclass

import numpy as np
import torch

# "stalled" (regression engine only): the stop rule held on a plateau at infinity, the zero
# part saturated (`reg_loss.SATURATED_LOGIT`), not at a finite maximum.
STATUSES = ("running", "converged", "max_steps", "diverged", "stopped", "stalled")
RUNNING, CONVERGED, MAX_STEPS, DIVERGED, STOPPED, STALLED = range(len(STATUSES))


@dataclass(frozen=True)
class ChunkReport:
    """What the callback sees after each chunk of steps (arrays: one entry per fit).

    Attributes:
        step: optimizer steps taken so far by the fits still running.
        n_active: number of fits still running.
        nll: current mean NLL of running fits, final NLL of finished ones.
        pi, lam: current (running) or final (finished) estimates.
        status: "running" or the final status.
    """

    step: int
    n_active: int
    nll: np.ndarray
    pi: np.ndarray
    lam: np.ndarray
    status: np.ndarray


@dataclass(frozen=True)
class FitResult:
    """Outcome of `fit_zip`; arrays of length B (one per fit) unless said otherwise.

    Attributes:
        pi, lam, nll: final estimates and mean NLL (diverged: the last finite state).
        steps: optimizer updates taken to reach the final state (int64).
        status: "converged", "max_steps", "diverged" or "stopped" (the callback stopped the run).
        grad_norm: Euclidean norm of the gradient in (s, eta) at the final state.
        history_step: (T,) recorded steps 0, k, 2k, ... up to the last step any fit ran.
        history_nll, history_pi, history_lam: (B, T), NaN after a fit stopped. The final state
            is there only if `steps` is a multiple of k: append (`steps`, `nll`, `pi`, `lam`)
            to draw a trajectory to its end.
    """

    pi: np.ndarray
    lam: np.ndarray
    nll: np.ndarray
    steps: np.ndarray
    status: np.ndarray
    grad_norm: np.ndarray
    history_step: np.ndarray
    history_nll: np.ndarray
    history_pi: np.ndarray
    history_lam: np.ndarray


class Outcome:
    """Final states of finished fits and the recorded histories, collected during a run."""

    def __init__(self, size: int, device, dtype):
        self.params = torch.full((2, size), torch.nan, device=device, dtype=dtype)
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

    def report(self, t, active, params, loss) -> ChunkReport:
        state, nll, status = self.params.clone(), self.nll.clone(), self.status.clone()
        state[:, active], nll[active] = params, loss
        pi, lam = _estimates(state)
        return ChunkReport(t, len(active), _numpy(nll), pi, lam, _names(status))

    def result(self) -> FitResult:
        size, width = len(self.nll), len(self.records)
        rows = torch.cat([ids for _, ids, _, _ in self.records])
        cols = torch.cat([torch.full_like(ids, j) for j, (_, ids, _, _) in enumerate(self.records)])
        history = torch.full((3, size, width), torch.nan, dtype=self.nll.dtype, device=rows.device)
        history[0, rows, cols] = torch.cat([loss for _, _, loss, _ in self.records])
        history[1:, rows, cols] = torch.cat([params for *_, params in self.records], -1)
        pi, lam = _estimates(self.params)
        history_pi, history_lam = _estimates(history[1:])
        return FitResult(
            pi=pi,
            lam=lam,
            nll=_numpy(self.nll),
            steps=_numpy(self.steps),
            status=_names(self.status),
            grad_norm=_numpy(self.grad_norm),
            history_step=np.array([t for t, *_ in self.records], dtype=np.int64),
            history_nll=_numpy(history[0]),
            history_pi=history_pi,
            history_lam=history_lam,
        )


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.cpu().numpy()


def _names(status: torch.Tensor) -> np.ndarray:
    return np.asarray(STATUSES)[_numpy(status)]


def _estimates(params: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(pi, lambda) from a (2, ...) tensor of (s, eta)."""
    return _numpy(torch.sigmoid(params[0])), _numpy(torch.exp(params[1]))
