"""Tracking throughput of the sweep: MLflow fit runs per second, apart from fitting time.

Builds one trial of the default study (4 scenarios × 10 replicates × 5 inits = 200 fits,
Adam, lr = 0.1, all 500 steps (convergence test off), histories every 10 steps → 52 points
per series), fits it with the
batched engine, then logs the 200 fit runs (14 params, 8 final metrics, 3 series, status tag,
convergence.png) into a fresh SQLite store under a temp folder, in several ways:

  serial, no PNG  this process: create_run + log_batch + set_terminated
  serial          this process: render + create_run + log_batch + log_artifact + set_terminated
  2 procs         `FitLogger` with 2 spawned logger processes: what the sweep does on 2 cores

and times each client call of the serial path. Run:

    .venv/bin/python benchmarks/bench_tracking.py [--replicates 10] [--inits 5] [--repeat 2]

`--stores` instead compares tracking stores with 1, 2 and 4 writer processes (`FitLogger`),
the same payloads (PNG included) each time: the local SQLite store with MLflow's default
rollback journal and with write-ahead logging (`PRAGMA journal_mode`), and an `mlflow server`
on a throwaway PostgreSQL (`pipeline.stages.services`, artifacts proxied over HTTP):

    .venv/bin/python benchmarks/bench_tracking.py --stores [--writers 1 2 4] [--repeat 2]

Numbers go to benchmarks/README.md ("Tracking").
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.core.histogram import histogram  # noqa: E402
from pipeline.tracking.quiet import quiet_libraries  # noqa: E402


def make_trial(replicates: int, inits: int):
    """A problem like the default study's, its fit, and the fit runs' payloads."""
    import numpy as np
    import polars as pl

    from pipeline.analysis.objective import build_problem, fit_rows, run_fits
    from pipeline.core.descent.engine import fit_zip  # noqa: F401 (imported here to time torch apart)
    from pipeline.core.oracle import mle
    from pipeline.stages import config

    params = config.load(Path(__file__).resolve().parent.parent / "params.yaml")
    rows, hists = [], {}
    rng = np.random.default_rng(0)
    for s in params.data.scenarios:
        for r in range(replicates):
            y = np.where(rng.random(params.data.n) < s.pi, 0, rng.poisson(s.lam, params.data.n))
            h = hists[(s.name, r)] = histogram(y)
            m = mle.exact_mle(h)
            rows.append(
                {
                    "scenario": s.name,
                    "replicate": r,
                    "seed": f"bench-{r}",
                    "n": h.n,
                    "pi_true": s.pi,
                    "lambda_true": s.lam,
                    "mle_pi": m.pi,
                    "mle_lambda": m.lam,
                    "mle_nll": m.nll,
                    "se_pi": m.se_pi,
                    "se_lambda": m.se_lam,
                    "boundary": m.boundary,
                    "identifiable": True,
                }
            )
    summary = pl.DataFrame(rows)
    cfg = params.sweep.__class__(**{**params.sweep.__dict__, "inits": inits})
    problem = build_problem(summary, hists, params.seed, cfg)
    start = time.perf_counter()
    # No convergence test (grad_tol 0): every fit runs all 500 steps, 52 points per series.
    fit_cfg = dataclasses.replace(params.fit, grad_tol=0.0)
    result = run_fits(problem, fit_cfg, 0.1, "adam", None)
    fit_seconds = time.perf_counter() - start
    table = fit_rows(problem, result).with_columns(
        study=pl.lit("bench"), trial=pl.lit(0), optimizer=pl.lit("adam"), lr=pl.lit(0.1)
    )
    return params, table, result, fit_seconds


def fresh_tracker(folder: Path):
    from pipeline.tracking.runs import Tracker

    return Tracker("bench", root=folder)  # a new folder each time: MLflow caches stores by URI


def time_serial_calls(tracker, payloads, parent) -> dict[str, float]:
    """Milliseconds per fit run spent in each step of the serial path."""
    from pipeline.report.convergence import ConvergencePlot

    plot, png = ConvergencePlot(), Path(tempfile.mkdtemp()) / "convergence.png"
    spent = dict.fromkeys(("render", "create_run", "log_batch", "log_artifact", "terminate"), 0.0)
    for p in payloads:
        t0 = time.perf_counter()
        plot.render(png, p["plot"])
        t1 = time.perf_counter()
        run_id = tracker.start(p["name"], "fit", parent=parent, tags=p["tags"])
        t2 = time.perf_counter()
        tracker.log(run_id, params=p["params"], metrics=p["metrics"], histories=p["histories"])
        t3 = time.perf_counter()
        tracker.log_artifact(run_id, png)
        t4 = time.perf_counter()
        tracker.end(run_id)
        t5 = time.perf_counter()
        for key, dt in zip(spent, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            spent[key] += dt
    return {k: 1e3 * v / len(payloads) for k, v in spent.items()}


def runs_per_second(folder: Path, payloads, processes: int, journal: str | None = None) -> float:
    """Fit runs per second logged by `processes` writers into a fresh store under `folder`
    (or the server of `MLFLOW_TRACKING_URI`); `journal` sets a SQLite store's journal mode."""
    from pipeline.tracking.fit_runs import FitLogger

    tracker = fresh_tracker(folder)
    if journal is not None:  # persistent in the file: the logger processes see it too
        with sqlite3.connect(folder / "mlruns" / "mlflow.db") as db:
            assert db.execute(f"PRAGMA journal_mode={journal}").fetchone()[0] == journal.lower()
    parent = tracker.start("trial", "trial")
    logger = FitLogger(tracker, "bench", folder, processes)
    if processes > 1:  # warm the logger processes: their start-up is paid once per stage
        logger.submit(payloads[: 2 * processes], parent).get()
    start = time.perf_counter()
    run_ids = logger.submit(payloads, parent).get()
    seconds = time.perf_counter() - start
    logger.close()
    assert len(set(run_ids)) == len(payloads)
    return len(payloads) / seconds


def compare_stores(base: Path, payloads, writers: list[int], repeat: int) -> None:
    """Print fit runs / s per store and number of writers (a markdown table)."""
    from pipeline.stages import services

    rates: dict[tuple[str, int], list[float]] = {}
    stores = ("SQLite, rollback journal", "SQLite, WAL", "server on PostgreSQL")
    pg = services.start_postgres()
    server = services.start_mlflow(pg, base / "artifacts")
    try:
        for i in range(repeat):  # alternate the stores: a busy moment hits them all alike
            for n in writers:
                for store, journal in zip(stores, ("DELETE", "WAL", None)):
                    if journal is None:
                        os.environ["MLFLOW_TRACKING_URI"] = server.url
                    else:
                        os.environ.pop("MLFLOW_TRACKING_URI", None)
                    folder = base / f"{len(rates)}-{i}-{n}-{journal}"
                    rate = runs_per_second(folder, payloads, n, journal)
                    rates.setdefault((store, n), []).append(rate)
                    print(f"  {store}, {n} writer(s): {rate:.1f} fit runs/s", flush=True)
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        services.stop_mlflow(server)
        services.stop_postgres(pg)
    print("\n| store | " + " | ".join(f"{n} writer{'s' * (n > 1)}" for n in writers) + " |")
    print("|---|" + "---|" * len(writers))
    for store in stores:
        cells = []
        for n in writers:
            r = rates[(store, n)]
            cells.append(f"{statistics.median(r):.1f} ({min(r):.1f}-{max(r):.1f})")
        print(f"| {store} | " + " | ".join(cells) + " |")


def main() -> None:
    quiet_libraries()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replicates", type=int, default=10)
    p.add_argument("--inits", type=int, default=5)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--stores", action="store_true", help="compare SQLite and PostgreSQL stores")
    p.add_argument("--writers", type=int, nargs="+", default=[1, 2, 4])
    args = p.parse_args()
    from pipeline.analysis.objective import fit_histories
    from pipeline.tracking.fit_runs import fit_payloads

    params, table, result, fit_seconds = make_trial(args.replicates, args.inits)
    start = time.perf_counter()
    payloads = fit_payloads(table, fit_histories(result), fit_cfg=params.fit, plots=True, trial=0,
                            max_points=params.tracking.max_points, study="bench")  # fmt: skip
    build_ms = 1e3 * (time.perf_counter() - start) / len(payloads)
    points = min(len(p["histories"]["nll"][0]) for p in payloads)
    print(
        f"{len(payloads)} fits; fitting them (one batched call): {fit_seconds:.2f} s; "
        f"payloads {build_ms:.2f} ms/fit; >= {points} points per series"
    )
    base = Path(tempfile.mkdtemp(prefix="bench-tracking-"))
    if args.stores:
        compare_stores(base, payloads, args.writers, args.repeat)
        print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}")
        shutil.rmtree(base, ignore_errors=True)
        return
    tracker = fresh_tracker(base / "calls")
    calls = time_serial_calls(tracker, payloads, tracker.start("trial", "trial"))
    print(
        "serial path, ms per fit run: "
        + ", ".join(f"{k} {v:.1f}" for k, v in calls.items())
        + f"; total {sum(calls.values()):.1f}"
    )
    bare = [{**p, "plot": None} for p in payloads]
    for label, processes, batch in (("serial, no PNG", 1, bare), ("serial", 1, payloads),
                                    ("2 procs", 2, payloads)):  # fmt: skip
        rates = [runs_per_second(base / f"{processes}-{len(label)}-{i}", batch, processes)
                 for i in range(args.repeat)]  # fmt: skip
        print(
            f"{label:>13}: {statistics.median(rates):5.1f} fit runs/s "
            f"(runs: {', '.join(f'{r:.1f}' for r in rates)})"
        )
    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}")
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
