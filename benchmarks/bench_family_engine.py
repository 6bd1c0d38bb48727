"""The batched engine per count family against the ZIP's, on the same design.

One design (n rows, an intercept and 4 covariates in each part: normal, binary, Poisson,
correlated normal; `bench_regression`'s), counts drawn once from a ZINB with dispersion 0.5
(the likelihood's cost does not depend on which law drew them); D datasets × F fits per
family, Adam at lr 0.05 from the same starts, a fixed `--steps` budget with the stop rule off
(tol = grad_tol = 0), so every family does the same number of steps. Reported: time per fit
per step (µs) and its ratio to the ZIP's (the issue's target: within 2x), measured side by
side in one run: `--repeat` rounds, each timing every family once, best round kept per
family. No timed assertions: run by hand (not part of the tests):

    .venv/bin/python benchmarks/bench_family_engine.py [--threads N] [--datasets D] [--fits F]
        [--n N] [--steps S] [--repeat R] [--dtype float64|float32] [--device cpu|cuda]

Numbers go to benchmarks/README.md ("Count families: engine").
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_regression import COVARIATES  # noqa: E402

from pipeline.core.descent import design_engine  # noqa: E402
from pipeline.core.descent.designs import stack_designs  # noqa: E402
from pipeline.core.laws import count_dists
from pipeline.core.laws.count_terms import FAMILIES, has_dispersion, zero_part  # noqa: E402
from pipeline.core.simulation.covariates import draw_covariates  # noqa: E402
from pipeline.core.simulation.design import design_matrix  # noqa: E402


def datasets(n: int, D: int):
    """D datasets of n rows: (X, Z, y) with 5 + 5 columns, ZINB counts."""
    out = []
    for d in range(D):
        rng = np.random.default_rng(d)
        values = draw_covariates(COVARIATES, n, rng)
        coefs = {"intercept": 0.5, "x_norm": 0.3, "x_bin": -0.2, "x_pois": 0.1, "x_corr": 0.2}
        X, _, beta = design_matrix(values, coefs, n=n)
        zero = {"intercept": -1.0, "x_norm": 0.4, "x_bin": 0.3, "x_pois": -0.2, "x_corr": 0.1}
        Z, _, gamma = design_matrix(values, zero, n=n)
        y = count_dists.sample_counts("zinb", rng, s=Z @ gamma, eta=X @ beta, log_alpha=np.log(0.5))
        out.append((X, Z, y))
    return out


def batch(family: str, data, F: int, dtype, device: str):
    """The engine's inputs for D x F fits of `family`: (designs, index, start)."""
    Xs = [X for X, _, _ in data]
    Zs = [Z if zero_part(family) else Z[:, :0] for _, Z, _ in data]
    designs = stack_designs(Xs, Zs, [y for _, _, y in data], dtype=dtype,
                                        device=device)  # fmt: skip
    D, _, q, p = designs.shape
    P = q + p + int(has_dispersion(family))
    start = np.random.default_rng(0).normal(0, 0.1, size=(D * F, P))
    return designs, np.repeat(np.arange(D), F), start


def once(family: str, inputs, steps: int, device: str) -> float:
    """Seconds of one engine call (the stop rule off: every fit runs `steps` steps)."""
    designs, index, start = inputs
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    design_engine.fit_designs(designs, index, start, 0.05, max_steps=steps, tol=0.0,
                              grad_tol=0.0, record_every=steps, chunk_steps=steps,
                              standardize=True, family=family)  # fmt: skip
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--datasets", type=int, default=4)
    parser.add_argument("--fits", type=int, default=50)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    data = datasets(args.n, args.datasets)
    fits = args.datasets * args.fits
    print(f"n = {args.n}, {args.datasets} datasets x {args.fits} fits, {args.steps} steps, "
          f"{args.dtype}, {args.device}, {torch.get_num_threads()} thread(s)")  # fmt: skip
    inputs = {f: batch(f, data, args.fits, dtype, args.device) for f in FAMILIES}
    times = dict.fromkeys(FAMILIES, np.inf)
    for _ in range(args.repeat):  # rounds over the families: a load spike hits them alike
        for f in FAMILIES:
            times[f] = min(times[f], once(f, inputs[f], args.steps, args.device))
    base = times["zip"]
    print(f"{'family':<16}{'s/call':>9}{'us/fit/step':>13}{'vs zip':>8}")
    for family, t in times.items():
        per = t / fits / args.steps * 1e6
        print(f"{family:<16}{t:>9.3f}{per:>13.2f}{t / base:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
