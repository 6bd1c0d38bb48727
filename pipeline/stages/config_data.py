"""The `data` block of `params.yaml`: the scenarios `generate` draws, as frozen, typed config.

Intercept-only scenarios (`Scenario`: pi, lambda) and count-regression scenarios of any
family (`RegressionScenario`: coefficients of the count and zero parts over simulated
covariates, `CovariateSpec`, the NB dispersion, and optionally an exposure, `ExposureSpec`)
with their sizes (`DataConfig`,
`RegressionData`). `config` builds and validates them with the rest of `Params`; each
problem is one line naming the key path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from pipeline.core.simulation.covariates import (
    GROUP,
    INTERCEPT,
    Covariate,
    check_covariates,
    check_exposure,
    columns,
)
from pipeline.stages.params_file import as_raw, check_name, fail, key_text

MAX_N = 10**10  # counts per dataset: 1e10 int64 counts are ~10 GB of parquet and hours to draw
MAX_REPLICATES = 10_000
MAX_REGRESSION_N = 10**7  # rows per regression dataset: the design is held in memory
MAX_GROUPS = 10**5  # groups of a random-intercept scenario (the modes are (fits, groups))
MAX_NODES = 50  # quadrature points per random part (the default 25-30 is exact to ~1e-9)


@dataclass(frozen=True)
class Scenario:
    name: str
    pi: float
    lam: float = field(metadata={"key": "lambda"})

    def check(self, path: str) -> None:
        check_name(f"{path}.name", self.name)
        if not 0.0 <= self.pi < 1.0:
            # pi = 1 draws nothing but zeros: pi and lambda could not be told apart.
            fail(f"{path}.pi", "must be in [0, 1) (pi = 1 gives only zeros: not identifiable)",
                 self.pi)  # fmt: skip
        if not self.lam > 0.0 or not math.isfinite(self.lam):
            fail(f"{path}.lambda", "must be a finite number > 0", self.lam)


@dataclass(frozen=True)
class CovariateSpec:
    """One simulated covariate (`core.simulation.covariates.Covariate`; only its `dist`'s fields
    are used)."""

    name: str
    dist: Literal["normal", "bernoulli", "poisson", "uniform", "categorical"]
    mean: float = 0.0
    sd: float = 1.0
    p: float = 0.5
    low: float = 0.0
    high: float = 1.0
    levels: tuple[str, ...] = ()
    probs: tuple[float, ...] = ()
    corr_with: str | None = None
    rho: float = 0.0

    def check(self, path: str) -> None:
        check_name(f"{path}.name", self.name)  # checked as a whole list by the scenario

    def covariate(self) -> Covariate:
        return Covariate(**{f: getattr(self, f) for f in self.__dataclass_fields__})


@dataclass(frozen=True)
class ExposureSpec:
    """A scenario's exposure t (time at risk, area): drawn after the covariates, stored as the
    column `name`, and log t added to the count part's linear predictor with coefficient 1.

    Only the count part: an exposure scales the rate of events, log μ = x'β + log t, while the
    zero part describes the unit (never at risk, or past the hurdle) and is not proportional
    to how long it was watched; an offset there would fix the coefficient of log t in a logit
    at 1, a law no exposure produces."""

    dist: Literal["uniform"]
    low: float
    high: float
    name: str = "exposure"

    def check(self, path: str) -> None:
        check_name(f"{path}.name", self.name)

    def covariate(self) -> Covariate:
        return Covariate(name=self.name, dist=self.dist, low=self.low, high=self.high)

    def describe(self) -> str:
        """The exposure in words, e.g. `exposure ~ U(0.5, 2)`."""
        return f"{self.name} ~ U({self.low:g}, {self.high:g})"


MAX_SIGMA = 5.0  # a random intercept's SD: e^{±5σ} spans 1e±10 in the mean at σ = 5


@dataclass(frozen=True)
class RandomSpec:
    """Gaussian random intercepts per group (issue 20): `groups` groups whose sizes run evenly
    from `sizes[0]` to `sizes[1]` rows (the scenario's rows are their sum, in place of
    `data.regression.n`), and the SD of the intercept in the count part (`count`: log mean
    + b_i), the zero part (`zero`: its logit + c_i) or both, independent; 0 is the boundary
    σ = 0 (no group effect; the fit still estimates one). `nodes`: adaptive Gauss–Hermite
    points per random part for the oracle and the descent alike (default: the oracle's,
    `core.oracle.mixed.NODES`). The groups are the same in every replicate (a fixed sampling
    plan): only the covariates, the intercepts and the counts are drawn."""

    groups: int
    sizes: tuple[int, int]
    count: float | None = field(default=None, metadata={"omit_none": True})
    zero: float | None = field(default=None, metadata={"omit_none": True})
    nodes: int | None = field(default=None, metadata={"omit_none": True})

    def check(self, path: str) -> None:
        if not 2 <= self.groups <= MAX_GROUPS:
            fail(f"{path}.groups", f"must be in [2, {MAX_GROUPS}] (a random intercept needs "
                 "at least two groups)", self.groups)  # fmt: skip
        low, high = self.sizes
        if not 1 <= low <= high or high < 2:
            fail(f"{path}.sizes", "must be [smallest, largest] rows per group with 1 <= "
                 "smallest <= largest and largest >= 2", list(self.sizes))  # fmt: skip
        if self.rows > MAX_REGRESSION_N:
            fail(f"{path}.sizes", f"gives {self.rows} rows; at most {MAX_REGRESSION_N:.0e}",
                 list(self.sizes))  # fmt: skip
        if self.count is None and self.zero is None:
            fail(path, "must give the SD of at least one random intercept (count, zero)",
                 as_raw(self))  # fmt: skip
        for part in ("count", "zero"):
            value = getattr(self, part)
            if value is not None and (isinstance(value, bool) or not 0 <= value <= MAX_SIGMA):
                fail(f"{path}.{part}", f"must be an SD in [0, {MAX_SIGMA:g}]", value)
        if self.nodes is not None and not 1 <= self.nodes <= MAX_NODES:
            fail(f"{path}.nodes", f"must be in [1, {MAX_NODES}] (quadrature points per part)",
                 self.nodes)  # fmt: skip

    @property
    def parts(self) -> tuple[str, ...]:
        """The random parts in parameter order (count, then zero)."""
        return tuple(p for p in ("count", "zero") if getattr(self, p) is not None)

    @property
    def group_sizes(self) -> list[int]:
        """Each group's rows: evenly from the smallest to the largest size."""
        low, high = self.sizes
        return [round(low + (high - low) * g / max(self.groups - 1, 1)) for g in range(self.groups)]

    @property
    def rows(self) -> int:
        return sum(self.group_sizes)

    def describe(self) -> str:
        """The design in words, e.g. `40 groups of 5-45 rows, sigma count 0.5`."""
        sds = ", ".join(f"{p} {getattr(self, p):g}" for p in self.parts)
        return f"{self.groups} groups of {self.sizes[0]}-{self.sizes[1]} rows, sigma {sds}"


Family = Literal["poisson", "nb", "zip", "zinb", "hurdle_poisson", "hurdle_nb"]


@dataclass(frozen=True)
class RegressionScenario:
    """A count regression of one family (`core.laws.count_terms`): log mean = x'beta (`count`),
    and where the family has a zero part, z'gamma (`zero`) = logit pi (zip, zinb: pi the
    probability of a structural zero) or logit P(Y > 0) (hurdles); NB families have the
    dispersion alpha (variance mu + alpha mu^2). With an `exposure` t, log mean = x'beta + log t.

    `exposure` is left out of the params hash when absent (`omit_none`), so params without one
    hash, and stamp their data, as before the key existed."""

    name: str
    count: dict
    zero: dict = field(default_factory=dict)
    covariates: tuple[CovariateSpec, ...] = ()
    family: Family = "zip"
    dispersion: float | None = None
    exposure: ExposureSpec | None = field(default=None, metadata={"omit_none": True})
    random: RandomSpec | None = field(default=None, metadata={"omit_none": True})

    def check(self, path: str) -> None:
        check_name(f"{path}.name", self.name)
        covs = [c.covariate() for c in self.covariates]
        if self.random is not None:  # (its own keys are checked as it is built)
            if self.random.zero is not None and self.family in ("poisson", "nb"):
                fail(f"{path}.random.zero", f"family {self.family} has no zero part; remove it",
                     self.random.zero)  # fmt: skip
            if GROUP in [c.name for c in self.covariates]:
                fail(f"{path}.covariates", f"{GROUP!r} is the group column of a scenario with "
                     "random intercepts; rename the covariate", GROUP)  # fmt: skip
        try:
            check_covariates(covs)
        except ValueError as err:
            fail(f"{path}.covariates", str(err), [c.name for c in self.covariates])
        if self.exposure is not None:
            try:
                check_exposure(self.exposure.covariate(), covs)
            except ValueError as err:
                fail(f"{path}.exposure", str(err), as_raw(self.exposure))
        known = (INTERCEPT, *columns(covs))
        nb = self.family in ("nb", "zinb", "hurdle_nb")
        if nb and (isinstance(self.dispersion, bool) or self.dispersion is None
                   or not 0 < self.dispersion < math.inf):  # fmt: skip
            fail(f"{path}.dispersion", f"family {self.family} needs a dispersion alpha > 0 "
                 "(variance mu + alpha mu^2)", self.dispersion)  # fmt: skip
        if not nb and self.dispersion is not None:
            fail(f"{path}.dispersion", f"family {self.family} has no dispersion; remove it",
                 self.dispersion)  # fmt: skip
        has_zero = self.family not in ("poisson", "nb")
        if not has_zero and self.zero:
            fail(f"{path}.zero", f"family {self.family} has no zero part; remove it", self.zero)
        for part in ("count", "zero") if has_zero else ("count",):
            coefs = getattr(self, part)
            if not coefs:
                fail(f"{path}.{part}", "must give at least one coefficient", coefs)
            for key, value in coefs.items():
                if key not in known:
                    fail(f"{path}.{part}.{key_text(key)}",
                         f"is not a covariate column (known: {list(known)})", value)  # fmt: skip
                if isinstance(value, bool) or not isinstance(value, int | float):
                    fail(f"{path}.{part}.{key_text(key)}", "must be a number", value)
                if not math.isfinite(value):
                    fail(f"{path}.{part}.{key_text(key)}", "must be finite", value)

    def part_coefficients(self, part: str) -> dict[str, float]:
        return {k: float(v) for k, v in getattr(self, part).items()}

    @property
    def offset_column(self) -> str | None:
        """The stored column whose log is the count part's offset, or None."""
        return None if self.exposure is None else self.exposure.name


@dataclass(frozen=True)
class RegressionData:
    """Count-regression scenarios: `replicates` datasets of `n` rows each."""

    n: int = 1000
    replicates: int = 10
    scenarios: tuple[RegressionScenario, ...] = ()

    def check(self, path: str) -> None:
        if not 1 <= self.n <= MAX_REGRESSION_N:
            fail(f"{path}.n", f"must be in [1, {MAX_REGRESSION_N:.0e}] (rows per dataset)",
                 self.n)  # fmt: skip
        if not 1 <= self.replicates <= MAX_REPLICATES:
            fail(f"{path}.replicates", f"must be in [1, {MAX_REPLICATES}]", self.replicates)


@dataclass(frozen=True)
class DataConfig:
    n: int
    replicates: int
    scenarios: tuple[Scenario, ...]
    regression: RegressionData = RegressionData()

    def check(self, path: str) -> None:
        if not 1 <= self.n <= MAX_N:
            fail(f"{path}.n", f"must be in [1, {MAX_N:.0e}] (counts per dataset)", self.n)
        if not 1 <= self.replicates <= MAX_REPLICATES:
            fail(f"{path}.replicates", f"must be in [1, {MAX_REPLICATES}]", self.replicates)
        if not self.scenarios:
            fail(f"{path}.scenarios", "must list at least one scenario", [])
        seen: set[str] = set()
        for i, s in enumerate(self.scenarios):
            if s.name in seen:
                fail(f"{path}.scenarios[{i}].name", "duplicate scenario name", s.name)
            seen.add(s.name)
        for i, s in enumerate(self.regression.scenarios):
            if s.name in seen:
                fail(f"{path}.regression.scenarios[{i}].name", "duplicate scenario name", s.name)
            seen.add(s.name)
