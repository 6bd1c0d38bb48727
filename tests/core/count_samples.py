"""Simulated count-family regressions and independent references the oracle tests share.

References: scipy.stats pmfs (written out per family, independent of `count_terms`), a torch
log-likelihood from `count_terms.family_terms(order=0)` for autograd, statsmodels' fits.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.stats
import torch
from scipy.special import expit
from statsmodels.discrete.count_model import ZeroInflatedNegativeBinomialP, ZeroInflatedPoisson
from statsmodels.discrete.discrete_model import Logit, NegativeBinomial, Poisson
from statsmodels.discrete.truncated_model import TruncatedLFNegativeBinomialP, TruncatedLFPoisson

from pipeline.core.laws.count_terms import family_terms, has_dispersion, zero_part
from pipeline.core.model import fit_data
from pipeline.core.oracle.fit import fit_model


def fit_arrays(family, X, Z, y, *, weights=None, offset_x=None, offset_z=None, **options):
    """`fit_model` of arrays (Z None or 0 columns: no zero design); options: start, max_iter."""
    data = fit_data(X, Z, y, weights=weights, offset_x=offset_x, offset_z=offset_z)
    return fit_model(family, data, **options)


BETA = np.array([0.8, 0.3, -0.2])
GAMMA = np.array([-0.5, 0.7, 0.3])  # logit pi (zero-inflated) or logit P(Y > 0) (hurdle)


def draw_counts(rng, mu, alpha):
    """Poisson (alpha = 0) or NB2 counts with means mu."""
    if alpha == 0:
        return rng.poisson(mu)
    return rng.poisson(rng.gamma(1 / alpha, alpha * mu))


def simulate(family, n, seed, alpha=0.5, beta=BETA, gamma=GAMMA):
    """(X, Z, y) of `family` with an intercept, a normal and a binary covariate in each part
    (Z with 0 columns for poisson/nb); alpha = 0 draws the Poisson-limit family."""
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.ones(n), rng.normal(size=n), rng.binomial(1, 0.4, n)])
    Z = np.column_stack([np.ones(n), rng.normal(size=n), rng.binomial(1, 0.5, n)])
    mu = np.exp(X @ beta)
    alpha = alpha if has_dispersion(family) else 0.0
    y = draw_counts(rng, mu, alpha)
    part = zero_part(family)
    if part is None:
        return X, Z[:, :0], y
    if part == "inflation":
        return X, Z, np.where(rng.random(n) < expit(Z @ gamma), 0, y)
    redraw = y == 0  # zero-truncated draws by rejection
    while redraw.any():
        y[redraw] = draw_counts(rng, mu[redraw], alpha)
        redraw = y == 0
    return X, Z, np.where(rng.random(n) < expit(Z @ gamma), y, 0)


def split_params(family, X, Z, params):
    """(pi or P(Y>0) or None, mu, alpha) per observation."""
    q, p = Z.shape[1], X.shape[1]
    gate = expit(Z @ params[:q]) if q else None
    alpha = np.exp(params[q + p]) if has_dispersion(family) else 0.0
    return gate, np.exp(X @ params[q : q + p]), alpha


def scipy_pmf(family, values, X, Z, params):
    """(K, n) P(Y_i = v) from scipy.stats, the zero part written out per family."""
    v = np.asarray(values, dtype=float)[:, None]
    gate, mu, alpha = split_params(family, X, Z, params)
    if alpha > 0:
        f = scipy.stats.nbinom.pmf(v, 1 / alpha, 1 / (1 + alpha * mu))
        f0 = scipy.stats.nbinom.pmf(0, 1 / alpha, 1 / (1 + alpha * mu))
    else:
        f, f0 = scipy.stats.poisson.pmf(v, mu), np.exp(-mu)
    part = zero_part(family)
    if part is None:
        return f
    if part == "inflation":
        return np.where(v == 0, gate, 0.0) + (1 - gate) * f
    return np.where(v == 0, 1 - gate, gate * f / (1 - f0))


def torch_loglik(family, X, Z, y, weights=None):
    """Total (weighted) log-likelihood as a torch function of the parameter vector, written
    from `count_terms.family_terms(order=0)` for autograd."""
    q, p = Z.shape[1], X.shape[1]
    Xt, Zt, yt = (torch.as_tensor(np.asarray(a, dtype=float)) for a in (X, Z, y))
    wt = torch.ones_like(yt) if weights is None else torch.as_tensor(weights, dtype=yt.dtype)
    lgy, zero = torch.lgamma(yt + 1), yt == 0

    def loglik(theta):
        s = Zt @ theta[:q] if q else torch.zeros((), dtype=theta.dtype)
        a = theta[q + p] if has_dispersion(family) else None
        t = family_terms(family, yt, lgy, zero, s, Xt @ theta[q : q + p], a, order=0)
        return (wt * t.ll).sum()

    return loglik


def _quiet_fit(model, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(disp=0, maxiter=500, **kwargs)


def _ok(res):
    return res.mle_retvals["converged"] and np.isfinite(res.params).all()


def statsmodels_fit(family, X, Z, y, ours):
    """(params in our order with log alpha, total log-likelihood, how it was reached) from
    statsmodels' Newton; `ours` is the start only if its own starts fail."""
    pos = y > 0
    if family == "poisson":
        res = [_quiet_fit(Poisson(y, X), method="newton")]
    elif family == "nb":
        res = [_quiet_fit(NegativeBinomial(y, X, loglike_method="nb2"), method="newton")]
    elif family in ("zip", "zinb"):
        model = (
            ZeroInflatedNegativeBinomialP(y, X, exog_infl=Z, p=2)
            if family == "zinb"
            else ZeroInflatedPoisson(y, X, exog_infl=Z)
        )
        res = [_quiet_fit(model, method="newton")]
        how = "newton from its default start"
        if not _ok(res[0]):  # NaN from its default start: BFGS first, then Newton from there
            bfgs = _quiet_fit(model, method="bfgs")
            res, how = [_quiet_fit(model, method="newton", start_params=bfgs.params)], "bfgs+newton"
        if not _ok(res[0]):
            start = np.r_[ours[:-1], np.exp(ours[-1])] if family == "zinb" else ours
            res, how = [_quiet_fit(model, method="newton", start_params=start)], "newton from ours"
    else:
        logit = _quiet_fit(Logit(pos.astype(float), Z), method="newton")
        trunc = (
            TruncatedLFNegativeBinomialP(y[pos], X[pos], p=2)
            if has_dispersion(family)
            else TruncatedLFPoisson(y[pos], X[pos])
        )
        res = [logit, _quiet_fit(trunc, method="newton")]
    if family not in ("zip", "zinb"):
        how = "newton from its default start"
    assert all(_ok(r) for r in res), f"statsmodels did not converge for {family} ({how})"
    params = np.concatenate([r.params for r in res])
    if has_dispersion(family):
        params[-1] = np.log(params[-1])
    return params, sum(r.llf for r in res), how
