"""Offsets and frequency weights in the oracle (pipeline.core.oracle.fit), against R.

Reference data: glmmTMB's `Owls` (Roulin & Bersier 2007; 599 rows, in tests/data/owls.csv:
SiblingNegotiation, FoodTreatment, ArrivalTime, BroodSize), with log(BroodSize) as the offset.
The numbers were computed once with R 4.2 (Debian bookworm: pscl 1.5.5, MASS 7.3, glmmTMB 1.1):

    library(glmmTMB); library(pscl); library(MASS); data(Owls, package = "glmmTMB")
    ctl <- zeroinfl.control(reltol = 1e-14, maxit = 10000)
    f <- SiblingNegotiation ~ FoodTreatment + ArrivalTime + offset(log(BroodSize))
    zip <- zeroinfl(update(f, . ~ . | 1), data = Owls, dist = "poisson", control = ctl)
    zinb <- zeroinfl(update(f, . ~ . | 1), data = Owls, dist = "negbin", control = ctl)
    zipz <- zeroinfl(update(f, . ~ . | ArrivalTime + offset(log(BroodSize))), data = Owls,
                     dist = "poisson", control = ctl)
    nb <- glm.nb(f, data = Owls, control = glm.control(epsilon = 1e-14, maxit = 100))
    # estimates: coef(m, "zero"), coef(m, "count"), -log(m$theta); SEs: sqrt(diag(vcov(m)))
    # and m$SE.logtheta; logLik(m); all printed with sprintf("%.17g").

Tolerances. Estimates 1e-6 relative: pscl maximises with BFGS (optim, reltol 1e-14 on the
log-likelihood), which leaves the estimates ~1e-7 relative from the maximum (the likelihood is
flat to second order there); ours stop ~1e-10 SE away. Log-likelihoods 1e-8 relative: at both
optima the log-likelihood is the same to second order in that error (~1e-14) and both sum the
same per-row terms in float64. pscl's SEs come from optim's finite-difference Hessian
(~1e-4 relative error), so they are compared at 5e-4. glm.nb's SEs use the expected
information with θ fixed: only its estimates and log-likelihood are compared.
"""

from pathlib import Path

import numpy as np
import pytest
from count_samples import simulate

from pipeline.core.model import FAMILIES, fit_data
from pipeline.core.oracle.fit import fit_model

OWLS = Path(__file__).resolve().parents[1] / "data" / "owls.csv"

# family, zero design ("1" or "arrival+offset"), estimates [zero, count, (log alpha)], SEs, loglik
R_REFERENCE = {
    "zip": (
        "1",
        [-1.063558799967836, 2.778470097372177, -0.20467896159664767, -0.082253874357577389],
        [0.094442242634628096, 0.21400349169177219, 0.033396093225377607, 0.0087258513548599832],
        -2102.884449636359,
    ),
    "zinb": (
        "1",
        [-1.2970791012910048, 2.9913664371239919, -0.25039653903867642,
         -0.090722033093374205, -0.70542341804245257],
        [0.12231061896068397, 0.48299451070211041, 0.079664025269939126,
         0.019584291320632465, 0.10971649271275717],
        -1705.958126981232,
    ),
    "zip_zero_offset": (
        "arrival+offset",
        [-6.5803318516997313, 0.16247705621764377, 2.7776281789665003, -0.20669978707487036,
         -0.082243148766733692],
        [1.2430039229782328, 0.049559815328906305, 0.2141445706325828, 0.033487306056879433,
         0.0087318089690953931],
        -2116.4839946415927,
    ),
    "nb": (
        None,
        [3.5268166996339474, -0.51996129091003707, -0.11717185641005859, 0.2166835755550478],
        None,
        -1738.3557539179067,
    ),
}  # fmt: skip


def owls():
    """(X, y, log BroodSize, ArrivalTime) of the Owls data; X = [1, Satiated, ArrivalTime]."""
    raw = np.genfromtxt(OWLS, delimiter=",", names=True, dtype=None, encoding="utf-8")
    assert len(raw) == 599
    arrival = raw["ArrivalTime"].astype(float)
    X = np.c_[np.ones(599), raw["FoodTreatment"] == "Satiated", arrival].astype(float)
    return X, raw["SiblingNegotiation"], np.log(raw["BroodSize"].astype(float)), arrival


@pytest.mark.parametrize("case", list(R_REFERENCE))
def test_offsets_reproduce_r(case):
    X, y, offset, arrival = owls()
    zero, est, se, loglik = R_REFERENCE[case]
    family = case.removesuffix("_zero_offset")
    if zero == "1":
        data = fit_data(X, np.ones((599, 1)), y, offset_x=offset)
    elif zero is None:
        data = fit_data(X, None, y, offset_x=offset)
    else:
        data = fit_data(X, np.c_[np.ones(599), arrival], y, offset_x=offset, offset_z=offset)
    fit = fit_model(family, data)
    assert fit.status == "converged", fit.message
    np.testing.assert_allclose(fit.params, est, rtol=1e-6)
    assert fit.loglik == pytest.approx(loglik, rel=1e-8)
    if se is not None:
        np.testing.assert_allclose(fit.se, se, rtol=5e-4)


def test_an_offset_is_a_fixed_shift_of_the_intercept():
    # A constant offset c in both parts moves both intercepts by -c and nothing else.
    X, Z, y = simulate("zinb", 1500, 7)
    plain = fit_model("zinb", fit_data(X, Z, y))
    c = np.full(len(y), 0.7)
    shifted = fit_model("zinb", fit_data(X, Z, y, offset_x=c, offset_z=-c))
    expect = plain.params + np.r_[0.7, 0, 0, -0.7, 0, 0, 0]
    np.testing.assert_allclose(shifted.params, expect, rtol=1e-8, atol=1e-10)
    assert shifted.loglik == pytest.approx(plain.loglik, rel=1e-12)


@pytest.mark.parametrize("family", FAMILIES)
def test_weights_with_offsets_equal_the_expanded_rows(family):
    # Rows repeated 1-4 times against the distinct rows with those counts as weights, offsets
    # in both parts: the same sums in another order, both Newton runs stop ~1e-10 SE from the
    # same optimum, so 1e-10 (relative, SEs ~0.05) holds with room.
    X, Z, y = simulate(family, 400, 60 + FAMILIES.index(family))
    rng = np.random.default_rng(5)
    ox, oz = rng.normal(scale=0.3, size=len(y)), rng.normal(scale=0.3, size=len(y))
    freq = rng.integers(1, 5, len(y))
    rows = np.repeat(np.arange(len(y)), freq)
    expanded = fit_model(family, fit_data(X[rows], Z[rows], y[rows], offset_x=ox[rows],
                                          offset_z=oz[rows]))  # fmt: skip
    weighted = fit_model(family, fit_data(X, Z, y, weights=freq, offset_x=ox, offset_z=oz))
    assert weighted.status == expanded.status
    np.testing.assert_allclose(weighted.params, expanded.params, rtol=1e-10, atol=1e-10)
    assert weighted.loglik == pytest.approx(expanded.loglik, rel=1e-10)
    np.testing.assert_allclose(weighted.cov, expanded.cov, rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(weighted.robust_cov, expanded.robust_cov, rtol=1e-8, atol=1e-14)
