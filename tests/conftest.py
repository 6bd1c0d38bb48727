"""Shared fixtures: tiny params files and an MLflow store isolated in `tmp_path`.

Stage tests run on `tiny_params` with `--workdir tmp_path` under `isolated_mlflow`, so they take
seconds and never touch the project's `data/`, `reports/` or `mlruns/`.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

# `make test` runs this suite inside a recipe: make's own variables would reach every `make` a
# test starts, which then prints "make[1]: Entering directory" on stdout (a CI run once failed a
# JSON-on-stdout test that way). Tests stand for a user at a terminal, outside any make.
for _name in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES"):
    os.environ.pop(_name, None)

# Small enough for a stage to run in seconds on 2 shared cores, large enough to exercise every
# code path: 2 scenarios × 2 replicates, 2 learning rates × 2 inits, per-fit plots on.
TINY = {
    "seed": 0,
    "data": {
        "n": 500,
        "replicates": 2,
        "scenarios": [
            {"name": "blog", "pi": 0.5, "lambda": 5.0},
            {"name": "rare-events", "pi": 0.3, "lambda": 0.5},
        ],
    },
    "fit": {"max_steps": 60, "chunk_steps": 20, "record_every": 10},
    "sweep": {"lr_grid": [0.1, 1.0], "inits": 2, "optimizers": ["adam"]},
    "tune": {
        "study": "zip-lr-tpe",
        "sampler": "tpe",
        "n_trials": 2,
        "lr_min": 0.01,
        "lr_max": 1.0,
        "optimizers": ["adam"],
        "pruner": "median",
        "pruner_startup_trials": 1,
        "pruner_warmup_steps": 20,
    },
    "tracking": {
        "experiment": "zip-test",
        "fit_counts_experiment": "zip-test-counts",
        "log_fits": True,
        "fit_plots": True,
        "max_points": 20,
    },
    "report": {"level": 0.95},
    "blog": {"scenario": "blog", "lr": 1.0, "steps": 20, "inits": 2},
    "fit_counts": {"inits": 2, "max_steps": 100},
}


def pooled_chisquare_p(samples, pmf) -> float:
    """Chi-square p-value of integer samples against `pmf` over 0..len(pmf) - 1, the rest in a
    last cell, adjacent cells pooled until each expects >= 5 (1.0 when one cell is left:
    nothing to test beyond "no count outside it")."""
    from scipy import stats

    kmax = len(pmf) - 1
    expected = len(samples) * np.append(pmf, max(1 - pmf.sum(), 0.0))  # last cell: y > kmax
    observed = np.bincount(np.minimum(samples, kmax + 1), minlength=kmax + 2)
    pooled_obs, pooled_exp, obs, exp = [], [], 0, 0.0
    for o, e in zip(observed, expected, strict=True):
        obs, exp = obs + o, exp + e
        if exp >= 5:
            pooled_obs.append(obs)
            pooled_exp.append(exp)
            obs, exp = 0, 0.0
    pooled_obs[-1] += obs
    pooled_exp[-1] += exp
    if len(pooled_obs) == 1:
        return 1.0
    return float(stats.chisquare(pooled_obs, pooled_exp).pvalue)


def leaves(obj, path=""):
    """Every leaf of nested dicts and lists as (path like `.a[0].b`, value): JSON checks."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from leaves(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from leaves(v, f"{path}[{i}]")
    else:
        yield path, obj


def merge(base: dict, overrides: dict) -> dict:
    """`base` with `overrides` laid over it: mappings merge key by key, anything else replaces.

    Args:
        base: a params dict (not modified).
        overrides: the changes, e.g. `{"data": {"n": 50}}`; a list replaces the whole list.

    Returns:
        A new dict.
    """
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@pytest.fixture
def tiny_config() -> dict:
    """A fresh copy of the tiny params as a dict, to modify before writing."""
    return copy.deepcopy(TINY)


@pytest.fixture
def write_params(tmp_path):
    """Factory writing a params file into `tmp_path`.

    Call as `write_params(overrides=None, name="params.yaml", base=TINY)`; `overrides` is merged
    into `base` by `merge`. Pass a `str` as `overrides` to write that text verbatim (bad YAML).
    Returns the file's path.
    """

    def write(overrides: dict | str | None = None, name: str = "params.yaml", base=None) -> Path:
        path = tmp_path / name
        if isinstance(overrides, str):
            path.write_text(overrides)
        else:
            raw = merge(TINY if base is None else base, overrides or {})
            path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return path

    return write


@pytest.fixture
def tiny_params(write_params) -> Path:
    """`tmp_path/params.yaml` holding the tiny params (`TINY`)."""
    return write_params()


@pytest.fixture
def isolated_mlflow(tmp_path, monkeypatch) -> str:
    """An MLflow store under `tmp_path/mlruns/`, used by stages run with `--workdir tmp_path`.

    Unsets `MLFLOW_TRACKING_URI` (so the stage's `Tracker(root=workdir)` picks
    `sqlite:///tmp_path/mlruns/mlflow.db` with artifacts beside it), clears `ZIP_INVOCATION`,
    quiets MLflow for in-process runs and makes `tmp_path` the working directory, so nothing
    relative lands in the repository. Subprocesses inherit this environment.

    Returns:
        The tracking URI, for `MlflowClient(tracking_uri=...)`.
    """
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("ZIP_INVOCATION", raising=False)
    for key, value in {
        "MLFLOW_LOGGING_LEVEL": "WARNING",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "GIT_PYTHON_REFRESH": "quiet",
        "DO_NOT_TRACK": "1",
        "MPLBACKEND": "Agg",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    return f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"


def config_error(path, key: str) -> str:
    """The one-line `ConfigError` that loading params `path` raises, checked to name `key`
    first (the message starts with "<key>:") and to be one line."""
    from pipeline.stages import config
    from pipeline.stages.params_file import ConfigError

    with pytest.raises(ConfigError) as info:
        config.load(path)
    message = str(info.value)
    assert message.startswith(f"{key}:"), message
    assert "\n" not in message, message
    return message


def generate_refusal(path, workdir, env) -> str:
    """The one stderr line of `python -m pipeline.generate` refusing params `path`, checked to
    be exit status 2 without a traceback."""
    out = subprocess.run([sys.executable, "-m", "pipeline.generate", "--params", str(path),
                          "--workdir", str(workdir)], env=env, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    return lines[0]


@pytest.fixture
def stage_env(isolated_mlflow) -> dict[str, str]:
    """Environment for running a stage as a subprocess: isolated MLflow, CI mode (no bars)."""
    return {**os.environ, "CI": "true", "PYTHONUNBUFFERED": "1"}


# -- Hypothesis profiles (the property-based tests: tests/stages/test_hostile_params.py and
# tests/store/test_hostile_counts.py) ------------------------------------------------------------
# `ci`: derandomized (the same examples on every run: a fixed seed), few examples, no example
# database, no per-example deadline (the tests bound their own time); a failure prints the blob
# that reproduces it. `dev` (the default): random examples, twice as many. `long`: a search by
# hand, e.g.
#     HYPOTHESIS_PROFILE=long .venv/bin/pytest tests/stages/test_hostile_params.py
#     HYPOTHESIS_PROFILE=long .venv/bin/pytest tests/store/test_hostile_counts.py
# (or `--hypothesis-profile=long`, or `--hypothesis-seed=N` to replay a random run). `ci` is
# loaded when CI=true (as .ci/run sets it), else $HYPOTHESIS_PROFILE, else `dev`.
# `max_examples` is the count of the cheap properties; the slow ones (a subprocess or a fit per
# example) take a fixed fraction of it (`hostile_examples` in each module), so `long` scales
# them all. Hypothesis keeps its files (example database, caches) in the ignored
# .pytest_cache/hypothesis/, never in a new folder of the work tree.
from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis.configuration import set_hypothesis_home_dir  # noqa: E402

set_hypothesis_home_dir(Path(__file__).resolve().parents[1] / ".pytest_cache" / "hypothesis")
_QUIET_SLOW = [HealthCheck.too_slow]
settings.register_profile("ci", derandomize=True, database=None, max_examples=100, deadline=None,
                          print_blob=True, suppress_health_check=_QUIET_SLOW)  # fmt: skip
settings.register_profile("dev", max_examples=200, deadline=None, print_blob=True,
                          suppress_health_check=_QUIET_SLOW)  # fmt: skip
settings.register_profile("long", max_examples=2000, deadline=None, print_blob=True,
                          suppress_health_check=_QUIET_SLOW)  # fmt: skip
if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
    settings.load_profile("ci")
else:
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def zip_sample(pi: float, lam: float, n: int, seed: int) -> np.ndarray:
    """n ZIP counts with structural-zero probability `pi` (numpy, independent of the pipeline)."""
    rng = np.random.default_rng(seed)
    return rng.binomial(1, 1 - pi, n) * rng.poisson(lam, n)


def write_csv(path: Path, counts, header="count") -> Path:
    """A one-column CSV of `counts` under `header`."""
    path.write_text(header + "\n" + "\n".join(str(c) for c in counts) + "\n")
    return path


def sweep_data(scenarios, replicates: int, n: int, seed: int):
    """A data stage's (summary frame, histograms) for (name, pi, lambda) scenarios, drawn with
    numpy and summarised by the data stage's own `summary_row` (exact MLE and SEs)."""
    from pipeline.core import seeds
    from pipeline.core.histogram import histogram
    from pipeline.stages import config
    from pipeline.stages.generate import summary_row

    rng = np.random.default_rng(seed)
    rows, hists = [], {}
    for name, pi, lam in scenarios:
        for r in range(replicates):
            y = np.where(rng.random(n) < pi, 0, rng.poisson(lam, n))
            hists[(name, r)] = hist = histogram(y)
            seq = seeds.stream(seed, "data", seeds.name_key(name), r)
            rows.append(summary_row(config.Scenario(name, pi, lam), r, seq, hist))
    return pl.DataFrame(rows, schema_overrides={"boundary": pl.Boolean}), hists


def pytest_configure(config):
    """Under pytest-xdist each worker computes with one torch thread: the workers already fill
    the cores, and torch's thread pool on an oversubscribed machine made small batched
    kernels ~16x slower (measured: 8 ms instead of 0.5 ms per `bmm` of a (2, 2000, 1) design
    at load 7 on the 2 cores)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
