"""Batched gradient-descent fits of the intercept-only zero-inflated Poisson (ZIP).

B independent fits run as one tensor program: fit b has its own dataset, initial (pi, lambda)
and learning rate, and minimises its dataset's mean NLL (`likelihood`). Per-fit learning rates
are what let a whole learning-rate grid run as one program.

Parameters are unconstrained, s = logit(pi) and eta = log(lambda). Log space keeps lambda
positive without clipping, turns a relative error in lambda into an absolute one in eta, and
is the parametrisation of the exact-MLE standard errors (`mle.ZipMLE.se_logit_pi`,
`se_log_lam`), so gradient norms and tolerances live on the scale the SEs measure. (The blog
used softplus(x) for lambda, whose slope vanishes as lambda -> 0.) A boundary MLE (pi = 0)
sends s towards -inf and the gradient vanishes like pi, so descent closes in only sublinearly:
such fits usually end at `max_steps` with a tiny pi and a tiny NLL gap.

Optimizers are the vectorised copies in `optim` (same updates as `torch.optim`). Pure torch and
numpy: no I/O, no module state, no randomness (initial values come from the caller).
"""

from collections.abc import Callable, Sequence

import numpy as np
import torch

from pipeline.core.descent import optim
from pipeline.core.descent.likelihood import MODELS, data_terms, loss_and_grad, sufficient_stats
from pipeline.core.descent.likelihood import (
    histogram_nll as histogram_nll,  # re-exported: part of this API
)
from pipeline.core.descent.likelihood import nll_per_sample as nll_per_sample
from pipeline.core.descent.outcome import (
    ChunkReport,
    FitResult,
    Outcome,
    StopRule,
    descend,
    require,
)
from pipeline.core.histogram import Histogram

# |log lambda| beyond this (lambda > 2.7e43 or < 3.7e-44) is a runaway rate, not a count model;
# exp(eta) itself overflows float64 only at eta ~ 709.8, after many wasted steps.
MAX_LOG_RATE = 100.0


def stack_histograms(
    hists: Sequence[Histogram], *, device="cpu", dtype=torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack D histograms into zero-padded (D, K) tensors (pads: value 0 with frequency 0).

    Args:
        hists: the histograms; K is the largest number of distinct values.
        device: torch device of the outputs.
        dtype: floating dtype of the outputs.

    Returns:
        (values, freqs), each (D, K).
    """
    width = max((len(h.values) for h in hists), default=0)
    values = np.zeros((len(hists), width), np.int64)
    freqs = np.zeros((len(hists), width), np.int64)
    for row, hist in enumerate(hists):
        values[row, : len(hist.values)] = hist.values
        freqs[row, : len(hist.freqs)] = hist.freqs
    return (
        torch.as_tensor(values, device=device, dtype=dtype),
        torch.as_tensor(freqs, device=device, dtype=dtype),
    )


def check_device(device: str) -> None:
    """Raise `ValueError` unless torch can compute on `device` on this machine.

    Args:
        device: "cpu", "cuda" or "cuda:N".
    """
    if device == "cpu":
        return
    if not torch.cuda.is_available():
        raise ValueError(f"{device!r} but no CUDA device is available here (use 'cpu')")
    index = torch.device(device).index
    if index is not None and index >= torch.cuda.device_count():
        raise ValueError(f"{device!r} but only {torch.cuda.device_count()} CUDA device(s) exist")


@torch.no_grad()
def fit_zip(
    values,
    freqs,
    dataset_index,
    pi0,
    lam0,
    lr,
    *,
    optimizer: str = "adam",
    momentum: float = 0.0,
    model: str = "zip",
    max_steps: int = 500,
    tol: float = 1e-10,
    window: int = 10,
    grad_tol: float = 1e-8,
    record_every: int = 10,
    chunk_steps: int = 50,
    callback: Callable[[ChunkReport], bool | None] | None = None,
    device="cpu",
    dtype=torch.float64,
) -> FitResult:
    """Fit B zero-inflated Poissons by full-batch gradient descent, all at once.

    Each fit stops on its own by `outcome.StopRule` (gradient norm in (s, eta); "diverged" also
    when |eta| > `MAX_LOG_RATE`), a diverged fit reported at its last finite state, one step
    earlier (a fit already out of bounds at its init is reported as it is). A finished fit is
    dropped from the batch at once and costs nothing afterwards: this compaction and the O(1)
    sufficient-statistics loss are why this loop stays apart from `design_engine.fit_designs`
    (the same fits as one-column designs read all n rows every step: 10x slower on 10 fits at
    n = 1e4, 76x at the sweep's shape; benchmarks/README.md, "Engine").

    Args:
        values, freqs: the D datasets as zero-padded histograms, (D, K) (`stack_histograms`).
        dataset_index: (B,) int, the dataset of each fit.
        pi0, lam0: (B,) or scalar initial estimates, 0 < pi0 < 1, 0 < lam0.
        lr: (B,) or scalar learning rates.
        optimizer: "adam", "sgd" or "rmsprop", with `torch.optim`'s default hyperparameters.
        momentum: SGD momentum (dampening 0, no Nesterov).
        model: how the likelihood is evaluated, one of `MODELS` (see `likelihood`).
        max_steps: most optimizer updates per fit.
        tol, window, grad_tol: the convergence test (`StopRule`; NLL in nats per observation).
        record_every: histories are recorded every this many steps (step 0 is the init).
        chunk_steps: `callback` runs after every this many steps while any fit runs.
        callback: called with a `ChunkReport`; if it returns True the run stops and the fits
            still running get status "stopped", reported at their current state (pruning).
        device, dtype: where and in which precision to compute.

    Returns:
        The `FitResult`, θ = (s, eta) with the views `pi`, `lam`.

    Raises:
        ValueError: on an unknown optimizer or model, or invalid inputs.
    """
    optim.check_optimizer(optimizer, momentum)
    require(model in MODELS, f"model must be one of {MODELS}", model)
    rule = StopRule(max_steps, tol, window, grad_tol, record_every, chunk_steps)
    values, freqs = (torch.as_tensor(x, device=device, dtype=dtype) for x in (values, freqs))
    shapes = (tuple(values.shape), tuple(freqs.shape))
    require(values.ndim == 2 and shapes[0] == shapes[1], "need two (D, K) histograms", shapes)
    require(bool((freqs.sum(-1) > 0).all()), "every dataset needs n > 0", freqs.sum(-1))
    index = torch.as_tensor(dataset_index, device=device)
    valid = index.ndim == 1 and not index.is_floating_point()
    require(
        valid and bool(((index >= 0) & (index < len(values))).all()),
        f"dataset_index must be 1-D ints in [0, {len(values)})",
        index,
    )
    index = index.long()
    pi0, lam0, lr = (
        torch.as_tensor(x, device=device, dtype=dtype).broadcast_to(len(index))
        for x in (pi0, lam0, lr)
    )
    require(bool(((pi0 > 0) & (pi0 < 1)).all()), "pi0 must lie in (0, 1)", pi0)
    for name, x in [("lam0", lam0), ("lr", lr)]:
        require(bool(((x > 0) & x.isfinite()).all()), f"{name} must be positive, finite", x)

    # Batch last: each parameter and statistic is a contiguous (B,) row.
    if model == "zip":  # the statistics and the loss's data-only terms, once per fit
        stats = sufficient_stats(values, freqs)[index].T.contiguous()
        data = (stats, data_terms(stats).contiguous())
    else:
        data = (values[index].T.contiguous(), freqs[index].T.contiguous())
    params = torch.stack([torch.logit(pi0), torch.log(lam0)]).contiguous()
    state = {"data": data}

    def evaluate(params):
        loss, grad = loss_and_grad(model, params, state["data"])
        # Elementwise on the (B,) rows: vector_norm over the length-2 dim 0 is ~40x slower.
        gnorm = torch.hypot(grad[0], grad[1])
        # One isfinite for three rows: a sum is finite iff its terms are (short of overflow).
        finite = (loss + gnorm + params[0]).isfinite() & (params[1].abs() <= MAX_LOG_RATE)
        return loss, grad, gnorm, finite

    def compact(keep):
        state["data"] = tuple(x.index_select(-1, keep) for x in state["data"])

    outcome = Outcome(len(index), 2, device, dtype)
    return descend(rule, outcome, params, lr, evaluate, optimizer=optimizer, momentum=momentum,
                   callback=callback, compact=compact)  # fmt: skip
