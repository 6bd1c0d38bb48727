"""Fast MLflow logging of the sweep: one run per fit, per trial and per study (DESIGN §3).

Each fit run costs four client calls: `create_run` (every tag, the status included, set at
creation), one `log_batch` (params, final metrics and the thinned `nll`, `pi`, `lambda`
histories), `log_artifact` (`convergence.png`, drawn by blitting in `report.convergence`) and
`set_terminated`. A trial's fit runs are shared between `processes` spawned logger processes,
each rendering its own PNGs, so rendering and logging use both cores (two writers on the
SQLite store interleave their short transactions; MLflow sets a 20 s busy timeout). Numbers:
benchmarks/README.md, "Tracking".

Payloads (`fit_payloads`) have one schema for intercept-only ZIP fits and regression fits;
a regression payload's plot has `"kind": "regression"` and is drawn by `RegressionPlot`
instead of `ConvergencePlot`.

Interrupts: a logger process ends the run it has open as KILLED when it is terminated, and
the parent ends its own runs; runs of processes killed outright are closed as FAILED by
`Tracker.close_orphans` on the next start.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import polars as pl
from optuna.trial import TrialState

from pipeline.report.convergence import ConvergencePlot, close_figures, study_figures
from pipeline.report.reg_convergence import RegressionPlot, short_label
from pipeline.tracking import interrupts
from pipeline.tracking.quiet import quiet_libraries
from pipeline.tracking.runs import Tracker, alive
from pipeline.tracking.values import key_part, thin

_WORKER: dict = {}  # state of a logger process (its own Tracker, figures and temp folder)
_RENDERERS = {None: ConvergencePlot, "regression": RegressionPlot}  # by the plot's "kind"
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
        key = base = f"{part}.{key_part(term)}"
        copy = 1
        while key in keys:
            copy += 1
            key = f"{base}_{copy}"
        keys.append(key)
    return keys


def fit_payloads(fits: pl.DataFrame, histories: pl.DataFrame, *, coefs: pl.DataFrame | None = None,
                 fit_cfg, max_points: int, plots: bool, trial: int,
                 study: str) -> list[dict]:  # fmt: skip
    """What each fit run logs, built from a trial's tables: one schema for every kind of fit.

    Every payload has the fit's name `<scenario> rep=<replicate> start=<init>[ <variant>]`,
    tags (status, trial, study, model: `<family>-intercept`, `<family>-regression` or, with
    random intercepts, `<family>-mixed`), params
    (the dataset, its seed, the start, family, lr, optimizer, max_steps, tol), metrics
    (nll_gap, steps, converged and the errors in SEs), the thinned `nll` history beside one
    history per parameter, and the plot's data. One value per quantity: a final estimate
    (or NLL) is the last point of its history, which MLflow shows as the metric's value. Two
    kinds:
    - intercept-only ZIP fits (`coefs` None): `fits` are the trial's fit rows
      (`objective.fit_rows` plus lr and optimizer) and `histories` their
      `objective.fit_histories` (`fit` = row index); parameters `pi` and `lambda`, the gap to
      the exact MLE, drawn by `ConvergencePlot`; params `pi_true`, `lambda_true`, `pi0`,
      `lambda0`, `form` (`fit.model`) and `init_seed` (the integer seeding the starts);
    - regression fits: the `regression.reg_tables` frames, a fit keyed by `REG_KEYS` in all
      three; coefficient keys are `coefficient_keys` (`<part>.<term>`): params `start.<key>`
      and `init_seed_sequence` (the `SeedSequence` seeding the starts: a text, so not named
      like the integer), metrics `err_se.<key>` (in oracle SEs), histories `<key>`; the gap
      to the Newton oracle, drawn by `RegressionPlot` (`"kind": "regression"`).

    Args:
        fits: one row per fit (plus the trial's optimizer and lr; regression: study, trial).
        histories: the fits' recorded paths.
        coefs: regression fits only: one row per fit × coefficient.
        fit_cfg: `params.fit` (model, max_steps, tol).
        max_points: points kept per metric series (the last step always kept).
        plots: also draw `convergence.png`.
        trial, study: the Optuna trial number and study name (tags).

    Returns:
        One picklable dict per row of `fits`, in order: name, tags, params, metrics,
        histories, plot.
    """
    own = (_intercept_parts(fits, histories, fit_cfg, max_points, plots) if coefs is None
           else _regression_parts(fits, coefs, histories, max_points, plots))  # fmt: skip
    out = []
    for r, part in zip(fits.iter_rows(named=True), own):
        series = part["histories"]
        plot = None
        if plots:
            steps = series["nll"][0]
            plot = {
                "steps": steps, "gap": series["nll"][1] - part["reference"],
                "max_step": max(fit_cfg.max_steps, int(steps.max(initial=1))),
                "scenario": r["scenario"],
                "title": f"rep {r['replicate']} init {r['init']} · {part['variant']}"
                         f"lr {r['lr']:g} · {r['status']} @ {r['steps']}",
                **part["plot"],
            }  # fmt: skip
        out.append({
            "name": f"{r['scenario']} rep={r['replicate']} start={r['init']}{part['suffix']}",
            "tags": {"status": r["status"], "trial": trial, "study": study, **part["tags"]},
            "params": {
                "scenario": r["scenario"], "n": r["n"], "replicate": r["replicate"],
                "data_seed": r["data_seed"], "lr": r["lr"], "optimizer": r["optimizer"],
                "max_steps": fit_cfg.max_steps, "tol": fit_cfg.tol, **part["params"],
            },
            "metrics": {
                "nll_gap": r["nll_gap"], "steps": r["steps"],
                "converged": float(r["status"] == "converged"), **part["metrics"],
            },
            "histories": series,
            "plot": plot,
        })  # fmt: skip
    return out


def _intercept_parts(rows: pl.DataFrame, histories: pl.DataFrame, fit_cfg, max_points: int,
                     plots: bool) -> list[dict]:  # fmt: skip
    """The intercept-only ZIP fits' own parts of their payloads (`fit_payloads`)."""
    lam_hi = {}
    for (scenario,), part in rows.group_by(["scenario"]):
        top = part.select(pl.max_horizontal("lambda0", "lambda_true", "mle_lambda").max()).item()
        lam_hi[scenario] = float(np.ceil(1.2 * top))
    out = []
    paths = histories.partition_by("fit", as_dict=True, maintain_order=True)
    for b, r in enumerate(rows.iter_rows(named=True)):
        path = paths[(b,)]
        steps = path["step"].to_numpy()
        series = {key: thin(steps, path[key].to_numpy(), max_points)
                  for key in ("nll", "pi", "lambda")}  # fmt: skip
        plot = {}
        if plots:
            plot = {
                "pi": series["pi"][1], "lam": series["lambda"][1],
                "pi_true": r["pi_true"], "lam_true": r["lambda_true"],
                "mle_pi": r["mle_pi"], "mle_lam": r["mle_lambda"],
                "lam_hi": lam_hi[r["scenario"]],
            }  # fmt: skip
        out.append({
            "histories": series, "reference": r["mle_nll"], "suffix": "", "variant": "",
            "tags": {"model": "zip-intercept"}, "plot": plot,
            "params": {"family": "zip", "form": fit_cfg.model, "init_seed": r["init_seed"],
                       "pi_true": r["pi_true"], "lambda_true": r["lambda_true"],
                       "pi0": r["pi0"], "lambda0": r["lambda0"]},
            "metrics": {"err_pi_se": r["err_pi_se"], "err_lambda_se": r["err_lambda_se"]},
        })  # fmt: skip
    return out


def _regression_parts(fits: pl.DataFrame, coefs: pl.DataFrame, histories: pl.DataFrame,
                      max_points: int, plots: bool) -> list[dict]:  # fmt: skip
    """The regression fits' own parts of their payloads (`fit_payloads`)."""
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
        plot = {}
        if plots:
            oracle, se = c["oracle"].to_numpy(), c["se_oracle"].to_numpy()
            with np.errstate(divide="ignore", invalid="ignore"):
                errors = [(series[n][0], (series[n][1] - oracle[j]) / se[j])
                          for j, n in enumerate(names)]  # fmt: skip
            plot = {
                "kind": "regression", "errors": errors,
                "labels": [short_label(p, t) for p, t in zip(c["part"], c["term"])],
                "parts": c["part"].to_list(),
            }  # fmt: skip
        family = r.get("family", "zip")
        # Random intercepts (log σ rows, part "random"): the model is a GLMM, `<family>-mixed`.
        random = [t.removeprefix("log_sigma_") for p, t in zip(c["part"], c["term"])
                  if p == "random"]  # fmt: skip
        out.append({
            "histories": series, "reference": r["oracle_nll"],
            "suffix": f" {' '.join(variant)}", "variant": f"{' '.join(variant)} · ",
            "tags": {"model": f"{family}-{'mixed' if random else 'regression'}"}, "plot": plot,
            "params": {
                **({"random": ",".join(random)} if random else {}),
                "family": family, "init_seed_sequence": r["init_seed"],
                "standardize": r["standardize"],
                "batch_size": "full" if r["batch_size"] is None else r["batch_size"],
                **{f"start.{n}": v for n, v in zip(names, c["start"])},
            },
            "metrics": {
                "max_err_se": r["max_err_se"],
                **{f"err_se.{n}": v for n, v in zip(names, c["err_se"])},
            },
        })  # fmt: skip
    return out


def _render(figures: dict, png: Path, plot: Mapping) -> None:
    """Draw `plot` with the renderer of its kind, made on first use and reused after."""
    kind = plot.get("kind")
    if kind not in figures:
        figures[kind] = _RENDERERS[kind]()
    figures[kind].render(png, plot)


def _log_fits(tracker: Tracker, figures: dict, folder: Path, payloads: Sequence[Mapping],
              parent: str, start_time: int | None = None) -> list[str]:  # fmt: skip
    run_ids = []
    png = folder / "convergence.png"
    for p in payloads:
        interrupts.check()  # between runs: never inside an MLflow write
        if p["plot"] is not None:
            _render(figures, png, p["plot"])
        run_id = tracker.start(p["name"], "fit", parent=parent, tags=p["tags"],
                               start_time=start_time)  # fmt: skip
        tracker.log(run_id, params=p["params"], metrics=p["metrics"], histories=p["histories"])
        if p["plot"] is not None:
            tracker.log_artifact(run_id, png)
        tracker.end(run_id)
        run_ids.append(run_id)
    return run_ids


def _init_worker(experiment: str, root: str, folder: str) -> None:

    quiet_libraries()
    # Ctrl-C reaches the whole process group: the parent decides, and terminates us (SIGTERM),
    # which ends the current fit run first, or exits at once when we are waiting for work.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    interrupts.install((signal.SIGTERM,), idle=lambda: not _WORKER.get("busy"))
    _WORKER["tracker"] = Tracker(experiment, root=Path(root))
    _WORKER["folder"] = Path(folder) / str(os.getpid())  # removed with the parent's folder
    _WORKER["folder"].mkdir()
    _WORKER["figures"] = {}


def _log_chunk(task: tuple[list[dict], str, int | None]) -> list[str]:
    payloads, parent, start_time = task
    tracker = _WORKER["tracker"]
    _WORKER["busy"] = True
    try:
        return _log_fits(tracker, _WORKER["figures"], _WORKER["folder"], payloads, parent,
                         start_time)  # fmt: skip
    except (KeyboardInterrupt, SystemExit):
        tracker.end_all("KILLED")
        raise SystemExit(143) from None  # a quiet exit: the parent is stopping the pool
    except BaseException:
        tracker.end_all("FAILED")
        raise
    finally:
        _WORKER["busy"] = False


class FitLogger:
    """Logs fit runs, in this process or spread over spawned logger processes.

    Args:
        tracker: this process's `Tracker` (used when `processes` is 1).
        experiment: the experiment name (logger processes open their own `Tracker`).
        root: the workdir holding `mlruns/`.
        processes: logger processes; 1 logs in this process (no start-up cost).
    """

    def __init__(self, tracker: Tracker, experiment: str, root: Path, processes: int = 1):
        self.tracker, self.processes = tracker, max(1, processes)
        self._args = (experiment, str(root))
        self._pool = None
        self._figures: dict = {}  # renderers by plot kind, made on first use
        self._folder: tempfile.TemporaryDirectory | None = None

    def _temp(self) -> Path:
        """This process's scratch folder for PNGs: `mlruns/.fitlog/<host>-<pid>-*`.

        It lives in the work directory, not /tmp, and folders left by processes of this host
        that were killed outright (SIGKILL: no cleanup ran) are removed when a new one starts.
        """
        if self._folder is None:
            scratch = Path(self._args[1]) / "mlruns" / ".fitlog"
            scratch.mkdir(parents=True, exist_ok=True)
            host = socket.gethostname()
            for old in scratch.glob(f"{host}-*"):
                pid = old.name[len(host) + 1 :].split("-", 1)[0]
                if pid.isdigit() and not alive(int(pid)):
                    shutil.rmtree(old, ignore_errors=True)
            self._folder = tempfile.TemporaryDirectory(prefix=f"{host}-{os.getpid()}-",
                                                       dir=scratch)  # fmt: skip
        return Path(self._folder.name)

    def start(self) -> None:
        """Start the logger processes now (they import MLflow while the fits run)."""
        if self.processes > 1 and self._pool is None:
            ctx = mp.get_context("spawn")  # never fork a process holding torch and SQLite
            args = (*self._args, str(self._temp()))
            self._pool = ctx.Pool(self.processes, _init_worker, args)

    def submit(self, payloads: list[dict], parent: str, start_time: int | None = None):
        """Start logging `payloads` as children of run `parent`; `.get()` gives the run ids.

        `start_time` (ms) dates every fit run (`runs.child_time`); None: when it is made.
        """
        if self.processes == 1 or len(payloads) < 2 * self.processes:
            return _Done(self._log_here(payloads, parent, start_time))
        self.start()
        size = math.ceil(len(payloads) / (4 * self.processes))
        tasks = [(payloads[i : i + size], parent, start_time)
                 for i in range(0, len(payloads), size)]  # fmt: skip
        return _Pending(self._pool.map_async(_log_chunk, tasks, chunksize=1))

    def _log_here(self, payloads, parent, start_time=None) -> list[str]:
        return _log_fits(self.tracker, self._figures, self._temp(), payloads, parent, start_time)

    def close(self, interrupted: bool = False) -> None:
        """Stop the logger processes: wait for them, or terminate them (runs end KILLED)."""
        if self._pool is not None:
            if interrupted:
                self._pool.terminate()
            else:
                self._pool.close()
            self._pool.join()
            self._pool = None
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None


class _Done:
    def __init__(self, value):
        self.value = value

    def get(self):
        return self.value


class _Pending:
    def __init__(self, result):
        self.result = result

    def get(self) -> list[str]:
        while not self.result.ready():  # a short wait keeps Ctrl-C responsive
            interrupts.check()
            self.result.wait(0.2)
        return [run_id for part in self.result.get() for run_id in part]


def log_study(tracker: Tracker, run_id: str, study, table: Path | None) -> None:
    """The study's figures, its best trial and the fits table, on the stage run.

    Args:
        tracker: the `Tracker`.
        run_id: the stage run.
        study: the Optuna study (at least one complete trial for figures and best trial).
        table: the assembled fits table to attach, if any.
    """

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    counts = {s.name.lower(): len(study.get_trials(deepcopy=False, states=(s,)))
              for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}  # fmt: skip
    metrics = {f"trials_{k}": v for k, v in counts.items()}
    params = {}
    if complete:
        best = study.best_trial
        params = {"best_lr": best.params["lr"], "best_optimizer": best.params["optimizer"],
                  "best_trial": best.number}  # fmt: skip
        metrics["best_objective"] = best.value
    tracker.log(run_id, params=params, metrics=metrics, tags={k: str(v) for k, v in params.items()})
    if complete:
        figures = study_figures(study)
        for name, fig in figures.items():  # Optuna puts legends outside the axes
            tracker.client.log_figure(run_id, fig, name, save_kwargs={"bbox_inches": "tight"})
        close_figures(figures.values())
    if table is not None and table.exists():
        tracker.log_artifact(run_id, table, "data")
