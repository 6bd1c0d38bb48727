"""The likelihood of every fit: the mean ZIP negative log-likelihood of one dataset.

Fit b minimises L_b = sum_k f_k (-log p(v_k)) / n over the histogram (v_k, f_k) of its dataset
(the sufficient statistic, DESIGN section 2), so its cost does not grow with n. Parameters are
s = logit(pi) and eta = log(lambda) (see `engine` for why).

Three evaluations of the same function of (s, eta), selected by `model`:
  "zip"          closed form on three sufficient statistics, z = n_0 / n (share of zeros),
                 m = mean count and c = mean log y!. With u = s + lambda,
                     L = softplus(s) + lambda - z softplus(u) - m eta + c,
                     dL/ds = sigmoid(s) - z sigmoid(u),
                     dL/deta = lambda (1 - z sigmoid(u)) - m,
                 where sigmoid(u) = P(structural zero | y = 0). It follows from
                 log p(0) = -softplus(s) - lambda + softplus(u) and, for y > 0,
                 log p(y) = -softplus(s) + y eta - lambda - log y!. Cost O(1) per fit, whatever
                 K; the gradient is analytic (tests check it against autograd on
                 `zip_log_prob`). The loss is evaluated as
                     L = softplus(s) - z logaddexp(-lambda, s) + (1 - z) bd0(m', lambda) + K,
                 with m' = m / (1 - z) the mean of the positive counts, Loader's deviance
                 bd0(m', lambda) = m' log(m' / lambda) + lambda - m' and the data constant
                 K = m - m log m' + c: the terms of size m log m (1e20 at counts ~1e18) cancel
                 inside K once, so differences of L between parameters keep full precision
                 (the plain form loses ~1e4 nats there, and ~1e-3 in float32 at lambda 1e4).
  "zip_autograd" `distributions.zip_log_prob` over the histogram, gradient by autograd.
  "mixture"      the blog's `MixtureSameFamily` (`distributions.zip_mixture`), by autograd.
Pure torch: no I/O, no module state.
"""

import torch

from pipeline.core.laws.distributions import softplus, zip_log_prob, zip_mixture

MODELS = ("zip", "zip_autograd", "mixture")


def sufficient_stats(values: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """(share of zeros, mean count, mean log y!) of histograms, accumulated in float64.

    Args:
        values, freqs: histograms, (..., K); zero-frequency pads are ignored.

    Returns:
        (..., 3) tensor in the dtype of `values`.
    """
    v, f = values.double(), freqs.double()
    sums = [(f * (v == 0)).sum(-1), (f * v).sum(-1), (f * torch.lgamma(v + 1)).sum(-1)]
    return (torch.stack(sums, -1) / f.sum(-1, keepdim=True)).to(values.dtype)


def data_terms(stats) -> torch.Tensor:
    """The closed form's terms that depend on the data only, stacked (6, ...): zero share z,
    mean m, share of positives 1 − z, m' (the mean of the positive counts, >= 1; a placeholder
    1 where there is none, so that no branch of the `where`s in `closed_form` is NaN: it would
    poison gradients taken through them), log m' and the constant K = m − m log m' + c.
    Computed once per fit by the engine (`loss_and_grad` with them), per call otherwise.

    Args:
        stats: the three statistics (zero share, mean, mean log y!).
    """
    zero_share, mean, log_fact = stats
    positive = 1 - zero_share
    has_positive = positive > 0
    mean_positive = torch.where(has_positive, mean / torch.where(has_positive, positive, 1), 1)
    log_mean_positive = torch.log(mean_positive)
    constant = mean - mean * log_mean_positive + log_fact
    return torch.stack([zero_share, mean, positive, mean_positive, log_mean_positive, constant])


def closed_form(gate_logits, log_rate, stats,
                terms=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Mean NLL and its analytic gradient from the sufficient statistics (elementwise).

    Args:
        gate_logits, log_rate: s and eta, broadcasting against each other and `stats`.
        stats: the three statistics (zero share, mean, mean log y!), e.g.
            `sufficient_stats(...).unbind(-1)`.
        terms: `data_terms(stats)` when the caller keeps them (the same numbers, computed
            once instead of at every step).

    Returns:
        (loss, dL/ds, dL/deta).
    """
    if terms is None:
        terms = data_terms(stats)
    zero_share, mean, positive, mean_positive, log_mean_positive, constant = terms.unbind(0)
    rate = log_rate.exp()
    u = gate_logits + rate
    log_ratio = log_mean_positive - log_rate
    deviance = mean_positive * (log_ratio + torch.expm1(-log_ratio))  # bd0(m', lambda)
    count_part = torch.where(positive > 0, positive * deviance, torch.zeros_like(deviance))
    loss = (
        softplus(gate_logits)
        - zero_share * torch.logaddexp(-rate, gate_logits)
        + count_part
        + constant
    )
    structural = torch.sigmoid(u)
    grad_s = torch.sigmoid(gate_logits) - zero_share * structural
    grad_eta = rate * (1 - zero_share * structural) - mean
    return loss, grad_s, grad_eta


def _log_prob(model: str, values, gate_logits, log_rate) -> torch.Tensor:
    if model == "zip_autograd":
        return zip_log_prob(values, gate_logits, log_rate)
    if model == "mixture":
        return zip_mixture(log_rate.exp(), gate_logits=gate_logits).log_prob(values)
    raise ValueError(f"unknown model {model!r}; expected one of {MODELS}")


def histogram_nll(values, freqs, gate_logits, log_rate, *, model: str = "zip") -> torch.Tensor:
    """Mean NLL of histograms under the ZIP with s = `gate_logits`, eta = `log_rate`.

    Args:
        values, freqs: histograms, (..., K), broadcasting against the parameters.
        gate_logits, log_rate: parameters, shape (...).
        model: one of `MODELS`.

    Returns:
        Tensor of shape (...), differentiable in the parameters.
    """
    if model == "zip":
        stats = sufficient_stats(values, freqs).unbind(-1)
        return closed_form(gate_logits, log_rate, stats)[0]
    log_p = _log_prob(model, values, gate_logits[..., None], log_rate[..., None])
    return -(freqs * log_p).sum(-1) / freqs.sum(-1)


def loss_and_grad(model: str, params: torch.Tensor, data: tuple[torch.Tensor, ...]):
    """Per-fit mean NLL and gradient for B fits, batch last.

    Args:
        model: one of `MODELS`.
        params: (2, B) rows s and eta.
        data: (stats (3, B),) or (stats, `data_terms(stats)` (6, B)) for "zip", else
            (values (K, B), freqs (K, B)).

    Returns:
        (loss (B,), gradient (2, B)), detached.
    """
    if model == "zip":
        terms = data[1] if len(data) > 1 else None
        loss, grad_s, grad_eta = closed_form(params[0], params[1], data[0], terms)
        return loss, torch.stack([grad_s, grad_eta])
    values, freqs = data
    with torch.enable_grad():
        leaf = params.detach().requires_grad_()
        log_p = _log_prob(model, values, leaf[0], leaf[1])
        loss = -(freqs * log_p).sum(0) / freqs.sum(0)
        # Fits are independent, so the gradient of the sum is each fit's own gradient.
        (grad,) = torch.autograd.grad(loss.sum(), leaf)
    return loss.detach(), grad


def nll_per_sample(y, gate_logits, log_rate) -> torch.Tensor:
    """Mean NLL over raw samples, the blog's objective (to verify the histogram path).

    Args:
        y: counts, (..., n).
        gate_logits, log_rate: parameters, shape (...).

    Returns:
        Tensor of shape (...): the mean over the n samples of -log p(y_i).
    """
    y = torch.as_tensor(y, device=log_rate.device, dtype=log_rate.dtype)
    return -zip_log_prob(y, gate_logits[..., None], log_rate[..., None]).mean(-1)
