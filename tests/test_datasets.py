"""Stamped parquet I/O: our files round-trip; foreign, corrupt or stale files are refused."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from pipeline import datasets
from pipeline.errors import UserError
from pipeline.histogram import Histogram

HASH = "0123456789abcdef"


def _summary() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "scenario": ["a", "a", "b"],
            "replicate": [0, 1, 0],
            "mle_pi": [0.5, float("nan"), 0.1],
            "boundary": [False, None, True],
        },
        schema_overrides={"boundary": pl.Boolean},
    )


def _hists() -> dict[tuple[str, int], Histogram]:
    return {
        ("a", 0): Histogram(np.array([0, 1, 4], np.int64), np.array([5, 2, 1], np.int64)),
        ("a", 1): Histogram(np.array([0], np.int64), np.array([8], np.int64)),
        ("b", 0): Histogram(np.array([2, 3], np.int64), np.array([1, 7], np.int64)),
    }


def _write_study(workdir, data_hash=HASH):
    hists = _hists()
    summary = pl.DataFrame({"scenario": [k[0] for k in hists], "replicate": [k[1] for k in hists]})
    out = datasets.data_dir(workdir)
    datasets.write(
        datasets.histograms_to_frame(hists), out / "histograms.parquet", "histograms", data_hash
    )
    datasets.write(summary, out / "summary.parquet", "summary", data_hash)


def test_write_read_roundtrip(tmp_path):
    path = tmp_path / "sub" / "summary.parquet"
    datasets.write(_summary(), path, "summary", HASH, **{"zip.note": "hello"})
    assert_frame_equal(datasets.read(path, "summary", HASH), _summary())
    meta = datasets.read_meta(path, "summary", HASH)
    assert meta[datasets.KIND_KEY] == "summary" and meta["zip.note"] == "hello"
    assert [p.name for p in path.parent.iterdir()] == ["summary.parquet"]  # no temp file left
    assert datasets.read(path, "summary", HASH, columns=["replicate"]).columns == ["replicate"]


def test_read_without_hash_accepts_any_stamp(tmp_path):
    path = tmp_path / "summary.parquet"
    datasets.write(_summary(), path, "summary", HASH)
    assert datasets.read(path, "summary").height == 3


def test_foreign_parquet_is_refused(tmp_path):
    path = tmp_path / "summary.parquet"
    _summary().write_parquet(path)  # plain polars: no stamp
    with pytest.raises(UserError, match="foreign") as info:
        datasets.read(path, "summary", HASH)
    assert str(path) in str(info.value)


def test_wrong_kind_is_refused(tmp_path):
    path = tmp_path / "summary.parquet"
    datasets.write(_summary(), path, "histograms", HASH)
    with pytest.raises(UserError, match="'summary'"):
        datasets.read(path, "summary", HASH)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_file_is_refused(tmp_path, damage):
    path = tmp_path / "summary.parquet"
    datasets.write(_summary(), path, "summary", HASH)
    whole = path.read_bytes()
    path.write_bytes(
        {
            "garbage": b"not a parquet file at all",
            "truncated": whole[: len(whole) // 2],
            "empty": b"",
        }[damage]
    )
    with pytest.raises(UserError, match="corrupt") as info:
        datasets.read(path, "summary", HASH)
    assert str(path) in str(info.value)


def test_stale_hash_is_refused(tmp_path):
    path = tmp_path / "summary.parquet"
    datasets.write(_summary(), path, "summary", HASH)
    with pytest.raises(UserError, match="other params") as info:
        datasets.read(path, "summary", "fedcba9876543210")
    assert HASH in str(info.value) and "fedcba9876543210" in str(info.value)


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(UserError, match="missing"):
        datasets.read(tmp_path / "nope.parquet", "summary")


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


def test_load_study_roundtrip(tmp_path):
    _write_study(tmp_path)
    summary, hists = datasets.load_study(tmp_path, HASH)
    assert list(hists) == [("a", 0), ("a", 1), ("b", 0)]
    assert summary.height == 3
    np.testing.assert_array_equal(hists[("b", 0)].freqs, [1, 7])


def test_load_study_refuses_foreign_summary_in_one_line(tmp_path):
    _write_study(tmp_path)
    path = datasets.data_dir(tmp_path) / "summary.parquet"
    pl.DataFrame({"scenario": ["a"], "replicate": [0]}).write_parquet(path)
    with pytest.raises(UserError) as info:
        datasets.load_study(tmp_path, HASH)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message


def test_load_study_refuses_stale_histograms(tmp_path):
    _write_study(tmp_path)
    datasets.write(
        datasets.histograms_to_frame(_hists()),
        datasets.data_dir(tmp_path) / "histograms.parquet",
        "histograms",
        "0" * 16,
    )
    with pytest.raises(UserError, match="histograms.parquet: written for other params"):
        datasets.load_study(tmp_path, HASH)


def test_load_study_reports_missing_histogram(tmp_path):
    _write_study(tmp_path)
    hists = _hists()
    del hists[("b", 0)]
    datasets.write(
        datasets.histograms_to_frame(hists),
        datasets.data_dir(tmp_path) / "histograms.parquet",
        "histograms",
        HASH,
    )
    with pytest.raises(UserError, match=r"no histogram for .*\('b', 0\)"):
        datasets.load_study(tmp_path, HASH)
