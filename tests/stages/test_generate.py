"""The data stage: reproducible files, exact-MLE summary, stale files, MLflow, figures."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import struct
import subprocess
import sys
import termios
import threading

import numpy as np
import polars as pl
import pytest

from pipeline.core.errors import UserError
from pipeline.core.histogram import histogram
from pipeline.core.oracle.mle import exact_mle
from pipeline.stages import config, generate
from pipeline.store import datasets, files
from pipeline.store.files import Layout


def _files(workdir) -> dict[str, bytes]:
    data = Layout(workdir).data
    return {str(p.relative_to(data)): p.read_bytes() for p in sorted(data.rglob("*.parquet"))}


def test_same_params_same_bytes(tmp_path, tiny_params):
    params = config.load(tiny_params)
    generate.generate(params, tmp_path / "a")
    generate.generate(params, tmp_path / "b")
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(a) == 2 * 2 + 2 and a == b


def test_other_datasets_unchanged_and_stale_removed(tmp_path, write_params, tiny_config):
    base = generate.generate(config.load(write_params()), tmp_path)[0]
    before = _files(tmp_path)
    foreign = Layout(tmp_path).data / "datasets" / "blog" / "mine.parquet"
    pl.DataFrame({"y": [1]}).write_parquet(foreign)
    scenarios = [{"name": "new", "pi": 0.1, "lambda": 2.0}, *tiny_config["data"]["scenarios"]]
    bigger = write_params({"data": {"replicates": 3, "scenarios": scenarios}}, name="more.yaml")
    generate.generate(config.load(bigger), tmp_path)
    after = _files(tmp_path)
    for name in before:
        if name.startswith("datasets/"):  # same counts (the stamp in the footer changed)
            path = Layout(tmp_path).data / name
            assert pl.read_parquet(path).equals(pl.read_parquet(io.BytesIO(before[name]))), name
    assert "datasets/new/002.parquet" in after and "datasets/blog/002.parquet" in after
    summary, _ = datasets.load_data(Layout(tmp_path), config.load(bigger).digest("seed", "data"))
    assert summary.filter(pl.col("scenario") == "blog")["mle_pi"][:2].to_list() == (
        base.filter(pl.col("scenario") == "blog")["mle_pi"].to_list()
    )
    # Back to the tiny params: the extra datasets we wrote go, the foreign file stays.
    generate.generate(config.load(write_params()), tmp_path)
    assert sorted(_files(tmp_path)) == sorted([*before, "datasets/blog/mine.parquet"])
    assert not (Layout(tmp_path).data / "datasets" / "new").exists()


def test_rate_beyond_numpy_is_a_user_error(tmp_path, write_params):
    path = write_params({"data": {"scenarios": [{"name": "blog", "pi": 0.5, "lambda": 1e19}]}})
    with pytest.raises(UserError, match=r"data.scenarios\[0\].lambda: numpy cannot"):
        generate.generate(config.load(path), tmp_path)
    assert not (tmp_path / "data").exists()


def test_summary_matches_exact_mle_and_raw_data(tmp_path, tiny_params):
    params = config.load(tiny_params)
    generate.generate(params, tmp_path)
    stamp = params.digest("seed", "data")
    summary, hists = datasets.load_data(Layout(tmp_path), stamp)
    assert summary.columns == [
        "scenario",
        "replicate",
        "seed",
        "n",
        "pi_true",
        "lambda_true",
        "zero_share",
        "mean",
        "variance",
        "mle_pi",
        "mle_lambda",
        "mle_nll",
        "se_pi",
        "se_lambda",
        "se_logit_pi",
        "se_log_lambda",
        "boundary",
        "identifiable",
    ]
    assert summary.height == 4 and summary["seed"].n_unique() == 4
    for row in summary.iter_rows(named=True):
        file = Layout(tmp_path).dataset(row["scenario"], row["replicate"])
        y = files.read(file, stamp)["y"].to_numpy()
        hist = hists[(row["scenario"], row["replicate"])]
        np.testing.assert_array_equal(hist.freqs, histogram(y).freqs)
        assert row["n"] == y.size == params.data.n
        assert row["zero_share"] == pytest.approx(np.mean(y == 0), rel=1e-12)
        assert row["mean"] == pytest.approx(y.mean(), rel=1e-12)
        assert row["variance"] == pytest.approx(y.var(ddof=1), rel=1e-12)
        fit = exact_mle(hist)
        got = [
            row[k]
            for k in ("mle_pi", "mle_lambda", "mle_nll", "se_pi", "se_lambda", "se_log_lambda")
        ]
        assert got == [fit.pi, fit.lam, fit.nll, fit.se_pi, fit.se_lam, fit.se_log_lam]
        assert row["boundary"] == fit.boundary and row["identifiable"]


def test_stage_logs_to_mlflow_and_survives_all_zero_scenario(
    tmp_path, write_params, tiny_config, isolated_mlflow, capsys, monkeypatch
):
    from mlflow.tracking import MlflowClient

    # lambda = 1e-9: P(any count > 0 in 500 draws) < 3e-7, so both replicates are all zeros
    all_zero = {"name": "all-zero", "pi": 0.5, "lambda": 1e-9}
    scenarios = [*tiny_config["data"]["scenarios"], all_zero]
    path = write_params({"data": {"scenarios": scenarios}})
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # as on a terminal: bar shown
    assert generate.main(["--params", str(path), "--workdir", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "generate:" in err and "dataset/s]" in err
    assert "all-zero" in out and "| blog" in out
    assert "warning: scenario 'all-zero': 2 of 2 datasets have only zeros" in err
    params = config.load(path)
    summary, _ = datasets.load_data(Layout(tmp_path), params.digest("seed", "data"))
    zeros = summary.filter(pl.col("scenario") == "all-zero")
    assert zeros["identifiable"].to_list() == [False, False]
    assert zeros["mle_pi"].is_nan().all() and zeros["boundary"].is_null().all()

    client = MlflowClient(tracking_uri=isolated_mlflow)
    exp = client.get_experiment_by_name("zip-test")
    (run,) = client.search_runs([exp.experiment_id], "tags.`zip.stage` = 'generate'")
    assert run.info.status == "FINISHED"
    assert run.data.tags["zip.params_hash"] == params.digest(*config.STAGE_BLOCKS["generate"])
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.data.tags["zip.level"] == "invocation"
    assert run.data.params["data.n"] == "500" and run.data.params["seed"] == "0"
    assert run.data.params["data.scenarios.all-zero.pi"] == "0.5"
    assert run.data.metrics["blog.mle_pi_mean"] == pytest.approx(
        summary.filter(pl.col("scenario") == "blog")["mle_pi"].mean()
    )
    assert run.data.metrics["not_identifiable"] == 2
    artifacts = {
        f.path for d in ("data", "figures") for f in client.list_artifacts(run.info.run_id, d)
    }
    assert {
        "data/summary.parquet",
        "data/summary.csv",
        "data/scenarios.md",
        "data/histograms.parquet",
        "figures/blog.png",
        "figures/rare-events.png",
        "figures/all-zero.png",
    } <= artifacts
    assert not (tmp_path / "mlartifacts").exists()


def _run_on_terminal(cmd: list[str], env: dict, cwd) -> tuple[int, bytes, bytes]:
    """Run `cmd` with stderr on an 80-column pseudo-terminal; (returncode, stdout, stderr)."""
    master, slave = pty.openpty()
    # tqdm draws nothing on a terminal of width 0, the size a fresh pty reports.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    chunks: list[bytes] = []

    def drain():
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: every writer closed the terminal
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        proc = subprocess.run(
            cmd, stdout=subprocess.PIPE, stderr=slave, env=env, cwd=cwd, timeout=300
        )
    finally:
        os.close(slave)
        reader.join(timeout=10)
        os.close(master)
    return proc.returncode, proc.stdout, b"".join(chunks)


def test_ci_smoke_run_prints_no_progress_bar(tmp_path, tiny_params, stage_env):
    # stderr on a terminal, where only CI=true keeps the bar off (the in-process MLflow test
    # above checks that the bar does show on a terminal outside CI).
    cmd = [
        sys.executable,
        "-m",
        "pipeline.generate",
        "--params",
        str(tiny_params),
        "--workdir",
        str(tmp_path),
    ]
    code, out, err = _run_on_terminal(cmd, stage_env, tmp_path)
    assert code == 0, err.decode(errors="replace")
    assert b"Traceback" not in err and b"dataset/s]" not in err, err.decode(errors="replace")
    assert b"generate: 4 datasets" in out
    assert (tmp_path / "data" / "summary.parquet").exists()
