"""Tests of `pipeline.analysis.reach` on hand-made histories with answers worked out by hand.

Standard errors are powers of two and the distances multiples of them, so |estimate - MLE| /
SE is exact in binary and the boundary case (distance = `within` SEs, which counts) is exact.
"""

import polars as pl
import pytest

from pipeline.analysis.reach import FIT, reach_steps, reach_table

SE_PI, SE_LAM = 0.0625, 0.25  # 2**-4, 2**-2
MLE_PI, MLE_LAM = 0.5, 4.0


def fits_frame() -> pl.DataFrame:
    """Eight fits: trial 0 (adam, lr 0.1) on scenarios s and t, trial 1 (adam, lr 1) on s."""
    keys = [  # (trial, scenario, replicate, init)
        (0, "s", 0, 0),
        (0, "s", 0, 1),
        (0, "s", 1, 0),
        (0, "s", 1, 1),
        (0, "s", 2, 0),
        (0, "t", 0, 0),
        (1, "s", 0, 0),
        (1, "s", 0, 1),
    ]
    return pl.DataFrame(
        {
            "trial": [k[0] for k in keys],
            "scenario": [k[1] for k in keys],
            "replicate": [k[2] for k in keys],
            "init": [k[3] for k in keys],
            "optimizer": ["adam"] * 8,
            "lr": [0.1 if k[0] == 0 else 1.0 for k in keys],
            "mle_pi": [MLE_PI] * 8,
            "mle_lambda": [MLE_LAM] * 8,
            "se_pi": [SE_PI] * 8,
            "se_lambda": [SE_LAM] * 8,
        }
    )


# (trial, scenario, replicate, init) -> [(step, distance of pi in SE, of lambda in SE)]
PATHS = {
    # pi is within from step 0, lambda only from step 20: both count, so 20
    (0, "s", 0, 0): [(0, 0.0, 4.0), (10, 0.0, 1.5), (20, 0.0, 0.5), (30, 0.0, 0.0)],
    # within at 10, out again at 20, back at 30: the first step, 10 (rows out of order)
    (0, "s", 0, 1): [(30, 0.0, 0.0), (0, 8.0, 8.0), (20, 2.0, 0.0), (10, -0.5, 0.5)],
    # never within in lambda: null
    (0, "s", 1, 0): [(0, 0.0, 2.0), (10, 0.0, -1.5), (20, 0.0, 1.5)],
    # exactly 1 SE away at step 40 (counts: <= within), 1.5 before
    (0, "s", 1, 1): [(0, 4.0, 4.0), (40, 1.0, -1.0), (50, 0.0, 0.0), (30, 1.5, 1.0)],
    # starts at the MLE: step 0
    (0, "s", 2, 0): [(0, 0.0, 0.0), (10, 0.0, 0.0)],
    # scenario t shares replicate 0, init 0 with the first fit but not its histories: 10
    (0, "t", 0, 0): [(0, 3.0, 3.0), (10, -1.0, 0.25)],
    # trial 1: the first fit has no histories at all (null), the second reaches at 5
    (1, "s", 0, 1): [(0, 2.0, 2.0), (5, 0.5, 0.5)],
    # a fit of a trial not in the fits table is left out
    (7, "s", 0, 0): [(0, 0.0, 0.0)],
}


def histories_frame() -> pl.DataFrame:
    rows = [
        {
            "trial": t,
            "scenario": s,
            "replicate": r,
            "init": i,
            "step": step,
            "pi": MLE_PI + d_pi * SE_PI,
            "lambda": MLE_LAM + d_lam * SE_LAM,
        }
        for (t, s, r, i), path in PATHS.items()
        for step, d_pi, d_lam in path
    ]
    return pl.DataFrame(rows)


def test_reach_steps_first_step_within_in_both_parameters():
    reach = reach_steps(histories_frame(), fits_frame(), within=1.0)
    assert reach.columns == [
        "scenario",
        "optimizer",
        "lr",
        "trial",
        "replicate",
        "init",
        "reach_step",
    ]
    assert reach.sort("trial", "scenario", "replicate", "init").rows() == [
        ("s", "adam", 0.1, 0, 0, 0, 20),
        ("s", "adam", 0.1, 0, 0, 1, 10),
        ("s", "adam", 0.1, 0, 1, 0, None),
        ("s", "adam", 0.1, 0, 1, 1, 40),
        ("s", "adam", 0.1, 0, 2, 0, 0),
        ("t", "adam", 0.1, 0, 0, 0, 10),
        ("s", "adam", 1.0, 1, 0, 0, None),
        ("s", "adam", 1.0, 1, 0, 1, 5),
    ]


@pytest.mark.parametrize(
    ("within", "expected"),
    [
        # within 0.5 SE: the first fit at 20 (0, 0.5), the second at 10 (-0.5, 0.5), the fourth
        # only at 50, t's never (0.25 in lambda but 1 in pi), trial 1's at 5 (0.5, 0.5)
        (0.5, [20, 10, None, 50, 0, None, None, 5]),
        # within 2 SE: (0, 1.5) at 10 for the first fit, (-0.5, 0.5) still first for the
        # second, (0, 2) at step 0 for the third, (1.5, 1) at 30 for the fourth, (2, 2) at 0
        (2.0, [10, 10, 0, 30, 0, 10, None, 0]),
        # nothing but an exact hit: 30, 30, never, 50, 0, never, never, never
        (0.0, [30, 30, None, 50, 0, None, None, None]),
    ],
)
def test_reach_steps_depend_on_the_distance(within, expected):
    reach = reach_steps(histories_frame(), fits_frame(), within=within)
    assert reach.sort("trial", "scenario", "replicate", "init")["reach_step"].to_list() == expected


def test_reach_steps_keep_every_fit_in_the_fits_order():
    fits = fits_frame().reverse()
    reach = reach_steps(histories_frame(), fits, within=1.0)
    assert reach.select(FIT).equals(fits.select(FIT))


def test_reach_table_shares_medians_and_p90():
    reach = reach_steps(histories_frame(), fits_frame(), within=1.0)
    table = reach_table(reach)
    assert table.columns == ["scenario", "optimizer", "lr", "reached", "reach_median", "reach_p90"]
    rows = {(r["scenario"], r["lr"]): r for r in table.iter_rows(named=True)}
    assert sorted(rows) == [("s", 0.1), ("s", 1.0), ("t", 0.1)]
    # (s, 0.1): steps 20, 10, never, 40, 0 -> 4 of 5; median of 0, 10, 20, 40 is 15; p90 at
    # position 0.9 x 3 = 2.7 between 20 and 40: 20 + 0.7 x 20 = 34
    slow = rows[("s", 0.1)]
    assert slow["reached"] == pytest.approx(4 / 5)
    assert slow["reach_median"] == pytest.approx(15.0)
    assert slow["reach_p90"] == pytest.approx(34.0)
    # (s, 1): never, 5 -> one of two, median and p90 of a single step
    fast = rows[("s", 1.0)]
    assert (fast["reached"], fast["reach_median"], fast["reach_p90"]) == (0.5, 5.0, 5.0)
    assert (rows[("t", 0.1)]["reached"], rows[("t", 0.1)]["reach_median"]) == (1.0, 10.0)


def test_reach_table_when_no_fit_gets_there():
    reach = reach_steps(histories_frame(), fits_frame(), within=0.0)
    table = reach_table(reach.filter(pl.col("scenario") == "t"))
    assert table.rows() == [("t", "adam", 0.1, 0.0, None, None)]


def test_reach_table_keeps_the_groups_first_appearance_order():
    reach = reach_steps(histories_frame(), fits_frame(), within=1.0)
    order = reach_table(reach.reverse()).select("scenario", "lr").rows()
    assert order == [("s", 1.0), ("t", 0.1), ("s", 0.1)]
