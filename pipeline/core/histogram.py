"""The histogram of counts: the sufficient statistic of every intercept-only count model.

A likelihood of i.i.d. counts depends on the data only through the distinct values and how
often each occurs (DESIGN section 2), so datasets travel through the pipeline as `Histogram`s.
Core layer: numpy only, no I/O, no module state.
"""

from typing import NamedTuple

import numpy as np

_MAX_COUNT = 2**62  # counts are stored as int64
_BINCOUNT_FACTOR = 4  # use bincount when max(count) <= this factor x the number of elements


class Histogram(NamedTuple):
    """Histogram of non-negative integer counts (the sufficient statistic of the ZIP).

    Attributes:
        values: distinct counts, int64, strictly increasing.
        freqs: how often each value occurs, int64, all > 0.
    """

    values: np.ndarray
    freqs: np.ndarray

    @property
    def n(self) -> int:
        """Number of observations."""
        return int(self.freqs.sum())

    @property
    def zero_share(self) -> float:
        """Share of observations equal to zero (NaN when empty)."""
        return float(self.freqs[self.values == 0].sum() / self.n) if self.n else float("nan")

    @property
    def total(self) -> int:
        """Sum of the counts, exact (Python integers: an int64 dot product wraps past 2**63).

        Counts are below 2**62 and there are at most ~2**63 of them, so the total can need
        ~125 bits; numpy's int64 arithmetic would silently wrap it negative.
        """
        n = self.n
        if n == 0 or int(self.values.max()) <= (2**63 - 1) // n:
            return int(np.dot(self.values, self.freqs))  # cannot wrap: exact and fast
        return sum(v * f for v, f in zip(self.values.tolist(), self.freqs.tolist()))

    @property
    def mean(self) -> float:
        """Sample mean of the counts (NaN when empty), from the exact total."""
        return self.total / self.n if self.n else float("nan")

    @property
    def variance(self) -> float:
        """Sample variance of the counts with ddof=1, i.e. divided by n - 1 (NaN when n < 2)."""
        if self.n < 2:
            return float("nan")
        dev = self.values.astype(np.float64) - self.mean
        return float(np.dot(self.freqs.astype(np.float64), dev * dev) / (self.n - 1))


def histogram(counts) -> Histogram:
    """Histogram of an array of non-negative integer counts.

    Args:
        counts: array-like of counts, integer dtype or float holding integral values.

    Returns:
        The `Histogram` (distinct sorted values and their frequencies).

    Raises:
        ValueError: on empty input, NaN/inf, non-integral, negative or non-numeric values.
    """
    arr = np.asarray(counts).ravel()
    if arr.size == 0:
        raise ValueError("counts is empty: need at least one observation")
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"counts must be numeric integers or floats, got dtype {arr.dtype}")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise ValueError("counts contain NaN or infinite values")
        fractional = arr != np.floor(arr)
        if fractional.any():
            raise ValueError(f"counts must be integers, got {float(arr[fractional][0])}")
    lo, hi = arr.min(), arr.max()
    if lo < 0:
        raise ValueError(f"counts must be non-negative, got {lo}")
    if hi >= _MAX_COUNT:
        raise ValueError(f"counts must be below 2**62, got {hi}")
    arr = arr.astype(np.int64, copy=False)
    if hi <= _BINCOUNT_FACTOR * arr.size:
        return histogram_from_bincount(np.bincount(arr))
    values, freqs = np.unique(arr, return_counts=True)
    return Histogram(values.astype(np.int64), freqs.astype(np.int64))


def histogram_from_bincount(bincount) -> Histogram:
    """Histogram from a bincount (entry k = frequency of the value k); zero bins are dropped.

    Args:
        bincount: 1-D array-like of non-negative integer frequencies.

    Returns:
        The `Histogram`; empty (n = 0) when every bin is zero.
    """
    freqs = np.asarray(bincount)
    if freqs.ndim != 1:
        raise ValueError(f"bincount must be 1-D, got shape {freqs.shape}")
    if freqs.size and (not np.isfinite(freqs).all() or (freqs != np.floor(freqs)).any()):
        raise ValueError("bincount must hold finite integer frequencies")
    if freqs.size and freqs.min() < 0:
        raise ValueError("bincount frequencies must be non-negative")
    freqs = freqs.astype(np.int64)
    values = np.flatnonzero(freqs)
    return Histogram(values.astype(np.int64), freqs[values])


def merge_histograms(hists) -> Histogram:
    """Merge histograms of disjoint chunks into the histogram of their concatenation.

    Args:
        hists: iterable of `Histogram`.

    Returns:
        The merged `Histogram` (empty when `hists` is empty).
    """
    hists = list(hists)
    values = np.concatenate([np.empty(0, np.int64)] + [h.values for h in hists])
    freqs = np.concatenate([np.empty(0, np.int64)] + [h.freqs for h in hists])
    merged, inverse = np.unique(values, return_inverse=True)
    total = np.zeros(merged.size, np.int64)
    np.add.at(total, inverse, freqs)
    return Histogram(merged.astype(np.int64), total)
