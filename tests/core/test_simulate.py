"""Dataset sampling and storage: seed streams, chunk independence, the sampled law."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy import stats

from pipeline.core import seeds
from pipeline.core.histogram import histogram
from pipeline.core.simulation import simulate
from pipeline.store import datasets, files
from pipeline.store.files import File

ALPHA = 1e-3  # false-alarm rate of each goodness-of-fit test (fixed seeds: deterministic)


def _zip_pmf(k, pi: float, lam: float):
    """The ZIP law as a mixture of a point mass at 0 and scipy's Poisson (independent form)."""
    k = np.asarray(k)
    return pi * (k == 0) + (1 - pi) * stats.poisson.pmf(k, lam)


def _chi_square_p(y: np.ndarray, pi: float, lam: float) -> float:
    """p-value of Pearson's chi-square of counts `y` against ZIP(pi, lam), known parameters.

    Bins 0, 1, ... while the expected frequency is >= 5, the rest pooled into one tail bin.
    """
    n = y.size
    hi = 0
    while n * _zip_pmf(hi + 1, pi, lam) >= 5 or hi + 1 <= lam:
        hi += 1
    probs = _zip_pmf(np.arange(hi + 1), pi, lam)
    expected = n * np.append(probs, max(0.0, 1.0 - probs.sum()))
    observed = np.bincount(np.minimum(y, hi + 1), minlength=hi + 2)
    if expected[-1] < 5:  # fold a thin tail into the last bin
        expected[-2] += expected[-1]
        observed[-2] += observed[-1]
        expected, observed = expected[:-1], observed[:-1]
    return float(stats.chisquare(observed, expected).pvalue)


@pytest.mark.parametrize("pi, lam", [(0.5, 5.0), (0.0, 0.3), (0.9, 40.0), (1.0, 2.0)])
@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_chunked_equals_one_shot(pi, lam, chunk):
    seq = seeds.stream(0, "data", seeds.name_key("x"), 0)
    whole = np.concatenate(list(simulate.sample_chunks(seq, pi, lam, 5003, chunk=10**6)))
    parts = list(simulate.sample_chunks(seq, pi, lam, 5003, chunk=chunk))
    assert whole.dtype == np.int64 and whole.size == 5003
    assert max(p.size for p in parts) <= chunk
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_write_dataset_is_chunk_independent(tmp_path):
    seq = seeds.stream(0, "data", seeds.name_key("x"), 0)
    file_a, file_b = (File(tmp_path / name, "dataset") for name in ("a.parquet", "b.parquet"))
    one = datasets.write_dataset(file_a, simulate.sample_chunks(seq, 0.3, 2.0, 3000), "h")
    many = datasets.write_dataset(
        file_b, simulate.sample_chunks(seq, 0.3, 2.0, 3000, chunk=256), "h"
    )
    a, b = files.read(file_a, "h"), files.read(file_b, "h")
    assert a.schema == {"y": pl.Int64} and a.equals(b)
    for hist in (one, many):
        np.testing.assert_array_equal(hist.values, histogram(a["y"].to_numpy()).values)
        np.testing.assert_array_equal(hist.freqs, histogram(a["y"].to_numpy()).freqs)


@pytest.mark.parametrize("pi, lam", [(0.2, 3.0), (0.8, 3.0), (0.5, 0.5), (0.05, 30.0)])
def test_sampled_law_is_zip(pi, lam):
    seq = seeds.stream(0, "data", seeds.name_key(f"gof-{pi}-{lam}"), 0)
    y = np.concatenate(list(simulate.sample_chunks(seq, pi, lam, 50_000)))
    assert _chi_square_p(y, pi, lam) > ALPHA
    # Power check: the same test rejects the gate-swapped law the blog's sampler produced.
    if pi in (0.2, 0.8):
        assert _chi_square_p(y, 1 - pi, lam) < ALPHA


def test_streams_differ_by_scenario_and_replicate():
    draws = {
        (name, rep): next(
            simulate.sample_chunks(seeds.stream(0, "data", seeds.name_key(name), rep), 0.5, 5.0, 50)
        )
        for name in ("a", "b")
        for rep in (0, 1)
    }
    assert len({d.tobytes() for d in draws.values()}) == 4


def test_gate_identities():
    seq = seeds.stream(0, "data", seeds.name_key("x"), 0)
    assert not next(simulate.sample_chunks(seq, 1.0, 5.0, 1000)).any()  # gate 1: all zeros
    # gate 0: the count stream alone, i.e. plain Poisson draws from the second child
    plain = seeds.children(seq, 2)[1].poisson(5.0, 1000)
    np.testing.assert_array_equal(next(simulate.sample_chunks(seq, 0.0, 5.0, 1000)), plain)
