"""The report's σ section (`report.sigma_sections`) on the hand-made tables of
`sigma_frames`: its sentences carry the numbers worked out there."""

from __future__ import annotations

import polars as pl
import pytest
from sigma_frames import computed as computed_tables

from pipeline.report.sigma_sections import sigma_section


@pytest.fixture(scope="module")
def computed():
    return computed_tables()


def test_the_report_section_states_the_numbers(computed):
    text = sigma_section(*computed)
    assert text.startswith("## Random intercepts: σ")
    assert "95 % profile intervals covered σ on 50 ± 25 %" in text
    assert "Wald intervals on the log scale on 0 % (a Wald interval on the log scale never" in text
    assert "rejected on 75 ± 22 % (power at 0.05)" in text
    assert "rejected on 0 % (its size at 0.05)" in text
    assert "the 2 datasets whose oracle has σ̂ = 0: after a median 500 steps (0 % met" in text
    assert "all 4 converged fits of every trial ended within 1e-05 oracle SE" in text
    assert "### z: σ" in text and "| count | sigma_hat = 0 | 2 | 0 % | 500 |" in text


def test_without_grouped_scenarios_the_section_is_empty():
    assert sigma_section(pl.DataFrame(), pl.DataFrame()) == ""
