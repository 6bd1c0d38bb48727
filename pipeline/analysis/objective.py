"""The sweep's problem and objective: every dataset × init, fitted at one learning rate.

The data are loaded once per process into a `Problem`: the identifiable datasets as stacked
histograms, and `inits` random starts per dataset drawn from seeded streams, so that every
trial (learning rate) is scored on exactly the same fits.

Objective (minimised): the mean over fits of a bounded per-fit charge (`recovery.charge`):
    1                                   for a fit that did not recover the exact MLE,
    STEP_WEIGHT × steps / max_steps     for one that did (STEP_WEIGHT = 1e-6),
where recovered is the report's `recovered`: converged and every parameter within 1 SE of the
exact MLE (Newton oracle for regression fits). The objective is the share of fits not
recovered, ties broken by the fewest steps, in [0, 1 + 1e-6]: a fit that diverged, stopped at
`max_steps` or converged far from the MLE costs the same 1, however far off it ended, so one
bad fit cannot swamp the rest. Its parts (share converged / diverged, median steps to
convergence, worst gap, mean |error| in standard errors) are recorded beside it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from pipeline.analysis.recovery import charge, fit_charges, recovered
from pipeline.core import seeds
from pipeline.core.descent.engine import fit_zip, stack_histograms
from pipeline.core.histogram import Histogram

if TYPE_CHECKING:
    import torch

PARTS = (
    "share_recovered",
    "share_converged",
    "share_diverged",
    "share_max_steps",
    "median_steps",
    "worst_gap",
    "mean_abs_err_pi_se",
    "mean_abs_err_lambda_se",
)


def init_seed(seed: int, scenario: str, replicate: int) -> int:
    """The seed of one dataset's random starts: stream `inits` of the seed tree as an integer.

    Args:
        seed: `params.seed`.
        scenario, replicate: the dataset.

    Returns:
        A 63-bit integer (recorded per fit); `numpy.random.default_rng(it)` redraws the inits
        (`draw_inits`).
    """
    return seeds.integer(seeds.stream(seed, "inits", seeds.name_key(scenario), replicate))


def draw_inits(
    seed: int, k: int, pi_range: tuple[float, float], lam_range: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """`k` starts π₀ ~ U(pi_range), λ₀ ~ U(lam_range) (all π₀ first, then all λ₀).

    The engine needs 0 < π₀ < 1 and λ₀ > 0; a draw that lands exactly on a closed end
    (probability ~1e-16) is moved to the next float inside.

    Args:
        seed: from `init_seed`.
        k: number of starts.
        pi_range, lam_range: the uniform ranges.

    Returns:
        (pi0, lam0), arrays of length k.
    """
    rng = np.random.default_rng(seed)
    pi0 = rng.uniform(*pi_range, size=k)
    lam0 = rng.uniform(*lam_range, size=k)
    pi0 = np.where(pi0 <= 0.0, np.nextafter(0.0, 1.0), pi0)
    pi0 = np.where(pi0 >= 1.0, np.nextafter(1.0, 0.0), pi0)
    lam0 = np.where(lam0 <= 0.0, np.nextafter(0.0, 1.0), lam0)
    return pi0, lam0


@dataclass(frozen=True)
class Problem:
    """Every fit of one trial, built once per process.

    Attributes:
        values, freqs: the D datasets as stacked histograms, (D, K) tensors.
        hists: the D histograms (for figures).
        fits: one row per fit (dataset × init): dataset index, identity, truth, exact MLE
            and its standard errors, init seed and start.
        skipped: "scenario/replicate" of datasets left out (not identifiable).
    """

    values: torch.Tensor
    freqs: torch.Tensor
    hists: tuple[Histogram, ...]
    fits: pl.DataFrame
    skipped: tuple[str, ...]


def build_problem(summary: pl.DataFrame, hists: dict, seed: int, cfg, device: str = "cpu"):
    """The fits of a sweep: identifiable datasets × `cfg.inits` seeded starts.

    Args:
        summary: the data stage's summary (one row per dataset, exact MLE columns).
        hists: histograms keyed by (scenario, replicate).
        seed: `params.seed`.
        cfg: the sweep settings (`inits`, `init_pi`, `init_lambda`).
        device: torch device of the stacked histograms.

    Returns:
        The `Problem`.
    """

    keep = summary.filter(pl.col("identifiable"))
    skipped = summary.filter(~pl.col("identifiable"))
    rows = []
    for d, ds in enumerate(keep.iter_rows(named=True)):
        s = init_seed(seed, ds["scenario"], ds["replicate"])
        pi0, lam0 = draw_inits(s, cfg.inits, cfg.init_pi, cfg.init_lambda)
        for i in range(cfg.inits):
            rows.append({"dataset": d, "scenario": ds["scenario"], "replicate": ds["replicate"],
                         "init": i, "n": ds["n"], "data_seed": ds["seed"], "init_seed": s,
                         "pi_true": ds["pi_true"], "lambda_true": ds["lambda_true"],
                         "pi0": float(pi0[i]), "lambda0": float(lam0[i]),
                         "mle_pi": ds["mle_pi"], "mle_lambda": ds["mle_lambda"],
                         "mle_nll": ds["mle_nll"], "se_pi": ds["se_pi"],
                         "se_lambda": ds["se_lambda"], "boundary": ds["boundary"]})  # fmt: skip
    chosen = tuple(hists[(s, r)] for s, r in zip(keep["scenario"], keep["replicate"]))
    values, freqs = stack_histograms(chosen, device=device) if chosen else (None, None)
    names = tuple(f"{s}/{r}" for s, r in zip(skipped["scenario"], skipped["replicate"]))
    fits = pl.DataFrame(rows, schema_overrides={"init_seed": pl.Int64}) if rows else pl.DataFrame()
    return Problem(values, freqs, chosen, fits, names)


def objective_value(charges: np.ndarray) -> float:
    """The objective: the mean of the fits' charges (`recovery.charge`), NaN without fits."""
    return float(np.mean(charges)) if len(charges) else float("nan")


def fit_rows(problem: Problem, result) -> pl.DataFrame:
    """One row per fit: the problem's columns and the fit's outcome.

    Args:
        problem: the `Problem` that was fitted.
        result: the engine's `FitResult` for `problem.fits`, in order.

    Returns:
        The rows, with `nll_gap`, `err_pi_se` and `err_lambda_se` (signed errors in units of
        the exact MLE's standard error).
    """
    fits = problem.fits
    return (
        fits.drop("dataset")
        .with_columns(
            pi_hat=pl.Series(result.pi, dtype=pl.Float64),
            lambda_hat=pl.Series(result.lam, dtype=pl.Float64),
            nll_final=pl.Series(result.nll, dtype=pl.Float64),
            nll_gap=pl.Series(result.nll - fits["mle_nll"].to_numpy(), dtype=pl.Float64),
            steps=pl.Series(result.steps, dtype=pl.Int64),
            status=pl.Series(result.status.astype(str), dtype=pl.String),
            grad_norm=pl.Series(result.grad_norm, dtype=pl.Float64),
        )
        .with_columns(
            err_pi_se=(pl.col("pi_hat") - pl.col("mle_pi")) / pl.col("se_pi"),
            err_lambda_se=(pl.col("lambda_hat") - pl.col("mle_lambda")) / pl.col("se_lambda"),
        )
    )


def fit_histories(result) -> pl.DataFrame:
    """Every fit's recorded path in long format, its final state always the last point.

    The engine records every `record_every` steps while a fit runs (NaN after it stops); the
    final state is added where its step was not recorded. Non-finite recorded points (a fit
    on its way to diverging) are dropped; a diverged fit's final state is its last finite one.

    Args:
        result: the engine's `FitResult`.

    Returns:
        Columns fit (index into the fits), step, nll, pi, lambda; sorted by fit and step.
    """
    fits, width = result.history_nll.shape
    recorded = pl.DataFrame({
        "fit": np.repeat(np.arange(fits, dtype=np.int64), width),
        "step": np.tile(result.history_step.astype(np.int64), fits),
        "nll": result.history_nll.ravel(), "pi": result.history_pi.ravel(),
        "lambda": result.history_lam.ravel(),
    }).filter(pl.col("nll").is_finite())  # fmt: skip
    final = pl.DataFrame({
        "fit": np.arange(fits, dtype=np.int64), "step": result.steps.astype(np.int64),
        "nll": result.nll, "pi": result.pi, "lambda": result.lam,
    })  # fmt: skip
    return (
        pl.concat([recorded, final])
        .unique(["fit", "step"], keep="first", maintain_order=True)
        .sort("fit", "step")
    )


def objective_parts(rows: pl.DataFrame, max_steps: int) -> dict[str, float]:
    """The objective and its parts from a trial's fit rows.

    Args:
        rows: from `fit_rows`.
        max_steps: the step budget (`fit.max_steps`).

    Returns:
        `{"objective": ..., **PARTS}`; NaN where a part is undefined (e.g. no fit converged).
    """
    status = rows["status"].to_numpy()
    charges = fit_charges(rows, max_steps)
    ok = rows.filter(pl.col("status") != "diverged")
    converged = rows.filter(pl.col("status") == "converged")

    def mean_abs(col: str) -> float:
        x = np.abs(ok[col].to_numpy().astype(float))
        x = x[np.isfinite(x)]
        return float(x.mean()) if len(x) else float("nan")

    return {
        "objective": objective_value(charges),
        "share_recovered": float(np.mean(charges < 1.0)),
        "share_converged": float(np.mean(status == "converged")),
        "share_diverged": float(np.mean(status == "diverged")),
        "share_max_steps": float(np.mean(status == "max_steps")),
        "median_steps": float(converged["steps"].median()) if converged.height else float("nan"),
        "worst_gap": float(ok["nll_gap"].max()) if ok.height else float("nan"),
        "mean_abs_err_pi_se": mean_abs("err_pi_se"),
        "mean_abs_err_lambda_se": mean_abs("err_lambda_se"),
    }


def run_fits(problem: Problem, fit_cfg, lr: float, optimizer: str,
             on_chunk: Callable[[int, float], bool] | None):  # fmt: skip
    """All fits of `problem` at one learning rate, as one batched engine call.

    Args:
        problem: the `Problem`.
        fit_cfg: `params.fit` (engine settings).
        lr, optimizer: the trial's learning rate and optimizer.
        on_chunk: called after each chunk of steps with (step, objective so far); returning
            True stops the engine (pruning).

    Returns:
        The engine's `FitResult`.
    """

    fits = problem.fits
    mle = fits.select("mle_pi", "mle_lambda").to_numpy()
    se = fits.select("se_pi", "se_lambda").to_numpy()
    finished_at = np.full(fits.height, -1, dtype=np.int64)

    def callback(report) -> bool:
        # The objective so far: a running fit within 1 SE counts as recovered so far, charged
        # the steps taken; a finished one the chunk it was first seen finished at (the engine
        # reports no per-fit steps while it runs).
        status = np.asarray(report.status)
        finished_at[(status != "running") & (finished_at < 0)] = report.step
        steps = np.where(finished_at < 0, report.step, finished_at)
        with np.errstate(invalid="ignore", divide="ignore"):
            errors = (np.column_stack([report.pi, report.lam]) - mle) / se
        value = objective_value(charge(recovered(status, errors, so_far=True), steps,
                                       fit_cfg.max_steps))  # fmt: skip
        return bool(on_chunk(int(report.step), value))

    column = lambda name: problem.fits[name].to_numpy().copy()  # noqa: E731 (writable for torch)
    return fit_zip(
        problem.values, problem.freqs, column("dataset"), column("pi0"), column("lambda0"), lr,
        optimizer=optimizer, momentum=fit_cfg.momentum if optimizer == "sgd" else 0.0,
        model=fit_cfg.model, max_steps=fit_cfg.max_steps, tol=fit_cfg.tol,
        window=fit_cfg.window, grad_tol=fit_cfg.grad_tol, record_every=fit_cfg.record_every,
        chunk_steps=fit_cfg.chunk_steps, callback=callback if on_chunk else None,
        device=fit_cfg.device,
    )  # fmt: skip
