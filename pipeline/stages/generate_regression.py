"""The data stage's regression scenarios: simulate designs and counts, fit the Newton oracle.

Each dataset draws from its own stream of the seed tree, `seeds.stream(seed, "data",
name_key(scenario), replicate)` (names are unique across both kinds of scenario): child 0
draws the covariates (then a scenario's exposure t, after them, so a scenario without one draws
as before exposures existed), child 1 the counts of the scenario's family
(`core.simulation.design` for the ZIP, `core.laws.count_dists` for the others). Every replicate
of a scenario goes to `data/regression/<scenario>.parquet` (the exposure a column of its own,
its log the count part's offset in the draw and in the oracle's fit); the oracle's fit of each
dataset (`core.oracle.fit`) to `data/reg_summary.parquet`, one row per parameter:
zero part, count part, then the NB families' log dispersion (`store.reg_data`).
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from pipeline.core import seeds
from pipeline.core.errors import NotIdentifiableError, UserError
from pipeline.core.laws import count_dists
from pipeline.core.model import family as family_of
from pipeline.core.model import fit_data
from pipeline.core.oracle.fit import fit_model
from pipeline.core.simulation import design
from pipeline.core.simulation.covariates import draw_covariates
from pipeline.store import files, reg_data

PARTS = ("zero", "count")  # parameter order everywhere: zero part (gamma) first, as statsmodels


def simulate(params, index: int, replicate: int):
    """One regression dataset: (covariate columns, X, x_names, beta, Z, z_names, gamma, y,
    seed label, count offset); the columns include the exposure and the offset is its log
    (None without an exposure).

    Raises:
        UserError: the true rates or zero probabilities leave the usable range somewhere in
            the simulated design (names the scenario's key).
    """
    reg = params.data.regression
    scenario = reg.scenarios[index]
    seq = seeds.stream(params.seed, "data", seeds.name_key(scenario.name), replicate)
    cov_rng, count_rng = seeds.children(seq, 2)
    covs = [c.covariate() for c in scenario.covariates]
    if scenario.exposure is not None:  # drawn last: the covariates' draws stay as they were
        covs.append(scenario.exposure.covariate())
    values = draw_covariates(covs, reg.n, cov_rng)
    offset = None if scenario.exposure is None else np.log(values[scenario.offset_column])
    X, x_names, beta = design.design_matrix(values, scenario.part_coefficients("count"), n=reg.n)
    if family_of(scenario.family).zero:
        zero = scenario.part_coefficients("zero")
        Z, z_names, gamma = design.design_matrix(values, zero, n=reg.n)
    else:
        Z, z_names, gamma = np.zeros((reg.n, 0)), [], np.zeros(0)
    eta = X @ beta if offset is None else X @ beta + offset
    problem = design.linear_predictor_problem(eta, Z @ gamma)
    if problem:
        raise UserError(
            f"data.regression.scenarios[{index}] ({scenario.name}), replicate {replicate}: "
            f"{problem}; change its coefficients or covariates"
        )
    if scenario.family == "zip":
        y = design.simulate_counts(X, Z, beta, gamma, count_rng, count_offset=offset)
    else:
        log_alpha = None if scenario.dispersion is None else math.log(scenario.dispersion)
        with np.errstate(invalid="ignore", over="ignore"):
            try:
                y = count_dists.sample_counts(scenario.family, count_rng, s=Z @ gamma, eta=eta,
                                              log_alpha=log_alpha)  # fmt: skip
            except ValueError:  # numpy's Poisson refuses an infinite or NaN gamma-mixed rate
                raise UserError(
                    f"data.regression.scenarios[{index}] ({scenario.name}), replicate "
                    f"{replicate}: dispersion {scenario.dispersion:g} makes the gamma-mixed "
                    "Poisson rate overflow; lower it (above ~1e4 nearly every NB count is 0)"
                ) from None
    return values, X, x_names, beta, Z, z_names, gamma, y, seeds.label(seq), offset


def check_scenarios(params) -> None:
    """Simulate every regression dataset once, writing nothing: a scenario whose true
    predictors leave the usable range in some replicate, or whose draw overflows, is refused
    (one line, `simulate`'s) before the data stage writes a file or opens the store.

    Raises:
        UserError: as `simulate`.
    """
    reg = params.data.regression
    for index in range(len(reg.scenarios)):
        for rep in range(reg.replicates):
            simulate(params, index, rep)


def _oracle(family: str, X, Z, y, offset=None):
    """(estimates, SEs, fit) in parameter order; `offset`: the count part's, or None."""
    fit = fit_model(family, fit_data(X, Z, y, offset_x=offset))
    return list(fit.params), list(fit.se), fit


def oracle_rows(scenario: str, replicate: int, seed: str, X, Z, y, names, truth,
                family: str = "zip", offset=None) -> list[dict]:  # fmt: skip
    """The summary rows of one dataset: one per parameter, zero part first, log α last.

    Args:
        scenario, replicate, seed: the dataset.
        X, Z, y: its designs and counts.
        names: ((part, term), ...) in parameter order; `truth` the true values in that order.
        family: the scenario's family (`core.model.FAMILIES`).
        offset: (n,) the count part's offset (log exposure), or None.

    Returns:
        Dicts with the oracle's estimate and SE (NaN when every count is zero; log α = −inf
        with a NaN SE when its estimate is on the boundary α = 0, status "boundary").
    """
    base = {"scenario": scenario, "family": family, "replicate": replicate, "seed": seed,
            "n": len(y), "zero_share": float((y == 0).mean()),
            "mean": float(y.mean())}  # fmt: skip
    try:
        est, se, fit = _oracle(family, X, Z, y, offset)
        state = {"oracle_nll": fit.nll, "oracle_status": fit.status,
                 "oracle_message": fit.message, "oracle_iterations": fit.iterations}  # fmt: skip
    except NotIdentifiableError as err:
        est = se = [float("nan")] * len(names)
        state = {"oracle_nll": float("nan"), "oracle_status": "all_zero",
                 "oracle_message": str(err), "oracle_iterations": 0}  # fmt: skip
    return [
        {**base, "part": part, "term": term, "truth": float(t), "estimate": float(e),
         "se": float(s), **state}
        for (part, term), t, e, s in zip(names, truth, est, se)
    ]  # fmt: skip


def generate_regression(params, layout: files.Layout, stamp: str, bar=None) -> pl.DataFrame:
    """Simulate and write every regression scenario; returns the summary (also written).

    Args:
        params: the validated params (`seed`, `data.regression`).
        layout: the work directory's layout.
        stamp: the data stage's params hash.
        bar: a progress bar advanced once per dataset, or None.

    Returns:
        The regression summary (empty when there are no regression scenarios).
    """
    reg = params.data.regression
    rows: list[dict] = []
    for index, scenario in enumerate(reg.scenarios):
        frames = []
        for rep in range(reg.replicates):
            values, X, x_names, beta, Z, z_names, gamma, y, seed, offset = simulate(
                params, index, rep
            )
            frames.append(pl.DataFrame({"replicate": [rep] * reg.n, **values, "y": y}))
            names = [("zero", t) for t in z_names] + [("count", t) for t in x_names]
            truth = [*gamma, *beta]
            if scenario.dispersion is not None:
                names.append(("dispersion", "log_alpha"))
                truth.append(math.log(scenario.dispersion))
            rows += oracle_rows(scenario.name, rep, seed, X, Z, y, names, truth,
                                scenario.family, offset)  # fmt: skip
            if bar is not None:
                bar.update(1)
        files.write(pl.concat(frames), layout.reg_dataset(scenario.name), stamp)
    reg_data.remove_stale(layout, {s.name for s in reg.scenarios})
    summary = pl.DataFrame(rows) if rows else pl.DataFrame()
    if reg.scenarios:
        files.write(summary, layout.reg_summary, stamp)
    else:
        layout.reg_summary.path.unlink(missing_ok=True)
    return summary


def scenario_lines(summary: pl.DataFrame) -> list[str]:
    """One printed line per regression scenario: oracle outcomes and its error in SEs."""
    if summary.is_empty():
        return []
    lines = []
    z = (pl.col("estimate") - pl.col("truth")).abs() / pl.col("se")
    per = summary.group_by("scenario", maintain_order=True).agg(
        pl.col("family").first() if "family" in summary.columns else pl.lit("zip").alias("family"),
        pl.col("replicate").n_unique().alias("datasets"),
        (pl.col("oracle_status") == "converged").sum().alias("converged_coefs"),
        (pl.col("oracle_status") == "boundary").sum().alias("boundary_coefs"),
        pl.len().alias("coefs"),
        z.filter(z.is_finite()).max().alias("worst_z"),
    )
    for r in per.iter_rows(named=True):
        share = r["converged_coefs"] / r["coefs"]
        boundary = r["boundary_coefs"] / r["coefs"]
        at_zero = f", alpha = 0 (boundary) on {boundary:.0%}" if boundary else ""
        worst = r["worst_z"]  # None: no finite SE at all (every dataset all zeros, say)
        error = ("no finite standard error to measure its error in" if worst is None
                 else f"largest |estimate - truth| = {worst:.2f} SE")  # fmt: skip
        lines.append(f"regression {r['scenario']} ({r['family']}): {r['datasets']} datasets, "
                     f"Newton oracle converged on {share:.0%}{at_zero}, {error}")  # fmt: skip
    return lines
