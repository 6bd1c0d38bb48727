"""Time to the answer of `fit_counts` on the fish example, against another checkout.

    python benchmarks/bench_fit_counts_answer.py --before /path/to/old/checkout [--rounds 3]

Runs `python -m pipeline.fit_counts examples/fish_caught.csv --column count` (MLflow logging
on, a throwaway work directory per checkout) in each checkout, interleaved round by round,
and prints when the first stdout line arrived, when the recommendation did, and when the
process exited. Both checkouts run with this interpreter (`sys.executable`); each imports its
own `pipeline/` (`-m` puts the working directory first on the path).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(repo: Path, workdir: str) -> tuple[float, float, float, int]:
    env = {**os.environ, "CI": "true"}
    cmd = [sys.executable, "-m", "pipeline.fit_counts", "examples/fish_caught.csv",
           "--column", "count", "--workdir", workdir]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=env)  # fmt: skip
    first = answer = float("nan")
    for line in proc.stdout:
        now = time.perf_counter() - t0
        first = now if first != first else first
        if line.startswith("Recommendation"):
            answer = now
    proc.wait()
    return first, answer, time.perf_counter() - t0, proc.returncode


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", type=Path, required=True, help="the other checkout")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, repo in (("before", args.before), ("now", ROOT)):
                first, answer, end, rc = run(repo, f"{tmp}/{name}")
                print(f"{name} round {r}: first line {first:.2f} s, recommendation "
                      f"{answer:.2f} s, exit {end:.2f} s (rc {rc})", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
