"""What a count model is and what it is fitted to: the `Family` value and the `FitData` value.

A family is a count part (Poisson, or NB2 with dispersion α) and optionally a zero part: a
zero inflation (zip, zinb: a structural zero with probability π = σ(s)) or a hurdle (hurdle_*:
P(Y > 0) = σ(s), positives from the zero-truncated count part). A family with a dispersion
nests its α = 0 family (nb → poisson, zinb → zip, hurdle_nb → hurdle_poisson).

A fit's data are rows (y_i, x_i, z_i) with frequency weights w_i and offsets in both linear
predictors: s_i = z_i'γ + o_z,i and η_i = x_i'β + o_x,i (an exposure t_i enters as o_x = log t).
A histogram is the ones-design over its K distinct values with their frequencies as weights;
the intercept-only model is the one-column design. Core layer: numpy only, no I/O, no state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FAMILIES = ("poisson", "nb", "zip", "zinb", "hurdle_poisson", "hurdle_nb")


@dataclass(frozen=True)
class Family:
    """One count family.

    Attributes:
        name: one of `FAMILIES`.
        count: "poisson" or "nb" (NB2: variance μ + αμ²).
        zero: None, "inflation" or "hurdle".
        dispersion: whether log α is a parameter.
        nested: the α = 0 family's name (families with a dispersion), else None.
    """

    name: str
    count: str
    zero: str | None
    dispersion: bool
    nested: str | None

    def __str__(self) -> str:
        return self.name


def _make(name: str) -> Family:
    zero = "hurdle" if name.startswith("hurdle") else "inflation" if name.startswith("zi") else None
    nb = name.endswith("nb")
    nested = {"nb": "poisson", "zinb": "zip", "hurdle_nb": "hurdle_poisson"}.get(name)
    return Family(name, "nb" if nb else "poisson", zero, nb, nested)


_BY_NAME = {name: _make(name) for name in FAMILIES}  # constants: built once, never changed


def family(name: str | Family) -> Family:
    """The `Family` of `name` (a `Family` passes through).

    Raises:
        ValueError: naming the allowed names when `name` is none of `FAMILIES`.
    """
    if isinstance(name, Family):
        return name
    try:
        return _BY_NAME[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown family {name!r} (known: {', '.join(FAMILIES)})") from None


def nested(fam: str | Family) -> Family | None:
    """The α = 0 family nested in `fam`, or None without a dispersion."""
    fam = family(fam)
    return None if fam.nested is None else _BY_NAME[fam.nested]


def _matrix(name: str, A, n: int | None) -> np.ndarray:
    A = np.asarray(A, dtype=float)
    if A.ndim != 2 or (n is not None and A.shape[0] != n):
        rows = "" if n is None else f" with {n} rows"
        raise ValueError(f"{name} must be a 2-D array{rows}, got shape {A.shape}")
    if not np.isfinite(A).all():
        raise ValueError(f"{name} must be finite")
    return A


def _vector(name: str, v, n: int, default: float) -> np.ndarray:
    if v is None:
        return np.full(n, default)
    v = np.asarray(v, dtype=float)
    if v.shape != (n,) or not np.isfinite(v).all():
        raise ValueError(f"{name} must be finite with shape ({n},), got shape {v.shape}")
    return v


@dataclass(frozen=True, eq=False)
class FitData:
    """Validated data of one fit (build it with `fit_data` or `histogram_data`).

    Attributes:
        X: (n, p) count design, p >= 1; Z: (n, q) zero design (q = 0: no zero design).
        y: (n,) non-negative integer counts (float64).
        weights: (n,) non-negative frequency weights with a positive sum (default ones).
        offset_x, offset_z: (n,) offsets of η and s (default zeros).
    """

    X: np.ndarray
    Z: np.ndarray
    y: np.ndarray
    weights: np.ndarray
    offset_x: np.ndarray
    offset_z: np.ndarray

    @property
    def n(self) -> int:
        return len(self.y)

    @property
    def has_offsets(self) -> bool:
        return bool(self.offset_x.any() or self.offset_z.any())

    @property
    def intercept_only(self) -> bool:
        """Both designs one constant column (Z may be absent) and no offsets."""

        def constant(A) -> bool:
            return A.shape[1] == 1 and bool((A == A[0, 0]).all()) and A[0, 0] != 0

        zero_ok = self.Z.shape[1] == 0 or constant(self.Z)
        return constant(self.X) and zero_ok and not self.has_offsets

    def rows(self, keep) -> FitData:
        """The data of the rows `keep` (a boolean mask or indices)."""
        return FitData(self.X[keep], self.Z[keep], self.y[keep], self.weights[keep],
                       self.offset_x[keep], self.offset_z[keep])  # fmt: skip

    def columns(self, keep_x, keep_z) -> FitData:
        """The data with only the design columns `keep_x`, `keep_z`."""
        return FitData(self.X[:, keep_x], self.Z[:, keep_z], self.y, self.weights,
                       self.offset_x, self.offset_z)  # fmt: skip


def fit_data(X, Z, y, *, weights=None, offset_x=None, offset_z=None) -> FitData:
    """Validated `FitData`.

    Args:
        X: (n, p) count design, p >= 1; Z: (n, q) zero design, or None (no zero design).
        y: (n,) non-negative integer counts.
        weights: (n,) non-negative finite frequency weights, positive sum (default ones).
        offset_x, offset_z: (n,) finite offsets of the count and zero predictors (default 0).

    Raises:
        ValueError: on shapes that do not match, non-finite values, counts that are not
            non-negative integers, or bad weights.
    """
    X = _matrix("X", X, None)
    n = X.shape[0]
    if X.shape[1] == 0:
        raise ValueError("X needs at least one column")
    Z = np.zeros((n, 0)) if Z is None else _matrix("Z", Z, n)
    y = np.asarray(y)
    if y.shape != (n,):
        raise ValueError(f"y must have shape ({n},), got {y.shape}")
    y = y.astype(float)
    if not np.isfinite(y).all() or (y < 0).any() or (y != np.floor(y)).any():
        raise ValueError("y must hold non-negative integer counts")
    w = _vector("weights", weights, n, 1.0)
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must be non-negative and not all zero")
    ox, oz = _vector("offset_x", offset_x, n, 0.0), _vector("offset_z", offset_z, n, 0.0)
    return FitData(X, Z, y, w, ox, oz)


def histogram_data(values, frequencies) -> FitData:
    """The intercept-only data of a histogram: K rows (one per value), ones designs in both
    parts, the frequencies as weights.

    Args:
        values: (K,) non-negative integer counts; frequencies: (K,) non-negative weights.
    """
    ones = np.ones((np.size(values), 1))
    return fit_data(ones, ones, values, weights=frequencies)
