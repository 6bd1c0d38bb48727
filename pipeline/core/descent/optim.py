"""Vectorised first-order optimizers with one learning rate per fit.

`torch.optim` takes one learning rate per parameter group, so a grid of learning rates would
need one optimizer (and one Python loop) per rate. Here the P parameters of B independent fits
are one (P, B) tensor (batch last, so each parameter is a contiguous row) and the learning rate
is a (B,) tensor. Each update repeats the arithmetic of the single-tensor `torch.optim`
implementation operation by operation (same order, same scalar bias corrections), so fit b
follows the path `torch.optim` would take for it alone (the tests find them bit-identical in
float64; in float32 Adam differs by about one rounding, 6e-8 relative, because lr / bias
correction is rounded in float32 here rather than from a Python float).

The optimizer state is a dict of (P, B) tensors so that a caller can drop finished fits with
`select_state`. Pure torch, no module state.
"""

import torch

OPTIMIZERS = ("adam", "sgd", "rmsprop")

# torch.optim defaults.
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
RMSPROP_ALPHA = 0.99
RMSPROP_EPS = 1e-8


def check_optimizer(name: str, momentum: float) -> None:
    """Validate an optimizer name and its momentum.

    Args:
        name: one of `OPTIMIZERS`.
        momentum: SGD momentum in [0, 1); must be 0 for the other optimizers.

    Raises:
        ValueError: on an unknown name or a momentum that does not apply.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {OPTIMIZERS}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    if momentum != 0.0 and name != "sgd":
        raise ValueError(f"momentum applies to 'sgd' only, got momentum={momentum} for {name!r}")


def init_state(name: str, params: torch.Tensor) -> dict[str, torch.Tensor]:
    """Fresh optimizer state for a (P, B) parameter tensor.

    Args:
        name: one of `OPTIMIZERS`.
        params: current parameters, (P, B).

    Returns:
        Dict of state tensors shaped like `params` (empty for plain SGD; the momentum buffer
        is created on the first step, as in `torch.optim.SGD`).
    """
    if name == "adam":
        return {"exp_avg": torch.zeros_like(params), "exp_avg_sq": torch.zeros_like(params)}
    if name == "rmsprop":
        return {"square_avg": torch.zeros_like(params)}
    return {}


def select_state(state: dict[str, torch.Tensor], keep: torch.Tensor) -> dict[str, torch.Tensor]:
    """Fits `keep` (last dimension) of every state tensor: drops finished fits.

    Args:
        state: optimizer state from `init_state` / `step`.
        keep: int64 indices of the fits to keep.

    Returns:
        The compacted state.
    """
    return {key: value.index_select(-1, keep) for key, value in state.items()}


def step(
    name: str,
    params: torch.Tensor,
    grad: torch.Tensor,
    state: dict[str, torch.Tensor],
    lr: torch.Tensor,
    t: int,
    momentum: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One optimizer update of every fit.

    Args:
        name: one of `OPTIMIZERS`.
        params: current parameters, (P, B).
        grad: gradient of each fit's own loss, (P, B).
        state: optimizer state (not modified).
        lr: learning rates, (B,).
        t: number of this update, 1 for the first (Adam's bias correction; shared by all fits
            because every fit starts at step 0).
        momentum: SGD momentum (dampening 0, no Nesterov, as the `torch.optim.SGD` defaults).

    Returns:
        (new parameters, new state).
    """
    if name == "adam":
        beta1, beta2 = ADAM_BETAS
        exp_avg = state["exp_avg"].lerp(grad, 1 - beta1)
        exp_avg_sq = state["exp_avg_sq"].mul(beta2).addcmul(grad, grad, value=1 - beta2)
        # Python floats, exactly as torch.optim computes them (a tensor pow could differ).
        bias_correction1 = 1 - beta1**t
        bias_correction2_sqrt = (1 - beta2**t) ** 0.5
        step_size = lr / bias_correction1
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add(ADAM_EPS)
        # addcdiv's kernel computes params + (value * t1) / t2; value must be a Python scalar
        # there, so the same expression is spelt out with a per-fit value.
        new = params + (-step_size) * exp_avg / denom
        return new, {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
    if name == "rmsprop":
        square_avg = (
            state["square_avg"].mul(RMSPROP_ALPHA).addcmul(grad, grad, value=1 - RMSPROP_ALPHA)
        )
        avg = square_avg.sqrt().add(RMSPROP_EPS)
        return params + (-lr) * grad / avg, {"square_avg": square_avg}
    if name == "sgd":
        buf = state.get("momentum_buffer")
        if momentum != 0.0:
            buf = grad.clone() if buf is None else buf.mul(momentum).add(grad)
        # torch.optim's add_(grad, alpha=-lr) rounds once (a fused multiply-add); addcmul with a
        # tensor factor does too, where params + (-lr) * grad would round twice.
        new = torch.addcmul(params, grad if buf is None else buf, -lr)
        return new, {} if buf is None else {"momentum_buffer": buf}
    raise ValueError(f"unknown optimizer {name!r}; expected one of {OPTIMIZERS}")
