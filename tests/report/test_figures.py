"""The report's figures read back from matplotlib: panels, plotted data, log axes, atomic save."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from pipeline.report import figures

OPTIMIZERS = ("adam", "sgd")
LRS = (1.0, 0.01, 0.1)  # unsorted on purpose: lines run by increasing lr
SCENARIO_SETS = [("blog",), ("blog", "rare-events", "large")]


def _recovery(scenarios) -> pl.DataFrame:
    """A hand-made optimisation table: one row per scenario x optimizer x lr."""
    rng = np.random.default_rng(3)
    rows = []
    for s in scenarios:
        for opt in OPTIMIZERS:
            for lr in LRS:
                conv = float(rng.uniform())
                rows.append({"scenario": s, "optimizer": opt, "lr": lr, "converged": conv,
                             "converged_se": 0.05, "diverged": 1 - conv, "diverged_se": 0.02,
                             "recovered": conv / 2, "recovered_se": 0.04,
                             "steps_median": float(rng.integers(10, 500)),
                             "steps_p90": float(rng.integers(500, 900)),
                             "err_pi_median": float(rng.uniform(0, 2)),
                             "err_pi_max": float(rng.uniform(2, 9)),
                             "err_lambda_median": float(rng.uniform(0, 2)),
                             "err_lambda_max": float(rng.uniform(2, 9))})  # fmt: skip
    table = pl.DataFrame(rows)
    # An exact zero error (drawn at the floor) and a group with no converged fit (no steps).
    first = (pl.col("scenario") == scenarios[0]) & (pl.col("optimizer") == "adam")
    return table.with_columns(
        pl.when(first & (pl.col("lr") == 0.1)).then(0.0).otherwise("err_pi_median")
        .alias("err_pi_median"),
        pl.when(first & (pl.col("lr") == 1.0)).then(None).otherwise("steps_median")
        .alias("steps_median"),
    )  # fmt: skip


def _statistics(scenarios) -> pl.DataFrame:
    rng = np.random.default_rng(4)
    rows = [
        {"scenario": s, "optimizer": opt, "lr": lr, "parameter": par,
         "rmse": float(rng.uniform(0.1, 2)), "mle_rmse": float(rng.uniform(0.1, 2))}
        for s in scenarios for opt in OPTIMIZERS for lr in LRS for par in ("pi", "lambda")
    ]  # fmt: skip
    return pl.DataFrame(rows)


def _expected(df: pl.DataFrame, scenario: str, optimizer: str, column: str) -> np.ndarray:
    part = df.filter((pl.col("scenario") == scenario) & (pl.col("optimizer") == optimizer))
    return part.sort("lr")[column].cast(pl.Float64).fill_null(np.nan).to_numpy()


def _series(ax) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """`{label: (x, y)}` of the error-bar series on `ax`."""
    return {
        c.get_label(): (np.asarray(c.lines[0].get_xdata()), np.asarray(c.lines[0].get_ydata()))
        for c in ax.containers
    }


def _grid(fig, rows: int, cols: int) -> np.ndarray:
    assert len(fig.axes) == rows * cols
    return np.array(fig.axes).reshape(rows, cols)


@pytest.mark.parametrize("scenarios", SCENARIO_SETS, ids=len)
def test_convergence_vs_lr_plots_shares_and_steps(scenarios):
    recovery = _recovery(scenarios)
    axes = _grid(figures.convergence_vs_lr(recovery, scenarios, max_steps=1000), 2, len(scenarios))
    for j, name in enumerate(scenarios):
        top, bottom = axes[:, j]
        assert top.get_title() == name and top.get_ylim() == (-0.05, 1.05)
        assert top.get_xscale() == bottom.get_xscale() == "log"
        shares, steps = _series(top), _series(bottom)
        for opt in OPTIMIZERS:
            for series, label, column in [
                (shares, "recovered", "recovered"),
                (shares, "converged", "converged"),
                (shares, "diverged", "diverged"),
                (steps, "median", "steps_median"),
                (steps, "90th pct", "steps_p90"),
            ]:
                x, y = series[f"{opt} {label}"]
                np.testing.assert_array_equal(x, sorted(LRS))
                np.testing.assert_array_equal(y, _expected(recovery, name, opt, column))
        # Error bars span the share +- its Monte-Carlo SE.
        (container,) = [c for c in top.containers if c.get_label() == "adam converged"]
        spans = np.array([seg[:, 1] for seg in container.lines[2][0].get_segments()])
        share = _expected(recovery, name, "adam", "converged")
        np.testing.assert_allclose(spans, np.c_[share - 0.05, share + 0.05])
        budget = [line for line in bottom.lines if line.get_label().startswith("_")][-1]
        assert list(budget.get_ydata()) == [1000, 1000]
    assert np.isnan(_series(axes[1, 0])["adam median"][1][-1])  # lr 1: none converged
    # Where no fit of the study diverged, no flat line at zero says so.
    never = recovery.with_columns(diverged=pl.lit(0.0))
    axes = _grid(figures.convergence_vs_lr(never, scenarios, max_steps=1000), 2, len(scenarios))
    for top in axes[0]:
        assert sorted(_series(top)) == sorted(f"{o} {w}" for o in OPTIMIZERS
                                              for w in ("recovered", "converged"))  # fmt: skip


def _boxes_overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.parametrize("scenarios", SCENARIO_SETS, ids=len)
def test_legends_are_clear_of_every_panel(scenarios):
    """Issue 19 item 5: no legend covers data: each sits outside every panel, one per row."""
    recovery, statistics = _recovery(scenarios), _statistics(scenarios)
    reach = pl.DataFrame({"scenario": list(scenarios) * 2, "optimizer": "adam",
                          "lr": [0.1] * len(scenarios) + [1.0] * len(scenarios),
                          "reach_step": [5] * len(scenarios) * 2})  # fmt: skip
    summary = pl.DataFrame({"scenario": list(scenarios), "replicate": 0, "mle_pi": 0.3,
                            "mle_lambda": 4.0, "pi_true": 0.3, "lambda_true": 4.0})  # fmt: skip
    best = summary.select("scenario", "replicate", pl.col("mle_pi").alias("pi_hat"),
                          pl.col("mle_lambda").alias("lambda_hat"), optimizer=pl.lit("adam"),
                          lr=pl.lit(0.3))  # fmt: skip
    for fig, rows in [
        (figures.convergence_vs_lr(recovery, scenarios, 1000), 2),
        (figures.error_vs_lr(recovery, statistics, scenarios), 2),
        (figures.sampling_distribution(best, summary, scenarios), 2),
        (figures.reach_curves(reach, scenarios, 10, 0.1), 1),
    ]:
        renderer = fig.canvas.get_renderer()
        fig.canvas.draw()
        legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
        assert len(legends) == rows
        for legend in legends:
            box = legend.get_window_extent(renderer)
            assert not [ax for ax in fig.axes if _boxes_overlap(box, ax.get_window_extent())]
            assert fig.bbox.contains(box.x1 - 1, box.y0 + 1)  # inside the figure


@pytest.mark.parametrize("scenarios", SCENARIO_SETS, ids=len)
def test_error_vs_lr_plots_floored_errors_and_rmse_ratio_on_log_axes(scenarios):
    recovery, statistics = _recovery(scenarios), _statistics(scenarios)
    axes = _grid(figures.error_vs_lr(recovery, statistics, scenarios), 2, len(scenarios))
    for j, name in enumerate(scenarios):
        top, bottom = axes[:, j]
        assert top.get_title() == name
        for ax in (top, bottom):
            assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
        assert top.get_ylim()[0] == pytest.approx(5e-5)  # the floor line shows
        errors, ratios = _series(top), _series(bottom)
        assert len(errors) == 4 * len(OPTIMIZERS) and len(ratios) == 2 * len(OPTIMIZERS)
        for opt in OPTIMIZERS:
            for par in ("pi", "lambda"):
                for stat, label in (("median", "median"), ("max", "max")):
                    raw = _expected(recovery, name, opt, f"err_{par}_{stat}")
                    got = errors[f"{opt} {par} {label}"][1]
                    np.testing.assert_allclose(got, np.maximum(raw, 1e-4))
                part = statistics.filter(
                    (pl.col("scenario") == name)
                    & (pl.col("optimizer") == opt)
                    & (pl.col("parameter") == par)
                ).sort("lr")
                want = part["rmse"].to_numpy() / part["mle_rmse"].to_numpy()
                np.testing.assert_allclose(ratios[f"{opt} {par}"][1], want, rtol=1e-12)
        one = [line for line in bottom.lines if line.get_label().startswith("_")][-1]
        assert list(one.get_ydata()) == [1.0, 1.0]
    # The exact-zero error is drawn on the floor, not dropped off the log axis; the floor is
    # drawn and named in the legend.
    assert _series(axes[0, 0])["adam pi median"][1][1] == 1e-4
    floor = [line for line in axes[0, -1].lines if line.get_label().startswith("floor")]
    assert list(floor[0].get_ydata()) == [1e-4, 1e-4]
    assert "floor: below 0.0001 SE drawn here" in [
        t.get_text() for t in axes[0, -1].get_legend().get_texts()
    ]


def _step_counts(patch, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """(edges, counts) of a step/stepfilled histogram polygon (x0,0),(x0,c0),(x1,c0),(x1,c1)..."""
    v = patch.get_path().vertices
    return v[0 : 2 * bins + 1 : 2, 0], v[1 : 2 * bins : 2, 1]


@pytest.mark.parametrize("scenarios", SCENARIO_SETS, ids=len)
def test_sampling_distribution_histograms_estimates_against_the_exact_mle(scenarios):
    rng = np.random.default_rng(5)
    summary = pl.DataFrame(
        [
            {
                "scenario": s,
                "replicate": r,
                "mle_pi": float(rng.uniform(0.2, 0.6)),
                "mle_lambda": float(rng.uniform(2, 8)),
                "pi_true": 0.4,
                "lambda_true": 5.0,
            }
            for s in scenarios
            for r in range(20)
        ]  # fmt: skip
    )
    best = summary.select(
        "scenario",
        "replicate",
        (pl.col("mle_pi") + 0.01).alias("pi_hat"),
        pl.col("mle_lambda").alias("lambda_hat"),
        pl.lit("adam").alias("optimizer"),
        pl.lit(0.3).alias("lr"),
    )
    # A diverged replicate (NaN) is left out; the last scenario has no gradient-descent fits.
    best = best.with_columns(
        pl.when(pl.col("replicate") == 0).then(np.nan).otherwise("pi_hat").alias("pi_hat")
    )
    if len(scenarios) > 1:
        best = best.filter(pl.col("scenario") != scenarios[-1])
    axes = _grid(figures.sampling_distribution(best, summary, scenarios), 2, len(scenarios))
    for j, name in enumerate(scenarios):
        gd = best.filter(pl.col("scenario") == name)
        assert axes[0, j].get_title() == f"{name} ({'GD lr 0.3' if gd.height else 'no GD fits'})"
        mle = summary.filter(pl.col("scenario") == name)
        for i, (est, ref, truth) in enumerate(
            [("pi_hat", "mle_pi", 0.4), ("lambda_hat", "mle_lambda", 5.0)]
        ):
            ax = axes[i, j]
            (line,) = ax.lines
            assert list(line.get_xdata()) == [truth, truth]
            labels = [p.get_label() for p in ax.patches]
            b = mle[ref].to_numpy()
            a = gd[est].to_numpy()
            a = a[np.isfinite(a)]
            both = np.concatenate([a, b])
            edges, counts = _step_counts(ax.patches[0], 10)  # 20 datasets: 10 bins
            assert edges[0] == pytest.approx(both.min()) and edges[-1] == pytest.approx(both.max())
            np.testing.assert_array_equal(counts, np.histogram(b, edges)[0])
            if gd.height:
                assert labels == ["exact MLE", figures.GD_AT_BEST]
                edges_gd, counts_gd = _step_counts(ax.patches[1], 10)
                np.testing.assert_array_equal(edges_gd, edges)  # shared bins
                np.testing.assert_array_equal(counts_gd, np.histogram(a, edges)[0])
                assert counts_gd.sum() == (19 if est == "pi_hat" else 20)  # NaN left out
            else:
                assert labels == ["exact MLE"]


@pytest.mark.parametrize("scenarios", SCENARIO_SETS, ids=len)
def test_reach_curves_share_within_reach_by_step(scenarios):
    rng = np.random.default_rng(6)
    rows = [
        {"scenario": s, "optimizer": opt, "lr": lr,
         "reach_step": None if rng.uniform() < 0.3 else int(rng.integers(0, 60))}
        for s in scenarios for opt in OPTIMIZERS for lr in LRS for _ in range(7)
    ]  # fmt: skip
    reach = pl.DataFrame(rows, schema_overrides={"reach_step": pl.Int64})
    fig = figures.reach_curves(reach, scenarios, max_steps=50, within=0.5)
    axes = _grid(fig, 1, len(scenarios))[0]
    assert axes[0].get_ylabel() == "share of fits within 0.5 SE of MLE"
    assert axes[-1].get_legend() is not None
    for ax, name in zip(axes, scenarios):
        assert ax.get_title() == name and ax.get_ylim() == (-0.05, 1.05)
        lines = {line.get_label(): line for line in ax.lines}
        assert len(lines) == len(OPTIMIZERS) * len(LRS)
        for opt in OPTIMIZERS:
            for lr in LRS:
                line = lines[f"{opt} lr {lr:g}"]
                hits = [r["reach_step"] for r in rows
                        if (r["scenario"], r["optimizer"], r["lr"]) == (name, opt, lr)]  # fmt: skip
                # Brute force: at each step, the share of fits that had got there (never: None).
                want = [sum(h is not None and h <= t for h in hits) / len(hits) for t in range(51)]
                np.testing.assert_array_equal(line.get_xdata(), np.arange(51))
                np.testing.assert_allclose(line.get_ydata(), want)


def test_save_writes_a_png_atomically(tmp_path):
    fig = figures.reach_curves(
        pl.DataFrame({"scenario": ["a"], "optimizer": ["adam"], "lr": [0.1], "reach_step": [3]}),
        ["a"],
        max_steps=10,
        within=1.0,
    )
    path = tmp_path / "figures" / "reach.png"
    path.parent.mkdir()
    path.write_bytes(b"old")
    figures.save(fig, path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["reach.png"]  # no temp file left
    image = Image.open(path)
    assert image.format == "PNG" and image.size == (round(3.8 * 100), round(3.0 * 100))


def test_save_creates_the_folder_and_keeps_the_old_file_when_drawing_fails(tmp_path):
    fig = figures.reach_curves(
        pl.DataFrame({"scenario": ["a"], "optimizer": ["adam"], "lr": [0.1], "reach_step": [3]}),
        ["a"],
        max_steps=10,
        within=1.0,
    )
    fresh = tmp_path / "new" / "deep" / "r.png"
    figures.save(fig, fresh)
    assert Image.open(fresh).format == "PNG"

    def broken(tmp, **kwargs):
        Path(tmp).write_bytes(b"half a png")
        raise RuntimeError("renderer died")

    fig.savefig = broken
    with pytest.raises(RuntimeError, match="renderer died"):
        figures.save(fig, fresh)
    assert sorted(p.name for p in fresh.parent.iterdir()) == ["r.png"]
    assert Image.open(fresh).format == "PNG"  # the old figure, intact
