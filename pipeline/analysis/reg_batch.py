"""The sweep's regression fits as engine batches: every scenario of one family × standardize
variant in one call of `core.descent.design_engine.fit_designs` per batch size, and the results
split back per scenario and variant; a scenario with random intercepts in one call of
`core.descent.mixed_engine.fit_mixed_gd` (`run_mixed`). Pure functions of the
`regression.RegProblem`s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.analysis.regression import RegProblem
from pipeline.core.descent.design_engine import fit_designs
from pipeline.core.descent.designs import StackedDesigns, stack_designs
from pipeline.core.descent.mixed_engine import fit_mixed_gd
from pipeline.core.descent.outcome import StopRule
from pipeline.core.model import fit_data
from pipeline.core.oracle.mixed import MixedProblem, mixed_problem, stack_problems


@dataclass(frozen=True)
class Combined:
    """Every problem of one family × standardize variant as one engine batch (one call per
    batch size).

    Scenarios differ in their columns: each part is zero-padded to the widest scenario's, and
    a zero column with a zero start keeps a zero gradient and a zero coefficient under every
    optimizer, so a padded fit follows exactly its own scenario's path (likewise a scenario
    without an exposure gets a zero count offset when another has one). One call instead of
    one per scenario × variant saves the engine's per-step overhead, which dominates at the
    study's sizes (measured: ~1.5 ms per step whatever the batch).

    Attributes:
        data: the stacked (padded) designs; `standardize` one flag per dataset.
        index, start: each fit's dataset and start (original scale, padded).
        groups: (problem, standardize, fit rows, parameter columns).
        family: the family of every problem in it.
    """

    data: StackedDesigns
    standardize: np.ndarray
    index: np.ndarray
    start: np.ndarray
    groups: tuple
    family: str = "zip"


def _sizes(problem: RegProblem) -> tuple[int, int, int]:
    """(zero-part, count-part, dispersion) parameter counts of a problem."""
    parts = [p for p, _ in problem.names]
    return parts.count("zero"), parts.count("count"), parts.count("dispersion")


def combine(problems, variants, device: str = "cpu") -> list[Combined]:
    """One `Combined` batch per family of `problems` (same n) × `variants` (standardize);
    problems with random intercepts are left out (`run_mixed` fits them)."""
    problems = [pr for pr in problems if not pr.random]
    families = list(dict.fromkeys(pr.family for pr in problems))
    return [_combine([pr for pr in problems if pr.family == f], variants, device, f)
            for f in families]  # fmt: skip


def _combine(problems, variants, device: str, family: str) -> Combined:
    q_max = max(_sizes(pr)[0] for pr in problems)
    p_max = max(_sizes(pr)[1] for pr in problems)
    k = _sizes(problems[0])[2]
    Xs, Zs, ys, flags, index, starts, groups, offsets = [], [], [], [], [], [], [], []
    for standardize in variants:
        for pr in problems:
            q, p, _ = _sizes(pr)
            base, first = len(Xs), sum(len(s) for s in starts)
            for d, (X, Z, y) in enumerate(pr.arrays):
                offsets.append(np.zeros(len(y)) if pr.count_offsets is None
                               else pr.count_offsets[d])  # fmt: skip
                Xs.append(np.pad(X, ((0, 0), (0, p_max - p))))
                Zs.append(np.pad(Z, ((0, 0), (0, q_max - q))))
                ys.append(y)
                flags.append(standardize)
            cols = np.r_[np.arange(q), q_max + np.arange(p), q_max + p_max + np.arange(k)]
            padded = np.zeros((len(pr.start), q_max + p_max + k))
            padded[:, cols] = pr.start
            starts.append(padded)
            index.append(pr.fits["dataset"].to_numpy() + base)
            groups.append((pr, standardize, slice(first, first + len(padded)), cols))
    # Offsets only where a problem has one (an exposure): a zero offset adds exactly nothing,
    # but without any the engine takes no offset at all, as before exposures existed.
    with_offsets = any(pr.count_offsets is not None for pr in problems)
    data = stack_designs(Xs, Zs, ys, count_offsets=offsets if with_offsets else None,
                         device=device)  # fmt: skip
    return Combined(data, np.array(flags),
                    np.concatenate(index), np.vstack(starts), tuple(groups),
                    family)  # fmt: skip


def run_combined(combined: Combined, fit_cfg, lr: float, optimizer: str,
                 batch_size: int | None, shuffle_seed: int) -> list:  # fmt: skip
    """One engine call for every group; returns [(problem, standardize, FitResult), ...]."""
    result = fit_designs(
        combined.data, combined.index, combined.start, lr,
        optimizer=optimizer, momentum=fit_cfg.momentum if optimizer == "sgd" else 0.0,
        max_steps=fit_cfg.max_steps, tol=fit_cfg.tol, window=fit_cfg.window,
        grad_tol=fit_cfg.grad_tol, record_every=fit_cfg.record_every,
        chunk_steps=fit_cfg.chunk_steps, batch_size=batch_size, shuffle_seed=shuffle_seed,
        standardize=combined.standardize, family=combined.family,
    )  # fmt: skip
    return [(problem, standardize, result.select(rows, cols))
            for problem, standardize, rows, cols in combined.groups]  # fmt: skip


def mixed_problems(problem: RegProblem) -> list[MixedProblem]:
    """Each dataset of a random-intercept scenario as an `oracle.mixed.MixedProblem`."""
    return [mixed_problem(problem.family, fit_data(X, Z, y, offset_x=None if
                          problem.count_offsets is None else problem.count_offsets[d]),
                          problem.groups, problem.random)
            for d, (X, Z, y) in enumerate(problem.arrays)]  # fmt: skip


def run_mixed(problem: RegProblem, fit_cfg, lr: float, optimizer: str):
    """Every fit of a random-intercept scenario in one engine call (its datasets share their
    groups: `oracle.mixed.stack_problems`), full batch on the covariates as drawn: the
    marginal likelihood couples a group's rows, so a mini-batch of rows is not a sample of
    it, and conditioning is the fixed-effect scenarios' question (their standardised
    variant). The fits use the scenario's nodes, as its oracle did, on the CPU whatever
    `fit.device` (the quadrature code is CPU-only). Returns the `FitResult`."""
    stacked = stack_problems(mixed_problems(problem), problem.fits["dataset"].to_numpy())
    rule = StopRule(max_steps=fit_cfg.max_steps, tol=fit_cfg.tol, window=fit_cfg.window,
                    grad_tol=fit_cfg.grad_tol, record_every=fit_cfg.record_every,
                    chunk_steps=fit_cfg.chunk_steps)  # fmt: skip
    return fit_mixed_gd(stacked, problem.start, lr, optimizer=optimizer,
                        momentum=fit_cfg.momentum if optimizer == "sgd" else 0.0, rule=rule,
                        nodes=problem.nodes)  # fmt: skip
