"""Speed and accuracy of ZIP regression fits: Newton oracle, batched engine, their references.

Measured side by side in one run, on simulated data of n rows (default 1e4) with an intercept
and 4 covariates (normal, binary, Poisson, correlated normal) in each part (5 + 5
coefficients, DESIGN §7):
  1  the float64 Newton oracle `oracle.fit.fit_model("zip", ...)` against statsmodels'
     `ZeroInflatedPoisson(..., inflation="logit").fit(method="newton")` (started from zeros,
     from the true values if that fails) on the same datasets: median time per fit and the
     max relative difference of the estimates;
  2  the batched engine (`designs.stack_designs` + `design_engine.fit_designs`, Adam,
     standardised covariates, <= `--steps` steps) on D datasets x F fits, float64 and
     float32, timed in `--repeat` interleaved rounds (engine64, engine32, loop, engine64, ...;
     min and median reported), against a plain per-fit PyTorch loop the blog's way (an
     `nn.Module` with two `nn.Parameter`s, `torch.optim.Adam`, full batch, mean NLL from
     `distributions.zip_log_prob`, all the steps, no stop rule) timed on a few fits, and
     against statsmodels per fit (from 1);
  3  the memory-traffic floor: this machine's streaming bandwidth (`copy_` of a 256 MB
     float64 tensor) and the engine's time per step (`design_engine.loss_grad`) against the
     time it takes just to read the designs once.
No timed assertions: run by hand (not part of the tests):

    .venv/bin/python benchmarks/bench_regression.py [--quick] [--threads N] [--datasets D]
        [--fits F] [--n N] [--steps S]

Numbers go to benchmarks/README.md ("Regression").
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.core.descent import design_engine  # noqa: E402
from pipeline.core.descent.designs import stack_designs  # noqa: E402
from pipeline.core.laws.distributions import zip_log_prob  # noqa: E402
from pipeline.core.model import fit_data  # noqa: E402
from pipeline.core.oracle.fit import fit_model  # noqa: E402


def fit_zip_regression(X, Z, y):
    """The oracle's ZIP fit of arrays."""
    return fit_model("zip", fit_data(X, Z, y))


from pipeline.core.simulation.covariates import Covariate, draw_covariates  # noqa: E402
from pipeline.core.simulation.design import design_matrix, simulate_counts  # noqa: E402

COVARIATES = (
    Covariate("x_norm", "normal"),
    Covariate("x_bin", "bernoulli", p=0.4),
    Covariate("x_pois", "poisson", mean=2.0),
    Covariate("x_corr", "normal", corr_with="x_norm", rho=0.3),
)
BETA = {"intercept": 1.0, "x_norm": 0.4, "x_bin": -0.5, "x_pois": 0.15, "x_corr": 0.25}
GAMMA = {"intercept": -0.4, "x_norm": -0.6, "x_bin": 0.5, "x_pois": 0.2, "x_corr": -0.3}
LR = 0.05


def dataset(n: int, seed: int):
    """(X, Z, y, true [gamma, beta]) of one simulated dataset."""
    rng = np.random.default_rng(seed)
    cols = draw_covariates(COVARIATES, n, rng)
    X, _, beta = design_matrix(cols, BETA)
    Z, _, gamma = design_matrix(cols, GAMMA)
    return X, Z, simulate_counts(X, Z, beta, gamma, rng), np.concatenate([gamma, beta])


def clock(fn, repeat: int = 1):
    """(result of the last call, list of wall times in seconds)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return out, times


def statsmodels_fit(X, Z, y, truth):
    """statsmodels' ZIP by Newton from zeros, from the truth if that fails (from zeros its
    first step can overflow to NaN while it still reports converged).

    Returns:
        (params, which start worked, wall seconds of the successful attempt alone).
    """
    from statsmodels.discrete.count_model import ZeroInflatedPoisson

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, start in (("zeros", np.zeros(len(truth))), ("truth", truth)):
            t0 = time.perf_counter()
            model = ZeroInflatedPoisson(y, X, exog_infl=Z, inflation="logit")
            try:
                res = model.fit(method="newton", start_params=start, maxiter=100, disp=0)
            except (np.linalg.LinAlgError, ValueError):
                continue
            if res.mle_retvals["converged"] and np.isfinite(res.params).all():
                return np.asarray(res.params), name, time.perf_counter() - t0
    return np.full(len(truth), np.nan), "failed", float("nan")


def rel_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b)) / np.abs(np.asarray(b))))


def section_oracle(data, repeat: int):
    """Oracle vs statsmodels: rows, the oracle fits, the statsmodels time per fit."""
    import statsmodels.discrete.count_model  # noqa: F401  (import outside the timings)

    ours_t, sm_t, ok_t, rels, starts, oracle = [], [], [], [], [], []
    fit_zip_regression(*data[0][:3])  # warm-up
    for X, Z, y, truth in data:
        fit, times = clock(lambda X=X, Z=Z, y=y: fit_zip_regression(X, Z, y), repeat)
        ours_t += times
        for _ in range(repeat):
            (params, start, ok), times = clock(lambda X=X, Z=Z, y=y, t=truth:
                                               statsmodels_fit(X, Z, y, t))  # fmt: skip
            sm_t += times
            ok_t.append(ok)
        starts.append(start)
        oracle.append(fit)
        rels.append(rel_diff(np.concatenate([fit.gamma, fit.beta]), params))
    ours, sm, sm_ok = (statistics.median(t) for t in (ours_t, sm_t, ok_t))
    statuses = ", ".join(f"{s} {[f.status for f in oracle].count(s)}"
                         for s in sorted({f.status for f in oracle}))  # fmt: skip
    k = len(data)
    starts_txt = ", ".join(f"{s} {starts.count(s)}" for s in sorted(set(starts)))
    rows = [
        ("1", "Newton oracle `fit_model`", k, f"{ours:.2e}",
         f"median of {repeat} x {k} datasets; {statuses}; "
         f"{statistics.median(f.iterations for f in oracle):.0f} iterations (median)"),
        ("1", "statsmodels ZIP `fit(method='newton')`", k, f"{sm:.2e}",
         f"median of {repeat} x {k} datasets, failed start included; converged from: "
         f"{starts_txt}; the successful attempt alone {sm_ok:.2e} s"),
        ("1", "statsmodels / oracle time per fit", "", f"{sm / ours:.1f}x",
         f"target: oracle faster (> 1x); {sm_ok / ours:.1f}x against the successful attempt"),
        ("1", "max rel diff of estimates, oracle vs statsmodels", k, f"{max(rels):.1e}",
         "max over datasets and the 10 coefficients; target <= 1e-6"),
    ]  # fmt: skip
    return rows, oracle, sm


def starts_for(data, fits: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    P = data[0][0].shape[1] + data[0][1].shape[1]
    return rng.uniform(-0.5, 0.5, (len(data) * fits, P))


def run_engine(data, fits: int, steps: int, dtype, start):
    D = len(data)
    designs = stack_designs([d[0] for d in data], [d[1] for d in data],
                                       [d[2] for d in data], dtype=dtype)  # fmt: skip
    index = np.repeat(np.arange(D), fits)
    result, times = clock(lambda: design_engine.fit_designs(
        designs, index, start, LR, max_steps=steps, standardize=True, record_every=steps or 1,
        chunk_steps=max(1, steps)))  # fmt: skip
    return designs, index, result, times[0]


def standardised(M: np.ndarray) -> np.ndarray:
    """Centre and scale the non-intercept columns (as `standardize=True` does)."""
    out = M.copy()
    out[:, 1:] = (M[:, 1:] - M[:, 1:].mean(0)) / M[:, 1:].std(0)
    return out


class BlogZIP(torch.nn.Module):
    """The blog's per-fit model: the two coefficient vectors as parameters."""

    def __init__(self, gamma0, beta0, dtype):
        super().__init__()
        self.gamma = torch.nn.Parameter(torch.as_tensor(gamma0, dtype=dtype))
        self.beta = torch.nn.Parameter(torch.as_tensor(beta0, dtype=dtype))

    def forward(self, X, Z, y):
        return -zip_log_prob(y, Z @ self.gamma, X @ self.beta).mean()


def loop_fit(X, Z, y, start, steps: int, dtype=torch.float64):
    """Plain PyTorch loop, full batch, Adam at LR, all `steps` steps (no stop rule)."""
    q = Z.shape[1]
    # Start on the standardised scale, as the engine does: s = Z gamma = Zs gamma_s.
    Xs, Zs = standardised(X), standardised(Z)
    g0 = np.linalg.lstsq(Zs, Z @ start[:q], rcond=None)[0]
    b0 = np.linalg.lstsq(Xs, X @ start[q:], rcond=None)[0]
    Xt, Zt = torch.as_tensor(Xs, dtype=dtype), torch.as_tensor(Zs, dtype=dtype)
    yt = torch.as_tensor(y, dtype=dtype)
    model = BlogZIP(g0, b0, dtype)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    for _ in range(steps):
        opt.zero_grad()
        loss = model(Xt, Zt, yt)
        loss.backward()
        opt.step()
    return float(loss.detach())


def accuracy(result, index, oracle, ok) -> tuple[float, float]:
    """Max |engine - oracle| in oracle SEs and relative, over fits `ok` (NaN if none)."""
    if not ok.any():
        return float("nan"), float("nan")
    ref = np.stack([np.concatenate([oracle[d].gamma, oracle[d].beta]) for d in index[ok]])
    se = np.stack([np.concatenate([oracle[d].se_gamma, oracle[d].se_beta]) for d in index[ok]])
    diff = np.abs(result.params[ok] - ref)
    return float((diff / se).max()), float((diff / np.abs(ref)).max())


def statuses(result) -> str:
    names, counts = np.unique(result.status, return_counts=True)
    return ", ".join(f"{s} {c}" for s, c in zip(names, counts))


def spread(times) -> str:
    return f"min {min(times):.2e}, median {statistics.median(times):.2e}"


def section_engine(data, oracle, sm_per_fit, args):
    """The engine (float64, float32) and the blog's loop, interleaved: `--repeat` rounds, each
    timing all three in turn (A B C A B C ...), so a load spike hits them alike; per-fit times
    are medians over the rounds (min beside them), ratios of medians."""
    D, F, steps = len(data), args.fits, args.steps
    start = starts_for(data, F, seed=7)
    k = min(args.loop_fits, D * F)
    run_engine(data[:1], 1, 2, torch.float64, start[:1])  # warm-up (lazy initialisation)
    loop_fit(*data[0][:3], start[0], 2)  # warm-up: torch.optim's first use imports for seconds
    per_fit = {torch.float64: [], torch.float32: [], "loop": []}
    last = {}
    for _ in range(args.repeat):
        for dtype in (torch.float64, torch.float32):
            designs, index, result, seconds = run_engine(data, F, steps, dtype, start)
            per_fit[dtype].append(seconds / (D * F))
            last[dtype] = (designs, index, result)
        _, times = clock(lambda ix=index: [loop_fit(*data[ix[b]][:3], start[b], steps)
                                           for b in range(k)])  # fmt: skip
        per_fit["loop"].append(times[0] / k)
    rows = []
    for dtype in (torch.float64, torch.float32):
        designs, index, result = last[dtype]
        se_err, rel = accuracy(result, index, oracle, result.status == "converged")
        se_all, _ = accuracy(result, index, oracle, np.ones(len(index), bool))
        name = str(dtype).split(".")[-1]
        rows.append(("2", f"engine {name}, {D} datasets x {F} fits", D * F,
                     f"{statistics.median(per_fit[dtype]):.2e}",
                     f"{spread(per_fit[dtype])} over {args.repeat} interleaved rounds; "
                     f"{statuses(result)}; steps median {np.median(result.steps):.0f}, max "
                     f"{result.steps.max()}; from the oracle: converged fits max {se_err:.1e} "
                     f"SE / {rel:.1e} rel, all fits max {se_all:.1e} SE"))  # fmt: skip
    engine64, engine32, loop = (statistics.median(per_fit[key])
                                for key in (torch.float64, torch.float32, "loop"))  # fmt: skip
    rows += [
        ("2", f"blog loop float64 (nn.Module + torch.optim.Adam), {steps} steps each", k,
         f"{loop:.2e}", f"{spread(per_fit['loop'])}; no stop rule, every fit runs all {steps} "
         f"steps ({loop / steps * 1e3:.2f} ms / step)"),
        ("2", "blog loop / engine float64 time per fit", "", f"{loop / engine64:.1f}x",
         f"target >= 20x; of the minima {min(per_fit['loop']) / min(per_fit[torch.float64]):.1f}x"),
        ("2", "blog loop / engine float32 time per fit", "", f"{loop / engine32:.1f}x",
         f"of the minima {min(per_fit['loop']) / min(per_fit[torch.float32]):.1f}x"),
        ("2", "statsmodels / engine float64 time per fit", "", f"{sm_per_fit / engine64:.1f}x",
         "statsmodels Newton per fit from 1"),
    ]  # fmt: skip
    return rows, last[torch.float64][0], F, start


def bandwidth(mb: int, repeat: int = 5) -> float:
    """Streaming bandwidth in bytes / s: (read + write) of `mb` MB float64 through `copy_`."""
    src = torch.rand(mb * 2**20 // 8, dtype=torch.float64)
    dst = torch.empty_like(src)
    dst.copy_(src)  # touch the pages first
    _, times = clock(lambda: dst.copy_(src), repeat)
    return 2 * src.numel() * 8 / min(times)


def section_floor(designs, F: int, args):
    bw = bandwidth(32 if args.quick else 256)
    D, n, q, p = designs.shape
    design_bytes = D * n * (p + q) * designs.X.element_size()
    floor = design_bytes / bw
    theta = torch.as_tensor(np.random.default_rng(3).uniform(-0.3, 0.3, (D, q + p, F)),
                            dtype=designs.X.dtype)  # fmt: skip
    design_engine.loss_grad(designs, theta)  # warm
    _, times = clock(lambda: design_engine.loss_grad(designs, theta), 3 if args.quick else 7)
    step = statistics.median(times)
    per_elem = step / (D * n * F) * 1e9
    elem_floor = D * n * F * 8 * 1 / bw  # one float64 (D, n, F) temporary written once
    return [
        ("3", "streaming bandwidth (`copy_`, read + write)", "", f"{bw / 1e9:.1f} GB/s",
         f"{32 if args.quick else 256} MB float64, best of 5"),
        ("3", "floor per step: designs read once", "", f"{floor * 1e3:.2f} ms",
         f"D n (p + q) 8 B = {design_bytes / 2**20:.0f} MiB / bandwidth"),
        ("3", "engine `loss_grad` per step, float64", "", f"{step * 1e3:.1f} ms",
         f"median of {len(times)} calls, D={D}, n={n}, F={F}"),
        ("3", "engine step / design-read floor", "", f"{step / floor:.0f}x", ""),
        ("3", "engine step per (row x fit) element", "", f"{per_elem:.2f} ns",
         f"D n F = {D * n * F:.1e} elements; writing one float64 (D, n, F) tensor once "
         f"would take {elem_floor * 1e3:.1f} ms"),
    ]  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke check)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--datasets", type=int, default=None, help="D (default 20)")
    parser.add_argument("--fits", type=int, default=None, help="F fits per dataset (default 50)")
    parser.add_argument("--n", type=int, default=None, help="rows per dataset (default 1e4)")
    parser.add_argument("--steps", type=int, default=None, help="max Adam steps (default 500)")
    parser.add_argument("--loop-fits", type=int, default=None, help="blog-loop fits (default 5)")
    parser.add_argument("--oracle-datasets", type=int, default=None,
                        help="datasets for section 1 (default 5)")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=None,
                        help="timings per fit in 1, interleaved rounds in 2 (3)")  # fmt: skip
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = dict(datasets=(2, 20), fits=(3, 50), n=(1_000, 10_000), steps=(50, 500),
                    loop_fits=(2, 5), oracle_datasets=(2, 5), repeat=(3, 3))  # fmt: skip
    for key, (small, full) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, small if quick else full)
    if args.threads:
        torch.set_num_threads(args.threads)
    print("command: " + " ".join(["python", *sys.argv]))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads; n={args.n}, "
          f"D={args.datasets}, F={args.fits}, steps<={args.steps}, Adam lr={LR}\n")  # fmt: skip

    data = [dataset(args.n, seed=100 + d) for d in range(max(args.datasets, args.oracle_datasets))]
    rows, oracle, sm = section_oracle(data[: args.oracle_datasets], args.repeat)
    engine_data = data[: args.datasets]
    oracle_all = oracle + [fit_zip_regression(*d[:3]) for d in engine_data[len(oracle) :]]
    more, designs, F, _ = section_engine(engine_data, oracle_all, sm, args)
    rows += more + section_floor(designs, F, args)
    print("| # | measurement | fits | value (s / fit unless said) | detail |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
