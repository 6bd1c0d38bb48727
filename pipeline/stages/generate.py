"""Data stage: simulate every scenario × replicate, store counts, histograms and exact MLEs.

`python -m pipeline.generate --params P --workdir W` (`make data`) writes under `W/data/`:
- `datasets/<scenario>/<replicate:03d>.parquet`: the raw counts (column `y`, int64);
- `histograms.parquet`: (scenario, replicate, value, freq), all later stages need;
- `summary.parquet`: one row per dataset with its seed, moments and exact MLE with SEs.
Every file is stamped with `params.digest("seed", "data")` (see `pipeline.store.datasets`).

Sampling and the dataset files are in `pipeline.core.simulation.simulate`; this module is the stage
around
them: the exact MLE per dataset, the summary tables, MLflow logging and the entry point.
"""

from __future__ import annotations

import math
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from pipeline.core import seeds
from pipeline.core.errors import NotIdentifiableError, UserError
from pipeline.core.histogram import Histogram
from pipeline.core.oracle.mle import exact_mle
from pipeline.core.simulation import simulate
from pipeline.report.plots import figure, pmf_vs_histogram
from pipeline.stages import config
from pipeline.stages.cli import parser, progress
from pipeline.stages.generate_regression import (
    check_scenarios,
    generate_regression,
    scenario_lines,
)
from pipeline.store import datasets, files
from pipeline.tracking import interrupts
from pipeline.tracking.runs import Tracker

_MLE_COLUMNS = (
    "mle_pi",
    "mle_lambda",
    "mle_nll",
    "se_pi",
    "se_lambda",
    "se_logit_pi",
    "se_log_lambda",
)


def summary_row(scenario: config.Scenario, replicate: int, seq, hist: Histogram) -> dict:
    """One summary row: moments and the exact MLE with its standard errors.

    Args:
        scenario: the dataset's scenario.
        replicate: its replicate number.
        seq: its `SeedSequence` (recorded as text).
        hist: its histogram of counts.

    Returns:
        A dict with the summary columns; when every count is zero the MLE columns are NaN,
        `boundary` is None and `identifiable` False.
    """
    row = {
        "scenario": scenario.name,
        "replicate": replicate,
        "seed": seeds.label(seq),
        "n": hist.n,
        "pi_true": scenario.pi,
        "lambda_true": scenario.lam,
        "zero_share": hist.zero_share,
        "mean": hist.mean,
        "variance": hist.variance,
    }
    try:
        fit = exact_mle(hist)
    except NotIdentifiableError:
        return {
            **row,
            **dict.fromkeys(_MLE_COLUMNS, float("nan")),
            "boundary": None,
            "identifiable": False,
        }
    values = (fit.pi, fit.lam, fit.nll, fit.se_pi, fit.se_lam, fit.se_logit_pi, fit.se_log_lam)
    return {
        **row,
        **dict(zip(_MLE_COLUMNS, map(float, values))),
        "boundary": fit.boundary,
        "identifiable": True,
    }


COUNTS_PER_SECOND = 1e6  # measured with other jobs on the 2 cores: 1-2.3 M counts/s
LONG_RUN = 1e8  # counts from which the stage says what the run will cost


def bytes_per_count(lam: float) -> float:
    """A generous estimate of the zstd parquet size of one ZIP count (measured: 0.2 bytes at
    lambda = 0.5, 0.43 at 5, 1.06 at 1000): a floor plus the Poisson's entropy in bytes."""
    bits = 0.5 * math.log2(2 * math.pi * math.e * lam) if lam > 1 else 0.0
    return 0.25 + bits / 8


# Regression rows (their covariates drawn twice: once to check every scenario before
# anything is written, `check_scenarios`; the Newton oracle fitted on each dataset): 5
# scenarios x 4 replicates x 100,000 rows took 13 s of the stage's 15 s on the 2 cores, and
# 23 MB of parquet (~12 bytes a row with 2-4 covariates: ~3 bytes a stored value).
REG_ROWS_PER_SECOND = 1.5e5
REG_BYTES_PER_VALUE = 3.0
LONG_SECONDS = 120.0  # the stage says what it will cost from here


def cost(data) -> tuple[int, float, float]:
    """(counts, estimated bytes on disk, estimated seconds) of the data stage, the regression
    scenarios' rows included (each is one count)."""
    counts = data.n * data.replicates * len(data.scenarios)
    size = sum(data.n * data.replicates * bytes_per_count(s.lam) for s in data.scenarios)
    reg = data.regression
    rows = reg.n * reg.replicates * len(reg.scenarios)
    values = sum(reg.n * reg.replicates * (len(s.covariates) + 3) for s in reg.scenarios)
    return (counts + rows, size + values * REG_BYTES_PER_VALUE,
            counts / COUNTS_PER_SECOND + rows / REG_ROWS_PER_SECOND)  # fmt: skip


def check_cost(data, folder: Path) -> None:
    """Say what a long run will cost; refuse one whose datasets cannot fit on the disk."""
    counts, size, seconds = cost(data)
    free = shutil.disk_usage(files.nearest_existing(folder)).free
    if size + files.MIN_FREE_BYTES > free:
        raise UserError(f"data: {counts:.3g} counts need ~{size / 1e9:.3g} GB of parquet, but "
                        f"{folder} has {free / 1e9:.3g} GB free; lower data.n or "
                        "data.replicates (data.regression.n or .replicates)")  # fmt: skip
    if counts >= LONG_RUN or seconds >= LONG_SECONDS:
        print(f"generate: {counts:.3g} counts, ~{size / 1e9:.2g} GB of parquet, "
              f"~{seconds / 60:.0f} min", file=sys.stderr)  # fmt: skip


def generate(params: config.Params, workdir: Path, chunk: int = simulate.CHUNK):
    """Simulate, write and summarise every dataset of `params.data` under `workdir/data/`.

    Args:
        params: the validated params (blocks `seed` and `data` are used).
        workdir: folder holding `data/`.
        chunk: counts per chunk (memory bound; results do not depend on it).

    Returns:
        `(summary, hists)`: the summary frame and the histograms keyed by (scenario, replicate).
    """
    data, stamp = params.data, params.digest(*config.STAGE_BLOCKS["generate"])
    for i, s in enumerate(data.scenarios):
        if s.lam > simulate.POISSON_LAM_MAX:
            raise UserError(
                f"data.scenarios[{i}].lambda: numpy cannot sample a Poisson rate "
                f"above {simulate.POISSON_LAM_MAX:.3g}, got {s.lam!r}"
            )
    layout = files.Layout(workdir)
    rows, hists, keep = [], {}, set()
    reg = data.regression
    total = len(data.scenarios) * data.replicates + len(reg.scenarios) * reg.replicates
    bar = progress(total, "generate", unit="dataset")
    try:
        for scenario in data.scenarios:
            for rep in range(data.replicates):
                seq = seeds.stream(params.seed, "data", seeds.name_key(scenario.name), rep)
                file = layout.dataset(scenario.name, rep)
                chunks = simulate.sample_chunks(seq, scenario.pi, scenario.lam, data.n, chunk)
                hists[(scenario.name, rep)] = hist = datasets.write_dataset(file, chunks, stamp)
                rows.append(summary_row(scenario, rep, seq, hist))
                keep.add(file.path)
                bar.update(1)
        generate_regression(params, layout, stamp, bar)
    finally:
        bar.close()
    if removed := datasets.remove_stale(layout, keep):
        print(f"generate: removed {removed} dataset files params no longer name", file=sys.stderr)
    summary = pl.DataFrame(rows, schema_overrides={"boundary": pl.Boolean}, strict=False)
    # The summary is the make target: write it last, so it is never newer than its inputs.
    files.write(datasets.histograms_to_frame(hists), layout.histograms, stamp)
    files.write(summary, layout.summary, stamp)
    return summary, hists


def scenario_table(summary: pl.DataFrame) -> pl.DataFrame:
    """Per-scenario means over replicates (what the stage prints and logs).

    Args:
        summary: the summary frame (`summary.parquet`).

    Returns:
        One row per scenario: replicates, true values, mean zero share, mean MLE (pi, lambda),
        share of boundary estimates, number of non-identifiable datasets.
    """
    return summary.group_by("scenario", maintain_order=True).agg(
        pl.len().alias("replicates"),
        pl.col("pi_true").first(),
        pl.col("lambda_true").first(),
        pl.col("zero_share").mean().alias("zero_share_mean"),
        pl.col("mle_pi").mean().alias("mle_pi_mean"),
        pl.col("mle_lambda").mean().alias("mle_lambda_mean"),
        pl.col("boundary").cast(pl.Float64).mean().alias("boundary_share"),
        (~pl.col("identifiable")).sum().alias("not_identifiable"),
    )


def markdown(df: pl.DataFrame) -> str:
    """A frame as a markdown table, every row and column, floats to 4 decimals.

    Args:
        df: any frame.

    Returns:
        The table as text (no trailing newline).
    """
    with pl.Config(
        tbl_formatting="MARKDOWN",
        tbl_hide_column_data_types=True,
        tbl_hide_dataframe_shape=True,
        tbl_rows=-1,
        tbl_cols=-1,
        tbl_width_chars=10000,
        float_precision=4,
    ):
        return str(df)


def log_stage(
    tracker,
    run_id: str,
    params: config.Params,
    summary: pl.DataFrame,
    hists: dict,
    workdir: Path,
    seconds: float,
) -> None:
    """Log the stage run: flat seed+data params, per-scenario metrics, tables and figures.

    Args:
        tracker: the `pipeline.tracking.runs.Tracker`.
        run_id: the open stage run.
        params: the validated params.
        summary, hists: what `generate` returned.
        workdir: folder holding `data/` (its parquet files are logged as artifacts).
        seconds: wall time of the simulation, logged as a metric.
    """

    flat = {"seed": params.seed, "data.n": params.data.n, "data.replicates": params.data.replicates}
    for s in params.data.scenarios:
        flat.update({f"data.scenarios.{s.name}.pi": s.pi, f"data.scenarios.{s.name}.lambda": s.lam})
    table = scenario_table(summary)
    metrics = {
        "datasets": summary.height,
        "counts": int(summary["n"].sum()),
        "seconds": seconds,
        "not_identifiable": int((~summary["identifiable"]).sum()),
    }
    for row in table.iter_rows(named=True):
        for key in ("zero_share_mean", "mle_pi_mean", "mle_lambda_mean", "boundary_share"):
            if row[key] is not None:
                metrics[f"{row['scenario']}.{key}"] = row[key]
    tracker.log(run_id, params=flat, metrics=metrics)
    layout = files.Layout(workdir)
    for file in (layout.summary, layout.histograms):
        tracker.log_artifact(run_id, file.path, "data")
    with tempfile.TemporaryDirectory() as tmp:
        summary.write_csv(Path(tmp) / "summary.csv")
        (Path(tmp) / "scenarios.md").write_text(markdown(table) + "\n")
        for name in ("summary.csv", "scenarios.md"):
            tracker.log_artifact(run_id, Path(tmp) / name, "data")
    fig, ax = figure()
    for s in params.data.scenarios:
        fit = summary.filter((pl.col("scenario") == s.name) & (pl.col("replicate") == 0)).row(
            0, named=True
        )
        curves = {"true": (s.pi, s.lam), "exact MLE": (fit["mle_pi"], fit["mle_lambda"])}
        hist = hists[(s.name, 0)]
        title = f"{s.name}: replicate 0 against the true and the MLE pmf"
        # A wide support spreads the Poisson bulk thin beside the zero bar: show it on a log axis.
        pmf_vs_histogram(ax, hist, curves, title=title, log=bool(hist.values.max() > 100))
        tracker.log_figure(run_id, fig, f"figures/{s.name}.png")


def main(argv: Sequence[str] | None = None) -> int:
    """Generate the datasets; see the module docstring. Returns the exit status (0)."""
    args = parser("Simulate the ZIP datasets and their exact MLEs into data/.").parse_args(argv)
    params = config.load(args.params)
    workdir = args.workdir.resolve()
    stamp = params.digest(*config.STAGE_BLOCKS["generate"])
    layout = files.Layout(workdir)
    files.check_writable(layout.data, workdir / "mlruns")
    check_cost(params.data, layout.data)
    check_scenarios(params)  # every replicate's design and draw, before anything is written
    tracker = Tracker(params.tracking.experiment, root=workdir)
    with (
        interrupts.sigterm_raises(),
        tracker.stage_run("generate", stamp, params.digest()) as run_id,
    ):
        start = time.perf_counter()
        summary, hists = generate(params, workdir)
        seconds = time.perf_counter() - start
        log_stage(tracker, run_id, params, summary, hists, workdir, seconds)
    table = scenario_table(summary)
    for row in table.filter(pl.col("not_identifiable") > 0).iter_rows(named=True):
        print(
            f"warning: scenario {row['scenario']!r}: {row['not_identifiable']} of "
            f"{row['replicates']} datasets have only zeros, so pi and lambda are not "
            "identifiable; their MLE columns are NaN",
            file=sys.stderr,
        )
    print(markdown(table.drop("pi_true", "lambda_true", "not_identifiable")))
    layout = files.Layout(workdir)
    if params.data.regression.scenarios:
        for line in scenario_lines(files.read(layout.reg_summary, stamp)):
            print(line)
    print(
        f"generate: {summary.height} datasets of n = {params.data.n:,} in {seconds:.1f} s "
        f"-> {files.Layout(workdir).data}; MLflow run {run_id}"
    )
    return 0
