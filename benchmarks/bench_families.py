"""Speed and agreement of the count-family Newton oracle against statsmodels, family by family.

For each family of `count_terms.FAMILIES`, on simulated data of that family (n rows, default
1e4; an intercept, a normal and a binary covariate in the count part and in the zero part:
3 + 3 columns; NB dispersion alpha = 0.5), `oracle.fit.fit_model` against the
statsmodels 0.15 fit of the same model:
    poisson         Poisson(y, X)                                   fit(method="newton")
    nb              NegativeBinomial(y, X, loglike_method="nb2")    fit(method="newton")
    zip             ZeroInflatedPoisson(y, X, exog_infl=Z)          newton, then bfgs + newton
    zinb            ZeroInflatedNegativeBinomialP(..., p=2)         newton, then bfgs + newton
    hurdle_poisson  Logit(y > 0, Z) + TruncatedLFPoisson on y > 0   both newton
    hurdle_nb       Logit(y > 0, Z) + TruncatedLFNegativeBinomialP(p=2) on y > 0
statsmodels starts from its defaults; when its Newton returns NaN or not converged it is
refitted by BFGS and then Newton from there (the time counts every attempt; the last resort,
Newton from our estimates, is marked). Printed: the max relative difference of the estimates
(alpha compared on the log scale), the median ms per fit of each and their ratio. No timed
assertions: run by hand (not part of the tests):

    .venv/bin/python benchmarks/bench_families.py [--n N] [--repeat R] [--threads T]

Numbers go to benchmarks/README.md ("Count families").
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import torch
from scipy.special import expit
from statsmodels.discrete.count_model import ZeroInflatedNegativeBinomialP, ZeroInflatedPoisson
from statsmodels.discrete.discrete_model import Logit, NegativeBinomial, Poisson
from statsmodels.discrete.truncated_model import TruncatedLFNegativeBinomialP, TruncatedLFPoisson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.core.laws.count_terms import FAMILIES, has_dispersion, zero_part  # noqa: E402
from pipeline.core.model import fit_data  # noqa: E402
from pipeline.core.oracle.fit import fit_model  # noqa: E402

BETA = np.array([0.8, 0.3, -0.2])
GAMMA = np.array([-0.5, 0.7, 0.3])  # logit pi (zero-inflated) or logit P(Y > 0) (hurdle)
ALPHA = 0.5


def dataset(family: str, n: int, seed: int):
    """(X, Z, y) of `family` (Z with 0 columns for poisson/nb)."""
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.ones(n), rng.normal(size=n), rng.binomial(1, 0.4, n)])
    Z = np.column_stack([np.ones(n), rng.normal(size=n), rng.binomial(1, 0.5, n)])
    mu, alpha = np.exp(X @ BETA), ALPHA if has_dispersion(family) else 0.0

    def draw(m):
        return rng.poisson(rng.gamma(1 / alpha, alpha * m) if alpha else m)

    y, part = draw(mu), zero_part(family)
    if part is None:
        return X, Z[:, :0], y
    if part == "hurdle":
        while (y == 0).any():  # zero-truncated by rejection
            y[y == 0] = draw(mu[y == 0])
        return X, Z, np.where(rng.random(n) < expit(Z @ GAMMA), y, 0)
    return X, Z, np.where(rng.random(n) < expit(Z @ GAMMA), 0, y)


def _fit(model, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            res = model.fit(disp=0, maxiter=1000, **kwargs)
        except (np.linalg.LinAlgError, ValueError):
            return None
    ok = res.mle_retvals["converged"] and np.isfinite(res.params).all()
    return res if ok else None


def statsmodels_fit(family: str, X, Z, y, ours):
    """(params in our order, log alpha; how it was reached) of statsmodels' fit."""
    pos = y > 0
    if family in ("poisson", "nb"):
        model = Poisson(y, X) if family == "poisson" else NegativeBinomial(y, X, "nb2")
        parts, how = [_fit(model, method="newton")], "newton"
    elif family in ("zip", "zinb"):
        if family == "zip":
            model = ZeroInflatedPoisson(y, X, exog_infl=Z)
        else:
            model = ZeroInflatedNegativeBinomialP(y, X, exog_infl=Z, p=2)
        res, how = _fit(model, method="newton"), "newton"
        if res is None:
            bfgs = _fit(model, method="bfgs")
            if bfgs is not None:
                res, how = _fit(model, method="newton", start_params=bfgs.params), "bfgs+newton"
        if res is None:
            start = np.r_[ours[:-1], np.exp(ours[-1])] if family == "zinb" else ours
            res, how = _fit(model, method="newton", start_params=start), "newton from OURS"
        parts = [res]
    else:
        trunc = (TruncatedLFNegativeBinomialP(y[pos], X[pos], p=2) if has_dispersion(family)
                 else TruncatedLFPoisson(y[pos], X[pos]))  # fmt: skip
        parts = [_fit(Logit(pos.astype(float), Z), method="newton"), _fit(trunc, method="newton")]
        how = "newton + newton"
    if any(r is None for r in parts):
        return np.full(len(ours), np.nan), how + " FAILED"
    params = np.concatenate([r.params for r in parts])
    if has_dispersion(family):
        params[-1] = np.log(params[-1])
    return params, how


def clock(fn, repeat: int):
    """(last result, median wall seconds over `repeat` calls)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return out, statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="rows per dataset")
    parser.add_argument("--repeat", type=int, default=5, help="timed fits per contender")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads; "
          f"n={args.n}, median of {args.repeat} fits each")  # fmt: skip
    header = ("family", "ours ms", "statsmodels ms", "sm / ours", "max rel diff", "ours status",
              "iters", "statsmodels route")  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for i, family in enumerate(FAMILIES):
        X, Z, y = dataset(family, args.n, args.seed + i)
        fit_model(family, fit_data(X, Z, y))  # warm-up (first torch calls)
        fit, ours = clock(partial(fit_model, family, fit_data(X, Z, y)), args.repeat)
        (ref, how), theirs = clock(partial(statsmodels_fit, family, X, Z, y, fit.params),
                                   args.repeat)  # fmt: skip
        rel = float(np.max(np.abs(fit.params - ref) / np.abs(ref)))
        print(f"| {family} | {ours * 1e3:.1f} | {theirs * 1e3:.1f} | {theirs / ours:.1f}x | "
              f"{rel:.1e} | {fit.status} | {fit.iterations} | {how} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
