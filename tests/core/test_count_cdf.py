"""Tests of pipeline/core/laws/count_cdf.py: binned expected frequencies against the oracle's
value-by-value sums, frequency weights against expanded rows, and the boundary α = 0."""

from __future__ import annotations

import numpy as np
import pytest
from count_samples import fit_arrays
from scipy import stats

from pipeline.core.laws.count_cdf import binned_expected, row_cdf_sf
from pipeline.core.laws.count_terms import FAMILIES, zero_part
from pipeline.core.model import fit_data
from pipeline.core.oracle.terms import expected_frequencies


def _design(n=400, seed=0):
    rng = np.random.default_rng(seed)
    x, z = rng.normal(size=n), rng.normal(size=n)
    X, Z = np.c_[np.ones(n), x], np.c_[np.ones(n), z]
    mu = np.exp(0.8 + 0.3 * x)
    y = rng.negative_binomial(2, 2 / (2 + mu)) * (rng.random(n) > 1 / (1 + np.exp(0.5 - z)))
    return X, Z, y


@pytest.mark.parametrize("family", FAMILIES)
def test_rows_equal_sums_of_oracle_probabilities(family):
    X, Z, y = _design()
    Zf = Z if zero_part(family) else Z[:, :0]
    fit = fit_arrays(family, X, Zf, y)
    starts = np.array([0, 1, 2, 3, 5, 8])
    e = expected_frequencies(family, fit_data(X, Zf, y), fit.params, np.arange(8))
    want = np.r_[e[:3], e[3:5].sum(), e[5:8].sum(), len(y) - e.sum()]
    got = binned_expected(family, X, Zf, fit.params, starts)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("family", ["nb", "zinb", "hurdle_nb"])
def test_histogram_weights_equal_expanded_rows(family):
    _, _, y = _design(seed=1)
    values, freqs = np.unique(y, return_counts=True)
    ones = np.ones((len(values), 1))
    Zf = ones if zero_part(family) else ones[:, :0]
    params = np.r_[np.zeros(Zf.shape[1]), 0.9, np.log(0.4)]
    starts = np.array([0, 1, 2, 4, 9])
    hist = binned_expected(family, ones, Zf, params, starts, freqs)
    n = len(y)
    full = binned_expected(family, np.ones((n, 1)), np.ones((n, Zf.shape[1])), params, starts)
    np.testing.assert_allclose(hist, full, rtol=1e-12)
    assert hist.sum() == pytest.approx(n)


def test_boundary_alpha_is_the_poisson():
    X = np.ones((3, 1))
    starts = np.array([0, 1, 2, 5])
    nb = binned_expected("nb", X, X[:, :0], [0.7, -np.inf], starts)
    poisson = binned_expected("poisson", X, X[:, :0], [0.7], starts)
    np.testing.assert_allclose(nb, poisson, rtol=1e-14)


def test_far_tail_keeps_relative_precision():
    """A row far in the upper tail comes from survival functions, not 1 − cdf."""
    X = np.ones((1, 1))
    _, sf = row_cdf_sf("hurdle_poisson", X, X, [0.0, np.log(2.0)])
    want = 0.5 * stats.poisson.sf(40, 2.0) / stats.poisson.sf(0, 2.0)
    assert sf(40)[0] == pytest.approx(want, rel=1e-12) and want < 1e-30
