"""`params.yaml` → frozen, typed, validated config; one block per stage.

Everything is checked before any work starts. Each problem is one line naming the key
path and the bad value, e.g. ``data.scenarios[1].pi: must be in [0, 1], got 1.5``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.core.errors import UserError
from pipeline.stages.cli import parser

OPTIMIZERS = ("adam", "sgd", "rmsprop")


class ConfigError(UserError):
    """A bad `params.yaml`: names the key path and the bad value."""


@dataclass(frozen=True)
class Scenario:
    name: str
    pi: float
    lam: float = field(metadata={"key": "lambda"})

    def check(self, path: str) -> None:
        # The name is a folder under data/datasets/: "." and ".." would escape it.
        if (
            not self.name
            or not all(c.isalnum() or c in "-_." for c in self.name)
            or (set(self.name) == {"."})
        ):
            _fail(
                f"{path}.name", "must be letters, digits, '-', '_' or '.', not only dots", self.name
            )
        if not 0.0 <= self.pi <= 1.0:
            _fail(f"{path}.pi", "must be in [0, 1]", self.pi)
        if not self.lam > 0.0 or not math.isfinite(self.lam):
            _fail(f"{path}.lambda", "must be a finite number > 0", self.lam)


@dataclass(frozen=True)
class DataConfig:
    n: int
    replicates: int
    scenarios: tuple[Scenario, ...]

    def check(self, path: str) -> None:
        if self.n < 1:
            _fail(f"{path}.n", "must be >= 1", self.n)
        if self.replicates < 1:
            _fail(f"{path}.replicates", "must be >= 1", self.replicates)
        if not self.scenarios:
            _fail(f"{path}.scenarios", "must list at least one scenario", [])
        seen: set[str] = set()
        for i, s in enumerate(self.scenarios):
            if s.name in seen:
                _fail(f"{path}.scenarios[{i}].name", "duplicate scenario name", s.name)
            seen.add(s.name)


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
                _fail(f"{path}.{key}", "must be >= 1", getattr(self, key))
        for key in ("tol", "grad_tol"):
            if not getattr(self, key) > 0:
                _fail(f"{path}.{key}", "must be > 0", getattr(self, key))
        if not 0.0 <= self.momentum < 1.0:
            _fail(f"{path}.momentum", "must be in [0, 1)", self.momentum)
        if self.device != "cpu" and not self.device.startswith("cuda"):
            _fail(f"{path}.device", "must be 'cpu' or 'cuda[:N]'", self.device)


@dataclass(frozen=True)
class SweepConfig:
    """One Optuna study: one trial = one learning rate (and optimizer) on every dataset × init."""

    study: str = "zip-lr"
    storage: str | None = None
    sampler: Literal["grid", "tpe"] = "grid"
    lr_grid: tuple[float, ...] = (0.001, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
    lr_min: float = 1e-4
    lr_max: float = 10.0
    optimizers: tuple[Literal["adam", "sgd", "rmsprop"], ...] = ("adam",)
    n_trials: int | None = None
    inits: int = 5
    init_pi: tuple[float, float] = (0.0, 1.0)
    init_lambda: tuple[float, float] = (0.0, 10.0)
    diverged_penalty: float = 1.0
    pruner: Literal["none", "median"] = "none"
    pruner_startup_trials: int = 5
    pruner_warmup_steps: int = 100
    workers: int = 1

    def check(self, path: str) -> None:
        if not self.study:
            _fail(f"{path}.study", "must be a non-empty name", self.study)
        if self.sampler == "grid" and not self.lr_grid:
            _fail(f"{path}.lr_grid", "must list at least one learning rate", [])
        for i, lr in enumerate(self.lr_grid):
            if not (lr > 0 and math.isfinite(lr)):
                _fail(f"{path}.lr_grid[{i}]", "must be a finite number > 0", lr)
        if not self.lr_min > 0:
            _fail(f"{path}.lr_min", "must be > 0", self.lr_min)
        if not self.lr_min < self.lr_max < math.inf:
            _fail(
                f"{path}.lr_max", f"must be finite and exceed lr_min = {self.lr_min}", self.lr_max
            )
        if not self.optimizers:
            _fail(f"{path}.optimizers", "must list at least one optimizer", [])
        if len(set(self.optimizers)) != len(self.optimizers):
            _fail(f"{path}.optimizers", "must not repeat an optimizer", list(self.optimizers))
        if self.n_trials is not None and self.n_trials < 1:
            _fail(f"{path}.n_trials", "must be >= 1 or null", self.n_trials)
        if self.sampler == "tpe" and self.n_trials is None:
            _fail(f"{path}.n_trials", "is required with sampler 'tpe'", None)
        if self.inits < 1:
            _fail(f"{path}.inits", "must be >= 1", self.inits)
        lo, hi = self.init_pi
        if not 0.0 <= lo < hi <= 1.0:
            _fail(f"{path}.init_pi", "must be [lo, hi] with 0 <= lo < hi <= 1", list(self.init_pi))
        lo, hi = self.init_lambda
        if not 0.0 <= lo < hi < math.inf:
            _fail(f"{path}.init_lambda", "must be [lo, hi] with 0 <= lo < hi", [lo, hi])
        if not self.diverged_penalty > 0:
            _fail(f"{path}.diverged_penalty", "must be > 0", self.diverged_penalty)
        for key in ("pruner_startup_trials", "pruner_warmup_steps"):
            if getattr(self, key) < 0:
                _fail(f"{path}.{key}", "must be >= 0", getattr(self, key))
        if self.workers < 1:
            _fail(f"{path}.workers", "must be >= 1", self.workers)


@dataclass(frozen=True)
class TrackingConfig:
    experiment: str = "zip-recovery"
    log_fits: bool = True
    fit_plots: bool = True
    max_points: int = 100

    def check(self, path: str) -> None:
        if not self.experiment:
            _fail(f"{path}.experiment", "must be a non-empty name", self.experiment)
        if self.max_points < 2:
            _fail(f"{path}.max_points", "must be >= 2 (first and last step)", self.max_points)


@dataclass(frozen=True)
class BlogConfig:
    """The blog's settings: its fits are rerun by the sweep and shown beside ours in the report."""

    scenario: str = "blog"
    lr: float = 1.0
    steps: int = 100
    inits: int = 10

    def check(self, path: str) -> None:
        if not self.lr > 0:
            _fail(f"{path}.lr", "must be > 0", self.lr)
        for key in ("steps", "inits"):
            if getattr(self, key) < 1:
                _fail(f"{path}.{key}", "must be >= 1", getattr(self, key))


@dataclass(frozen=True)
class ReportConfig:
    level: float = 0.95

    def check(self, path: str) -> None:
        if not 0.5 <= self.level < 1.0:
            _fail(f"{path}.level", "must be in [0.5, 1)", self.level)


@dataclass(frozen=True)
class FitCountsConfig:
    inits: int = 8
    optimizer: Literal["adam", "sgd", "rmsprop"] = "adam"
    lr: float = 0.1
    max_steps: int = 3000
    level: float = 0.95

    def check(self, path: str) -> None:
        if self.inits < 1:
            _fail(f"{path}.inits", "must be >= 1", self.inits)
        if not self.lr > 0:
            _fail(f"{path}.lr", "must be > 0", self.lr)
        if self.max_steps < 1:
            _fail(f"{path}.max_steps", "must be >= 1", self.max_steps)
        if not 0.5 <= self.level < 1.0:
            _fail(f"{path}.level", "must be in [0.5, 1)", self.level)


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
            _fail("seed", "must be >= 0", self.seed)
        names = {s.name for s in self.data.scenarios}
        if self.blog.scenario not in names:
            _fail(
                "blog.scenario",
                f"must name a scenario in data.scenarios {sorted(names)}",
                self.blog.scenario,
            )

    def tuned(self) -> SweepConfig:
        """The sweep settings with the `tune` block laid over them (what `make tune` runs)."""
        merged = {**_as_raw(self.sweep), **self.tune}
        return _build(SweepConfig, merged, "tune")

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
        raw = _as_raw(self)
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
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: params file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read params file ({err})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a mapping of blocks (seed, data, ...)")
    params = _build(Params, raw, "")
    _build(SweepConfig, {**_as_raw(params.sweep), **params.tune}, "tune")  # validate overlay
    return params


def _fail(path: str, problem: str, value: Any) -> typing.NoReturn:
    raise ConfigError(f"{path}: {problem}, got {value!r}")


def _key(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


def _build(cls: type, raw: Any, path: str):
    """Build dataclass `cls` from raw YAML data, checking keys and types, then `check()`."""
    where = path or "params"
    if not isinstance(raw, dict):
        _fail(where, "must be a mapping", raw)
    fields = {_key(f): f for f in dataclasses.fields(cls)}
    for key in raw:
        if path == "report" and key == "blog":
            _fail("report.blog", "has moved to a top-level `blog:` block (same keys)", raw[key])
        if key not in fields:
            _fail(
                f"{path}.{key}" if path else str(key),
                f"unknown key (allowed: {sorted(fields)})",
                raw[key],
            )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, f in fields.items():
        sub = f"{path}.{key}" if path else key
        if key not in raw:
            has_default = f.default is not dataclasses.MISSING
            if not has_default and f.default_factory is dataclasses.MISSING:
                _fail(sub, "is required", None)
            continue
        kwargs[f.name] = _coerce(hints[f.name], raw[key], sub)
    obj = cls(**kwargs)
    obj.check(path)
    return obj


def _coerce(tp: Any, value: Any, path: str):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value, path)
    if origin is Literal:
        if value not in args:
            _fail(path, f"must be one of {list(args)}", value)
        return value
    if origin is tuple:
        if not isinstance(value, list):
            _fail(path, "must be a list", value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            _fail(path, f"must be a list of {len(args)}", value)
        return tuple(_coerce(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if tp is dict:
        if not isinstance(value, dict):
            _fail(path, "must be a mapping", value)
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            _fail(path, "must be true or false", value)
        return value
    if tp is int:
        value = _parse_number(value, path, "must be an integer")
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(path, "must be an integer", value)
        return value
    if tp is float:
        value = _parse_number(value, path, "must be a number")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(path, "must be a number", value)
        if math.isnan(value):
            _fail(path, "must be a number", value)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            _fail(path, "must be a string", value)
        return value
    raise TypeError(f"unsupported config type {tp!r} at {path}")


def _parse_number(value: Any, path: str, problem: str) -> Any:
    """PyYAML reads `1e-3` or `1e8` (no dot) as strings: accept them as numbers."""
    if not isinstance(value, str):
        return value
    try:
        return float(value)
    except ValueError:
        _fail(path, problem, value)


def _as_raw(obj: Any) -> Any:
    """A dataclass back to plain YAML-like data (keys as written in params.yaml)."""
    if dataclasses.is_dataclass(obj):
        return {_key(f): _as_raw(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [_as_raw(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _as_raw(v) for k, v in obj.items()}
    return obj


def as_dict(obj: Any) -> Any:
    """Public form of the resolved config (for logging one dict per run)."""
    return _as_raw(obj)


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
