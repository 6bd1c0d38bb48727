"""The stacked designs the design engine fits (`designs.stack_designs`, `designs.scalings`):
rows sorted zeros first with their weights and offsets, refusals, and the standardisation of
weighted rows equal to that of the expanded rows."""

import numpy as np
import pytest
import torch

from pipeline.core.descent.designs import scalings, stack_designs


def _dataset(seed: int, n: int = 60):
    rng = np.random.default_rng(seed)
    x = rng.normal(2.0, 3.0, n)
    X = np.column_stack([np.ones(n), x, rng.binomial(1, 0.3, n)])
    Z = np.column_stack([np.ones(n), rng.normal(size=n)])
    y = np.where(rng.random(n) < 0.4, 0, rng.poisson(2.0, n))
    return X, Z, y, rng.integers(0, 4, n).astype(float), rng.normal(size=n), rng.normal(size=n)


def test_rows_are_sorted_zeros_first_and_keep_their_weights_and_offsets():
    sets = [_dataset(1), _dataset(2)]
    X, Z, y, w, oc, oz = (list(a) for a in zip(*sets))
    data = stack_designs(X, Z, y, weights=w, count_offsets=oc, zero_offsets=oz)
    for d in range(2):
        zeros = int((y[d] == 0).sum())
        assert data.zeros[d] == zeros
        got_y = data.y[d, :, 0].numpy()
        assert (got_y[:zeros] == 0).all() and (got_y[zeros:] > 0).all()
        # Each row travels whole: the rows as tuples are the same multiset.
        before = np.column_stack([X[d], Z[d], y[d], w[d], oc[d], oz[d]])
        after = torch.cat([data.X[d], data.Z[d], data.y[d], data.weight[d],
                           data.count_offset[d], data.zero_offset[d]], 1).numpy()  # fmt: skip
        np.testing.assert_array_equal(np.unique(before, axis=0), np.unique(after, axis=0))


def test_absent_weights_and_offsets_are_not_stored():
    X, Z, y, *_ = _dataset(3)
    data = stack_designs([X], [Z], [y])
    assert data.weight is None and data.count_offset is None and data.zero_offset is None


def test_bad_data_is_refused():
    X, Z, y, w, oc, _ = _dataset(4)
    with pytest.raises(ValueError, match="counts"):
        stack_designs([X], [Z], [y - 1])
    with pytest.raises(ValueError, match="need"):
        stack_designs([X], [Z[:40]], [y])
    with pytest.raises(ValueError, match="finite"):
        stack_designs([X * np.nan], [Z], [y])
    with pytest.raises(ValueError, match="weights must be >= 0"):
        stack_designs([X], [Z], [y], weights=[-w])
    with pytest.raises(ValueError, match="positive total"):
        stack_designs([X], [Z], [y], weights=[0 * w])
    with pytest.raises(ValueError, match="one per row"):
        stack_designs([X], [Z], [y], count_offsets=[oc[:-1]])
    with pytest.raises(ValueError, match="finite"):
        stack_designs([X], [Z], [y], count_offsets=[oc * np.inf])
    with pytest.raises(ValueError, match="zero-part design"):
        stack_designs([X], [Z[:, :0]], [y], zero_offsets=[oc])


@pytest.mark.parametrize("standardize", [True, [False, True]])
def test_weighted_scalings_equal_the_expanded_rows_scalings(standardize):
    sets = [_dataset(5), _dataset(6)]
    X, Z, y, w, *_ = (list(a) for a in zip(*sets))
    weighted = scalings(stack_designs(X, Z, y, weights=w), standardize)
    for d in range(2):
        rows = np.repeat(np.arange(len(y[d])), w[d].astype(int))
        expanded = scalings(stack_designs([X[d][rows]], [Z[d][rows]], [y[d][rows]]),
                            np.atleast_1d(standardize)[-1 if d else 0])  # fmt: skip
        np.testing.assert_allclose(weighted[d], expanded[0], rtol=1e-12, atol=1e-14)


def test_scalings_map_fitting_scale_parameters_back():
    """X̃ = X T_x has unit-SD centred non-intercept columns, and X̃ θ̃ = X (T θ̃)."""
    X, Z, y, *_ = _dataset(7)
    data = stack_designs([X], [Z], [y])
    T = scalings(data, True)[0]
    q = Z.shape[1]
    Xt = data.X[0] @ T[q:, q:]
    np.testing.assert_allclose(Xt[:, 1:].std(0, correction=0), 1.0, rtol=1e-12)
    np.testing.assert_allclose(Xt[:, 1].mean(), 0.0, atol=1e-12)
    theta = torch.linspace(-1, 1, q + X.shape[1], dtype=torch.float64)
    np.testing.assert_allclose(Xt @ theta[q:], data.X[0] @ (T @ theta)[q:], rtol=1e-12)
