"""`params.yaml` → frozen, typed, validated config; one block per stage.

Everything is checked before any work starts. Each problem is one line naming the key
path and the bad value, e.g. ``data.scenarios[1].pi: must be in [0, 1], got 1.5``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.stages.cli import parser
from pipeline.stages.config_data import CovariateSpec as CovariateSpec
from pipeline.stages.config_data import DataConfig as DataConfig
from pipeline.stages.config_data import RegressionData as RegressionData
from pipeline.stages.config_data import RegressionScenario as RegressionScenario
from pipeline.stages.config_data import Scenario as Scenario
from pipeline.stages.params_file import as_raw, build, check_name, fail, read_yaml

# The engine's optimizers (`core.descent.optim.OPTIMIZERS`; tests/stages/test_config.py checks they
# agree).
Optimizer = Literal["adam", "sgd", "rmsprop"]


@dataclass(frozen=True)
class FitConfig:
    """The batched engine's settings, shared by the sweep and `fit_counts`."""

    model: Literal["zip", "mixture"] = "zip"
    max_steps: int = 500
    tol: float = 1e-10
    window: int = 10
    grad_tol: float = 1e-8
    momentum: float = 0.0
    record_every: int = 10
    chunk_steps: int = 50
    device: str = "cpu"

    def check(self, path: str) -> None:
        for key in ("max_steps", "window", "record_every", "chunk_steps"):
            if getattr(self, key) < 1:
                fail(f"{path}.{key}", "must be >= 1", getattr(self, key))
        for key in ("tol", "grad_tol"):
            if not getattr(self, key) > 0:
                fail(f"{path}.{key}", "must be > 0", getattr(self, key))
        if not 0.0 <= self.momentum < 1.0:
            fail(f"{path}.momentum", "must be in [0, 1)", self.momentum)
        if self.device != "cpu" and not self.device.startswith("cuda"):
            fail(f"{path}.device", "must be 'cpu' or 'cuda[:N]'", self.device)


@dataclass(frozen=True)
class RegressionSweep:
    """How the sweep fits the regression scenarios: within every trial (lr, optimizer), each
    dataset × init is fitted once per (standardize, batch size) variant."""

    inits: int = 2
    init_sd: float = 0.5
    standardize: tuple[bool, ...] = (False, True)
    batch_sizes: tuple[int | None, ...] = (None,)

    def check(self, path: str) -> None:
        if self.inits < 1:
            fail(f"{path}.inits", "must be >= 1", self.inits)
        if not (self.init_sd > 0 and math.isfinite(self.init_sd)):
            fail(f"{path}.init_sd", "must be a finite number > 0", self.init_sd)
        if not self.standardize or len(set(self.standardize)) != len(self.standardize):
            fail(f"{path}.standardize", "must list true and/or false once each",
                 list(self.standardize))  # fmt: skip
        if not self.batch_sizes or len(set(self.batch_sizes)) != len(self.batch_sizes):
            fail(f"{path}.batch_sizes", "must list distinct sizes (null: full batch)",
                 list(self.batch_sizes))  # fmt: skip
        for i, size in enumerate(self.batch_sizes):
            if size is not None and size < 1:
                fail(f"{path}.batch_sizes[{i}]", "must be >= 1 or null", size)


@dataclass(frozen=True)
class SweepConfig:
    """One Optuna study: one trial = one learning rate (and optimizer) on every dataset × init."""

    study: str = "zip-lr"
    storage: str | None = None
    sampler: Literal["grid", "tpe"] = "grid"
    lr_grid: tuple[float, ...] = (0.001, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
    lr_min: float = 1e-4
    lr_max: float = 10.0
    optimizers: tuple[Optimizer, ...] = ("adam",)
    n_trials: int | None = None
    inits: int = 5
    init_pi: tuple[float, float] = (0.0, 1.0)
    init_lambda: tuple[float, float] = (0.0, 10.0)
    pruner: Literal["none", "median"] = "none"
    regression: RegressionSweep = RegressionSweep()
    pruner_startup_trials: int = 5
    pruner_warmup_steps: int = 100
    workers: int = 1

    def check(self, path: str) -> None:
        check_name(f"{path}.study", self.study)
        if self.sampler == "grid" and not self.lr_grid:
            fail(f"{path}.lr_grid", "must list at least one learning rate", [])
        for i, lr in enumerate(self.lr_grid):
            if not (lr > 0 and math.isfinite(lr)):
                fail(f"{path}.lr_grid[{i}]", "must be a finite number > 0", lr)
            if lr in self.lr_grid[:i]:
                fail(f"{path}.lr_grid[{i}]", "repeats an earlier learning rate", lr)
        if not self.lr_min > 0:
            fail(f"{path}.lr_min", "must be > 0", self.lr_min)
        if not self.lr_min < self.lr_max < math.inf:
            fail(f"{path}.lr_max", f"must be finite and exceed lr_min = {self.lr_min}", self.lr_max)
        if not self.optimizers:
            fail(f"{path}.optimizers", "must list at least one optimizer", [])
        if len(set(self.optimizers)) != len(self.optimizers):
            fail(f"{path}.optimizers", "must not repeat an optimizer", list(self.optimizers))
        if self.n_trials is not None and self.n_trials < 1:
            fail(f"{path}.n_trials", "must be >= 1 or null", self.n_trials)
        if self.sampler == "tpe" and self.n_trials is None:
            fail(f"{path}.n_trials", "is required with sampler 'tpe'", None)
        if self.inits < 1:
            fail(f"{path}.inits", "must be >= 1", self.inits)
        lo, hi = self.init_pi
        if not 0.0 <= lo < hi <= 1.0:
            fail(f"{path}.init_pi", "must be [lo, hi] with 0 <= lo < hi <= 1", list(self.init_pi))
        lo, hi = self.init_lambda
        if not 0.0 <= lo < hi < math.inf:
            fail(f"{path}.init_lambda", "must be [lo, hi] with 0 <= lo < hi", [lo, hi])
        for key in ("pruner_startup_trials", "pruner_warmup_steps"):
            if getattr(self, key) < 0:
                fail(f"{path}.{key}", "must be >= 0", getattr(self, key))
        if self.workers < 1:
            fail(f"{path}.workers", "must be >= 1", self.workers)


@dataclass(frozen=True)
class TrackingConfig:
    experiment: str = "zip-recovery"
    fit_counts_experiment: str = "zip-fit-counts"
    log_fits: bool = True
    fit_plots: bool = True
    max_points: int = 100

    def check(self, path: str) -> None:
        check_name(f"{path}.experiment", self.experiment)
        check_name(f"{path}.fit_counts_experiment", self.fit_counts_experiment)
        if self.max_points < 2:
            fail(f"{path}.max_points", "must be >= 2 (first and last step)", self.max_points)


@dataclass(frozen=True)
class BlogConfig:
    """The blog's settings: its fits are rerun by the sweep and shown beside ours in the report."""

    scenario: str = "blog"
    lr: float = 1.0
    steps: int = 100
    inits: int = 10

    def check(self, path: str) -> None:
        if not self.lr > 0:
            fail(f"{path}.lr", "must be > 0", self.lr)
        for key in ("steps", "inits"):
            if getattr(self, key) < 1:
                fail(f"{path}.{key}", "must be >= 1", getattr(self, key))


@dataclass(frozen=True)
class ReportConfig:
    level: float = 0.95

    def check(self, path: str) -> None:
        if not 0.5 <= self.level < 1.0:
            fail(f"{path}.level", "must be in [0.5, 1)", self.level)


@dataclass(frozen=True)
class FitCountsConfig:
    inits: int = 8
    optimizer: Optimizer = "adam"
    lr: float = 0.1
    max_steps: int = 3000
    level: float = 0.95
    standardize: bool = True  # --formula fits: descend on standardised covariates

    def check(self, path: str) -> None:
        if self.inits < 1:
            fail(f"{path}.inits", "must be >= 1", self.inits)
        if not self.lr > 0:
            fail(f"{path}.lr", "must be > 0", self.lr)
        if self.max_steps < 1:
            fail(f"{path}.max_steps", "must be >= 1", self.max_steps)
        if not 0.5 <= self.level < 1.0:
            fail(f"{path}.level", "must be in [0.5, 1)", self.level)


@dataclass(frozen=True)
class Params:
    seed: int
    data: DataConfig
    fit: FitConfig = FitConfig()
    sweep: SweepConfig = SweepConfig()
    tune: dict = field(default_factory=dict)
    tracking: TrackingConfig = TrackingConfig()
    report: ReportConfig = ReportConfig()
    fit_counts: FitCountsConfig = FitCountsConfig()
    blog: BlogConfig = BlogConfig()

    def check(self, path: str) -> None:
        if self.seed < 0:
            fail("seed", "must be >= 0", self.seed)
        names = {s.name for s in self.data.scenarios}
        if self.blog.scenario not in names:
            fail(
                "blog.scenario",
                f"must name a scenario in data.scenarios {sorted(names)}",
                self.blog.scenario,
            )

    def tuned(self) -> SweepConfig:
        """The sweep settings with the `tune` block laid over them (what `make tune` runs)."""
        merged = {**as_raw(self.sweep), **self.tune}
        return build(SweepConfig, merged, "tune")

    def study(self, stage: str) -> tuple[SweepConfig, str, str]:
        """(settings, study hash, study name) of stage "sweep" or "tune".

        The study is named `<study>-<first 8 hex of the hash of STUDY_BLOCKS[stage]>`, so
        changed params start a new study and unchanged params resume the old one.
        """
        cfg = self.tuned() if stage == "tune" else self.sweep
        stamp = self.digest(*STUDY_BLOCKS[stage])
        return cfg, stamp, f"{cfg.study}-{stamp[:8]}"

    def digest(self, *blocks: str) -> str:
        """A stable hash of the named blocks (all when none): ties runs and outputs to params."""
        raw = as_raw(self)
        chosen = {k: raw[k] for k in (blocks or raw)}
        text = json.dumps(chosen, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def load(path: str | Path) -> Params:
    """Read and validate `params.yaml`.

    Args:
        path: the YAML file.

    Returns:
        The frozen, validated `Params`.

    Raises:
        ConfigError: missing or unreadable file, bad YAML, or any invalid value.
    """
    raw = read_yaml(Path(path))
    params = build(Params, raw, "")
    build(SweepConfig, {**as_raw(params.sweep), **params.tune}, "tune")  # validate overlay
    return params


def as_dict(obj: Any) -> Any:
    """Public form of the resolved config (for logging one dict per run)."""
    return as_raw(obj)


# The blocks each stage reads: its stamp (and its runs' params hash) changes only with them.
STAGE_BLOCKS = {
    "generate": ("seed", "data"),
    "sweep": ("seed", "data", "fit", "sweep", "tracking", "blog"),
    "tune": ("seed", "data", "fit", "sweep", "tune", "tracking"),
    "aggregate": ("seed", "data", "fit", "sweep", "tracking", "blog", "report"),
    "fit_counts": ("seed", "fit", "fit_counts", "tracking"),
}
# The blocks an Optuna study depends on (its name carries their hash): the blog's refits are
# done by the sweep stage but do not change the study, so editing `blog` reuses its trials.
STUDY_BLOCKS = {
    "sweep": ("seed", "data", "fit", "sweep", "tracking"),
    "tune": ("seed", "data", "fit", "sweep", "tune", "tracking"),
}


def main(argv=None) -> int:
    """`python -m pipeline.config --stamp STAGE`: validate params, print the stage's hash."""

    p = parser("Validate params.yaml; with --stamp, print a stage's params hash.")
    p.add_argument("--stamp", choices=sorted(STAGE_BLOCKS))
    args = p.parse_args(argv)
    params = load(args.params)
    print(params.digest(*STAGE_BLOCKS[args.stamp]) if args.stamp else "params ok")
    return 0
