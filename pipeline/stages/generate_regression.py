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
from pipeline.core.oracle.mixed import fit_mixed, sigma_profile, sigma_test
from pipeline.core.simulation import design
from pipeline.core.simulation.covariates import GROUP, draw_covariates
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
    random = scenario.random
    # Child 2 draws the random intercepts; children 0 and 1 are as without them.
    cov_rng, count_rng, group_rng = seeds.children(seq, 3)
    n = reg.n if random is None else random.rows
    covs = [c.covariate() for c in scenario.covariates]
    if scenario.exposure is not None:  # drawn last: the covariates' draws stay as they were
        covs.append(scenario.exposure.covariate())
    values = draw_covariates(covs, n, cov_rng)
    offset = None if scenario.exposure is None else np.log(values[scenario.offset_column])
    X, x_names, beta = design.design_matrix(values, scenario.part_coefficients("count"), n=n)
    if family_of(scenario.family).zero:
        zero = scenario.part_coefficients("zero")
        Z, z_names, gamma = design.design_matrix(values, zero, n=n)
    else:
        Z, z_names, gamma = np.zeros((n, 0)), [], np.zeros(0)
    eta = X @ beta if offset is None else X @ beta + offset
    s = Z @ gamma
    if random is not None:  # b_i ~ N(0, σ_b²) then c_i ~ N(0, σ_c²), one per group
        groups = np.repeat(np.arange(random.groups), random.group_sizes)
        values[GROUP] = groups
        for part in random.parts:
            shift = group_rng.normal(0.0, getattr(random, part), random.groups)[groups]
            eta, s = (eta + shift, s) if part == "count" else (eta, s + shift)
    problem = design.linear_predictor_problem(eta, s)
    if problem:
        raise UserError(
            f"data.regression.scenarios[{index}] ({scenario.name}), replicate {replicate}: "
            f"{problem}; change its coefficients or covariates"
        )
    if scenario.family == "zip" and random is None:
        y = design.simulate_counts(X, Z, beta, gamma, count_rng, count_offset=offset)
    else:
        log_alpha = None if scenario.dispersion is None else math.log(scenario.dispersion)
        with np.errstate(invalid="ignore", over="ignore"):
            try:
                y = count_dists.sample_counts(scenario.family, count_rng, s=s, eta=eta,
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


PROFILE_LEVEL = 0.95  # the profile intervals of σ the data stage stores (one level, fixed)


def sigma_term(part: str) -> str:
    """The summary's term of a random part's log σ: `log_sigma_count`, `log_sigma_zero`."""
    return f"log_sigma_{part}"


def _oracle(family: str, X, Z, y, offset=None):
    """(estimates, SEs, fit) in parameter order; `offset`: the count part's, or None."""
    fit = fit_model(family, fit_data(X, Z, y, offset_x=offset))
    return list(fit.params), list(fit.se), fit


def _mixed_oracle(family: str, X, Z, y, offset, groups, random):
    """(estimates, SEs, fit, {log σ term: extra summary columns}) of a random-intercept
    scenario: `oracle.mixed.fit_mixed` with the scenario's nodes, and per random part the LR
    test of σ = 0 and the profile interval of log σ at `PROFILE_LEVEL` (−inf: σ = 0)."""
    data = fit_data(X, Z, y, offset_x=offset)
    fit = fit_mixed(family, data, groups, random.parts, nodes=random.nodes)
    extra = {}
    for part in random.parts:
        cols = {"sigma_lr": math.nan, "sigma_p": math.nan, "profile_lower": math.nan,
                "profile_upper": math.nan, "profile_level": PROFILE_LEVEL}  # fmt: skip
        if fit.status in ("converged", "boundary"):
            at_zero = not math.isfinite(fit.log_sigma[part])  # the fit is the model without it
            test = sigma_test(fit, data, groups, part, fit.loglik if at_zero else None)
            try:
                low, high = sigma_profile(fit, data, groups, part, PROFILE_LEVEL)
            except RuntimeError:  # a profile fit did not converge: no interval (NaN)
                low = high = math.nan
            with np.errstate(divide="ignore"):
                cols.update(sigma_lr=test.statistic, sigma_p=test.p_value,
                            profile_lower=float(np.log(low)),
                            profile_upper=float(np.log(high)))  # fmt: skip
        extra[sigma_term(part)] = cols
    return list(fit.params), list(fit.se), fit, extra


def oracle_rows(scenario: str, replicate: int, seed: str, X, Z, y, names, truth,
                family: str = "zip", offset=None, groups=None,
                random=None) -> list[dict]:  # fmt: skip
    """The summary rows of one dataset: one per parameter, zero part first, log α, then the
    log σ of each random part.

    Args:
        scenario, replicate, seed: the dataset.
        X, Z, y: its designs and counts.
        names: ((part, term), ...) in parameter order; `truth` the true values in that order.
        family: the scenario's family (`core.model.FAMILIES`).
        offset: (n,) the count part's offset (log exposure), or None.
        groups, random: the (n,) group index and the scenario's `RandomSpec` of a scenario
            with random intercepts (the oracle is then `oracle.mixed.fit_mixed`), or None.

    Returns:
        Dicts with the oracle's estimate and SE (NaN when every count is zero; log α or log σ
        = −inf with a NaN SE when its estimate is on the boundary 0, status "boundary"); a
        log σ row also has the LR test of σ = 0 (`sigma_lr`, `sigma_p`) and its profile
        interval (`profile_lower`, `profile_upper` on the log scale, at `profile_level`).
    """
    base = {"scenario": scenario, "family": family, "replicate": replicate, "seed": seed,
            "n": len(y), "zero_share": float((y == 0).mean()),
            "mean": float(y.mean())}  # fmt: skip
    extra: dict = {}
    try:
        if random is None:
            est, se, fit = _oracle(family, X, Z, y, offset)
        else:
            est, se, fit, extra = _mixed_oracle(family, X, Z, y, offset, groups, random)
        nll = fit.nll if random is None else -fit.loglik / len(y)
        state = {"oracle_nll": nll, "oracle_status": fit.status,
                 "oracle_message": fit.message, "oracle_iterations": fit.iterations}  # fmt: skip
    except NotIdentifiableError as err:
        est = se = [float("nan")] * len(names)
        state = {"oracle_nll": float("nan"), "oracle_status": "all_zero",
                 "oracle_message": str(err), "oracle_iterations": 0}  # fmt: skip
    return [
        {**base, "part": part, "term": term, "truth": float(t), "estimate": float(e),
         "se": float(s), **state, **extra.get(term, {})}
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
            frames.append(pl.DataFrame({"replicate": [rep] * len(y), **values, "y": y}))
            names = [("zero", t) for t in z_names] + [("count", t) for t in x_names]
            truth = [*gamma, *beta]
            if scenario.dispersion is not None:
                names.append(("dispersion", "log_alpha"))
                truth.append(math.log(scenario.dispersion))
            random, groups = scenario.random, values.get(GROUP)
            for part in () if random is None else random.parts:
                names.append(("random", sigma_term(part)))
                with np.errstate(divide="ignore"):  # σ = 0: log σ = -inf
                    truth.append(float(np.log(getattr(random, part))))
            rows += oracle_rows(scenario.name, rep, seed, X, Z, y, names, truth,
                                scenario.family, offset, groups, random)  # fmt: skip
            if bar is not None:
                bar.update(1)
        files.write(pl.concat(frames), layout.reg_dataset(scenario.name), stamp)
    reg_data.remove_stale(layout, {s.name for s in reg.scenarios})
    # Only log σ rows have the σ columns (null elsewhere; absent without random intercepts).
    summary = pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()
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
    grouped = (pl.col("part") == "random").any().alias("grouped")
    per = summary.group_by("scenario", maintain_order=True).agg(
        pl.col("family").first() if "family" in summary.columns else pl.lit("zip").alias("family"),
        grouped,
        pl.col("replicate").n_unique().alias("datasets"),
        (pl.col("oracle_status") == "converged").sum().alias("converged_coefs"),
        (pl.col("oracle_status") == "boundary").sum().alias("boundary_coefs"),
        pl.len().alias("coefs"),
        z.filter(z.is_finite()).max().alias("worst_z"),
    )
    for r in per.iter_rows(named=True):
        share = r["converged_coefs"] / r["coefs"]
        boundary = r["boundary_coefs"] / r["coefs"]
        at_zero = (f", {'sigma' if r['grouped'] else 'alpha'} = 0 (boundary) on {boundary:.0%}"
                   if boundary else "")  # fmt: skip
        oracle = "quadrature" if r["grouped"] else "Newton"
        worst = r["worst_z"]  # None: no finite SE at all (every dataset all zeros, say)
        error = ("no finite standard error to measure its error in" if worst is None
                 else f"largest |estimate - truth| = {worst:.2f} SE")  # fmt: skip
        lines.append(f"regression {r['scenario']} ({r['family']}): {r['datasets']} datasets, "
                     f"{oracle} oracle converged on {share:.0%}{at_zero}, {error}")  # fmt: skip
    return lines
