"""Samples and references the inference and profile tests share (fixed seeds)."""

from __future__ import annotations

import numpy as np
from scipy import stats
from scipy.special import gammaln


def simulate(pi: float, lam: float, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.binomial(1, 1 - pi, n) * rng.poisson(lam, n)


def log_pmf(y, pi, lam):
    y = np.asarray(y, dtype=float)
    pos = np.log1p(-pi) + y * np.log(lam) - lam - gammaln(y + 1)
    return np.where(y == 0, np.logaddexp(np.log(pi) if pi > 0 else -np.inf, np.log1p(-pi) - lam),
                    pos)  # fmt: skip


def binomial_band(trials: int, p: float, false_alarm: float) -> tuple[float, float]:
    """Rates outside which a correct procedure lands with probability <= false_alarm."""
    lo = stats.binom.ppf(false_alarm / 2, trials, p)
    hi = stats.binom.isf(false_alarm / 2, trials, p)
    return lo / trials, hi / trials


SCENARIOS = [(0.5, 5.0, 0), (0.3, 0.5, 1), (0.9, 3.0, 2), (0.05, 8.0, 3)]
