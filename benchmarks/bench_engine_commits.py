"""The intercept-only engine per fit across checkouts (issue 22 item: its 81364f7 speed).

    git worktree add /tmp/w81 81364f7
    .venv/bin/python benchmarks/bench_engine_commits.py /tmp/w81 . [--rounds 3]

10,000 fits of n = 10,000 (ten datasets of the blog's scenario, pi = 0.5, lambda = 5; starts
pi0 ~ U(0.05, 0.95), lambda0 ~ U(0.5, 10)), Adam lr 0.1, at most 500 steps, float64, one
thread: CPU microseconds per fit (best of two runs), the total fit-steps and a checksum of the
estimates, each checkout in its own process (its own `pipeline/`), interleaved round by round.
Run by hand; numbers go to benchmarks/README.md ("Engine").
"""

from __future__ import annotations

import argparse
import subprocess
import sys

CHILD = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np, torch
torch.set_num_threads(1)
try:
    from pipeline.core.descent.engine import fit_zip
except ModuleNotFoundError:  # before the core was split by idea
    from pipeline.core.engine import fit_zip
rng = np.random.default_rng(0)
D, n, B = 10, 10_000, 10_000
hists = [np.unique(rng.poisson(5.0, n) * (rng.uniform(size=n) > 0.5), return_counts=True)
         for _ in range(D)]
K = max(len(v) for v, _ in hists)
V, F = np.zeros((D, K)), np.zeros((D, K))
for d, (v, f) in enumerate(hists):
    V[d, : len(v)], F[d, : len(f)] = v, f
pi0, lam0 = rng.uniform(0.05, 0.95, B), rng.uniform(0.5, 10, B)
times = []
for _ in range(2):
    t = time.process_time()
    res = fit_zip(V, F, np.arange(B) % D, pi0, lam0, 0.1, max_steps=500)
    times.append(time.process_time() - t)
check = float(np.nansum(np.asarray(res.pi)) + np.nansum(np.asarray(res.lam)))
print(f"{min(times) / B * 1e6:.1f} {int(np.asarray(res.steps).sum())} {check:.12e}")
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkouts", nargs="+")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    for r in range(args.rounds):
        for path in args.checkouts:
            out = subprocess.run([sys.executable, "-c", CHILD, path], capture_output=True,
                                 text=True, check=True).stdout.split()  # fmt: skip
            print(f"round {r} {path}: {out[0]} us/fit, {out[1]} fit-steps, checksum {out[2]}")


if __name__ == "__main__":
    main()
