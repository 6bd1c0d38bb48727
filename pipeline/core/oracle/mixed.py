"""Count GLMMs with Gaussian random intercepts: the exact marginal likelihood by adaptive
Gauss–Hermite quadrature, and its float64 maximum (the mixed models' oracle).

Model (issue 20): group i = 1..G, row j; every family of `core.model`, with random intercepts
in the count part, the zero part, or both (independent):
    η_ij = x_ijᵀβ + o_x + b_i,   s_ij = z_ijᵀγ + o_z + c_i,   b_i ~ N(0, σ_b²), c_i ~ N(0, σ_c²).
Parameters [γ (q), β (p), (log α), log σ per random part in `PARTS` order (count, zero)].

Group i's likelihood is the integral over u_i = (b_i, c_i) of exp(h_i(u)), with
h_i(u) = Σ_j w_ij ℓ_ij(s_ij, η_ij) − ½ Σ_r u_r²/σ_r² (ℓ: `count_terms.family_terms`). Adaptive
quadrature (Liu & Pierce 1994; Pinheiro & Bates 1995): at the mode û_i of h_i, with S_i the
inverse of −∇²h_i(û_i) and L_i its Cholesky factor, and the K-point Gauss–Hermite rule
(x_k, w_k) for ∫e^{−x²}f(x)dx taken as a product over the d random parts,
    log L_i = (d/2) log 2 + log|L_i| + log Σ_m w_m e^{|x_m|²} e^{h_i(û_i + √2 L_i x_m)}
              − Σ_r (½ log 2π + log σ_r).
K = 1 is the Laplace approximation (glmmTMB's); the error falls quickly in K.

Derivatives are exact, by autograd in float64: the modes are found without a graph (damped
Newton per group, all groups at once), then two Newton steps are taken with the graph. At the
mode a Newton step has zero derivative in u, so one step carries the implicit derivative
dû/dθ and two carry d²û/dθ² (the Hessian, hence standard errors, are those of the quadrature
likelihood, not of a frozen-mode surrogate). Groups of unequal sizes are sums over rows by
group index (`index_add`), never Python loops over groups. Core layer: no I/O, no state.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import optimize, stats

from pipeline.core.inference.model_tests import Test, boundary_p
from pipeline.core.laws.count_terms import family_terms
from pipeline.core.model import Family, FitData, family
from pipeline.core.oracle.fit import fit_model
from pipeline.core.oracle.newton import DECREMENT_TOL, newton_direction
from pipeline.core.oracle.terms import inverse

PARTS = ("count", "zero")  # where a random intercept may sit, in parameter order
KEY = {"count": "eta", "zero": "s"}  # the predictor each part shifts (`family_terms` names)
# Default quadrature points per random part, by the number of random parts: the
# log-likelihood is then stable to ~1e-9 as K grows (tests/core/test_oracle_mixed.py).
NODES = {1: 25, 2: 30}
# Rows x points one evaluation may hold: each is a float64 kept for the double backward
# (~20 tensors of that size), so 2e7 stays within a few GB; above it the default K shrinks
# (large data have large groups, whose integrands are nearly Gaussian: few points suffice).
MAX_POINTS = 2e7
MIN_NODES = 5
SIGMA_FLOOR = math.log(1e-4)  # log σ below which σ̂ = 0 is tried (its effect ~σ² on ll)
_SIGMA_START = math.log(0.5)
_SECOND = {frozenset(["s"]): "d_ss", frozenset(["eta"]): "d_eta_eta",
           frozenset(["s", "eta"]): "d_s_eta"}  # fmt: skip
_MODE_TOL = 1e-11  # largest Newton step of a group's mode (the modes are O(1))
_MODE_ITER = 100
# A full Newton step of a group's mode below _TRUST is taken without checking that h rises
# (the curvature is negative definite there and the quadratic model exact to ~_TRUST); one
# below _QUADRATIC ends the search (the error after it is ~its square). Per descent step this
# saves most of the mode search's evaluations once the modes are warm-started.
_TRUST = 1e-3
_QUADRATIC = 1e-6
# Points per part of the rule the search starts on: its optimum is within ~1e-4 SE of the
# full rule's, so the full rule then needs one or two Newton steps (3.0 s -> ~1 s per fit
# with two random parts, 900 points, on Salamanders).
_COARSE = 10
_MAX_MOVE = 2.0  # largest change of a linear predictor or log σ in one outer step
_HALVINGS = 40
# Profile limits in log σ: brentq's tolerance (the profile deviance rises ~15 per unit of
# log σ at a 95% limit on Salamanders, so it meets its cutoff to ~1.5e-5), and the largest σ
# an upper limit is searched to.
_PROFILE_XTOL = 1e-6
_PROFILE_CAP = math.log(1e3)


@dataclass(frozen=True, eq=False)
class MixedProblem:
    """One family's data with groups, as float64 torch tensors (build with `mixed_problem`).

    Attributes:
        family: the `Family`; parts: the random parts, a sub-tuple of `PARTS`.
        X, Z, y, lgy, zero, w, ox, oz: the rows (Z has no columns without a zero part).
        groups: (n,) int64 group index in 0..G-1; G: the number of groups.
    """

    family: Family
    parts: tuple[str, ...]
    X: torch.Tensor
    Z: torch.Tensor
    y: torch.Tensor
    lgy: torch.Tensor
    zero: torch.Tensor
    w: torch.Tensor
    ox: torch.Tensor
    oz: torch.Tensor
    groups: torch.Tensor
    G: int
    data: FitData

    @property
    def q(self) -> int:
        return self.Z.shape[-1]

    @property
    def p(self) -> int:
        return self.X.shape[-1]

    @property
    def n(self) -> int:
        return self.y.shape[-1]

    @property
    def stacked(self) -> bool:
        """Whether each fit has its own rows (`stack_problems`): row tensors (B, n, ...)."""
        return self.y.dim() == 2

    def rows_view(self, v: torch.Tensor, extra: int) -> torch.Tensor:
        """A row tensor (n,) or (B, n) as (1 or B, n) + `extra` trailing unit axes."""
        return v.reshape((v.shape[0] if v.dim() == 2 else 1, -1) + (1,) * extra)

    def take(self, keep: torch.Tensor) -> MixedProblem:
        """The fits `keep` of a stacked problem (itself when the rows are shared)."""
        if not self.stacked:
            return self
        fields = ("X", "Z", "y", "lgy", "zero", "w", "ox", "oz")
        return dataclasses.replace(self, **{f: getattr(self, f).index_select(0, keep)
                                            for f in fields})  # fmt: skip

    @property
    def k_fixed(self) -> int:
        return self.q + self.p + int(self.family.dispersion)

    @property
    def d(self) -> int:
        return len(self.parts)


def mixed_problem(fam, data: FitData, groups, parts) -> MixedProblem:
    """A `MixedProblem`: `groups` (n,) any labels (codes in order of first appearance).

    Raises:
        ValueError: unknown or repeated parts, a zero part on a family without one, groups of
            the wrong length, fewer than two groups, or every group of size one.
    """
    fam = family(fam)
    parts = tuple(parts)
    if not parts or len(set(parts)) != len(parts) or not set(parts) <= set(PARTS):
        raise ValueError(f"random parts must be some of {PARTS}, got {parts!r}")
    parts = tuple(p for p in PARTS if p in parts)
    if "zero" in parts and fam.zero is None:
        raise ValueError(f"family {fam.name!r} has no zero part for a random intercept")
    labels = np.asarray(groups)
    if labels.shape != (data.n,):
        raise ValueError(f"groups must have shape ({data.n},), got {labels.shape}")
    keep = data.weights > 0
    data = data.rows(keep)
    _, first, codes = np.unique(labels[keep], return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))  # codes in order of first appearance
    codes = order[codes]
    G = len(first)
    if G < 2:
        raise ValueError(f"a random intercept needs at least two groups, got {G}")
    if np.bincount(codes, minlength=G).max() < 2:
        raise ValueError("every group has one row: a random intercept is not identifiable")
    if fam.zero is not None and data.Z.shape[1] == 0:
        raise ValueError(f"family {fam.name!r} needs at least one zero-part column in Z")

    def t(a):
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))

    Z = data.Z if fam.zero is not None else data.Z[:, :0]
    y = t(data.y)
    return MixedProblem(fam, parts, t(data.X), t(Z), y, torch.lgamma(y + 1), y == 0,
                        t(data.weights), t(data.offset_x), t(data.offset_z),
                        torch.from_numpy(codes.astype(np.int64)), G, data)  # fmt: skip


def stack_problems(problems: list[MixedProblem], index) -> MixedProblem:
    """One problem whose fit b has the rows of `problems[index[b]]`: datasets of one design
    (family, random parts, groups and sizes) fitted in one batch. Row tensors become
    (B, n, ...); the group index stays shared. `problems[0].data` is kept (for the oracle's
    row-wise helpers, which a stacked problem does not use).

    Raises:
        ValueError: the problems differ in family, parts, columns or groups.
    """
    first = problems[0]
    for other in problems[1:]:
        same = (other.family.name == first.family.name and other.parts == first.parts
                and other.X.shape == first.X.shape and other.Z.shape == first.Z.shape
                and torch.equal(other.groups, first.groups))  # fmt: skip
        if not same:
            raise ValueError("stacked problems must share family, parts, columns and groups")
    idx = torch.from_numpy(np.array(index, dtype=np.int64))
    fields = ("X", "Z", "y", "lgy", "zero", "w", "ox", "oz")
    return dataclasses.replace(first, **{f: torch.stack([getattr(p, f) for p in problems])
                                         .index_select(0, idx) for f in fields})  # fmt: skip


def default_nodes(rows: int, d: int) -> int:
    """`NODES[d]`, fewer where rows x K^d would pass `MAX_POINTS` (never below `MIN_NODES`)."""
    fit = int((MAX_POINTS / max(rows, 1)) ** (1 / d))
    return max(MIN_NODES, min(NODES[d], fit))


@functools.lru_cache(maxsize=32)
def hermite_rule(nodes: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The product Gauss–Hermite rule in d dimensions: points (M, d) and log(w_m) + |x_m|²."""
    x, w = np.polynomial.hermite.hermgauss(nodes)
    grids = np.meshgrid(*[x] * d, indexing="ij")
    points = np.stack([g.ravel() for g in grids], axis=1)
    logw = sum(np.log(np.meshgrid(*[w] * d, indexing="ij")[r].ravel()) for r in range(d))
    return torch.from_numpy(points), torch.from_numpy(logw + (points**2).sum(axis=1))


def _predictors(mp: MixedProblem, theta: torch.Tensor):
    """(s, η) (B, n), log α (B,) or None, log σ (B, d) of parameters `theta` (B, k)."""
    q, p = mp.q, mp.p
    # Elementwise products, not a matrix product: a fit's predictors then do not depend on
    # how many fits share the batch (BLAS picks its kernel, hence its rounding, by shape).
    s = (theta[:, None, :q] * mp.Z).sum(-1) + mp.oz if q else mp.oz.expand(theta.shape[0], -1)
    eta = (theta[:, None, q : q + p] * mp.X).sum(-1) + mp.ox
    a = theta[:, q + p] if mp.family.dispersion else None
    return s, eta, a, theta[:, mp.k_fixed :]


def _shifted(mp: MixedProblem, s, eta, u):
    """The predictors (B, n) shifted by the random intercepts u (B, G, ..., d): (B, n, ...)."""
    rows = u[:, mp.groups]
    extra = (1,) * (rows.dim() - 3)  # node axes
    s = s.reshape(s.shape + extra)
    eta = eta.reshape(eta.shape + extra)
    shift = {part: rows[..., r] for r, part in enumerate(mp.parts)}
    return s + shift.get("zero", 0.0), eta + shift.get("count", 0.0)


def _group_sum(mp: MixedProblem, v: torch.Tensor) -> torch.Tensor:
    """Σ over each group's rows of w·v, v (B, n, ...) -> (B, G, ...)."""
    w = mp.rows_view(mp.w, v.dim() - 2)
    out = torch.zeros((v.shape[0], mp.G) + v.shape[2:], dtype=v.dtype)
    return out.index_add(1, mp.groups, w * v)


def _inner(mp: MixedProblem, s, eta, a, log_sigma, u, order: int):
    """h_i(u) per fit and group (B, G, ...), and its gradient (B, G, d) and Hessian
    (B, G, d, d) when order 2; u (B, G, ..., d)."""
    ss, ee = _shifted(mp, s, eta, u)
    y, lgy, zero = (mp.rows_view(v, ee.dim() - 2) for v in (mp.y, mp.lgy, mp.zero))
    if a is not None:
        a = a.reshape((-1,) + (1,) * (ee.dim() - 1))
    t = family_terms(mp.family.name, y, lgy, zero, ss, ee, a, order=order)
    prec = torch.exp(-2 * log_sigma).reshape((-1,) + (1,) * (u.dim() - 2) + (mp.d,))  # 1/σ²
    h = _group_sum(mp, t.ll) - 0.5 * (u * u * prec).sum(-1)
    if order == 0:
        return h, None, None
    keys = [KEY[p] for p in mp.parts]
    grad = torch.stack([_group_sum(mp, getattr(t, f"d_{k}")) for k in keys], -1) - u * prec
    rows = []
    for i, ki in enumerate(keys):
        row = []
        for j, kj in enumerate(keys):
            value = _group_sum(mp, getattr(t, _SECOND[frozenset((ki, kj))]))
            row.append(value - prec[..., i] if i == j else value)
        rows.append(torch.stack(row, -1))
    return h, grad, torch.stack(rows, -2)


def _newton_step(mp, s, eta, a, log_sigma, u):
    """One Newton step of every group's mode (with the graph, if any)."""
    _, g, H = _inner(mp, s, eta, a, log_sigma, u, 2)
    return u + torch.linalg.solve_ex(-H, g.unsqueeze(-1))[0].squeeze(-1)


def _batch(theta) -> tuple[torch.Tensor, bool]:
    """`theta` as float64 (B, k), and whether it was one vector (k,)."""
    theta = torch.as_tensor(theta, dtype=torch.float64)
    return (theta.unsqueeze(0), True) if theta.dim() == 1 else (theta, False)


def modes(mp: MixedProblem, theta, start: torch.Tensor | None = None) -> torch.Tensor:
    """Each group's mode û of h_i at `theta` ((k,) -> (G, d); (B, k) -> (B, G, d)), without a
    graph: damped Newton, all fits and groups at once; a group whose Newton direction does
    not rise takes a prior-scaled gradient step, halved until h_i rises."""
    theta, single = _batch(theta)
    with torch.no_grad():
        s, eta, a, log_sigma = _predictors(mp, theta)
        B = theta.shape[0]
        if start is None:
            u = torch.zeros(B, mp.G, mp.d, dtype=torch.float64)
        else:
            u = start.reshape(B, mp.G, mp.d).clone()
        var = torch.exp(2 * log_sigma).unsqueeze(1)  # (B, 1, d)
        found = torch.zeros(B, mp.G, dtype=torch.bool)
        for _ in range(_MODE_ITER):
            h, g, H = _inner(mp, s, eta, a, log_sigma, u, 2)
            L, info = torch.linalg.cholesky_ex(-H)
            ok = (info == 0).unsqueeze(-1)
            safe = torch.where(ok.unsqueeze(-1), L, torch.eye(mp.d, dtype=u.dtype))
            step = torch.cholesky_solve(g.unsqueeze(-1), safe).squeeze(-1)
            newton = (ok & step.isfinite()).all(-1)
            step = torch.where(newton.unsqueeze(-1), step, var * g)
            size = step.abs().amax(-1)
            t = torch.ones(B, mp.G, 1, dtype=u.dtype)
            # Groups whose mode is found (and fits at non-finite values) stay as they are:
            # each group's iterations then do not depend on the other fits of the batch.
            alive = h.isfinite() & ~found
            trusted = newton & (size < _TRUST)  # in Newton's quadratic region: h rises
            checked = alive & ~trusted
            for _ in range(_HALVINGS if bool(checked.any()) else 0):
                h_new = _inner(mp, s, eta, a, log_sigma, u + t * step, 0)[0]
                worse = ~(h_new >= h - 1e-12 * h.abs().clamp(min=1)) & checked
                if not worse.any():
                    break
                t = torch.where(worse.unsqueeze(-1), t / 2, t)
            move = torch.where(alive.unsqueeze(-1), t * step, 0.0)
            u = u + move
            # Found: the last move was negligible, or a full Newton step so small that the
            # next would be ~its square (quadratic convergence: within ~1e-12 of the mode).
            found |= ~(move.abs().amax(-1) >= _MODE_TOL) | (trusted & (size < _QUADRATIC))
            if bool(found.all()):
                break
    return u[0] if single else u


def marginal_loglik(
    mp: MixedProblem,
    theta,
    nodes: int | None = None,
    start: torch.Tensor | None = None,
    graph_steps: int = 2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The adaptive Gauss–Hermite marginal log-likelihood Σ_i log L_i at `theta`, and the
    groups' modes: a scalar and (G, d) for one vector (k,), (B,) and (B, G, d) for a batch of
    fits (B, k) (each fit's value depends on its own parameters only).

    Args:
        mp: the `MixedProblem`; theta: parameters (float64); nodes: points per random part
            (1 is the Laplace approximation; default `default_nodes`); start: modes to start the
            search from; graph_steps: Newton steps of the modes taken with the graph (1 gives
            exact first derivatives, 2 exact second derivatives).
    """
    theta, single = _batch(theta)
    nodes = nodes or default_nodes(mp.n, mp.d)
    u0 = modes(mp, theta, None if start is None else start.reshape(-1, mp.G, mp.d))
    s, eta, a, log_sigma = _predictors(mp, theta)
    u = u0
    for _ in range(graph_steps):  # carries dû/dθ (and d²û/dθ²) at the mode
        u = _newton_step(mp, s, eta, a, log_sigma, u)
    at, logw, logdet, failed = _placed(mp, s, eta, a, log_sigma, u, nodes, single)
    h = _inner(mp, s, eta, a, log_sigma, at, 0)[0]  # (B, G, M)
    ll = _total(mp, logdet, torch.logsumexp(logw + h, dim=-1), log_sigma, failed)
    return (ll[0], u0[0]) if single else (ll, u0)


def _placed(mp: MixedProblem, s, eta, a, log_sigma, u, nodes: int, single: bool):
    """The quadrature points placed at the modes u (B, G, d) with each group's scale: points
    (B, G, M, d), log(w_m) + |x_m|², log|L_i| (B, G) and which fits failed (B,)."""
    _, _, H = _inner(mp, s, eta, a, log_sigma, u, 2)
    cov, bad = torch.linalg.inv_ex(-H)
    chol, info = torch.linalg.cholesky_ex(cov)  # (B, G, d, d): each group's scale
    failed = ((bad != 0) | (info != 0)).any(-1)  # (B,): a fit at non-finite or wild values
    if single and bool(failed.any()):
        raise torch.linalg.LinAlgError("a group's curvature is not negative definite")
    chol = torch.where(failed[:, None, None, None], torch.eye(mp.d, dtype=chol.dtype), chol)
    points, logw = hermite_rule(nodes, mp.d)
    scaled = (chol.unsqueeze(2) * points[:, None, :]).sum(-1)  # (B, G, M, d), as above
    logdet = torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    return u.unsqueeze(2) + math.sqrt(2) * scaled, logw, logdet, failed


def _total(mp: MixedProblem, logdet, lse, log_sigma, failed) -> torch.Tensor:
    """Σ_i log L_i (B,) from log|L_i| and log Σ_m w_m e^{|x_m|²} e^{h_i} (B, G)."""
    norm = (0.5 * math.log(2 * math.pi) + log_sigma).sum(-1, keepdim=True)  # (B, 1)
    per_group = 0.5 * mp.d * math.log(2) + logdet + lse - norm
    return torch.where(failed, torch.nan, per_group.sum(-1))


def loglik_and_score(mp: MixedProblem, theta, nodes: int | None = None,
                     start: torch.Tensor | None = None):  # fmt: skip
    """The marginal log-likelihood of a batch of fits (B, k) and its gradient with the
    quadrature points held where the modes put them, without autograd (the descent's).

    With the points fixed, ∂ log L_i/∂θ = Σ_m p_im ∂h_i(u_im)/∂θ, p_im the points' normalised
    weights: per row Σ_m p ℓ_η (and ℓ_s, ℓ_a) times its design, and u_r²/σ_r² − 1 per group
    for log σ_r. The points move with θ through the modes and scales, but the quadrature
    value hardly depends on where they sit (it would not at all were the rule exact), so this
    differs from the exact gradient of `marginal_loglik` by how much the quadrature depends on
    where its points sit (1e-12 relative on Salamanders, up to 4e-4 on groups of 3-14 rows far
    from the optimum); where the oracle stops it vanishes to within 2.5e-6 SE
    (tests/core/test_mixed_engine.py). One order-1 evaluation per row and point, no graph:
    per step as fast as autograd with one random part (0.85-1.06x), 1.17x with two
    (`benchmarks/bench_mixed.py --steps`).

    Returns:
        (log-likelihoods (B,), gradients (B, k), modes (B, G, d)).
    """
    theta, _ = _batch(theta)
    nodes = nodes or default_nodes(mp.n, mp.d)
    u = modes(mp, theta, None if start is None else start.reshape(-1, mp.G, mp.d))
    with torch.no_grad():
        s, eta, a, log_sigma = _predictors(mp, theta)
        at, logw, logdet, failed = _placed(mp, s, eta, a, log_sigma, u, nodes, False)
        ss, ee = _shifted(mp, s, eta, at)  # (B, n, M)
        y, lgy, zero = (mp.rows_view(v, 1) for v in (mp.y, mp.lgy, mp.zero))
        t = family_terms(mp.family.name, y, lgy, zero, ss, ee,
                         None if a is None else a.reshape(-1, 1, 1), order=1)  # fmt: skip
        prec = torch.exp(-2 * log_sigma)  # (B, d)
        h = _group_sum(mp, t.ll) - 0.5 * (at * at * prec[:, None, None, :]).sum(-1)
        weighted = logw + h
        lse = torch.logsumexp(weighted, dim=-1)
        p = torch.exp(weighted - lse.unsqueeze(-1))  # (B, G, M)
        rows = p[:, mp.groups]  # (B, n, M): each row's group's point weights
        w = mp.rows_view(mp.w, 0)

        def per_row(d):  # Σ_m p ℓ_k, weighted: (B, n)
            return w * (rows * d).sum(-1)

        grads = []
        if mp.q:
            grads.append((per_row(t.d_s).unsqueeze(-1) * mp.Z).sum(1))
        grads.append((per_row(t.d_eta).unsqueeze(-1) * mp.X).sum(1))
        if mp.family.dispersion:
            grads.append(per_row(t.d_a).sum(1, keepdim=True))
        spread = (p.unsqueeze(-1) * at * at).sum(2) * prec.unsqueeze(1)  # (B, G, d)
        grads.append((spread - 1.0).sum(1))
        ll = _total(mp, logdet, lse, log_sigma, failed)
        grad = torch.cat(grads, -1)
        grad = torch.where(failed.unsqueeze(-1), torch.nan, grad)
    return ll, grad, u


STATUSES = ("converged", "boundary", "max_iter", "singular", "separated")


@dataclass(frozen=True, eq=False)
class MixedFit:
    """An oracle fit of a count GLMM.

    Attributes:
        family, parts: the model; nodes: quadrature points per random part.
        params: (k,) [γ, β, (log α), log σ per part]; log σ is −inf where σ̂ = 0 (boundary).
        q: zero-part coefficients; cov: (k, k) inverse observed information of the quadrature
            likelihood (NaN rows for a σ̂ = 0 and where singular).
        loglik: the marginal log-likelihood; modes: (G, d) conditional modes of the random
            intercepts (zero in a part with σ̂ = 0); iterations: outer Newton steps;
        status: one of STATUSES; message: one line.
    """

    family: Family
    parts: tuple[str, ...]
    nodes: int
    params: np.ndarray
    q: int
    cov: np.ndarray
    loglik: float
    modes: np.ndarray
    iterations: int
    status: str
    message: str

    @property
    def se(self) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return np.sqrt(np.diag(self.cov))

    @property
    def n_params(self) -> int:
        """Parameters estimated (a log σ at the boundary counted too)."""
        return len(self.params)

    @property
    def log_sigma(self) -> dict[str, float]:
        k = len(self.params) - len(self.parts)
        return {part: float(self.params[k + r]) for r, part in enumerate(self.parts)}

    @property
    def sigma(self) -> dict[str, float]:
        return {part: math.exp(v) for part, v in self.log_sigma.items()}


def _value_grad(mp, theta_np, nodes, start):
    theta = torch.tensor(theta_np, dtype=torch.float64, requires_grad=True)
    ll, u = marginal_loglik(mp, theta, nodes, start, graph_steps=1)  # a gradient needs one
    (grad,) = torch.autograd.grad(ll, theta)
    return float(ll.detach()), grad.numpy(), u


def hessian(mp: MixedProblem, theta_np, nodes: int | None = None, start=None) -> np.ndarray:
    """The exact Hessian (k, k) of `marginal_loglik` at `theta_np` (autograd, float64)."""
    u = modes(mp, torch.as_tensor(theta_np, dtype=torch.float64), start)

    def f(theta):
        return marginal_loglik(mp, theta, nodes, u)[0]

    theta = torch.tensor(theta_np, dtype=torch.float64)
    return torch.autograd.functional.hessian(f, theta).numpy()


def information_se(mp: MixedProblem, theta_np, nodes: int | None = None) -> np.ndarray:
    """Standard errors from the observed information of the quadrature likelihood at any
    point `theta_np` (k,): NaN where it is singular or a group's curvature is not negative
    definite there (the fixed-effects oracle's rule, `terms.inverse`)."""
    k = len(theta_np)
    try:
        H = hessian(mp, theta_np, nodes)
    except torch.linalg.LinAlgError:
        return np.full(k, np.nan)
    cov = inverse(-H)
    if cov is None:
        return np.full(k, np.nan)
    diag = np.diag(cov)
    with np.errstate(invalid="ignore"):
        return np.sqrt(np.where(diag > 0, diag, np.nan))


def _move(mp: MixedProblem, step: np.ndarray) -> float:
    q, p = mp.q, mp.p
    moves = [np.abs(mp.data.X @ step[q : q + p]).max(initial=0)]
    if q:
        moves.append(np.abs(mp.data.Z[:, :q] @ step[:q]).max(initial=0))
    moves.append(np.abs(step[q + p :]).max(initial=0))
    return float(max(moves))


def fit_mixed(fam, data: FitData, groups, parts, *, nodes: int | None = None, start=None,
              max_iter: int = 200) -> MixedFit:  # fmt: skip
    """Maximum marginal likelihood of a count GLMM by damped Newton on the exact (autograd)
    gradient and Hessian of the adaptive quadrature log-likelihood, in float64.

    Start: the fixed-effects oracle fit (`fit_model`) and σ = 0.5 (or `start`). A log σ that
    falls below `SIGMA_FLOOR` is tried at σ = 0: the model without that random part is fitted,
    and if its log-likelihood is not below the current one the fit ends there (status
    "boundary", log σ = −inf); the LR test of σ = 0 then is 0.

    Args:
        fam: a family; data: its `FitData`; groups: (n,) group labels; parts: the random
            parts (some of `PARTS`); nodes: quadrature points per part; start: optional (k,)
            parameters; max_iter: outer iteration limit.

    Returns:
        The `MixedFit`.
    """
    mp = mixed_problem(fam, data, groups, parts)
    nodes = nodes or default_nodes(len(mp.y), mp.d)
    if nodes > _COARSE:  # most iterations on a coarse rule, the last ones on the full one
        coarse = _fit(mp, _COARSE, start, max_iter)
        if coarse.status == "converged":
            start = coarse.params
    return _fit(mp, nodes, start, max_iter)


def _fit(mp: MixedProblem, nodes: int, start, max_iter: int,
         hold: dict[int, float] | None = None) -> MixedFit:  # fmt: skip
    """Damped Newton from `start` (default: `fit_model` and σ = 0.5); `hold` {index: value}
    holds some log σ (indices k_fixed..k-1) at finite values: the steps, the σ = 0 rule and
    the covariance (NaN rows there) then concern the other coordinates only."""
    k = mp.k_fixed + mp.d
    hold = dict(hold or {})
    if any(not mp.k_fixed <= i < k or not math.isfinite(v) for i, v in hold.items()):
        raise ValueError(f"hold must map log sigma indices {mp.k_fixed}..{k - 1} to finite "
                         f"values, got {hold!r}")  # fmt: skip
    free = np.array([i for i in range(k) if i not in hold], dtype=int)
    if start is None:
        base = fit_model(mp.family, mp.data)
        if base.status in ("separated", "singular"):
            return _result(mp, nodes, np.r_[base.params, [np.nan] * mp.d], None, base.loglik,
                           0, base.status, f"fixed effects: {base.message}")  # fmt: skip
        fixed = np.nan_to_num(base.params, neginf=math.log(1e-8))
        theta = np.r_[fixed, [_SIGMA_START] * mp.d]
    else:
        theta = np.asarray(start, dtype=float).copy()
        if theta.shape != (k,) or not np.isfinite(theta).all():
            raise ValueError(f"start must be {k} finite values, got {np.shape(start)}")
    theta[list(hold)] = list(hold.values())
    ll, grad, u = _value_grad(mp, theta, nodes, None)
    for it in range(max_iter):
        H = hessian(mp, theta, nodes, u)
        step = np.zeros(k)  # held coordinates do not move
        step[free], dec = newton_direction(grad[free], H[np.ix_(free, free)])
        if dec <= DECREMENT_TOL:
            return _result(mp, nodes, theta, H, ll, it, "converged",
                           f"converged: Newton decrement {dec:.1e}", u, hold)  # fmt: skip
        move = _move(mp, step)
        if move > _MAX_MOVE:
            step = step * (_MAX_MOVE / move)
        slope, t = float(grad @ step), 1.0
        while t > 1e-14:
            new = theta + t * step
            try:
                ll_new, grad_new, u_new = _value_grad(mp, new, nodes, u)
            except torch.linalg.LinAlgError:
                ll_new = -math.inf
            if ll_new >= ll + 1e-4 * t * slope or (dec < 1e-6 and ll_new >= ll - 1e-9):
                break
            t *= 0.5
        else:
            status = "converged" if dec < 1e-6 else "max_iter"
            return _result(mp, nodes, theta, H, ll, it, status,
                           f"line search stalled (decrement {dec:.1e})", u, hold)  # fmt: skip
        theta, ll, grad, u = new, ll_new, grad_new, u_new
        low = [r for r in range(mp.d)
               if mp.k_fixed + r not in hold and theta[mp.k_fixed + r] < SIGMA_FLOOR]  # fmt: skip
        if low:
            return _boundary(mp, nodes, theta, ll, low, it + 1, max_iter, hold)
    return _result(mp, nodes, theta, hessian(mp, theta, nodes, u), ll, max_iter, "max_iter",
                   f"no convergence in {max_iter} iterations", u, hold)  # fmt: skip


def _boundary(mp, nodes, theta, ll, low, iterations, max_iter, hold=None) -> MixedFit:
    """σ̂ = 0 for the parts `low`: fit without them and put log σ = −inf there (the held log
    σ of `hold`, never among `low`, stay held in the smaller model)."""
    keep = tuple(p for r, p in enumerate(mp.parts) if r not in low)
    kf = mp.k_fixed
    hold = hold or {}
    if keep:
        kept = [r for r in range(mp.d) if r not in low]
        sub_hold = {kf + j: hold[kf + r] for j, r in enumerate(kept) if kf + r in hold}
        sub = _fit(dataclasses.replace(mp, parts=keep), nodes, np.r_[theta[:kf],
                   [theta[kf + r] for r in kept]], max_iter, sub_hold)  # fmt: skip
        fixed, sigmas, cov_sub, ll_sub = sub.params[:kf], sub.params[kf:], sub.cov, sub.loglik
        modes_sub = sub.modes
    else:
        base = fit_model(mp.family, mp.data, start=theta[:kf])
        fixed, sigmas, cov_sub, ll_sub = base.params, np.array([]), base.cov, base.loglik
        modes_sub = np.zeros((mp.G, 0))
    if ll_sub < ll - 1e-6:  # not the maximum after all: an interior optimum with tiny σ
        text = f"log sigma fell below {SIGMA_FLOOR:.1f} but sigma = 0 fits worse"
        H = hessian(mp, theta, nodes)
        return _result(mp, nodes, theta, H, ll, iterations, "max_iter", text, hold=hold)
    params = np.r_[fixed, np.full(mp.d, -np.inf)]
    modes_all = np.zeros((mp.G, mp.d))
    idx = [r for r in range(mp.d) if r not in low]
    params[[kf + r for r in idx]] = sigmas
    modes_all[:, idx] = modes_sub
    k = len(params)
    cov = np.full((k, k), np.nan)
    keep_idx = list(range(kf)) + [kf + r for r in idx]
    cov[np.ix_(keep_idx, keep_idx)] = cov_sub
    names = ", ".join(mp.parts[r] for r in low)
    text = f"sigma of the {names} part at 0 (boundary)"
    return MixedFit(mp.family, mp.parts, nodes, params, mp.q, cov, ll_sub, modes_all,
                    iterations, "boundary", text)  # fmt: skip


def _result(mp, nodes, theta, H, ll, iterations, status, message, u=None,
            hold=None) -> MixedFit:  # fmt: skip
    k = len(theta)
    cov = np.full((k, k), np.nan)
    if H is not None:
        free = [i for i in range(k) if i not in (hold or {})]  # held: no information
        inv = inverse(-H[np.ix_(free, free)])  # the fixed-effects oracle's rule when singular
        if inv is not None:
            cov[np.ix_(free, free)] = inv
        elif status == "converged":
            status, message = "singular", f"singular information at the estimate; {message}"
    if u is not None:
        u = modes(mp, torch.as_tensor(theta, dtype=torch.float64), u).numpy()
    else:
        u = np.full((mp.G, mp.d), np.nan)
    return MixedFit(mp.family, mp.parts, nodes, np.asarray(theta, dtype=float), mp.q, cov,
                    float(ll), u, iterations, status, message)  # fmt: skip


def sigma_test(fit: MixedFit, data: FitData, groups, part: str,
               without: float | None = None) -> Test:  # fmt: skip
    """The likelihood-ratio test of σ = 0 for the random intercept of `part` in `fit`.

    σ = 0 is on the boundary of σ >= 0, so T = 2(ℓ_with − ℓ_without) follows ½χ²₀ + ½χ²₁
    under the null (Self & Liang 1987): p = ½ P(χ²₁ >= T), 1 at T = 0.

    Args:
        without: the log-likelihood of the model without the part, when the caller has it
            (else it is refitted).

    Returns:
        `model_tests.Test` (T, p, log10 p).
    """
    if part not in fit.parts:
        raise ValueError(f"the fit has no random intercept in the {part} part")
    rest = tuple(p for p in fit.parts if p != part)
    if without is None and rest:
        without = fit_mixed(fit.family, data, groups, rest, nodes=fit.nodes).loglik
    elif without is None:
        without = fit_model(fit.family, data).loglik
    stat = max(0.0, 2.0 * (fit.loglik - without))
    return Test(stat, *boundary_p(stat))


def sigma_profile(fit: MixedFit, data: FitData, groups, part: str,
                  level: float = 0.95) -> tuple[float, float]:  # fmt: skip
    """The profile-likelihood interval for σ (not log σ) of the random intercept of `part`.

    {σ : 2(ℓ̂ − ℓ_p(σ)) <= c}, c the χ²₁ quantile at `level` (the usual interval; the same
    on the σ and log σ scales, and not symmetric on either), where ℓ_p(σ) is the marginal
    log-likelihood maximised over every other parameter with log σ of `part` held (`_fit`
    with `hold`, `fit.nodes` points, warm-started from the profile fit nearest in log σ). Each
    limit: a walk in log σ from σ̂ (first step the Wald half-width on the log scale, then
    doubling) until the profile deviance passes c, then brentq to `_PROFILE_XTOL` in log σ.

    Lower limit exactly 0 when σ̂ = 0 (status "boundary" for the part) or when the model
    without the part is within c of ℓ̂ (`sigma_test`'s T <= c); a limit found below
    σ = 1e-4 (`SIGMA_FLOOR`) is reported as 0. The LR law at σ = 0 is the mixture ½χ²₀ + ½χ²₁,
    not χ²₁: with c from χ²₁ the interval excludes 0 exactly when `sigma_test`'s p-value is
    below (1 − level)/2 (0.025 at 95%), so near 0 it is conservative; no mixture correction is
    made. Upper limit: math.inf when the deviance stays below c up to σ = 1e3. One interval
    on Salamanders (ZIP, site intercept in the count part): 12 profile fits of 1-4 Newton
    steps each, about 1 s.

    Args:
        fit: a `fit_mixed` result with status "converged" or "boundary"; data, groups: the
            data and group labels it was fitted to; part: one of `fit.parts`; level: the
            coverage, in (0, 1).

    Returns:
        (lower, upper) for σ.

    Raises:
        ValueError: a part the fit does not have, a fit of another status, a bad level.
        RuntimeError: a profile fit that does not converge.
    """
    if part not in fit.parts:
        raise ValueError(f"the fit has no random intercept in the {part} part")
    if fit.status not in ("converged", "boundary"):
        raise ValueError(f"a profile needs a converged or boundary fit, got {fit.status!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    mp = mixed_problem(fit.family, data, groups, fit.parts)
    index = mp.k_fixed + fit.parts.index(part)
    cutoff = float(stats.chi2.ppf(level, 1))
    best = float(fit.params[index])
    starts = {}  # log σ -> the profile fit's parameters there
    excess = {}  # log σ -> 2(ℓ̂ − ℓ_p) − c
    if math.isfinite(best):
        starts[best], excess[best] = fit.params, -cutoff

    def deviance_excess(log_sigma: float) -> float:
        log_sigma = float(log_sigma)
        if log_sigma not in excess:
            near = min(starts, key=lambda v: abs(v - log_sigma), default=None)
            start = fit.params if near is None else starts[near]
            start = np.where(np.isfinite(start), start, _SIGMA_START)  # σ = 0 elsewhere
            prof = _fit(mp, fit.nodes, start, 200, hold={index: log_sigma})
            if prof.status not in ("converged", "boundary"):
                raise RuntimeError(f"profile fit at log sigma {log_sigma:.4g}: {prof.message}")
            starts[log_sigma] = prof.params
            excess[log_sigma] = 2.0 * (fit.loglik - prof.loglik) - cutoff
        return excess[log_sigma]

    def crossing(x: float, step: float, end: float) -> float | None:
        """From x, steps (doubling, up to `end`) to the first point on the other side of c,
        then brentq in between; None if the side never changes."""
        outside = deviance_excess(x) >= 0
        while x != end:
            nxt = min(x + step, end) if step > 0 else max(x + step, end)
            if (deviance_excess(nxt) >= 0) != outside:
                lo, hi = sorted((x, nxt))
                return optimize.brentq(deviance_excess, lo, hi, xtol=_PROFILE_XTOL)
            x, step = nxt, 2.0 * step
        return None

    if not math.isfinite(best):  # σ̂ = 0: the upper limit from a first guess of σ = 0.5
        first = _SIGMA_START
        if deviance_excess(first) < 0:
            upper = crossing(first, 1.0, _PROFILE_CAP)
        else:
            upper = crossing(first, -1.0, SIGMA_FLOOR)
            upper = -math.inf if upper is None else upper
        return 0.0, math.inf if upper is None else math.exp(upper)
    se = float(fit.se[index])
    step = min(max(math.sqrt(cutoff) * se, 0.01), 2.0) if math.isfinite(se) else 1.0
    upper = crossing(best, step, _PROFILE_CAP)
    lower = None
    if sigma_test(fit, data, groups, part).statistic > cutoff:
        lower = crossing(best, -step, SIGMA_FLOOR)
    return (0.0 if lower is None else math.exp(lower),
            math.inf if upper is None else math.exp(upper))  # fmt: skip
