"""Tests of `pipeline.report.markdown`: the report's generated sentences and its tables.

Sentences are checked whole on the hand-made sweep of `recovery_frames`, whose numbers are
worked out by hand in tests/analysis/test_recovery.py; tables cell by cell.
"""

import math

import polars as pl
import pytest
from recovery_frames import MLE, report_tables

from pipeline.analysis.blog import BLOG_COLUMNS
from pipeline.report import markdown as report_md
from pipeline.report.markdown import as_text, blog_finding, markdown_table, with_mle_row


def blog_like_table() -> pl.DataFrame:
    """Two rows with every column `blog_table` makes, tuned ones included."""
    return pl.DataFrame(
        {
            "init": [0, 1],
            "err": [1.77, 1.78],
            "mixture": [0.45, 0.52],
            "lambda": [4.9, 5.1],
            "mixture_init": [0.2, 0.9],
            "lambda_init": [1.0, 9.0],
            "mixture_dev_se": [-4.96, 2.04],
            "lambda_dev_se": [-2.39, 1.61],
            "lr_tuned": [0.3, 0.3],
            "optimizer_tuned": ["adam", "adam"],
            "err_tuned": [1.7614, 1.7614],
            "mixture_tuned": [0.4996, 0.4996],
            "lambda_tuned": [5.0195, 5.0195],
            "mixture_dev_se_tuned": [1e-7, -1e-7],
            "lambda_dev_se_tuned": [2e-7, 0.0],
            "steps_tuned": [300, 310],
            "status_tuned": ["converged", "converged"],
        }
    )


def test_with_mle_row_appends_the_exact_mle():
    table = blog_like_table()
    shown = with_mle_row(table, MLE)
    assert shown.columns == table.columns and shown.height == 3
    assert shown.schema["init"] == pl.String and shown["init"].to_list() == ["0", "1", "exact MLE"]
    assert shown.drop("init").head(2).equals(table.drop("init"))
    assert shown.row(2, named=True) == {
        "init": "exact MLE",
        "err": 1.7614,
        "mixture": 0.4996,
        "lambda": 5.0195,
        "mixture_init": None,
        "lambda_init": None,
        "mixture_dev_se": 0.0,
        "lambda_dev_se": 0.0,
        "lr_tuned": None,
        "optimizer_tuned": None,
        "err_tuned": 1.7614,
        "mixture_tuned": 0.4996,
        "lambda_tuned": 5.0195,
        "mixture_dev_se_tuned": 0.0,
        "lambda_dev_se_tuned": 0.0,
        "steps_tuned": None,
        "status_tuned": None,
    }


def test_with_mle_row_on_the_blogs_columns_only():
    table = blog_like_table().select("init", *BLOG_COLUMNS)
    shown = with_mle_row(table, MLE)
    assert shown.row(2) == ("exact MLE", 1.7614, 0.4996, 5.0195, None, None)
    assert markdown_table(shown).splitlines()[-1] == "| exact MLE | 1.76 | 0.5 | 5.02 |  |  |"
    assert markdown_table(shown, 7).splitlines()[2] == "| 0 | 1.77 | 0.45 | 4.9 | 0.2 | 1 |"


def test_markdown_table_from_the_optimisation_table():
    table, _ = report_tables()
    md = markdown_table(table.select("lr", "converged", "steps_median", "objective", "gap_max"))
    assert md.splitlines() == [
        "| lr | converged | steps_median | objective | gap_max |",
        "|---|---|---|---|---|",
        "| 0.1 | 0.5 | 200 | 0.5 | 0.001 |",  # objective 0.5 + 2e-7: share not recovered
        "| 1 | 0.333 | 15 | 0.667 | 0 |",
    ]


@pytest.mark.parametrize(
    ("value", "digits", "cell"),
    [
        (1234.5678, 3, "1.23e+03"),
        (1234.5678, 7, "1234.568"),
        (0.000123456, 3, "0.000123"),
        (1.7166666e-4, 3, "0.000172"),
        (2.5e-9, 3, "2.5e-09"),  # tiny NLL gaps stay visible
        (-0.1694, 3, "-0.169"),
        (5.0, 3, "5"),
        (0.0, 3, "0"),
        (math.nan, 3, "n/a"),
        (None, 3, ""),
        (200, 3, "200"),  # integers are not rounded
        (123456, 3, "123456"),
        (True, 3, "True"),
        ("a|b", 3, "a\\|b"),  # a pipe would split the cell
    ],
)
def test_markdown_table_cells(value, digits, cell):
    df = pl.DataFrame({"c": [value]}, strict=False)
    assert markdown_table(df, digits).splitlines() == ["| c |", "|---|", f"| {cell} |"]


def test_markdown_table_keeps_every_row_and_column_in_order():
    df = pl.DataFrame({"b": ["x", "y", "z"], "a": [1.0, None, 3.14159]})
    assert markdown_table(df) == "| b | a |\n|---|---|\n| x | 1 |\n| y |  |\n| z | 3.14 |"
    assert markdown_table(df.clear()) == "| b | a |\n|---|---|"


def test_as_text_formats_float_columns_only():
    df = pl.DataFrame(
        {
            "name": ["a|b", None, "c"],
            "k": [3, None, 12345],
            "x": [1234.5678, None, 0.1 + 0.2],
            "y": [0.000123456, math.nan, -2.0],
            "ok": [True, False, None],
        }
    )
    out = as_text(df)
    assert out.schema == pl.Schema(
        {"name": pl.String, "k": pl.Int64, "x": pl.String, "y": pl.String, "ok": pl.Boolean}
    )
    assert out["x"].to_list() == ["1.23e+03", None, "0.3"]  # None stays null, not "n/a"
    assert out["y"].to_list() == ["0.000123", "n/a", "-2"]
    assert out.select("name", "k", "ok").equals(df.select("name", "k", "ok"))
    assert as_text(df, 6)["x"].to_list() == ["1234.57", None, "0.3"]


def test_report_lays_out_sections_tables_and_figures():
    table, stats = report_tables()
    blog = with_mle_row(blog_like_table(), MLE)
    text = report_md.report(
        title="T",
        preamble=["from here"],
        recovery=table,
        statistics=stats,
        blog=blog,
        blog_caption="cap",
        figures=["error_vs_lr.png", "other.png"],
        max_steps=500,
        level=0.95,
    )
    lines = text.splitlines()
    assert lines[:3] == ["# T", "", "from here"]
    headings = [line for line in lines if line.startswith("## ")]
    assert headings == [
        "## Summary (generated from the numbers below)",
        "## Best learning rate per scenario",
        "## Optimisation: did gradient descent reach the exact MLE?",
        "## Statistics at the best learning rate: gradient descent vs the exact MLE",
        "## The blog's table, reproduced",
        "## Figures",
    ]
    findings = report_md.findings(table, stats, max_steps=500, level=0.95)
    start = lines.index(headings[0]) + 2
    assert lines[start : start + len(findings) + 1] == [*findings, blog_finding(blog)]
    # the optimisation table: header, rule and one row per lr
    at = lines.index(headings[2])
    header = lines.index("| " + " | ".join(report_md.OPTIMISATION_COLUMNS) + " |")
    assert at < header and lines[header + 2].startswith("| s | adam | 0.1 | 6 | 0.5 |")
    # statistics only at the best lr (0.1): one row per parameter
    rows = [line for line in lines if line.startswith("| s | adam |") and "| pi |" in line]
    assert len(rows) == 1 and rows[0].startswith("| s | adam | 0.1 | pi | 0.5 | 3 |")
    assert markdown_table(blog, 7) in text
    assert text.split("\n")[-10:] == [
        "## Figures",
        "",
        "![error_vs_lr.png](figures/error_vs_lr.png)",
        "",
        report_md.FIGURE_CAPTIONS["error_vs_lr.png"],
        "",
        "![other.png](figures/other.png)",
        "",
        "",  # no caption for an unknown figure
        "",
    ]
    no_blog = report_md.report(
        title="T",
        preamble=[],
        recovery=table,
        statistics=stats,
        blog=None,
        blog_caption="cap",
        figures=[],
        max_steps=500,
        level=0.95,
    )
    assert "## The blog's table, reproduced" not in no_blog and "cap" not in no_blog
    assert no_blog.endswith("## Figures\n")
