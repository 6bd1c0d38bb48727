"""Tests of pipeline/core/model.py: the `Family` values and the validated `FitData`."""

import numpy as np
import pytest

from pipeline.core.model import FAMILIES, Family, family, fit_data, histogram_data, nested


def test_families_by_name():
    got = {f: (family(f).count, family(f).zero, family(f).dispersion) for f in FAMILIES}
    assert got == {
        "poisson": ("poisson", None, False),
        "nb": ("nb", None, True),
        "zip": ("poisson", "inflation", False),
        "zinb": ("nb", "inflation", True),
        "hurdle_poisson": ("poisson", "hurdle", False),
        "hurdle_nb": ("nb", "hurdle", True),
    }
    assert {f: getattr(nested(f), "name", None) for f in FAMILIES} == {
        "poisson": None, "nb": "poisson", "zip": None, "zinb": "zip",
        "hurdle_poisson": None, "hurdle_nb": "hurdle_poisson",
    }  # fmt: skip
    fam = family("zinb")
    assert family(fam) is fam and str(fam) == "zinb" and isinstance(fam, Family)
    with pytest.raises(AttributeError):
        fam.zero = None  # frozen


@pytest.mark.parametrize("bad", ["zipp", "", None, 3])
def test_unknown_family_names_the_allowed(bad):
    with pytest.raises(ValueError, match="unknown family .*known: poisson, nb, zip, zinb"):
        family(bad)


def test_fit_data_defaults_and_validation():
    X, y = np.ones((4, 1)), np.array([0, 1, 2, 5])
    d = fit_data(X, None, y)
    assert d.Z.shape == (4, 0) and d.weights.tolist() == [1.0] * 4 and not d.has_offsets
    assert d.intercept_only and y.dtype != d.y.dtype == np.float64
    assert not fit_data(X, None, y, offset_x=np.log([1, 2, 3, 4])).intercept_only
    assert not fit_data(np.c_[X, [0, 1, 0, 1]], X, y).intercept_only
    bad = [
        (dict(X=np.ones(4)), "X must be a 2-D"),
        (dict(X=np.ones((4, 0))), "at least one column"),
        (dict(X=np.full((4, 1), np.nan)), "X must be finite"),
        (dict(Z=np.ones((3, 1))), "Z must be a 2-D array with 4 rows"),
        (dict(y=np.array([0, 1, 2])), r"y must have shape \(4,\)"),
        (dict(y=np.array([0, 1, 2.5, 1])), "non-negative integer"),
        (dict(y=np.array([0, -1, 2, 1])), "non-negative integer"),
        (dict(weights=[1, 1, -1, 1]), "weights must be non-negative"),
        (dict(weights=[0, 0, 0, 0]), "not all zero"),
        (dict(weights=[1, np.inf, 1, 1]), "weights must be finite"),
        (dict(offset_z=[0, 0, 0]), "offset_z must be finite"),
    ]
    for change, message in bad:
        args = {"X": X, "Z": X, "y": y, **change}
        with pytest.raises(ValueError, match=message):
            fit_data(args.pop("X"), args.pop("Z"), args.pop("y"), **args)


def test_histogram_is_the_weighted_ones_design():
    d = histogram_data([0, 1, 3], [5, 2, 1])
    assert d.X.tolist() == d.Z.tolist() == [[1.0]] * 3
    assert d.y.tolist() == [0, 1, 3] and d.weights.tolist() == [5, 2, 1] and d.intercept_only
    sub = d.rows(d.y > 0)
    assert sub.y.tolist() == [1, 3] and sub.weights.tolist() == [2, 1] and sub.Z.shape == (2, 1)
