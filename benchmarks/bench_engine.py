"""Speed and accuracy of the batched engine (`pipeline.core.descent.engine.fit_zip`) against its
references.

Measured side by side in one run, on the blog's scenario (pi = 0.5, lambda = 5):
  A  the blog's method (one fit at a time, per-sample full-batch loss through
     MixtureSameFamily, sigmoid/softplus parameters, Adam lr = 1, 100 steps, float32, plain
     PyTorch loop) against the engine on the same 10 inits, and the design engine
     (`design_engine.fit_designs`) on the same fits as one-column designs of the n rows, then
     the engine on 1,000 and 10,000 fits (Adam lr = 0.1, up to 500 steps, n = 10,000);
  B  statsmodels' intercept-only ZeroInflatedPoisson (default fit) per fit at n = 1e4, 1e5, 1e6
     against the engine on 1,000 different datasets of n = 1e4;
  C  the exact MLE (`mle.exact_mle`);
  D  the engine's time per fit as n grows from 1e3 to 1e8 (the histogram pass timed apart;
     data drawn in chunks of 1e7), with peak memory.
Accuracy is max |estimate - exact MLE| in standard errors (se_pi, se_lam), over converged fits.
Run by hand (not part of the tests):

    .venv/bin/python benchmarks/bench_engine.py [--quick] [--threads N]

Numbers go to benchmarks/README.md ("Engine").
"""

import argparse
import resource
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.distributions import Categorical, MixtureSameFamily, Poisson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.core.descent.design_engine import fit_designs  # noqa: E402
from pipeline.core.descent.designs import stack_designs  # noqa: E402
from pipeline.core.descent.engine import fit_zip, stack_histograms  # noqa: E402
from pipeline.core.histogram import histogram, merge_histograms  # noqa: E402
from pipeline.core.oracle.mle import exact_mle  # noqa: E402

PI, LAM = 0.5, 5.0
CHUNK = 10_000_000  # draws per chunk when generating large n


def draw(n: int, seed: int) -> np.ndarray:
    """The DESIGN's reference draw: binomial first, then Poisson (gate 0.5 is symmetric)."""
    rng = np.random.default_rng(seed)
    return rng.binomial(1, 1.0 - PI, n) * rng.poisson(LAM, n)


def inits(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 1.0, size), rng.uniform(0.0, 10.0, size)


def se_error(pi, lam, mle) -> float:
    """Largest distance from the exact MLE in its standard errors (NaN when empty)."""
    pi, lam = np.atleast_1d(pi), np.atleast_1d(lam)
    if pi.size == 0:
        return float("nan")
    return float(
        max(np.abs(pi - mle.pi).max() / mle.se_pi, np.abs(lam - mle.lam).max() / mle.se_lam)
    )


def timed(fn, repeat: int = 1):
    """(result of the last call, the fastest wall time in seconds)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def blog_fit(y: torch.Tensor, pi0: float, lam0: float, lr: float = 1.0, steps: int = 100):
    """The blog's model and loop: sigmoid/softplus parameters, mixture log_prob over samples."""
    mix = torch.tensor(np.log(pi0 / (1 - pi0)), dtype=y.dtype, requires_grad=True)
    rate = torch.tensor(np.log(np.expm1(lam0)), dtype=y.dtype, requires_grad=True)
    optimizer = torch.optim.Adam([mix, rate], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        gate, lam = torch.sigmoid(mix), F.softplus(rate)
        dist = MixtureSameFamily(
            Categorical(probs=torch.stack([gate, 1 - gate])),
            Poisson(torch.stack([torch.zeros_like(lam), lam])),
        )
        loss = -dist.log_prob(y).mean()
        loss.backward()
        optimizer.step()
    return torch.sigmoid(mix).item(), F.softplus(rate).item()


def engine_row(label, values, freqs, index, pi0, lam0, mles, repeat, **kwargs):
    """Run the engine, return a table row: fits, time, per fit, statuses, SE error."""
    result, seconds = timed(lambda: fit_zip(values, freqs, index, pi0, lam0, 0.1, **kwargs), repeat)
    return result_row(label, result, seconds, index, mles), result


def design_row(y, pi0, lam0, mle, repeat):
    """The same fits by the design engine on one-column designs: all n rows, not the histogram
    (why `fit_zip` stays a loop of its own)."""
    ones = np.ones((len(y), 1))
    data = stack_designs([ones], [ones], [y])
    index = np.zeros(len(pi0), np.int64)
    start = np.column_stack([np.log(pi0 / (1 - pi0)), np.log(lam0)])
    result, seconds = timed(lambda: fit_designs(data, index, start, 0.1), repeat)
    return result_row("design engine, one-column designs", result, seconds, index, [mle])


def result_row(label, result, seconds, index, mles) -> list:
    """A table row: fits, time, per fit, statuses, SE error."""
    ok = result.status == "converged"
    errors = [se_error(result.pi[b], result.lam[b], mles[index[b]]) for b in np.flatnonzero(ok)]
    statuses = ", ".join(f"{s} {c}" for s, c in zip(*np.unique(result.status, return_counts=True)))
    return [label, len(index), seconds, seconds / len(index), statuses, max(errors, default=np.nan)]


def section_blog(quick: bool, repeat: int) -> list:
    y = draw(10_000, seed=0)
    hist = histogram(y)
    mle = exact_mle(hist)
    values, freqs = stack_histograms([hist])
    pi0, lam0 = inits(10, seed=0)
    y32 = torch.as_tensor(y, dtype=torch.float32)
    blog, seconds = timed(lambda: [blog_fit(y32, p, lam) for p, lam in zip(pi0, lam0)])
    rows = [["blog loop (float32, 100 steps)", 10, seconds, seconds / 10, "fixed 100 steps",
             se_error(*np.array(blog).T, mle)]]  # fmt: skip
    for model in ("zip", "zip_autograd", "mixture"):
        rows.append(engine_row(f"engine, model={model}", values, freqs, np.zeros(10, int), pi0,
                               lam0, [mle], repeat, model=model)[0])  # fmt: skip
    rows.append(design_row(y, pi0, lam0, mle, repeat))
    for size in (1_000,) if quick else (1_000, 10_000):
        p0, l0 = inits(size, seed=1)
        rows.append(engine_row("engine, model=zip", values, freqs, np.zeros(size, int), p0, l0,
                               [mle], repeat)[0])  # fmt: skip
    if not quick:
        p0, l0 = inits(1_000, seed=1)
        rows.append(engine_row("engine, model=zip_autograd", values, freqs, np.zeros(1_000, int),
                               p0, l0, [mle], 1, model="zip_autograd")[0])  # fmt: skip
    return rows


def statsmodels_fit(y: np.ndarray, method: str = "bfgs") -> tuple[float, float, bool]:
    """statsmodels' intercept-only ZIP; "bfgs" is its default (maxiter 35)."""
    from statsmodels.discrete.count_model import ZeroInflatedPoisson

    ones = np.ones((len(y), 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ZeroInflatedPoisson(y, ones, exog_infl=ones, inflation="logit")
        res = model.fit(method=method, disp=0)
    logit_pi, log_lam = res.params
    return 1 / (1 + np.exp(-logit_pi)), float(np.exp(log_lam)), bool(res.mle_retvals["converged"])


def section_statsmodels(quick: bool, repeat: int) -> tuple[list, list]:
    """Rows for B (statsmodels vs engine on many datasets) and C (exact MLE)."""
    datasets = 200 if quick else 1_000
    ys = [draw(10_000, seed=1000 + d) for d in range(datasets)]
    hists, hist_seconds = timed(lambda: [histogram(y) for y in ys])
    mles, mle_seconds = timed(lambda: [exact_mle(h) for h in hists])
    values, freqs = stack_histograms(hists)
    pi0, lam0 = inits(datasets, seed=2)
    index = np.arange(datasets)
    row, result = engine_row(f"engine, {datasets} datasets", values, freqs, index, pi0, lam0,
                             mles, repeat)  # fmt: skip
    rows = [[*row, 10_000, np.nan]]
    sm_per_fit, shared = {}, []
    runs = [(10_000, 10, "newton"), (10_000, 10, "bfgs"), (100_000, 2, "bfgs")]
    for n, fits, method in runs + ([] if quick else [(1_000_000, 1, "bfgs")]):
        fits_y = ys[:fits] if n == 10_000 else [draw(n, seed=2000 + f) for f in range(fits)]
        out, seconds = timed(
            lambda fits_y=fits_y, m=method: [statsmodels_fit(y, m) for y in fits_y]
        )
        fit_mles = mles[:fits] if n == 10_000 else [exact_mle(histogram(y)) for y in fits_y]
        rel = max(max(abs(p / m.pi - 1), abs(lam / m.lam - 1)) for (p, lam, _), m in
                  zip(out, fit_mles))  # fmt: skip
        errors = [se_error(p, lam, m) for (p, lam, _), m in zip(out, fit_mles)]
        converged = sum(c for *_, c in out)
        sm_per_fit[n, method] = seconds / fits
        shared = shared or out  # the Newton fits: accurate to ~1e-11, a sharp reference
        rows.append([f"statsmodels ZIP {method}, n={n:.0e}", fits, seconds, seconds / fits,
                     f"converged {converged}", max(errors), n, rel])  # fmt: skip
    # Engine against statsmodels on the same n = 1e4 datasets (converged fits only).
    sm = np.array([(p, lam) for p, lam, _ in shared])
    ok = result.status[:10] == "converged"
    rel = np.abs(np.stack([result.pi[:10], result.lam[:10]], 1)[ok] / sm[ok] - 1).max()
    rows[0][-1] = rel
    ratio = sm_per_fit[10_000, "bfgs"] / rows[0][3]
    exact = [
        ["exact MLE (closed form)", datasets, mle_seconds, mle_seconds / datasets],
        ["histogram of n=1e4 counts", datasets, hist_seconds, hist_seconds / datasets],
    ]
    return rows, exact, ratio


def histogram_in_chunks(n: int, seed: int):
    """Draw n counts in chunks (bounded memory) and histogram them; time the two parts."""
    rng = np.random.default_rng(seed)
    parts, draw_seconds, hist_seconds = [], 0.0, 0.0
    for start in range(0, n, CHUNK):
        size = min(CHUNK, n - start)
        t0 = time.perf_counter()
        y = rng.binomial(1, 1.0 - PI, size) * rng.poisson(LAM, size)
        t1 = time.perf_counter()
        parts.append(histogram(y))
        hist_seconds += time.perf_counter() - t1
        draw_seconds += t1 - t0
        del y
    t1 = time.perf_counter()
    hist = merge_histograms(parts)
    return hist, draw_seconds, hist_seconds + time.perf_counter() - t1


def section_scaling(quick: bool, repeat: int) -> list:
    rows = []
    fits = 1_000
    pi0, lam0 = inits(fits, seed=3)
    for exponent in range(3, 7 if quick else 9):
        n = 10**exponent
        tracemalloc.start()
        hist, draw_seconds, hist_seconds = histogram_in_chunks(n, seed=exponent)
        data_peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        mle = exact_mle(hist)
        values, freqs = stack_histograms([hist])
        row, _ = engine_row("", values, freqs, np.zeros(fits, int), pi0, lam0, [mle], repeat)
        rows.append([f"{n:.0e}", len(hist.values), draw_seconds, hist_seconds, row[2],
                     row[3] * 1e6, row[4], row[5], data_peak, peak_rss_mb()])  # fmt: skip
    return rows


def table(header: list[str], rows: list[list], formats: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [("" if isinstance(v, float) and np.isnan(v) else format(v, f))
                 for v, f in zip(row, formats)]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (about a minute)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--repeat", type=int, default=2, help="engine runs per row (best kept)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, "
          f"{'quick' if args.quick else 'full'} run\n")  # fmt: skip

    print("A. The blog's loop against the engine (n = 1e4; engine: Adam lr 0.1, <= 500 steps)\n")
    head = ["method", "fits", "total s", "s / fit", "status", "max SE error"]
    print(table(head, section_blog(args.quick, args.repeat), ["s", "d", ".3f", ".2e", "s", ".1e"]))

    print("\nB. statsmodels (default fit) against the engine on distinct datasets\n")
    rows, exact, ratio = section_statsmodels(args.quick, args.repeat)
    head = ["method", "fits", "total s", "s / fit", "status", "max SE error", "n", "max rel diff"]
    print(table(head, rows, ["s", "d", ".3f", ".2e", "s", ".2e", ".0e", ".1e"]))
    print(f"\nstatsmodels (bfgs) / engine time per fit at n = 1e4: {ratio:,.0f}x")
    print("(max rel diff: the engine's against statsmodels-newton on 10 shared datasets;")
    print("statsmodels' against the exact MLE)\n\nC. Exact MLE\n")
    print(table(["step", "datasets", "total s", "s / dataset"], exact, ["s", "d", ".3f", ".2e"]))

    print("\nD. Engine time per fit as n grows (1,000 fits, Adam lr 0.1, <= 500 steps)\n")
    head = ["n", "K", "draw s", "histogram s", "engine s", "us / fit", "status",
            "max SE error", "draw+hist peak MiB", "process peak RSS MiB"]  # fmt: skip
    formats = ["s", "d", ".2f", ".2f", ".3f", ".0f", "s", ".1e", ".0f", ".0f"]
    print(table(head, section_scaling(args.quick, args.repeat), formats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
