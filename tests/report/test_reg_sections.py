"""Tests of the regression part of the report (`pipeline.report.reg_findings`,
`pipeline.report.reg_sections`) on the hand-made tables of `reg_frames`: the sentences follow
the numbers, the sections hold the tables, the figure is written."""

from __future__ import annotations

import polars as pl
import pytest
from reg_frames import KEYS, RAW, STD, coefs_frame, fits_frame, summary_frame

from pipeline.analysis import reg_recovery as rr
from pipeline.report import figures, reg_sections
from pipeline.report.reg_findings import lr_span, reg_findings

GOOD = {key: ("converged", 100 + 10 * key[1], 1e-10, 0.001) for key in KEYS}
BAD = {key: ("max_steps", 500, 0.2, 5.0) for key in KEYS}


def tables(table=None):
    fits, coefs = fits_frame(table), coefs_frame(table)
    optimisation = rr.reg_optimisation_table(fits)
    best = rr.reg_best_variant(optimisation)
    recovery = rr.reg_recovery_table(coefs, fits, summary_frame(), best=best)
    return optimisation, best, recovery


def findings(table=None):
    return reg_findings(*tables(table), max_steps=500, level=0.95)


def test_findings_on_the_shared_frames():
    lines = findings()
    assert lines[0] == (
        "- **s** (2 datasets, 2 coefficients; 1 left out: oracle not converged): closest to the "
        "oracle on standardised covariates, full batch at lr 0.1 by the median largest "
        "coefficient error over all fits, a diverged one counted infinitely far (0.0035 oracle "
        "SE, 100 % converged)."
    )
    assert lines[1] == (
        "  - On raw covariates, full batch: no learning rate brings 90 % of the fits within 1 "
        "oracle SE in 500 steps; closest at lr 0.1 by the median largest error over all fits, a "
        "diverged one counted infinitely far (5 SE over those that did not diverge, 0 % of fits "
        "within 1 SE, median NLL gap 0.15 nats/obs); no fit converged within 500 steps at any lr."
    )
    # lr 0.1: 3 of 4 within 0.01 SE (< 90 %), all within 1 SE; lr 1: 3 of 4 diverged
    assert lines[2] == (
        "  - On standardised covariates, full batch: ends within 1 oracle SE (in every fit) at "
        "lr 0.1 but not within 0.01 SE (at most 75 % of fits there); closest at lr 0.1 by the "
        "median largest error of the fits that did not diverge (0.0035 SE); fits diverge at lr 1 "
        "(up to 75 %)."
    )
    assert lines[3].startswith("  - On standardised covariates, batches of 10: ends within 1")
    assert "Mini-batch fits never pass the convergence test" in lines[4]
    # GD 0.01 SE off the oracle at most: within sampling error but not on it
    assert lines[5] == (
        "  - At the best variant (adam on standardised covariates, full batch, lr 0.1) GD stays "
        "within sampling error of the oracle but not on it: up to 0.01 oracle SE (zero "
        "intercept; mean 0.007); GD's RMSE is 1 × the oracle's."
    )
    # coverage 1 and 0.5 (GD), 0.5 and 0.5 (oracle); 0.5 ± 0.35 is not 2 MC SE below 95 %
    assert lines[6] == (
        "  - 95 % Wald coverage over 2 datasets: GD's intervals 50–100 %, the oracle's 50 % "
        "across the 2 coefficients."
    )
    assert len(lines) == 7


@pytest.mark.parametrize("good, bad", [(STD, RAW), (RAW, STD)])
def test_opposite_numbers_give_opposite_sentences(good, bad):
    lines = findings({good: GOOD, bad: BAD})
    scale = {STD: "standardised", RAW: "raw"}
    reach = [s for s in lines if "reaches the oracle" in s]
    fail = [s for s in lines if "no learning rate brings 90 % of the fits within 1 oracle" in s]
    assert len(reach) == len(fail) == 1
    assert reach[0].startswith(f"  - On {scale[good]} covariates, full batch: reaches the oracle")
    assert "(every coefficient within 0.01 oracle SE in every fit) at lr 0.1" in reach[0]
    assert "converging in a median of 105 steps" in reach[0]  # 100, 110, 100, 110
    assert fail[0].startswith(f"  - On {scale[bad]} covariates, full batch:")
    assert f"closest to the oracle on {scale[good]} covariates" in lines[0]
    # GD at the best variant is 0.001 SE from the oracle: it reproduces it
    assert any("GD reproduces the oracle's estimates" in s for s in lines)


def test_a_scenario_where_gd_misses_the_oracle_says_so():
    lines = findings({STD: BAD})
    assert any("GD does not recover the oracle: up to 5 oracle SE off (zero intercept)" in s
               for s in lines)  # fmt: skip
    assert not any("reaches the oracle" in s for s in lines)


def test_reach_over_several_learning_rates_is_a_span():
    grid = [0.01, 0.03, 0.1, 0.3, 1.0]
    assert lr_span([0.03, 0.1, 0.3], grid) == "lr 0.03–0.3"
    assert lr_span([0.01, 0.3], grid) == "lr 0.01, 0.3"
    assert lr_span([1.0], grid) == "lr 1"
    slow = {key: ("max_steps", 500, 0.2, 5.0) for key in KEYS}
    fast = {key: ("converged", 50, 0.0, 0.001) for key in KEYS}
    table = {("adam", 0.1, True, None): slow, ("adam", 1.0, True, None): fast}
    fits = fits_frame(table)
    extra = fits.filter(pl.col("lr") == 1.0).with_columns(lr=pl.lit(3.0), trial=pl.lit(2, pl.Int64))
    optimisation = rr.reg_optimisation_table(pl.concat([fits, extra]))
    best = rr.reg_best_variant(optimisation)
    recovery = rr.reg_recovery_table(coefs_frame(table), fits, summary_frame(), best=best)
    lines = reg_findings(optimisation, best, recovery, max_steps=500, level=0.95)
    assert (
        "reaches the oracle (every coefficient within 0.01 oracle SE in every fit) at lr 1–3"
        in (lines[1])
    )


def test_sections_hold_the_tables():
    optimisation, best, recovery = tables()
    text = reg_sections.reg_sections(optimisation, best, recovery, max_steps=500, level=0.95)
    assert text.startswith("## Regression scenarios\n")
    assert "### Summary (generated from the numbers below)" in text
    assert "### s\n\nFull batch:\n\n| lr | standardize | fits |" in text
    assert "Mini-batches (never converged by the test; judged where they end):" in text
    assert "| 0.1 | True | 10 | 4 | 0 | 0 | 1 | 0 |" in text  # the mini-batch row (none stalled)
    # the coefficient table: bias ± MC SE, RMSE, coverage ± MC SE
    assert "| zero | intercept | -1 | -0.1 ± 0.2 | 0.224 | 50 ± 35 % |" in text
    assert f"![{reg_sections.FIGURE}](figures/{reg_sections.FIGURE})" in text


def test_figure_is_written(tmp_path):
    optimisation, _, _ = tables()
    two = pl.concat([
        optimisation,
        optimisation.with_columns(scenario=pl.lit("t"), optimizer=pl.lit("sgd"),
                                  err_median=pl.lit(None, pl.Float64)),
    ])  # fmt: skip
    fig = reg_sections.reg_error_vs_lr(two, ["s", "t"])
    assert len(fig.axes) == 2
    path = tmp_path / reg_sections.FIGURE
    figures.save(fig, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_scenario_with_an_exposure_says_so_in_heading_and_findings():
    exposures = {"s": "years ~ U(0.5, 4)"}
    lines = reg_findings(*tables(), max_steps=500, level=0.95, exposures=exposures)
    assert lines[0].startswith(
        "- **s** [exposure: years ~ U(0.5, 4), its log the count part's offset in the data, "
        "the oracle and GD alike] (2 datasets"
    )
    assert all("exposure" not in line for line in findings())
    text = reg_sections.reg_sections(*tables(), max_steps=500, level=0.95, figure=None,
                                     families={"s": "zip"}, exposures=exposures)  # fmt: skip
    assert "### s (ZIP; exposure: years ~ U(0.5, 4), its log the count part's offset)" in text
    assert reg_sections.heading("s", "nb") == "### s (NB)"
