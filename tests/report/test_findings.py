"""Unit tests of `pipeline.report.findings`: every sentence against numbers worked out by hand
on the hand-made tables of `recovery_frames`."""

from __future__ import annotations

import polars as pl
from recovery_frames import MLE, fits_frame, report_tables, summary_frame

from pipeline.analysis import recovery, statistics
from pipeline.report import findings as report_findings
from pipeline.report.findings import blog_finding
from pipeline.report.markdown import with_mle_row


def test_findings_follow_the_numbers():
    table, stats = report_tables()
    lines = report_findings.findings(table, stats, max_steps=500, level=0.95)
    # 3 of 6 fits recovered at lr 0.1, 2 of 6 at lr 1: lr 0.1 by either rule, named once
    assert lines[0] == (
        "- **s**: best lr 0.1 by the objective: the most fits recovered, then the fewest steps "
        "(50 % of fits converged at the MLE, median 200 steps)."
    )
    assert lines[1:5] == [
        # errors in SE at lr 0.1: pi 0, 0.2, 5, 0, 0.3, 0.4; lambda 0, 0.2, 2, 0, 0, 0
        "  - At lr 0.1 every fit that did not diverge ends within 5 SE of the exact MLE in π and "
        "2 SE in λ (medians 0.25 and 0).",
        # 3 of 6 at max_steps, 2 of them on dataset 2 (boundary)
        "  - The 50 % of its fits that hit 500 steps are mostly (67 %) on datasets whose MLE is on "
        "the boundary π̂ = 0, where logit π drifts towards −∞.",
        # one fit (replicate 1, init 0: 5 SE in pi) off the MLE: 1/6 ± sqrt(1/6 5/6 / 6)
        "  - lr 0.1: 17 ± 15 % of fits end more than 1 SE from the exact MLE without diverging "
        "(worst 5 SE).",
        # 3 of 6 diverged: 0.5 ± sqrt(0.25 / 6) = 0.204; 2 of 6 recovered
        "  - lr 1: diverges in 50 ± 20 % of fits; converges at the MLE in only 33 % of fits.",
    ]
    # best inits' pi: 0.49, 0.50, 0.003 -> bias -0.169, RMSE 0.287; the MLE's: 0.49, 0.5, 0;
    # coverage 1 of 3 (see test_statistics_table_bias_rmse_and_coverage_by_hand):
    # 1/3 ± 0.27, more than 2 MC SE below 95 %
    assert lines[5] == (
        "  - π̂ over 3 datasets (best-NLL init at lr 0.1): bias -0.169 ± 0.16, RMSE 0.287 (exact "
        "MLE: bias -0.17, RMSE 0.289); 95 % Wald coverage 33 ± 27 %, more than 2 MC SE off the "
        "nominal 95 % (exact MLE 33 %)."
    )
    # lambda: 5.0, 5.1, 4.9 for both -> bias 0 ± 0.1 / sqrt(3), RMSE sqrt(0.02 / 3); coverage:
    # only 5.0 covers 5 (0.1 > 1.96 SE = 0.064)
    assert lines[6] == (
        "  - λ̂ over 3 datasets (best-NLL init at lr 0.1): bias 0 ± 0.058, RMSE 0.0816 (exact "
        "MLE: bias 0, RMSE 0.0816); 95 % Wald coverage 33 ± 27 %, more than 2 MC SE off the "
        "nominal 95 % (exact MLE 33 %)."
    )
    assert lines[7:] == ["  - 33 % of the datasets have their exact MLE on the boundary π̂ = 0."]


def test_findings_name_the_optimizer_when_there_are_several_and_the_reach():
    fits = fits_frame()
    both = pl.concat([fits, fits.with_columns(pl.lit("sgd").alias("optimizer"))])
    table = recovery.optimisation_table(both, max_steps=500)
    stats = statistics.statistics_table(both, summary_frame())
    reach = pl.DataFrame(
        {
            "scenario": ["s"],
            "optimizer": ["adam"],
            "lr": [0.1],
            "reached": [2 / 3],
            "reach_median": [150.0],
            "reach_p90": [290.0],
        }
    )
    lines = report_findings.findings(table, stats, max_steps=500, level=0.95, reach=reach)
    # adam and sgd tie on every number; the first by sort order (adam) is named
    assert lines[0].startswith("- **s**: best adam lr 0.1 by the objective")
    assert "by share converged" not in lines[0]  # the same choice by share recovered
    assert lines[2] == (
        "  - 67 % of its fits come within 0.1 SE of the exact MLE in both π and λ after a median "
        "of 150 steps (90th percentile 290); the convergence test fires after a median of 200."
    )
    assert (
        "  - sgd lr 1: diverges in 50 ± 20 % of fits; converges at the MLE in only 33 % of "
        "fits." in lines
    )


def test_findings_say_when_share_recovered_chooses_another_lr():
    # 3 of 6 recovered at both lrs: at lr 1 in 10, 20, 600 steps of 1000 (median 20, mean 210),
    # at lr 0.1 in 100, 300, 200 (median and mean 200): the objective takes lr 0.1, the share
    # recovered with its median steps lr 1
    fits = fits_frame().with_columns(
        status=pl.when((pl.col("lr") == 1.0) & (pl.col("status") == "max_steps"))
        .then(pl.lit("converged"))
        .otherwise("status"),
        steps=pl.when((pl.col("lr") == 1.0) & (pl.col("status") == "max_steps"))
        .then(600)
        .otherwise("steps"),
    )
    table = recovery.optimisation_table(fits, max_steps=1000)
    lines = report_findings.findings(table, statistics.statistics_table(fits, summary_frame()),
                                     max_steps=1000, level=0.95)  # fmt: skip
    assert lines[0] == (
        "- **s**: best lr 0.1 by the objective: the most fits recovered, then the fewest steps "
        "(50 % of fits converged at the MLE, median 200 steps); by share converged at the MLE, "
        "then median steps: lr 1 (50 %, median 20 steps)."
    )


def test_the_study_line_names_the_best_trial_and_the_runner_up():
    table = pl.DataFrame({"optimizer": ["adam", "adam"], "lr": [0.3, 1.0], "fits": [400, 400],
                          "objective": [0.2500003, 0.5], "recovered": [0.75, 0.5]})  # fmt: skip
    assert report_findings.study_finding(table) == (
        "- **The study**: best lr 0.3 (adam) by the objective: the most fits recovered, "
        "then the fewest steps — 75 % of its 400 fits recovered (converged within 1 SE of the "
        "exact MLE or Newton oracle), objective 0.25; Optuna's best trial; next adam lr 1 (50 % "
        "recovered, objective 0.5)."
    )
    assert report_findings.study_finding(table.clear()) is None


def test_blog_finding_reports_the_worst_deviations():
    table = pl.DataFrame(
        {
            "init": [0, 1, 2],
            "mixture_dev_se": [0.1, -0.4123, 0.2],
            "lambda_dev_se": [-1.5, 0.25, 0.0],
            "lr_tuned": [0.3] * 3,
            "status_tuned": ["converged", "converged", "max_steps"],
            "mixture_dev_se_tuned": [1e-7, -3e-7, 2e-3],
            "lambda_dev_se_tuned": [0.0, 5e-8, -1e-3],
            "steps_tuned": [300, 310, 500],
        }
    )
    shown = with_mle_row(table, {**MLE, "mle_nll": 1.0})
    expected = (
        "- **The blog's table** (3 starts): at the blog's settings the fits end up to 0.41 SE "
        "from the exact MLE in π and 1.5 SE in λ; at lr 0.3 with our stopping rule 67 % converge, "
        "within 0.002 SE in π and 0.001 SE in λ, after a median of 310 steps."
    )
    assert blog_finding(table) == blog_finding(shown) == expected  # the MLE row is left out
    assert blog_finding(table.select("init", "mixture_dev_se", "lambda_dev_se")) == (
        "- **The blog's table** (3 starts): at the blog's settings the fits end up to 0.41 SE "
        "from the exact MLE in π and 1.5 SE in λ."
    )
