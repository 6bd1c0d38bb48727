"""Tests for pipeline.core.laws.count_dists (and the sampler in count_sampling): log-pmf against
scipy
and mpmath, identities, gradients, moments, and goodness of fit of both samplers.

Sampling tests use fixed seeds, so they are deterministic; each chi-square asks p > 1e-4, so
under a correct sampler a fresh seed would fail a given test with probability 1e-4.
"""

import itertools
import math

import mpmath
import numpy as np
import pytest
import torch
from conftest import pooled_chisquare_p
from scipy import stats

from pipeline.core.laws.count_dists import (
    HurdleNegativeBinomial,
    HurdlePoisson,
    NegativeBinomial2,
    ZeroInflatedNegativeBinomial,
    family_log_prob,
    sample_counts,
)
from pipeline.core.laws.count_terms import FAMILIES, has_dispersion, zero_part
from pipeline.core.laws.distributions import ZeroInflatedPoisson

F64 = torch.float64
EPS = float(torch.finfo(F64).eps)
INF = math.inf


def _tensor(values, dtype=F64):
    return torch.as_tensor(values, dtype=dtype)


def _grid(counts, logits, mus, alphas, dtype=F64):
    """Flat tensors (y, s, η, a) over the product of the four lists."""
    logs = ([math.log(m) for m in mus], [math.log(a) if a > 0 else -INF for a in alphas])
    rows = torch.tensor(list(itertools.product(counts, logits, *logs)), dtype=F64)
    return [t.to(dtype) for t in rows.unbind(1)]


def _log_prob(family, y, s, eta, a):
    return family_log_prob(family, y, zero_logits=s, log_mean=eta, log_dispersion=a)


# --- references ----------------------------------------------------------------------------


def _scipy_log_prob(family, y, s, mu, alpha):
    """log P(Y = y) composed by hand from scipy's nbinom (n = 1/α, p = 1/(1 + αμ)) / poisson."""
    if has_dispersion(family):
        count = stats.nbinom(1 / alpha, 1 / (1 + alpha * mu))
    else:
        count = stats.poisson(mu)
    log_f, log_f0 = count.logpmf(y), count.logpmf(0)
    log_on, log_off = -np.logaddexp(0, -s), -np.logaddexp(0, s)  # log σ(s), log σ(−s)
    part = zero_part(family)
    if part is None:
        return log_f
    if part == "inflation":
        return np.where(y == 0, np.logaddexp(log_on, log_off + log_f0), log_off + log_f)
    return np.where(y == 0, log_off, log_on + log_f - np.log(-np.expm1(log_f0)))


def _mp_log_sigmoid(x):
    return -mpmath.log1p(mpmath.exp(-x))


def _mp_log_prob(family, y, s, eta, a):
    """log P(Y = y) at 50 digits from the exact float inputs (infinite s and a allowed)."""
    mu = mpmath.exp(eta)
    if has_dispersion(family) and a > -INF:
        theta = mpmath.exp(-a)

        def log_f(k):
            lgammas = mpmath.loggamma(k + theta) - mpmath.loggamma(theta) - mpmath.loggamma(k + 1)
            return lgammas - theta * mpmath.log1p(mu / theta) + k * (eta - mpmath.log(theta + mu))
    else:

        def log_f(k):
            return k * eta - mu - mpmath.loggamma(k + 1)

    part = zero_part(family)
    if part is None:
        return log_f(y)
    log_on, log_off = _mp_log_sigmoid(s), _mp_log_sigmoid(-s)
    if part == "inflation" and y == 0:
        return mpmath.log(mpmath.exp(log_on) + mpmath.exp(log_off + log_f(0)))
    if part == "inflation":
        return log_off + log_f(y)
    if y == 0:
        return log_off
    return log_on + log_f(y) - mpmath.log(-mpmath.expm1(log_f(0)))


def _mp_reference(family, y, s, eta, a):
    with mpmath.workdps(50):
        rows = zip(*(t.tolist() for t in (y, s, eta, a)))
        return np.array([float(_mp_log_prob(family, *map(mpmath.mpf, row))) for row in rows])


def _scale(y, s, eta, a, ref):
    """Size of the largest term any of the formulas adds: 1 + |s| + y(1 + |η| + log(1 + y))
    + μ + |ref|, plus θ(3 + |log θ| + log(1 + y + θ)) for the lgamma differences (θ <= 100)."""
    y, s, eta, a, ref = (np.asarray(t, dtype=float) for t in (y, s, eta, a, ref))
    theta = np.minimum(np.exp(-a), 100.0)
    return (
        1
        + np.where(np.isinf(s), 0, np.abs(s))
        + y * (1 + np.abs(eta) + np.log1p(y))
        + np.exp(eta)
        + np.abs(np.where(np.isinf(ref), 0, ref))
        + theta * (3 + np.abs(np.log(theta)) + np.log1p(y + theta))
    )


# --- log_prob accuracy ---------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_log_prob_matches_scipy(family):
    # scipy's nbinom.logpmf subtracts gammaln values up to ~1e3 here: 3e-11 absolute.
    y, s, eta, a = _grid(
        list(range(0, 40)) + [200], [-3.0, 0.0, 2.0], [0.1, 2.0, 30.0], [0.01, 0.5, 3.0]
    )
    expected = _scipy_log_prob(family, y.numpy(), s.numpy(), eta.exp().numpy(), a.exp().numpy())
    actual = _log_prob(family, y, s, eta, a)
    np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("family", FAMILIES)
def test_log_prob_matches_mpmath_at_extremes(family):
    # Every value is a sum of <= ~8 terms no larger than `_scale`, each rounded a few ulps.
    counts, mus = [0, 1, 2, 10, 100, 1e4, 1e5], [1e-6, 1e-2, 1.0, 30.0, 1e4]
    alphas = [1e-14, 1e-4, 1.0, 100.0, 0.0] if has_dispersion(family) else [1.0]
    y, s, eta, a = _grid(counts, [-INF, -30.0, -2.0, 0.0, 2.0, 30.0, INF], mus, alphas)
    expected = _mp_reference(family, y, s, eta, a)
    actual = _log_prob(family, y, s, eta, a).numpy()
    assert np.array_equal(np.isneginf(actual), np.isneginf(expected))
    assert not np.isnan(actual).any() and not np.isposinf(actual).any()
    finite = np.isfinite(expected)
    error = np.abs(actual[finite] - expected[finite])
    scale = _scale(y, s, eta, a, expected)[finite]
    np.testing.assert_array_less(error, 16 * EPS * scale)


@pytest.mark.parametrize("family", FAMILIES)
def test_float32_matches_float64(family):
    # Same (float32-representable) inputs in both dtypes. NB families compute in float64 and
    # round once (1/2 ulp: 6e-8 relative); the Poisson ones work in float32 through
    # zip_log_prob (2e-6, tests/core/test_distributions.py) plus two float32-rounded terms.
    y, s, eta, a = _grid(
        [0, 1, 3, 10, 100, 1e4],
        [-20.0, -2.0, 0.0, 2.0, 20.0],
        [1e-3, 0.5, 5.0, 100.0, 1e4],
        [1e-6, 0.1, 1.0, 10.0],
        torch.float32,
    )
    single = _log_prob(family, y, s, eta, a)
    double = _log_prob(family, y, s.double(), eta.double(), a.double())
    assert single.dtype == torch.float32 and double.dtype == F64
    rtol = 6e-8 if has_dispersion(family) else 2e-6
    np.testing.assert_allclose(single.double().numpy(), double.numpy(), rtol=rtol, atol=rtol)


def test_log_prob_rejects_bad_input():
    eta = torch.zeros(3, dtype=F64)
    with pytest.raises(ValueError, match="unknown family"):
        family_log_prob("negbin", torch.zeros(3), log_mean=eta)
    with pytest.raises(ValueError, match="zero_logits"):
        family_log_prob("zinb", torch.zeros(3), log_mean=eta, log_dispersion=0.0)
    with pytest.raises(ValueError, match="log_dispersion"):
        family_log_prob("nb", torch.zeros(3), log_mean=eta)
    for bad in ([0.0, -1.0, 2.0], [0.0, 1.5, 2.0], [0.0, INF, 1.0], [0.0, math.nan, 1.0]):
        with pytest.raises(ValueError, match="non-negative integer"):
            family_log_prob("poisson", torch.tensor(bad), log_mean=eta)
    # Integer values and python-number parameters are fine; the dtype is torch's default.
    out = family_log_prob(
        "hurdle_nb", torch.arange(3), zero_logits=0.0, log_mean=0.0, log_dispersion=0.0
    )
    assert out.dtype == torch.get_default_dtype() and out.shape == (3,)


# --- identities ----------------------------------------------------------------------------

MEANS = _tensor([[1e-6], [0.3], [4.0], [60.0]])
COUNTS = _tensor([0, 1, 2, 5, 30, 200])


def _nb(mean=MEANS, **zero):
    return dict(mean=mean, dispersion=_tensor(0.7), **zero)


def test_zinb_gate_zero_is_nb():
    expected = NegativeBinomial2(**_nb()).log_prob(COUNTS)
    for zero in ({"gate": _tensor(0.0)}, {"gate_logits": _tensor(-INF)}):
        actual = ZeroInflatedNegativeBinomial(**_nb(**zero)).log_prob(COUNTS)
        torch.testing.assert_close(actual, expected, rtol=0, atol=0)


@pytest.mark.parametrize(
    "dist",
    [
        ZeroInflatedNegativeBinomial(**_nb(gate=_tensor(1.0))),
        ZeroInflatedNegativeBinomial(**_nb(gate_logits=_tensor(INF))),
        HurdleNegativeBinomial(**_nb(nonzero=_tensor(0.0))),
        HurdlePoisson(MEANS, nonzero_logits=_tensor(-INF)),
        NegativeBinomial2(_tensor([[0.0]]), dispersion=_tensor(2.0)),
    ],
)
def test_point_mass_at_zero(dist):
    log_prob = dist.log_prob(COUNTS)
    assert (log_prob[:, 0] == 0).all() and (log_prob[:, 1:] == -INF).all()
    assert (dist.sample((500,), generator=torch.Generator().manual_seed(0)) == 0).all()
    assert (dist.mean == 0).all() and (dist.variance == 0).all()


@pytest.mark.parametrize("cls", [HurdlePoisson, HurdleNegativeBinomial])
def test_nonzero_one_has_no_zeros(cls):
    params = {"rate": MEANS} if cls is HurdlePoisson else _nb()
    for zero in ({"nonzero": _tensor(1.0)}, {"nonzero_logits": _tensor(INF)}):
        dist = cls(**params, **zero)
        assert (dist.log_prob(COUNTS)[:, 0] == -INF).all()
        assert dist.log_prob(COUNTS)[:, 1:].isfinite().all()
        assert (dist.sample((2000,), generator=torch.Generator().manual_seed(1)) >= 1).all()


def test_dispersion_zero_is_poisson():
    # α = 0 exactly is the Poisson, to rounding: not the NB2 at a tiny α.
    poisson = torch.distributions.Poisson(MEANS).log_prob(COUNTS)
    for disp in ({"dispersion": _tensor(0.0)}, {"log_dispersion": _tensor(-INF)}):
        nb = NegativeBinomial2(MEANS, **disp)
        torch.testing.assert_close(nb.log_prob(COUNTS), poisson, rtol=1e-14, atol=1e-14)
        assert torch.equal(nb.variance, MEANS)
        zinb = ZeroInflatedNegativeBinomial(MEANS, gate=_tensor(0.3), **disp)
        zip_ = ZeroInflatedPoisson(MEANS, gate=_tensor(0.3))
        torch.testing.assert_close(zinb.log_prob(COUNTS), zip_.log_prob(COUNTS), rtol=0, atol=0)
        torch.testing.assert_close(zinb.variance, zip_.variance, rtol=1e-15, atol=0)
        hnb = HurdleNegativeBinomial(MEANS, nonzero=_tensor(0.6), **disp)
        hp = HurdlePoisson(MEANS, nonzero=_tensor(0.6))
        torch.testing.assert_close(hnb.log_prob(COUNTS), hp.log_prob(COUNTS), rtol=0, atol=0)
        torch.testing.assert_close(hnb.mean, hp.mean, rtol=1e-15, atol=0)


def test_nb_near_zero_dispersion_approaches_poisson():
    poisson = torch.distributions.Poisson(MEANS).log_prob(COUNTS)
    nb = NegativeBinomial2(MEANS, dispersion=_tensor(1e-300)).log_prob(COUNTS)
    torch.testing.assert_close(nb, poisson, rtol=1e-12, atol=1e-12)


# The count part's P(0) of 1 - 1e-10: Poisson λ = 1e-10; NB2 with θ log1p(αμ) = 1e-10 and
# αμ = e - 1, whose truncated part is nearly logarithmic(1 − 1/e), far from a point mass.
RARE_NB = {"mean": _tensor((math.e - 1) / 1e10), "dispersion": _tensor(1e10)}
HURDLES = [
    HurdlePoisson(_tensor(2.5), nonzero=_tensor(0.6)),
    HurdlePoisson(_tensor(1e-10), nonzero=_tensor(0.5)),
    HurdleNegativeBinomial(_tensor(3.0), dispersion=_tensor(0.5), nonzero=_tensor(0.7)),
    HurdleNegativeBinomial(**RARE_NB, nonzero=_tensor(0.5)),
]


@pytest.mark.parametrize("dist", HURDLES)
def test_hurdle_pmf_sums_to_one(dist):
    pmf = dist.log_prob(torch.arange(3000, dtype=F64)).exp()
    assert abs(pmf.sum().item() - 1) < 1e-13
    assert abs(pmf[0].item() - (1 - dist.nonzero.item())) < 1e-15


# --- gradients -----------------------------------------------------------------------------


def _leaf(values, dtype):
    return _tensor(values, dtype).requires_grad_()


@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_gradients_finite_inside_parameter_space(dtype):
    counts = _tensor([0, 1, 3, 30, 1e4], dtype).view(-1, 1, 1)
    mean = _leaf([1e-6, 0.5, 8.0, 1e4], dtype).view(1, -1, 1)
    disp = _leaf([1e-10, 0.3, 50.0], dtype).view(1, 1, -1)
    prob = _leaf([1e-6, 0.4, 1 - 1e-6], dtype)
    dists = [
        (NegativeBinomial2(mean, dispersion=disp), [mean, disp]),
        (ZeroInflatedNegativeBinomial(mean, dispersion=disp, gate=prob[1]), [mean, disp, prob]),
        (HurdlePoisson(mean, nonzero=prob[2]), [mean, prob]),
        (HurdleNegativeBinomial(mean, dispersion=disp, nonzero=prob[0]), [mean, disp, prob]),
    ]
    for dist, leaves in dists:
        value = dist.log_prob(counts)
        assert value.dtype == dtype and value.isfinite().all()
        # retain_graph: the lazily derived parameters (e.g. log α) are cached on the instance.
        grads = torch.autograd.grad(value.sum(), leaves, retain_graph=True)
        assert all(g.isfinite().all() for g in grads), type(dist).__name__
        for moment in (dist.mean, dist.variance):
            grads = torch.autograd.grad(moment.sum(), leaves, retain_graph=True, allow_unused=True)
            assert all(g is None or g.isfinite().all() for g in grads), type(dist).__name__


# --- moments -------------------------------------------------------------------------------

MOMENT_DISTS = [
    NegativeBinomial2(_tensor(3.0), dispersion=_tensor(0.5)),
    NegativeBinomial2(_tensor(0.3), log_dispersion=_tensor(math.log(3.0))),
    ZeroInflatedNegativeBinomial(_tensor(3.0), dispersion=_tensor(0.5), gate=_tensor(0.3)),
    ZeroInflatedNegativeBinomial(_tensor(20.0), dispersion=_tensor(0.05), gate_logits=_tensor(2.0)),
    *HURDLES,
]


def _pmf(dist, kmax=5000):
    return dist.log_prob(torch.arange(kmax + 1, dtype=F64)).exp().numpy()


@pytest.mark.parametrize("dist", MOMENT_DISTS)
def test_moments_match_pmf_sums(dist):
    pmf, support = _pmf(dist), np.arange(5001)
    mean = (support * pmf).sum()
    np.testing.assert_allclose(dist.mean.item(), mean, rtol=1e-10)
    np.testing.assert_allclose(dist.variance.item(), ((support - mean) ** 2 * pmf).sum(), rtol=1e-9)


# --- sampling ------------------------------------------------------------------------------

DRAWS = 20_000


def _chi_square_pvalue(samples, pmf):
    """Chi-square p-value of integer samples against pmf (`conftest.pooled_chisquare_p`)."""
    return pooled_chisquare_p(samples, pmf)


@pytest.mark.parametrize(
    "dist", MOMENT_DISTS + [NegativeBinomial2(_tensor(5.0), dispersion=_tensor(0.0))]
)
def test_class_sampler_goodness_of_fit(dist):
    samples = dist.sample((DRAWS,), generator=torch.Generator().manual_seed(2024))
    assert samples.dtype == F64 and (samples == samples.round()).all() and (samples >= 0).all()
    assert _chi_square_pvalue(samples.long().numpy(), _pmf(dist, 2000)) > 1e-4


def test_rare_hurdle_poisson_positives_are_ones():
    # P(Y >= 2 | Y > 0) = λ/2 + O(λ²) = 5e-11: a count above 1 among the ~5e4 positives
    # would be a 2.5e-6 event.
    dist = HurdlePoisson(_tensor(1e-10), nonzero=_tensor(0.5))
    samples = dist.sample((100_000,), generator=torch.Generator().manual_seed(5))
    assert set(samples.unique().tolist()) == {0.0, 1.0}
    rng = np.random.default_rng(5)
    counts = sample_counts("hurdle_poisson", rng, s=np.zeros(100_000), eta=np.full(100_000, -23.0))
    assert set(np.unique(counts).tolist()) == {0, 1}


@pytest.mark.parametrize("dist", MOMENT_DISTS)
def test_sample_moments_match_properties(dist):
    n = 200_000
    samples = dist.sample((n,), generator=torch.Generator().manual_seed(99)).numpy()
    pmf, support = _pmf(dist), np.arange(5001)
    mean, var = dist.mean.item(), dist.variance.item()
    fourth = ((support - mean) ** 4 * pmf).sum()
    # 5 standard errors: a false alarm ~6e-7 per check under a correct sampler. The sample
    # variance (ddof 1) has variance (m₄ − σ⁴)/n + 2σ⁴/(n(n − 1)).
    assert abs(samples.mean() - mean) < 5 * (var / n) ** 0.5
    var_se = ((fourth - var**2) / n + 2 * var**2 / (n * (n - 1))) ** 0.5
    assert abs(samples.var(ddof=1) - var) < 5 * var_se


# Two kinds of rows, alternating, so the expected law is the average of two pmfs.
ROWS = {"s": np.array([-0.5, 1.5]), "eta": np.log([2.0, 0.6])}
RARE_ROWS = {"s": np.array([0.0, 2.0]), "eta": np.array([-23.0, math.log((math.e - 1) / 1e10)])}


@pytest.mark.parametrize(
    ("family", "log_alpha", "rows"),
    [
        *[(f, math.log(0.8), ROWS) for f in FAMILIES],
        ("nb", -INF, ROWS),
        ("hurdle_nb", -INF, ROWS),
        ("hurdle_poisson", None, RARE_ROWS),
        ("hurdle_nb", math.log(1e10), RARE_ROWS),
    ],
)
def test_sample_counts_goodness_of_fit(family, log_alpha, rows):
    n = DRAWS
    s, eta = np.tile(rows["s"], n // 2), np.tile(rows["eta"], n // 2)
    counts = sample_counts(family, np.random.default_rng(7), s=s, eta=eta, log_alpha=log_alpha)
    assert counts.dtype == np.int64 and counts.shape == (n,) and (counts >= 0).all()
    support = torch.arange(2001, dtype=F64).view(-1, 1)
    a = None if log_alpha is None else _tensor(log_alpha)
    log_pmf = _log_prob(family, support, _tensor(rows["s"]), _tensor(rows["eta"]), a)
    assert _chi_square_pvalue(counts, log_pmf.exp().mean(1).numpy()) > 1e-4


def test_sample_counts_consumes_the_rng_in_the_documented_order():
    s, eta, log_alpha, n = np.linspace(-2, 2, 50), np.linspace(-1, 3, 50), math.log(0.5), 50
    counts = sample_counts("zinb", np.random.default_rng(3), s=s, eta=eta, log_alpha=log_alpha)
    rng = np.random.default_rng(3)
    u = rng.random(n)
    lam = rng.standard_gamma(np.full(n, 2.0)) * np.exp(log_alpha + eta)
    expected = np.where(u < 1 / (1 + np.exp(-s)), 0, rng.poisson(lam))
    np.testing.assert_array_equal(counts, expected)
    # No zero part: s is not used (nor needed).
    nb = [sample_counts("nb", np.random.default_rng(4), s=s, eta=eta, log_alpha=log_alpha)]
    nb.append(sample_counts("nb", np.random.default_rng(4), eta=eta, log_alpha=log_alpha))
    np.testing.assert_array_equal(*nb)


def test_sample_counts_rejects_missing_parameters():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="log_alpha"):
        sample_counts("zinb", rng, s=np.zeros(3), eta=np.zeros(3))
    with pytest.raises(ValueError, match="needs s$"):
        sample_counts("hurdle_poisson", rng, eta=np.zeros(3))
    with pytest.raises(ValueError, match="unknown family"):
        sample_counts("negbin", rng, eta=np.zeros(3))


# --- shapes, generators, arguments ---------------------------------------------------------


def test_shapes_expand_and_generator():
    mean = _tensor([[0.5], [3.0], [20.0]])
    dist = ZeroInflatedNegativeBinomial(mean, dispersion=_tensor([0.1, 1.0]), gate=_tensor(0.2))
    assert dist.batch_shape == (3, 2) and dist.event_shape == ()
    expanded = dist.expand((4, 3, 2))
    assert "gate" in expanded.__dict__ and "gate_logits" not in expanded.__dict__
    value = torch.arange(6, dtype=F64).view(3, 2)
    assert torch.equal(expanded.log_prob(value), dist.log_prob(value).expand(4, 3, 2))
    assert torch.equal(expanded.mean, dist.mean.expand(4, 3, 2))
    draw = [dist.sample((5,), generator=torch.Generator().manual_seed(8)) for _ in range(2)]
    assert draw[0].shape == (5, 3, 2) and torch.equal(*draw)
    assert dist.sample().shape == (3, 2) and expanded.sample((7,)).shape == (7, 4, 3, 2)
    single = HurdleNegativeBinomial(_tensor(2.0, torch.float32), dispersion=0.5, nonzero=0.3)
    assert single.sample((3,)).dtype == torch.float32


@pytest.mark.parametrize(
    ("cls", "params"),
    [
        (NegativeBinomial2, {}),
        (NegativeBinomial2, {"dispersion": 1.0, "log_dispersion": 0.0}),
        (ZeroInflatedNegativeBinomial, {"dispersion": 1.0}),
        (ZeroInflatedNegativeBinomial, {"dispersion": 1.0, "gate": 0.5, "gate_logits": 0.0}),
        (HurdlePoisson, {}),
        (HurdleNegativeBinomial, {"log_dispersion": 0.0, "nonzero": 0.5, "nonzero_logits": 0.0}),
    ],
)
def test_needs_exactly_one_of_each_pair(cls, params):
    with pytest.raises(ValueError, match="exactly one"):
        cls(_tensor(1.0), **params)


@pytest.mark.parametrize(
    "build",
    [
        lambda: NegativeBinomial2(_tensor(-1.0), dispersion=1.0, validate_args=True),
        lambda: NegativeBinomial2(_tensor(1.0), dispersion=-0.1, validate_args=True),
        lambda: ZeroInflatedNegativeBinomial(
            _tensor(1.0), dispersion=1.0, gate=1.5, validate_args=True
        ),
        lambda: HurdlePoisson(_tensor(0.0), nonzero=0.5, validate_args=True),
        lambda: HurdleNegativeBinomial(
            _tensor(0.0), dispersion=1.0, nonzero=0.5, validate_args=True
        ),
    ],
)
def test_validation_rejects_bad_parameters(build):
    with pytest.raises(ValueError):
        build()


@pytest.mark.parametrize("value", [-1.0, 1.5])
def test_validation_rejects_values_outside_support(value):
    dist = HurdlePoisson(_tensor(2.0), nonzero=_tensor(0.3), validate_args=True)
    with pytest.raises(ValueError):
        dist.log_prob(_tensor(value))
