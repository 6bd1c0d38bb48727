"""Tests of `pipeline.core.histogram`: the histogram of counts and its summaries.

The reference is numpy on the raw counts: `np.unique(..., return_counts=True)`, `mean`, `var`.
"""

import math

import numpy as np
import pytest

from pipeline.core.histogram import Histogram, histogram, histogram_from_bincount, merge_histograms


def assert_same(hist: Histogram, values, freqs) -> None:
    assert hist.values.dtype == np.int64 and hist.freqs.dtype == np.int64
    assert hist.values.tolist() == list(values) and hist.freqs.tolist() == list(freqs)


@pytest.mark.parametrize(
    "counts, message",
    [
        ([1, -1, 2], "non-negative"),
        ([1.0, 1.5], "integers"),
        ([1.0, np.nan], "NaN"),
        ([np.inf], "NaN or infinite"),
        ([], "empty"),
        (np.array([True, False]), "numeric"),
        (["1", "2"], "numeric"),
        ([0, 2**62], "below 2"),
        (np.array([0.0, 2.0**62]), "below 2"),
    ],
)
def test_histogram_rejects_bad_input(counts, message):
    with pytest.raises(ValueError, match=message):
        histogram(counts)


def test_histogram_error_messages_name_the_value():
    with pytest.raises(ValueError, match=r"^counts must be non-negative, got -7$"):
        histogram([3, -7, -1])
    with pytest.raises(ValueError, match=r"^counts must be integers, got 2.5$"):
        histogram([1.0, 2.5, 3.5])
    with pytest.raises(ValueError, match=r"got dtype <U1"):
        histogram(["1", "2"])


def test_histogram_summaries_and_dtypes():
    y = np.random.default_rng(4).poisson(2.5, 5000)
    hist = histogram(y)
    values, freqs = np.unique(y, return_counts=True)
    assert_same(hist, values, freqs)
    assert hist.n == y.size
    assert hist.zero_share == pytest.approx((y == 0).mean(), rel=1e-15)
    assert hist.mean == pytest.approx(y.mean(), rel=1e-14)
    assert hist.variance == pytest.approx(y.var(ddof=1), rel=1e-12)
    for same in (y.astype(float), y.astype(np.int32), y.astype(np.uint16), y.reshape(50, 100)):
        other = histogram(same)
        assert np.array_equal(other.values, hist.values)
        assert np.array_equal(other.freqs, hist.freqs)
    assert np.isnan(histogram([3]).variance)


# (size, rate or scale, seed): dense small counts take the bincount path, sparse large ones
# (max > 4 x size) np.unique; both must give numpy's answer
@pytest.mark.parametrize(
    ("size", "scale", "seed"),
    [(1, 3.0, 0), (10, 0.1, 1), (1000, 5.0, 2), (50, 1e3, 3), (20, 1e9, 4), (3000, 40.0, 5)],
)
def test_histogram_equals_numpy_unique(size, scale, seed):
    rng = np.random.default_rng(seed)
    y = rng.binomial(1, 0.6, size) * rng.poisson(scale, size)
    values, freqs = np.unique(y, return_counts=True)
    hist = histogram(y)
    assert_same(hist, values, freqs)
    assert hist.n == size
    assert hist.zero_share == (y == 0).sum() / size
    assert hist.mean == pytest.approx(y.mean(), rel=1e-14)


@pytest.mark.parametrize("top", [4 * 3, 4 * 3 + 1])
def test_both_paths_meet_at_the_bincount_threshold(top):
    # max <= 4 x size takes the bincount, one more np.unique: the same histogram either way
    hist = histogram([0, 2, top])
    assert_same(hist, [0, 2, top], [1, 1, 1])


def test_histogram_sparse_large_values_use_unique():
    hist = histogram([0, 10**12, 10**12, 5])
    assert hist.values.tolist() == [0, 5, 10**12] and hist.freqs.tolist() == [1, 1, 2]
    assert_same(histogram([2**62 - 1]), [2**62 - 1], [1])  # the largest count kept


def test_empty_histogram_summaries_are_nan():
    empty = Histogram(np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert empty.n == 0
    assert math.isnan(empty.zero_share) and math.isnan(empty.mean) and math.isnan(empty.variance)


def test_summaries_by_hand():
    hist = histogram([0, 0, 1, 3, 3, 5])  # mean 2, squared deviations 4 4 1 1 1 9 -> 20 / 5
    assert (hist.n, hist.zero_share, hist.mean, hist.variance) == (6, 1 / 3, 2.0, 4.0)
    assert histogram([4, 4]).variance == 0.0 and histogram([4, 4]).zero_share == 0.0


def test_merge_equals_histogram_of_concatenation():
    rng = np.random.default_rng(8)
    chunks = [rng.poisson(lam, size) for lam, size in [(0.3, 100), (5.0, 1000), (50.0, 17)]]
    merged = merge_histograms(histogram(c) for c in chunks)
    whole = histogram(np.concatenate(chunks))
    assert np.array_equal(merged.values, whole.values)
    assert np.array_equal(merged.freqs, whole.freqs)
    assert merged.values.dtype == np.int64 and merged.freqs.dtype == np.int64
    assert merge_histograms([]).n == 0


def test_merge_adds_the_frequencies_of_shared_values():
    merged = merge_histograms([histogram([0, 0, 7]), histogram([7, 2]), histogram([0])])
    assert_same(merged, [0, 2, 7], [3, 1, 2])


def test_histogram_from_bincount():
    y = np.random.default_rng(6).poisson(1.5, 300)
    hist = histogram_from_bincount(np.bincount(y))
    assert np.array_equal(hist.values, histogram(y).values)
    assert np.array_equal(hist.freqs, histogram(y).freqs)
    assert histogram_from_bincount([0, 0, 0]).n == 0
    with pytest.raises(ValueError):
        histogram_from_bincount([1, -2])


def test_histogram_from_bincount_by_hand():
    assert_same(histogram_from_bincount([3, 0, 2, 0, 0, 1]), [0, 2, 5], [3, 2, 1])
    assert_same(histogram_from_bincount(np.array([0.0, 4.0])), [1], [4])  # integral floats
    assert_same(histogram_from_bincount([]), [], [])


@pytest.mark.parametrize(
    ("bincount", "message"),
    [
        ([1, -2], "non-negative"),
        ([[1, 2], [3, 4]], "1-D"),
        ([1.5, 2.0], "finite integer"),
        ([1.0, np.nan], "finite integer"),
        ([np.inf], "finite integer"),
    ],
)
def test_histogram_from_bincount_rejects(bincount, message):
    with pytest.raises(ValueError, match=message):
        histogram_from_bincount(bincount)
