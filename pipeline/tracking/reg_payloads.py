"""What each count-regression fit run logs: its MLflow payload, built from a trial's tables.

A regression fit is keyed by `REG_KEYS` in the `regression.reg_tables` frames; its
coefficients become MLflow keys `<part>.<term>` (`coefficient_keys`). A payload is the same
picklable dict as `fit_runs.fit_payloads` builds for a scalar ZIP fit (name, tags, params,
metrics, histories, plot), and `fit_runs.FitLogger` logs both; the plot has
`"kind": "regression"`, drawn by `RegressionPlot`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import polars as pl

from pipeline.report.reg_convergence import short_label
from pipeline.tracking.values import thin

_NOT_IN_KEY = re.compile(r"[^\w\-.]")  # MLflow keys: alphanumerics _ - . (and space /)
REG_KEYS = ("scenario", "replicate", "init", "standardize", "batch_size")  # one regression fit


def coefficient_keys(parts: Sequence[str], terms: Sequence[str]) -> list[str]:
    """`<part>.<term>` names usable as MLflow keys, one per coefficient and all distinct.

    MLflow keys allow alphanumerics and `_ - . space /`; any other character of a term
    becomes `_` (`health[poor]` -> `health_poor_`), and a name met before gets `_2`, `_3`...

    Args:
        parts: each coefficient's part ("count" or "zero"); terms: its design column.

    Returns:
        One key per coefficient, in order.
    """
    keys: list[str] = []
    for part, term in zip(parts, terms):
        key = base = f"{part}.{_NOT_IN_KEY.sub('_', term)}"
        copy = 1
        while key in keys:
            copy += 1
            key = f"{base}_{copy}"
        keys.append(key)
    return keys


def reg_fit_payloads(fits: pl.DataFrame, coefs: pl.DataFrame, histories: pl.DataFrame, *,
                     fit_cfg, max_points: int, plots: bool, trial: int,
                     study: str) -> list[dict]:  # fmt: skip
    """What each regression fit run logs, built from a trial's `regression.reg_tables` frames.

    A fit is keyed by `REG_KEYS` (scenario, replicate, init, standardize, batch_size) in all
    three frames. Coefficient keys are `coefficient_keys` (`<part>.<term>`): params
    `start.<key>`, metrics `estimate.<key>` and `err_se.<key>` (in oracle SEs), histories
    `<key>` beside `nll` (the history's last point is the final state).

    Args:
        fits: one row per fit (plus the trial's study, trial, optimizer, lr).
        coefs: one row per fit × coefficient.
        histories: one row per fit × recorded step × coefficient.
        fit_cfg: `params.fit` (max_steps, tol).
        max_points: points kept per metric series (the last step always kept).
        plots: also draw `convergence.png` (a "regression" kind plot).
        trial, study: the Optuna trial number and study name (tags).

    Returns:
        One picklable dict per row of `fits`, in order: name, tags, params, metrics,
        histories, plot.
    """
    keys = list(REG_KEYS)
    coef_by = coefs.partition_by(keys, as_dict=True, maintain_order=True)
    path_by = histories.partition_by(keys, as_dict=True, maintain_order=True)
    empty, out = histories.clear(), []
    for r in fits.iter_rows(named=True):
        fit = tuple(r[k] for k in keys)
        c = coef_by[fit]
        names = coefficient_keys(c["part"], c["term"])
        path = path_by.get(fit, empty).sort("step", maintain_order=True)
        steps = path.unique("step", keep="first", maintain_order=True)
        series = {"nll": thin(steps["step"].to_numpy(), steps["nll"].to_numpy(), max_points)}
        by_coef = path.partition_by(["part", "term"], as_dict=True, maintain_order=True)
        for name, part, term in zip(names, c["part"], c["term"]):
            own = by_coef.get((part, term), empty)
            series[name] = thin(own["step"].to_numpy(), own["value"].to_numpy(), max_points)
        variant = ("std" if r["standardize"] else "raw",
                   "full" if r["batch_size"] is None else f"b{r['batch_size']}")  # fmt: skip
        plot = None
        if plots:
            oracle, se = c["oracle"].to_numpy(), c["se_oracle"].to_numpy()
            with np.errstate(divide="ignore", invalid="ignore"):
                errors = [(series[n][0], (series[n][1] - oracle[j]) / se[j])
                          for j, n in enumerate(names)]  # fmt: skip
            plot = {
                "kind": "regression", "steps": series["nll"][0],
                "gap": series["nll"][1] - r["oracle_nll"], "errors": errors,
                "labels": [short_label(p, t) for p, t in zip(c["part"], c["term"])],
                "parts": c["part"].to_list(),
                "max_step": max(fit_cfg.max_steps, int(series["nll"][0].max(initial=1))),
                "scenario": r["scenario"],
                "title": f"rep {r['replicate']} init {r['init']} · {' '.join(variant)} · "
                         f"lr {r['lr']:g} · {r['status']} @ {r['steps']}",
            }  # fmt: skip
        out.append({
            "name": f"fit-{r['scenario']}-{r['replicate']}-{r['init']}-{'-'.join(variant)}",
            "tags": {"status": r["status"], "trial": trial, "study": study,
                     "model": f"{r.get('family', 'zip')}-regression"},
            "params": {
                "scenario": r["scenario"], "family": r.get("family", "zip"), "n": r["n"],
                "replicate": r["replicate"], "data_seed": r["data_seed"],
                "init_seed": r["init_seed"], "lr": r["lr"],
                "optimizer": r["optimizer"], "standardize": r["standardize"],
                "batch_size": "full" if r["batch_size"] is None else r["batch_size"],
                "max_steps": fit_cfg.max_steps, "tol": fit_cfg.tol,
                **{f"start.{n}": v for n, v in zip(names, c["start"])},
            },
            "metrics": {
                "nll_final": r["nll_final"], "nll_gap": r["nll_gap"], "steps": r["steps"],
                "converged": float(r["status"] == "converged"), "max_err_se": r["max_err_se"],
                **{f"estimate.{n}": v for n, v in zip(names, c["estimate"])},
                **{f"err_se.{n}": v for n, v in zip(names, c["err_se"])},
            },
            "histories": series,
            "plot": plot,
        })  # fmt: skip
    return out
