"""The data stage's files: histogram frames round-trip, load_data checks what it reads."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pipeline.core.errors import UserError
from pipeline.core.histogram import Histogram
from pipeline.store import datasets, files
from pipeline.store.files import Layout

HASH = "0123456789abcdef"


def _hists() -> dict[tuple[str, int], Histogram]:
    return {
        ("a", 0): Histogram(np.array([0, 1, 4], np.int64), np.array([5, 2, 1], np.int64)),
        ("a", 1): Histogram(np.array([0], np.int64), np.array([8], np.int64)),
        ("b", 0): Histogram(np.array([2, 3], np.int64), np.array([1, 7], np.int64)),
    }


def _write_study(workdir, data_hash=HASH):
    hists = _hists()
    summary = pl.DataFrame({"scenario": [k[0] for k in hists], "replicate": [k[1] for k in hists]})
    layout = Layout(workdir)
    files.write(datasets.histograms_to_frame(hists), layout.histograms, data_hash)
    files.write(summary, layout.summary, data_hash)


def test_histogram_frame_roundtrip():
    hists = _hists()
    frame = datasets.histograms_to_frame(hists)
    assert frame.schema == {
        "scenario": pl.String,
        "replicate": pl.Int64,
        "value": pl.Int64,
        "freq": pl.Int64,
    }
    back = datasets.histograms_from_frame(frame.sample(fraction=1.0, shuffle=True, seed=1))
    assert sorted(back) == sorted(hists)
    for key, hist in hists.items():
        np.testing.assert_array_equal(back[key].values, hist.values)
        np.testing.assert_array_equal(back[key].freqs, hist.freqs)
        assert back[key].values.dtype == np.int64 and back[key].freqs.dtype == np.int64


def test_load_data_roundtrip(tmp_path):
    _write_study(tmp_path)
    summary, hists = datasets.load_data(Layout(tmp_path), HASH)
    assert list(hists) == [("a", 0), ("a", 1), ("b", 0)]
    assert summary.height == 3
    np.testing.assert_array_equal(hists[("b", 0)].freqs, [1, 7])


def test_load_data_refuses_foreign_summary_in_one_line(tmp_path):
    _write_study(tmp_path)
    path = Layout(tmp_path).summary.path
    pl.DataFrame({"scenario": ["a"], "replicate": [0]}).write_parquet(path)
    with pytest.raises(UserError) as info:
        datasets.load_data(Layout(tmp_path), HASH)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message


def test_load_data_refuses_stale_histograms(tmp_path):
    _write_study(tmp_path)
    files.write(datasets.histograms_to_frame(_hists()), Layout(tmp_path).histograms, "0" * 16)
    with pytest.raises(UserError, match="histograms.parquet: written for other params"):
        datasets.load_data(Layout(tmp_path), HASH)


def test_load_data_reports_missing_histogram(tmp_path):
    _write_study(tmp_path)
    hists = _hists()
    del hists[("b", 0)]
    files.write(datasets.histograms_to_frame(hists), Layout(tmp_path).histograms, HASH)
    with pytest.raises(UserError, match=r"no histogram for .*\('b', 0\)"):
        datasets.load_data(Layout(tmp_path), HASH)
