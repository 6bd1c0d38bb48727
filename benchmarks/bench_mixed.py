"""Speed of the mixed models' oracle and engine (issue 20) against glmmTMB, on Salamanders.

The data and models of tests/core/test_oracle_mixed.py (glmmTMB's `Salamanders`: 644 rows,
23 sites; count ~ mined + (1 | site), zi ~ mined; and the same with (1 | site) in both
parts), timed side by side in one run:

- glmmTMB: `glmmTMB(...)` per fit in R (Laplace), timed inside R over `--repeat` fits, when
  `Rscript` with glmmTMB is installed (Debian's r-cran-glmmtmb); skipped otherwise.
- the oracle (`oracle.mixed.fit_mixed`) with K = 1 (Laplace, glmmTMB's approximation) and the
  default K (exact to ~1e-9), median seconds per fit over `--repeat` fits;
- the engine (`descent.mixed_engine.fit_mixed_gd`): `--fits` fits sharing the dataset (starts
  at the oracle's estimates plus N(0, 0.5²) noise, Adam lr 0.1, default stop rule, the
  default K), CPU seconds per fit, with the share converged and the largest error of a
  converged fit in oracle SEs.

No timed assertions; run by hand (not part of the tests):

    .venv/bin/python benchmarks/bench_mixed.py [--repeat 5] [--fits 100 1000] [--threads 1]
    .venv/bin/python benchmarks/bench_mixed.py --steps     # the two gradients per step

Numbers go to benchmarks/README.md ("Mixed models").
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "core"))

from test_oracle_mixed import DATA, _salamanders  # noqa: E402

from pipeline.core.descent.mixed_engine import fit_mixed_gd  # noqa: E402
from pipeline.core.descent.outcome import StopRule  # noqa: E402
from pipeline.core.oracle import mixed  # noqa: E402

MODELS = {
    ("count",): "glmmTMB(count ~ mined + (1|site), zi = ~mined, family = poisson, data = d)",
    ("count", "zero"): "glmmTMB(count ~ mined + (1|site), zi = ~mined + (1|site), "
    "family = poisson, data = d)",
}


def r_seconds(parts, repeat: int) -> float | None:
    """glmmTMB's seconds per fit (user + system CPU, measured in R), or None without R."""
    if shutil.which("Rscript") is None:
        return None
    script = (
        "suppressMessages(library(glmmTMB)); d <- read.csv('" + str(DATA) + "'); "
        f"m <- {MODELS[parts]}; t0 <- proc.time(); "
        f"for (i in 1:{repeat}) m <- {MODELS[parts]}; t <- proc.time() - t0; "
        f"cat((t[[1]] + t[[2]]) / {repeat}, '\\n')"
    )
    out = subprocess.run(["Rscript", "-e", script], capture_output=True, text=True)
    if out.returncode != 0:
        print(f"  (glmmTMB not run: {out.stderr.strip().splitlines()[-1:]})")
        return None
    return float(out.stdout.split()[-1])


def oracle_seconds(data, site, parts, nodes, repeat: int):
    times, fit = [], None
    for _ in range(repeat):
        start = time.process_time()
        fit = mixed.fit_mixed("zip", data, site, parts, nodes=nodes)
        times.append(time.process_time() - start)
    return statistics.median(times), fit


def engine(data, site, parts, oracle, fits: int):
    mp = mixed.mixed_problem("zip", data, site, parts)
    rng = np.random.default_rng(0)
    starts = oracle.params + rng.normal(0, 0.5, (fits, len(oracle.params)))
    start = time.process_time()
    res = fit_mixed_gd(mp, starts, 0.1, rule=StopRule(max_steps=2000))
    seconds = time.process_time() - start
    conv = res.status == "converged"
    err = np.abs(res.params[conv] - oracle.params) / oracle.se
    return seconds / fits, conv.mean(), err.max() if conv.any() else np.nan, np.median(res.steps)


def step_costs(rounds: int = 3) -> None:
    """Per descent step, side by side: the held-point gradient (`loglik_and_score`) against
    autograd through one graph-carrying Newton step (`marginal_loglik`), modes warm."""
    for name, parts, B in (("one random part", ("count",), 100),
                           ("two random parts", ("count", "zero"), 10)):  # fmt: skip
        data, site = _salamanders()
        mp = mixed.mixed_problem("zip", data, site, parts)
        fit = mixed.fit_mixed("zip", data, site, parts, nodes=1)
        rng = np.random.default_rng(0)
        theta = torch.tensor(fit.params + rng.normal(0, 0.1, (B, len(fit.params))))
        u = mixed.modes(mp, theta)
        for r in range(rounds):
            start = time.process_time()
            for _ in range(5):
                t = theta.clone().requires_grad_(True)
                ll, _ = mixed.marginal_loglik(mp, t, start=u, graph_steps=1)
                torch.autograd.grad(ll.sum(), t)
            auto = (time.process_time() - start) / 5
            start = time.process_time()
            for _ in range(5):
                mixed.loglik_and_score(mp, theta, start=u)
            held = (time.process_time() - start) / 5
            print(f"  {name}, B = {B}, round {r}: autograd {1000 * auto:.1f} ms/step, held "
                  f"points {1000 * held:.1f} ms/step ({auto / held:.2f}x)")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--fits", type=int, nargs="+", default=[100])
    ap.add_argument(
        "--fits-2d",
        type=int,
        nargs="+",
        default=[10],
        help="fits sharing the dataset with both random parts (30 x 30 nodes)",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--steps",
        action="store_true",
        help="only the per-step cost of the two gradients, side by side",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.steps:
        step_costs()
        return
    data, site = _salamanders()
    for parts in MODELS:
        print(f"ZIP, random intercept in {' and '.join(parts)} ({MODELS[parts]})")
        r = r_seconds(parts, args.repeat)
        print(f"  glmmTMB (Laplace)        {r:.3f} s/fit" if r else "  glmmTMB: not run")
        laplace, _ = oracle_seconds(data, site, parts, 1, args.repeat)
        exact, fit = oracle_seconds(data, site, parts, None, args.repeat)
        print(f"  oracle, K = 1 (Laplace)  {laplace:.3f} s/fit")
        print(f"  oracle, K = {fit.nodes} (exact)   {exact:.3f} s/fit")
        for fits in args.fits if len(parts) == 1 else args.fits_2d:
            per, share, err, steps = engine(data, site, parts, fit, fits)
            print(f"  engine, {fits} fits  {per:.3f} s/fit (converged {share:.0%}, "
                  f"median {steps:.0f} steps, max error {err:.1e} oracle SE)")  # fmt: skip


if __name__ == "__main__":
    main()
