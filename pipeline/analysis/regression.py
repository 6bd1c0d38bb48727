"""The sweep's regression fits: each regression scenario's datasets × inits at one trial's
learning rate and optimizer, once per (standardize, batch size) variant.

Starts: every coefficient ~ N(0, init_sd²) on the *standardised* scale of the dataset's
covariates, mapped to the original scale, so a start means the same whatever the columns'
units and the raw and standardised fits of a dataset start from the same point. The draws come
from the `inits` stream of the seed tree, keyed by scenario and replicate.

A scenario with an exposure t fits with log t as the count part's offset, in the engine and in
the standard errors, as its oracle was fitted by the data stage.

The judge of a fit is its dataset's Newton oracle (`core.oracle.fit`): the full-data NLL
gap, and every parameter's error in oracle standard errors (log α excluded where its oracle
is on the boundary α = 0: no SE there).
Mini-batch fits never pass the convergence test (SGD noise), so they end at `max_steps` and
are judged by their gap there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from pipeline.core import seeds
from pipeline.core.descent.designs import StackedDesigns, stack_designs
from pipeline.core.errors import UserError
from pipeline.core.model import fit_data
from pipeline.core.oracle.mixed import information_se, mixed_problem
from pipeline.core.oracle.terms import gradient_hessian, inverse
from pipeline.core.simulation.covariates import GROUP


@dataclass(frozen=True)
class RegProblem:
    """The fits of one regression scenario (identifiable datasets only).

    Attributes:
        scenario: its name.
        data: the stacked designs (`designs.StackedDesigns`).
        names: ((part, term), ...) in parameter order (zero part first).
        truth: (P,) true coefficients.
        fits: one row per fit: dataset index, replicate, init, n, data_seed, init_seed,
            oracle_nll.
        start: (B, P) starting coefficients (original scale).
        oracle, oracle_se: (B, P) the oracle's estimate and SE of each fit's dataset.
        arrays: per dataset (X, Z, y) in numpy, for standard errors at the GD estimates.
        family: the scenario's count family (`core.laws.count_terms.FAMILIES`).
        count_offsets: per dataset the (n,) count-part offset (log exposure), or None.
        random: the random parts (`oracle.mixed.PARTS` order) of a scenario with random
            intercepts, else (); groups: its (n,) group index, the same in every dataset;
            nodes: its quadrature points per part (None: the oracle's default).
    """

    scenario: str
    data: StackedDesigns
    names: tuple[tuple[str, str], ...]
    truth: np.ndarray
    fits: pl.DataFrame
    start: np.ndarray
    oracle: np.ndarray
    oracle_se: np.ndarray
    arrays: tuple
    family: str = "zip"
    count_offsets: tuple | None = None
    random: tuple[str, ...] = ()
    groups: np.ndarray | None = None
    nodes: int | None = None


def matrices(rows: pl.DataFrame, x_names, z_names):
    """(X, Z, y) of one replicate's rows; "intercept" is the all-ones column.

    Args:
        rows: the replicate's rows from `data/regression/<scenario>.parquet`.
        x_names, z_names: the count and zero parts' terms, in order.

    Returns:
        Float64 (n, p) and (n, q) designs and the int64 counts.
    """
    n = rows.height

    def build(names):
        cols = [np.ones(n) if t == "intercept" else rows[t].to_numpy().astype(float) for t in names]
        return np.column_stack(cols) if cols else np.zeros((n, 0))

    return build(x_names), build(z_names), rows["y"].to_numpy().astype(np.int64)


def standard_starts(X, Z, k: int, sd: float, rng: np.random.Generator) -> np.ndarray:
    """`k` starts drawn N(0, sd²) on the standardised scale, mapped to the original scale.

    With a column's mean m and SD s (intercept columns and constant columns untouched), a
    standardised coefficient b̃ is b̃/s on the original scale, and the intercept absorbs
    −Σ b̃ m/s so that the linear predictor is the same.

    Returns:
        (k, q + p), zero part first.
    """
    out: list[np.ndarray] = []
    for M in (Z, X):
        draw = rng.normal(0.0, sd, size=(k, M.shape[1]))
        icpt = [j for j in range(M.shape[1]) if np.all(M[:, j] == 1.0)]
        mean, scale = M.mean(0), M.std(0)
        coef = draw.copy()
        for j in range(M.shape[1]):
            if j in icpt or scale[j] == 0:
                continue
            coef[:, j] = draw[:, j] / scale[j]
            for i in icpt[:1]:
                coef[:, i] -= draw[:, j] * mean[j] / scale[j]
        out.append(coef)
    return np.hstack(out)


def build_reg_problem(scenario: str, summary: pl.DataFrame, rows: pl.DataFrame, seed: int,
                      cfg, device: str = "cpu", offset: str | None = None,
                      random=None) -> RegProblem | None:  # fmt: skip
    """The fits of one regression scenario, or None when no dataset's oracle converged.

    Args:
        scenario: its name.
        summary: the regression summary (`data/reg_summary.parquet`).
        rows: the scenario's rows (`data/regression/<scenario>.parquet`).
        seed: `params.seed`.
        cfg: `sweep.regression` (inits, init_sd).
        device: torch device of the designs.
        offset: the column holding the scenario's exposure t (log t is the count part's
            offset), or None.
        random: the scenario's `RandomSpec` (random intercepts; rows have a `group` column),
            or None. Its log σ starts ~ N(0, init_sd²), drawn after everything else.
    """
    mine = summary.filter(pl.col("scenario") == scenario).sort("replicate", maintain_order=True)
    first = mine.filter(pl.col("replicate") == mine["replicate"].min())
    names = tuple(zip(first["part"], first["term"]))
    z_names = [t for p, t in names if p == "zero"]
    x_names = [t for p, t in names if p == "count"]
    family = mine["family"][0] if "family" in mine.columns else "zip"
    dispersion = [t for p, t in names if p == "dispersion"]
    usable = pl.col("oracle_status").is_in(["converged", "boundary"])
    good = mine.filter(usable)["replicate"].unique().sort()
    Xs, Zs, ys, fit_rows, starts, oracle, oracle_se, offsets = [], [], [], [], [], [], [], []
    groups = None
    for d, rep in enumerate(good.to_list()):
        mine_rows = rows.filter(pl.col("replicate") == rep)
        X, Z, y = matrices(mine_rows, x_names, z_names)
        if offset is not None:
            offsets.append(np.log(mine_rows[offset].to_numpy().astype(float)))
        est = mine.filter(pl.col("replicate") == rep)
        Xs.append(X), Zs.append(Z), ys.append(y)
        seq = seeds.stream(seed, "inits", seeds.name_key(scenario), rep)
        rng = np.random.default_rng(seq)
        start = standard_starts(X, Z, cfg.inits, cfg.init_sd, rng)
        if dispersion:  # log α ~ N(0, init_sd²), drawn after the coefficients
            start = np.hstack([start, rng.normal(0.0, cfg.init_sd, size=(cfg.inits, 1))])
        if random is not None:  # log σ ~ N(0, init_sd²) per random part, drawn last
            start = np.hstack([start, rng.normal(0.0, cfg.init_sd,
                                                 size=(cfg.inits, len(random.parts)))])  # fmt: skip
            groups = _same_groups(groups, mine_rows[GROUP].to_numpy(), scenario)
        for i in range(cfg.inits):
            fit_rows.append({"dataset": d, "scenario": scenario, "replicate": rep, "init": i,
                             "n": len(y), "data_seed": est["seed"][0],
                             "init_seed": seeds.label(seq),
                             "oracle_nll": est["oracle_nll"][0]})  # fmt: skip
            starts.append(start[i])
            oracle.append(est["estimate"].to_numpy())
            oracle_se.append(est["se"].to_numpy())
    if not Xs:
        return None
    return RegProblem(
        scenario=scenario,
        data=stack_designs(Xs, Zs, ys, count_offsets=offsets or None, device=device),
        names=names,
        truth=first["truth"].to_numpy(),
        fits=pl.DataFrame(fit_rows),
        start=np.array(starts),
        oracle=np.array(oracle),
        oracle_se=np.array(oracle_se),
        arrays=tuple(zip(Xs, Zs, ys)),
        family=family,
        count_offsets=tuple(offsets) if offset is not None else None,
        random=() if random is None else random.parts,
        groups=groups,
        nodes=None if random is None else random.nodes,
    )


def _same_groups(known, groups: np.ndarray, scenario: str) -> np.ndarray:
    """The scenario's group index, which every replicate shares (a fixed sampling plan)."""
    if known is not None and not np.array_equal(known, groups):
        raise UserError(f"data/regression/{scenario}.parquet: replicates have different "
                        "groups (the file is not the data stage's); rerun `make data`")  # fmt: skip
    return groups


def _se_at(problem: RegProblem, X, Z, y, params, offset=None) -> np.ndarray:
    """Standard errors from the observed information at any point (NaN where singular); of
    the quadrature likelihood with the scenario's nodes where it has random intercepts."""
    with np.errstate(all="ignore"):
        data = fit_data(X, Z, y, offset_x=offset)
        if problem.random:
            mp = mixed_problem(problem.family, data, problem.groups, problem.random)
            return information_se(mp, params, problem.nodes)
        _, _, hess = gradient_hessian(problem.family, data, params)
        inv = inverse(-hess)
        cov = np.full_like(hess, np.nan) if inv is None else inv
        return np.sqrt(np.where(np.diag(cov) > 0, np.diag(cov), np.nan))


def reg_tables(problem: RegProblem, result, standardize: bool, batch_size: int | None):
    """(fits, coefs, histories) frames of one variant's result.

    fits: one row per fit — identity, variant, nll_final, nll_gap (to the oracle), steps,
    status, grad_norm, max_err_se (largest |coefficient − oracle| in oracle SEs).
    coefs: one row per fit × coefficient — part, term, truth, start, estimate, oracle,
    se_oracle, se_gd (observed information at the GD estimate; NaN when diverged), err_se.
    histories: one row per fit × recorded step × coefficient — step, nll, part, term, value
    (the final state always the last step).
    """
    fits = problem.fits
    keys = fits.select("scenario", "replicate", "init").with_columns(
        standardize=pl.lit(standardize), batch_size=pl.lit(batch_size, pl.Int64)
    )
    with np.errstate(invalid="ignore"):  # log α at the boundary: -inf oracle, NaN SE
        err = (result.params - problem.oracle) / problem.oracle_se
    judged = np.isfinite(problem.oracle_se)
    ok = np.isfinite(result.params).all(1) & np.isfinite(np.where(judged, err, 0.0)).all(1)
    worst = np.where(ok, np.abs(np.where(judged, err, 0.0)).max(1, initial=0.0), np.nan)
    table = keys.hstack(fits.select("n", "data_seed", "init_seed", "oracle_nll")).with_columns(
        family=pl.lit(problem.family),
        nll_final=pl.Series(result.nll, dtype=pl.Float64),
        nll_gap=pl.Series(result.nll - fits["oracle_nll"].to_numpy(), dtype=pl.Float64),
        steps=pl.Series(result.steps, dtype=pl.Int64),
        status=pl.Series(result.status.astype(str), dtype=pl.String),
        grad_norm=pl.Series(result.grad_norm, dtype=pl.Float64),
        max_err_se=pl.Series(worst, dtype=pl.Float64),
    )
    P = len(problem.names)
    se_gd = np.full_like(result.params, np.nan)
    dataset = fits["dataset"].to_numpy()
    for b in range(len(dataset)):
        if result.status[b] == "diverged" or not np.isfinite(result.params[b]).all():
            continue
        offset = None if problem.count_offsets is None else problem.count_offsets[dataset[b]]
        se_gd[b] = _se_at(problem, *problem.arrays[dataset[b]], result.params[b], offset)
    B = len(dataset)
    coefs = pl.DataFrame({
        "fit": np.repeat(np.arange(B), P),
        "part": [p for p, _ in problem.names] * B, "term": [t for _, t in problem.names] * B,
        "truth": np.tile(problem.truth, B), "start": problem.start.ravel(),
        "estimate": result.params.ravel(), "oracle": problem.oracle.ravel(),
        "se_oracle": problem.oracle_se.ravel(), "se_gd": se_gd.ravel(), "err_se": err.ravel(),
    })  # fmt: skip
    keyed = keys.with_row_index("fit").with_columns(pl.col("fit").cast(pl.Int64))
    coefs = keyed.join(coefs.with_columns(pl.col("fit").cast(pl.Int64)), on="fit").drop("fit")
    return table, coefs, keyed.join(_histories(problem, result), on="fit").drop("fit")


def _histories(problem: RegProblem, result) -> pl.DataFrame:
    B, P, T = result.history_params.shape
    steps = np.concatenate([np.tile(result.history_step, (B, 1)), result.steps[:, None]], 1)
    nll = np.concatenate([result.history_nll, result.nll[:, None]], 1)
    values = np.concatenate([result.history_params, result.params[:, :, None]], 2)
    # The final state replaces a recorded point at the same step (one point per step).
    keep = np.isfinite(nll) & np.concatenate(
        [result.history_step[None, :] != result.steps[:, None], np.ones((B, 1), bool)], 1
    )
    fit_idx, col = np.nonzero(keep)
    frame = pl.DataFrame({
        "fit": np.repeat(fit_idx, P).astype(np.int64),
        "step": np.repeat(steps[fit_idx, col], P).astype(np.int64),
        "nll": np.repeat(nll[fit_idx, col], P),
        "part": [p for p, _ in problem.names] * len(fit_idx),
        "term": [t for _, t in problem.names] * len(fit_idx),
        "value": values[fit_idx, :, col].ravel(),
    })  # fmt: skip
    return frame.sort("fit", "step", maintain_order=True)
