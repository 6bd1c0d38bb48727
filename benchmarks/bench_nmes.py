"""Per-fit CPU seconds on an NMES1988-shaped problem: the batched engine, the Newton oracle
and R's `pscl::zeroinfl`, measured side by side in one session.

The data are simulated with the shape of Deb & Trivedi's NMES1988 (`AER::NMES1988`, the
doctor-visits model of the pscl vignette): n = 4,406 rows, the same 8 columns in both parts
(intercept, hospital stays, health poor, health excellent, chronic conditions, gender male,
years of school, private insurance), coefficients near the vignette's fits; ZIP counts for
"zip", ZINB counts (α = 0.8) for "zinb". The engine fits `--starts` random starts sharing the
dataset (N(0, 0.5) on the standardised scale) in one `fit_designs` call, Adam at `--lr` on
standardised covariates, `--max-steps` per fit; its CPU time per fit is the call's over the
starts. The oracle (`oracle.fit.fit_model`) and `zeroinfl` (its default BFGS from its default
start, `dist = "poisson"` / `"negbin"`) fit the dataset `--r-fits` times each; R's time is
the fits' own `proc.time()` inside one Rscript process (start-up and reading the CSV are not
counted). Every round times every method once, in turn (interleaved: a load spike hits all
alike); min and median over `--repeat` rounds are reported. For the engine also: the share of
its CPU time spent in the kernel (`ru_stime`) and its minor page faults (`ru_minflt`), from
`resource.getrusage` around the call; the fits' status counts and median steps; the largest
|engine − oracle| / oracle SE over converged fits. R is skipped (said so) when `Rscript` or
pscl is missing. No timed assertions: run by hand.

    .venv/bin/python benchmarks/bench_nmes.py [--threads 1] [--starts 100] [--repeat 3]
        [--families zip zinb] [--lr 0.1] [--max-steps 5000] [--r-fits 5] [--no-r]
        [--default-heap]

The engine's process calls `allocator.keep_heap()` as the stages do (`--default-heap` leaves
glibc's allocator as it starts, for a before/after).

Numbers go to benchmarks/README.md ("NMES1988-shaped fits").
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.core.descent.allocator import keep_heap  # noqa: E402
from pipeline.core.descent.design_engine import fit_designs  # noqa: E402
from pipeline.core.descent.designs import stack_designs  # noqa: E402
from pipeline.core.laws import count_dists  # noqa: E402
from pipeline.core.model import fit_data  # noqa: E402
from pipeline.core.oracle.fit import fit_model  # noqa: E402

N = 4406
COLUMNS = ("hosp", "health_poor", "health_excellent", "numchron", "gender_male", "school",
           "privins")  # fmt: skip
BETA = np.array([1.40, 0.16, 0.25, -0.31, 0.10, -0.06, 0.02, 0.08])  # count part, log mean
GAMMA = np.array([-0.05, -0.30, 0.03, 0.20, -0.54, 0.42, -0.06, -0.75])  # zero part, logit
LOG_ALPHA = float(np.log(0.8))

R_SCRIPT = r"""
suppressMessages(library(pscl))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1]); k <- as.integer(args[3])
f <- as.formula(paste("y ~", paste(names(d)[-1], collapse = " + "), "|",
                      paste(names(d)[-1], collapse = " + ")))
t0 <- proc.time()
for (i in seq_len(k)) m <- zeroinfl(f, data = d, dist = args[2])
t <- proc.time() - t0
cat((t[["user.self"]] + t[["sys.self"]]) / k, m$converged, m$loglik / nrow(d), "\n")
cat(coef(m), "\n")
"""


def simulate(family: str, seed: int = 1988):
    """The design (n, 8) of both parts and counts of `family` ("zip" or "zinb")."""
    rng = np.random.default_rng(seed)
    health = rng.choice(3, N, p=[0.126, 0.782, 0.092])  # poor, average, excellent
    X = np.column_stack([
        np.ones(N), np.minimum(rng.poisson(0.3, N), 8), health == 0, health == 2,
        np.minimum(rng.poisson(1.5, N), 8), rng.random(N) < 0.4,
        np.clip(np.round(rng.normal(10.3, 3.7, N)), 0, 18), rng.random(N) < 0.78,
    ]).astype(float)  # fmt: skip
    y = count_dists.sample_counts(family, rng, s=X @ GAMMA, eta=X @ BETA,
                                  log_alpha=LOG_ALPHA if family == "zinb" else None)  # fmt: skip
    return X, y


def starts(X: np.ndarray, y: np.ndarray, family: str, k: int, seed: int = 0) -> np.ndarray:
    """k starts (γ, β[, log α]) on the original scale: N(0, 0.5) per standardised column, the
    count intercept around log mean(y | y > 0)."""
    rng = np.random.default_rng(seed)
    sd = np.r_[1.0, X[:, 1:].std(0)]
    parts = []
    for centre in (0.0, float(np.log(y[y > 0].mean()))):
        draw = rng.normal(0.0, 0.5, (k, X.shape[1])) / sd
        draw[:, 0] += centre
        parts.append(draw)
    if family == "zinb":
        parts.append(np.zeros((k, 1)))
    return np.concatenate(parts, axis=1)


def run_engine(family, X, y, args):
    data = stack_designs([X], [X], [y])
    start = starts(X, y, family, args.starts)
    before, cpu = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
    res = fit_designs(data, np.zeros(args.starts, np.int64), start, args.lr, family=family,
                      max_steps=args.max_steps, standardize=True)  # fmt: skip
    cpu = time.process_time() - cpu
    after = resource.getrusage(resource.RUSAGE_SELF)
    sys_share = (after.ru_stime - before.ru_stime) / max(cpu, 1e-12)
    return cpu / args.starts, res, sys_share, after.ru_minflt - before.ru_minflt


def run_oracle(family, X, y, k):
    cpu = time.process_time()
    for _ in range(k):
        fit = fit_model(family, fit_data(X, X, y))
    return (time.process_time() - cpu) / k, fit


def run_r(family, csv: Path, k):
    dist = "poisson" if family == "zip" else "negbin"
    out = subprocess.run(["Rscript", "-e", R_SCRIPT, str(csv), dist, str(k)],
                         capture_output=True, text=True, check=True).stdout.split("\n")  # fmt: skip
    seconds, converged, mean_ll = out[0].split()
    coef = np.array(out[1].split(), float)  # count part first: reordered to (γ, β)
    return float(seconds), converged == "TRUE", float(mean_ll), np.r_[coef[8:16], coef[:8]]


def has_r() -> bool:
    if shutil.which("Rscript") is None:
        return False
    probe = subprocess.run(["Rscript", "-e", "library(pscl)"], capture_output=True)
    return probe.returncode == 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--starts", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--families", nargs="+", default=["zip", "zinb"])
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--max-steps", type=int, default=5000)
    ap.add_argument("--r-fits", type=int, default=5)
    ap.add_argument("--no-r", action="store_true")
    ap.add_argument(
        "--default-heap",
        action="store_true",
        help="leave glibc's allocator as it starts (the stages call keep_heap)",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    heap = "glibc's default heap" if args.default_heap else f"keep_heap() {keep_heap()}"
    use_r = not args.no_r and has_r()
    if not use_r:
        print("R pscl::zeroinfl: skipped (" + ("--no-r" if args.no_r else
              "no Rscript with pscl here") + ")")  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="bench_nmes_"))
    problems = {}
    for family in args.families:
        X, y = simulate(family)
        csv = tmp / f"{family}.csv"
        header = ",".join(("y",) + COLUMNS)
        np.savetxt(csv, np.column_stack([y, X[:, 1:]]), delimiter=",", header=header,
                   comments="", fmt="%.17g")  # fmt: skip
        problems[family] = (X, y, csv)
    times = {}
    last = {}
    for _ in range(args.repeat):
        for family, (X, y, csv) in problems.items():
            sec, res, sys_share, faults = run_engine(family, X, y, args)
            times.setdefault((family, "engine"), []).append(sec)
            times.setdefault((family, "engine sys share"), []).append(sys_share)
            times.setdefault((family, "engine minor faults"), []).append(faults)
            sec, oracle = run_oracle(family, X, y, args.r_fits)
            times.setdefault((family, "oracle"), []).append(sec)
            last[family] = (res, oracle)
            if use_r:
                sec, converged, mean_ll, coef = run_r(family, csv, args.r_fits)
                times.setdefault((family, "zeroinfl"), []).append(sec)
                last[family] += (converged, mean_ll, coef)
    print(f"n = {N}, {len(BETA)} + {len(GAMMA)} coefficients, {args.starts} starts, Adam lr "
          f"{args.lr}, standardised, <= {args.max_steps} steps, {args.threads} thread(s), "
          f"{args.repeat} interleaved rounds; {heap}; torch {torch.__version__}; engine from "
          f"{Path(sys.modules[fit_designs.__module__].__file__).parent}")  # fmt: skip
    print("\n| family | method | min | median | detail |\n|---|---|---|---|---|")
    for family in problems:
        res, oracle, *r = last[family]
        k = len(GAMMA) + len(BETA)
        se = oracle.se[:k]
        done = res.status == "converged"
        err = np.abs(res.params[done][:, :k] - oracle.params[:k]) / se
        kinds = ", ".join(f"{s} {c}" for s, c in zip(*np.unique(res.status, return_counts=True)))
        gap = res.nll[done] - oracle.nll
        far = "".join(f" (one at {e:.1e} SE: NLL {g:+.1e}, a plateau)" for e, g in
                      zip(err.max(1), gap) if e > 0.01)  # fmt: skip
        err = err.max(1) if len(err) else np.zeros(0)
        detail = {
            "engine": f"{kinds}; median steps {int(np.median(res.steps))}, max "
                      f"{int(res.steps.max())}; converged fits: median {np.median(err):.1e} SE, "
                      f"max {err.max(initial=0):.1e} SE from the oracle{far}",
            "oracle": f"{oracle.status}, {oracle.iterations} Newton iterations",
        }  # fmt: skip
        if r:
            gap = -r[1] - oracle.nll
            detail["zeroinfl"] = (
                f"converged {r[0]}; mean NLL - oracle's {gap:.1e}; max coef "
                f"diff {np.abs(r[2] - oracle.params[:k]).max():.1e}"
            )
        for method in ("engine", "oracle", "zeroinfl"):
            if (family, method) not in times:
                continue
            v = times[(family, method)]
            print(f"| {family} | {method} | {min(v):.4f} s | {statistics.median(v):.4f} s | "
                  f"{detail[method]} |")  # fmt: skip
        share = times[(family, "engine sys share")]
        faults = times[(family, "engine minor faults")]
        print(f"| {family} | engine kernel share, minor faults | {min(share):.1%}, {min(faults)} "
              f"| {statistics.median(share):.1%}, {int(statistics.median(faults))} | "
              f"ru_stime / CPU; ru_minflt per call |")  # fmt: skip
        if (family, "zeroinfl") in times:
            ratio = statistics.median(times[(family, "zeroinfl")]) / statistics.median(
                times[(family, "engine")]
            )
            print(f"| {family} | zeroinfl / engine per fit | | {ratio:.2f}x | medians |")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
