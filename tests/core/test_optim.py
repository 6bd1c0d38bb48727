"""Tests of `pipeline.core.descent.optim`: the vectorised optimizers against `torch.optim`.

The reference is `torch.optim` itself, one optimizer per fit, fed the same parameters and
gradients; in float64 every update must be bit-identical.
"""

import numpy as np
import pytest
import torch

from pipeline.core.descent import optim

TORCH_OPTIMIZERS = {
    "adam": (torch.optim.Adam, {}),
    "sgd": (torch.optim.SGD, {}),
    "sgd-momentum": (torch.optim.SGD, {"momentum": 0.9}),
    "sgd-momentum-0.5": (torch.optim.SGD, {"momentum": 0.5}),
    "rmsprop": (torch.optim.RMSprop, {}),
}


def base(name: str) -> str:
    return name.split("-")[0]


def run_vectorised(name, init, grads, lrs, **kwargs):
    """`optim.step` over a (T, P, B) gradient sequence from (P, B) `init`."""
    params, state = init.clone(), optim.init_state(base(name), init)
    for t, grad in enumerate(grads, start=1):
        params, state = optim.step(base(name), params, grad, state, lrs, t, **kwargs)
    return params, state


def run_torch(name, init, grads, lr: float) -> torch.Tensor:
    """`torch.optim` on one fit's (P,) parameters, fed its (T, P) gradients."""
    optimizer, kwargs = TORCH_OPTIMIZERS[name]
    param = init.clone().requires_grad_()
    opt = optimizer([param], lr=lr, **kwargs)
    for grad in grads:
        param.grad = grad.clone()
        opt.step()
    return param.detach()


@pytest.mark.parametrize("name", TORCH_OPTIMIZERS)
def test_vectorised_optimizers_are_bit_identical_to_torch_optim(name):
    def loss_fn(params):  # a curved, coupled objective; params (2, ...)
        return (
            params[0].exp() - 2 * params[0] + (params[1] - 0.3) ** 2 * (1 + params[0] ** 2)
        ).sum()

    optimizer, kwargs = TORCH_OPTIMIZERS[name]
    lrs = torch.tensor([0.01, 0.03, 0.05, 0.2], dtype=torch.float64)
    init = torch.tensor([1.3, -0.7], dtype=torch.float64)
    params = init[:, None].repeat(1, len(lrs))
    state = optim.init_state(base(name), params)
    for t in range(1, 201):
        leaf = params.clone().requires_grad_()
        (grad,) = torch.autograd.grad(loss_fn(leaf), leaf)
        params, state = optim.step(base(name), params, grad, state, lrs, t, **kwargs)
    for b, lr in enumerate(lrs.tolist()):
        reference = init.clone().requires_grad_()
        torch_opt = optimizer([reference], lr=lr, **kwargs)
        for _ in range(200):
            torch_opt.zero_grad()
            loss_fn(reference).backward()
            torch_opt.step()
        assert torch.equal(params[:, b], reference.detach())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", TORCH_OPTIMIZERS)
def test_each_fit_follows_torch_optim_on_its_own_parameters_gradients_and_lr(name, dtype):
    # Every fit its own start, gradients over eight orders of magnitude and of either sign,
    # and its own learning rate.
    rng = np.random.default_rng(17)
    steps, fits = 60, 5
    grads = rng.normal(size=(steps, 2, fits)) * 10.0 ** rng.uniform(-6, 2, (steps, 2, fits))
    grads = torch.tensor(grads, dtype=dtype)
    init = torch.tensor(rng.normal(0.0, 3.0, (2, fits)), dtype=dtype)
    lrs = torch.tensor([1e-3, 0.01, 0.1, 0.7, 2.0], dtype=dtype)
    params, _ = run_vectorised(name, init, grads, lrs, **TORCH_OPTIMIZERS[name][1])
    for b in range(fits):
        reference = run_torch(name, init[:, b], grads[:, :, b], lrs[b].item())
        if dtype == torch.float32 and base(name) == "adam":
            # torch.optim rounds lr / bias_correction1 once from a Python float, the per-fit
            # tensor lr rounds it in float32: one ulp of the step (measured 6e-8 relative
            # after 200 steps at lr 2), so a few ulps of float32 (eps 1.2e-7).
            torch.testing.assert_close(params[:, b], reference, rtol=1e-6, atol=0)
        else:
            assert torch.equal(params[:, b], reference), (b, params[:, b], reference)


@pytest.mark.parametrize("name", TORCH_OPTIMIZERS)
def test_select_state_keeps_the_chosen_fits(name):
    # Drop fits 1 and 3 after 10 steps (as the engine drops finished fits) and keep going: the
    # kept fits go on exactly as in a run that never dropped any.
    rng = np.random.default_rng(5)
    grads = torch.tensor(rng.normal(size=(20, 2, 5)), dtype=torch.float64)
    init = torch.tensor(rng.normal(size=(2, 5)), dtype=torch.float64)
    lrs = torch.tensor([0.01, 0.02, 0.05, 0.1, 0.2], dtype=torch.float64)
    kwargs = TORCH_OPTIMIZERS[name][1]
    whole, whole_state = run_vectorised(name, init, grads, lrs, **kwargs)

    params, state = run_vectorised(name, init, grads[:10], lrs, **kwargs)
    keep = torch.tensor([4, 0, 2])  # any order: the columns follow `keep`
    before = {key: value.clone() for key, value in state.items()}
    kept = optim.select_state(state, keep)
    assert set(kept) == set(state) and all(v.shape == (2, 3) for v in kept.values())
    for key, value in state.items():
        assert torch.equal(value, before[key])  # the input state is left alone
        assert torch.equal(kept[key], value[:, [4, 0, 2]])
    params, lr = params[:, keep], lrs[keep]
    for t in range(11, 21):
        params, kept = optim.step(base(name), params, grads[t - 1][:, keep], kept, lr, t, **kwargs)
    assert torch.equal(params, whole[:, [4, 0, 2]])
    for key, value in kept.items():
        assert torch.equal(value, whole_state[key][:, [4, 0, 2]])


def test_select_state_of_stateless_sgd_is_empty():
    assert optim.select_state({}, torch.tensor([0])) == {}


@pytest.mark.parametrize(
    ("name", "keys"),
    [("adam", ["exp_avg", "exp_avg_sq"]), ("rmsprop", ["square_avg"]), ("sgd", [])],
)
def test_init_state_is_zeros_shaped_like_the_parameters(name, keys):
    params = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    state = optim.init_state(name, params)
    assert sorted(state) == keys
    for value in state.values():
        assert value.dtype == torch.float32 and value.shape == (2, 3)
        assert torch.equal(value, torch.zeros(2, 3))


def test_sgd_momentum_buffer_starts_as_the_first_gradient():
    params = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    grad = torch.tensor([[0.5, -4.0]], dtype=torch.float64)
    lr = torch.tensor([0.1, 0.5], dtype=torch.float64)
    new, state = optim.step("sgd", params, grad, {}, lr, 1, momentum=0.9)
    assert torch.equal(state["momentum_buffer"], grad)
    assert new.tolist() == [[1.0 - 0.1 * 0.5, 2.0 + 0.5 * 4.0]]  # exact in binary
    # second step: buf = 0.9 buf + grad
    new, state = optim.step("sgd", new, grad, state, lr, 2, momentum=0.9)
    torch.testing.assert_close(state["momentum_buffer"], 1.9 * grad, rtol=1e-15, atol=0)
    new, state = optim.step("sgd", params, grad, {}, lr, 1)
    assert state == {}


@pytest.mark.parametrize(("name", "momentum"), [("adam", 0.0), ("rmsprop", 0.0), ("sgd", 0.9)])
def test_step_leaves_its_inputs_alone(name, momentum):
    rng = np.random.default_rng(2)
    params = torch.tensor(rng.normal(size=(2, 3)))
    grad = torch.tensor(rng.normal(size=(2, 3)))
    lr = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    init = optim.init_state(name, params)
    _, state = optim.step(name, params, grad, init, lr, 1, momentum=momentum)
    assert all(torch.equal(v, torch.zeros(2, 3)) for v in init.values())
    copies = [t.clone() for t in (params, grad, *state.values())]
    optim.step(name, params, grad, state, lr, 2, momentum=momentum)
    for original, copy in zip((params, grad, *state.values()), copies):
        assert torch.equal(original, copy)


def test_step_rejects_an_unknown_optimizer():
    params = torch.zeros(2, 1)
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'"):
        optim.step("lbfgs", params, params, {}, torch.ones(1), 1)


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_check_optimizer_accepts_each_name_without_momentum(name):
    assert optim.check_optimizer(name, 0.0) is None


@pytest.mark.parametrize(
    ("name", "momentum", "message"),
    [
        ("lbfgs", 0.0, "unknown optimizer 'lbfgs'"),
        ("Adam", 0.0, "unknown optimizer 'Adam'"),
        ("sgd", -0.1, r"momentum must be in \[0, 1\), got -0.1"),
        ("sgd", 1.0, r"momentum must be in \[0, 1\), got 1.0"),
        ("adam", 0.9, "momentum applies to 'sgd' only, got momentum=0.9 for 'adam'"),
        ("rmsprop", 0.5, "momentum applies to 'sgd' only"),
    ],
)
def test_check_optimizer_rejects(name, momentum, message):
    with pytest.raises(ValueError, match=message):
        optim.check_optimizer(name, momentum)


def test_check_optimizer_accepts_sgd_momentum():
    assert optim.check_optimizer("sgd", 0.99) is None
