"""Observed against expected frequencies and Pearson's goodness-of-fit test, for any count model.

Rows of the frequency table are chosen from the observed counts alone (`count_bins`), so every
fitted model is compared on the same rows:
- small counts: one row per value 0, 1, ..., K-1 and an open tail row "K+", K the first count
  whose observed tail {Y >= K} holds fewer than `MIN_ROW` counts;
- counts spread over more values than `MAX_ROWS` rows can show (a mean of 216, say): count 0
  keeps its own row (zero inflation is what the table is about) and the positive counts are
  cut at their quantiles into at most `MAX_ROWS - 1` rows of about equal observed frequency,
  each with at least `MIN_ROW` counts, the last row open.

A row is [starts[j], starts[j+1]), the last one [starts[-1], inf). A model enters only through
its cdf and survival function (`binned_probabilities`), so the ZIP, the Poisson, later NB or
hurdle models and per-observation regression fits share this code, and a row spanning
thousands of values costs four function calls, not a sum over its values.

Pearson's test (`pearson_test`) merges adjacent rows until every expected frequency is >= 5
(Cochran's rule) and refers X2 to chi2(groups - 1 - parameters). The parameters are maximum-
likelihood estimates from the ungrouped counts, so the exact null law lies between that and
chi2(groups - 1) (Chernoff & Lehmann 1954, Ann. Math. Statist. 25:579): the p-value errs on
the small side, towards flagging misfit. Where merging would leave no degrees of freedom the
rows stay unmerged (some groups then expect fewer than 5: `small_groups`), and a df
groups - 1 - parameters below 1 is raised to 1 (`raw_df` keeps what it was): both are reported,
and the reference is flagged poor.

Misfit (`misfits`): one rule for the reports' warnings and the choice among families. A model
misfits when X2 rejects even against chi2(groups - 1), the lenient end of its null law
(`gof_bound_p`), at the screening level: 1 - level for one model, (1 - level) / m when m
families are screened together (Bonferroni, `screen_level`).

Core layer: numpy/scipy only (tails from `model_tests`), pure functions, no I/O, no module
state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from pipeline.core.inference.model_tests import chi2_p

MAX_ROWS = 20  # rows of a frequency table: what a terminal shows at a glance
MIN_ROW = 5  # observed counts a grouped row needs (Cochran's 5, on the observed side)
MIN_EXPECTED = 5.0  # expected frequency of every group of Pearson's test (Cochran 1954)


class GofTest(NamedTuple):
    """Pearson's chi-square test over grouped rows.

    Attributes:
        statistic: X2 = sum (observed - expected)^2 / expected over the groups.
        df: groups - 1 - parameters, raised to 1 where it is smaller (see `raw_df`).
        p_value, log10_p_value: P(chi2(df) >= X2) and its log10 (finite where p underflows).
        groups: rows left after merging until every expected frequency is >= 5.
        parameters: estimated parameters subtracted from the df.
        small_groups: groups expecting fewer than 5 (left unmerged: see `pearson_test`).
        poor_reference: True when groups - 1 - parameters < 1 (df raised to 1) or some group
            expects fewer than 5: the chi-square reference is poor then.
        raw_df: groups - 1 - parameters before raising it to 1.
    """

    statistic: float
    df: int
    p_value: float
    log10_p_value: float
    groups: int
    parameters: int
    small_groups: int
    poor_reference: bool
    raw_df: int


def group_starts(weights, minimum: float) -> np.ndarray:
    """Indices where groups of adjacent rows start, each group's weight >= `minimum`.

    Greedy from the first row; a last group short of `minimum` joins the one before it.

    Args:
        weights: non-negative weight per row (observed or expected frequencies).
        minimum: the least weight of a group.

    Returns:
        int64 indices into the rows, starting with 0.
    """
    weights = np.asarray(weights, dtype=float)
    starts, acc = [0], 0.0
    for j, w in enumerate(weights):
        acc += w
        if acc >= minimum and j + 1 < len(weights):
            starts.append(j + 1)
            acc = 0.0
    if len(starts) > 1 and acc < minimum:
        starts.pop()  # the leftover rows join the group before them
    return np.asarray(starts, dtype=np.int64)


def bin_observed(values, freqs, starts) -> np.ndarray:
    """Observed frequency of each row [starts[j], starts[j+1]) (the last row open).

    Args:
        values: distinct counts (>= starts[0]); freqs: how often each occurs.
        starts: increasing lower edges of the rows.

    Returns:
        int64 frequencies, one per row.
    """
    row = np.searchsorted(np.asarray(starts), np.asarray(values), side="right") - 1
    out = np.zeros(len(starts), np.int64)
    np.add.at(out, row, np.asarray(freqs, np.int64))
    return out


def count_bins(values, freqs, max_rows: int = MAX_ROWS, min_row: int = MIN_ROW) -> np.ndarray:
    """Lower edges of the frequency table's rows, chosen from the observed counts (module doc).

    Args:
        values: distinct non-negative counts, increasing; freqs: their frequencies (> 0).
        max_rows: most rows of the table (>= 3).
        min_row: observed counts below which the tail is pooled and grouped rows are merged.

    Returns:
        int64 increasing edges starting at 0; the last row is open.
    """
    values, freqs = np.asarray(values, np.int64), np.asarray(freqs, np.int64)
    at_least = freqs[::-1].cumsum()[::-1]  # at_least[i] = #{Y >= values[i]}
    short = np.flatnonzero(at_least < min_row)
    if not len(short):
        tail = values[-1]  # even the largest count occurs min_row times: it opens the tail
    else:
        tail = values[short[0] - 1] + 1 if short[0] > 0 else 1
    tail = max(1, min(int(tail), int(values[-1])))  # never past the largest count
    if tail + 1 <= max_rows:
        return np.arange(tail + 1, dtype=np.int64)
    positive = values > 0
    pv, pf = values[positive], freqs[positive]
    m = int(pf.sum())
    rows = int(min(max_rows - 1, max(1, m // min_row)))
    # Row j (1-based among the positives) starts at the (j m / rows + 1)-th smallest positive.
    ranks = np.floor(np.arange(1, rows) * m / rows)
    cuts = pv[np.searchsorted(pf.cumsum(), ranks, side="right")]
    starts = np.unique(np.concatenate([[0, 1], cuts]))
    # Ties at a quantile leave rows with few counts: merge them, the zero row kept apart.
    observed = bin_observed(values, freqs, starts)
    keep = 1 + group_starts(observed[1:], min_row)
    return np.concatenate([[0], starts[keep]]).astype(np.int64)


def binned_probabilities(
    starts, cdf: Callable[[int], np.ndarray], sf: Callable[[int], np.ndarray]
) -> np.ndarray:
    """P(row j) of one distribution or of many at once (one per observation).

    Below the median a row's probability is a difference of cdfs, above it one of survival
    functions, so both tails keep full relative precision.

    Args:
        starts: increasing lower edges of the rows, the first 0; the last row is open.
        cdf, sf: P(Y <= k) and P(Y > k) for an integer k >= 0 (scalars or arrays).

    Returns:
        Array (rows, *shape of cdf(k)) of probabilities >= 0.
    """
    starts = [int(a) for a in starts]

    def below(k):  # P(Y <= k) and P(Y > k), with k = -1 below the support
        return (0.0, 1.0) if k < 0 else (cdf(k), sf(k))

    rows = []
    for j, a in enumerate(starts):
        cdf_lo, sf_lo = below(a - 1)
        if j + 1 == len(starts):
            rows.append(sf_lo)
            continue
        cdf_hi, sf_hi = below(starts[j + 1] - 1)
        rows.append(np.where(np.asarray(cdf_hi) <= 0.5, cdf_hi - np.asarray(cdf_lo),
                             sf_lo - np.asarray(sf_hi)))  # fmt: skip
    return np.maximum(np.stack(np.broadcast_arrays(*rows)), 0.0)


def pearson_test(observed, expected, parameters: int, minimum: float = MIN_EXPECTED) -> GofTest:
    """Pearson's X2 over rows merged until every expected frequency is >= `minimum`.

    Where that merging leaves no degrees of freedom (groups - 1 - parameters < 1) the rows are
    kept as they are instead: a model expecting almost nothing outside one row would merge
    into a single group with X2 = 0, hiding the misfit its other rows show. The reference is
    flagged poor then.

    Args:
        observed: observed frequency per row.
        expected: the fitted model's expected frequency per row (summing to n).
        parameters: number of estimated parameters of the model.
        minimum: least expected frequency of a group.

    Returns:
        The `GofTest` (see the module docstring for its reference distribution).
    """
    observed = np.asarray(observed, dtype=float)
    expected = np.asarray(expected, dtype=float)
    cuts = group_starts(expected, minimum)
    if len(cuts) - 1 - parameters < 1:
        cuts = np.arange(len(expected))
    obs, exp = np.add.reduceat(observed, cuts), np.add.reduceat(expected, cuts)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(obs == exp, 0.0, (obs - exp) ** 2 / exp)
    stat = float(terms.sum())
    raw_df = len(cuts) - 1 - parameters
    df = max(1, raw_df)
    small = int((exp < minimum).sum())
    p, log10_p = chi2_p(stat, df)
    return GofTest(stat, df, p, log10_p, len(cuts), parameters, small, raw_df < 1 or small > 0,
                   raw_df)  # fmt: skip


def gof_bound_p(statistic: float, groups: int) -> tuple[float, float]:
    """(p, log10 p) of Pearson's X2 against chi2(groups - 1), the upper end of its null law.

    With k parameters estimated from the ungrouped counts, X2's null law lies between
    chi2(G - 1 - k) (the p `pearson_test` reports) and chi2(G - 1) (Chernoff & Lehmann 1954,
    Ann. Math. Statist. 25:579); with covariates k can leave G - 1 - k at 1. A model is called
    misfitting only when even this bound rejects (`misfits`).
    """
    return chi2_p(statistic, max(1, int(groups) - 1))


def screen_level(level: float, models: int = 1) -> float:
    """The level at which `misfits` screens: (1 - level) / models (Bonferroni over the models
    screened together; 1 for a report about one model)."""
    return (1.0 - level) / max(1, int(models))


def misfits(statistic: float, groups: int, screen: float) -> bool:
    """True when Pearson's X2 rejects even against chi2(groups - 1) at `screen` (module doc);
    False where the statistic is NaN (no test)."""
    return bool(gof_bound_p(statistic, groups)[0] < screen)
