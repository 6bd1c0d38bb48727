"""The file contract: stamped parquet round-trips; foreign, corrupt or stale files are refused;
writes are atomic; the Makefile's targets are the contract's paths."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from pipeline.core.errors import UserError
from pipeline.store import files
from pipeline.store.files import File, Layout

HASH = "0123456789abcdef"
ROOT = Path(__file__).resolve().parents[2]


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


def test_write_read_roundtrip(tmp_path):
    path = File(tmp_path / "sub" / "summary.parquet", "summary")
    files.write(_summary(), path, HASH, **{"zip.note": "hello"})
    assert_frame_equal(files.read(path, HASH), _summary())
    meta = files.read_meta(path, HASH)
    assert meta[files.KIND_KEY] == "summary" and meta["zip.note"] == "hello"
    assert [p.name for p in path.path.parent.iterdir()] == ["summary.parquet"]  # no temp file left
    assert files.read(path, HASH, columns=["replicate"]).columns == ["replicate"]


def test_read_without_hash_accepts_any_stamp(tmp_path):
    path = File(tmp_path / "summary.parquet", "summary")
    files.write(_summary(), path, HASH)
    assert files.read(path).height == 3


def test_foreign_parquet_is_refused(tmp_path):
    path = File(tmp_path / "summary.parquet", "summary")
    _summary().write_parquet(path.path)  # plain polars: no stamp
    with pytest.raises(UserError, match="foreign") as info:
        files.read(path, HASH)
    assert str(path.path) in str(info.value)


def test_wrong_kind_is_refused(tmp_path):
    path = File(tmp_path / "summary.parquet", "summary")
    files.write(_summary(), File(path.path, "histograms"), HASH)
    with pytest.raises(UserError, match="'summary'"):
        files.read(path, HASH)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_file_is_refused(tmp_path, damage):
    path = File(tmp_path / "summary.parquet", "summary")
    files.write(_summary(), path, HASH)
    whole = path.path.read_bytes()
    path.path.write_bytes(
        {
            "garbage": b"not a parquet file at all",
            "truncated": whole[: len(whole) // 2],
            "empty": b"",
        }[damage]
    )
    with pytest.raises(UserError, match="corrupt") as info:
        files.read(path, HASH)
    assert str(path.path) in str(info.value)


def test_stale_hash_is_refused(tmp_path):
    path = File(tmp_path / "summary.parquet", "summary")
    files.write(_summary(), path, HASH)
    with pytest.raises(UserError, match="other params") as info:
        files.read(path, "fedcba9876543210")
    assert HASH in str(info.value) and "fedcba9876543210" in str(info.value)


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(UserError, match="missing"):
        files.read(File(tmp_path / "nope.parquet", "summary"))


def test_atomic_write_leaves_the_old_file_when_interrupted(tmp_path):
    path = tmp_path / "report.md"
    files.write_text(path, "old\n")
    with pytest.raises(RuntimeError), files.atomic(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]  # no temp file left


def test_makefile_targets_are_the_contracts_paths():
    text = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w./-]+\.parquet):", text, re.MULTILINE))
    assert targets == {str(f.path) for f in files.MAKE_TARGETS.values()}
    for stage, file in files.MAKE_TARGETS.items():
        assert re.search(rf"^{re.escape(str(file.path))}:.*\n\t.*pipeline\.{stage}\b", text,
                         re.MULTILINE), stage  # fmt: skip


def test_layout_names_every_stage_file_once(tmp_path):
    layout = Layout(tmp_path)
    named = [layout.summary, layout.histograms, layout.fits(), layout.fits("tune"),
             layout.histories(), layout.histories("tune"), layout.blog,
             layout.trial_fits("s", 1), layout.trial_histories("s", 1), layout.report("recovery"),
             layout.dataset("blog", 3)]  # fmt: skip
    assert len({f.path for f in named}) == len(named)
    assert layout.fits("tune").path.name == "tune_fits.parquet"
    assert layout.dataset("blog", 3).path == tmp_path / "data/datasets/blog/003.parquet"


def test_check_writable_creates_nothing_and_passes_a_good_folder(tmp_path):
    files.check_writable(tmp_path / "a" / "b", tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case", ["file", "under-file", "dangling-link"])
def test_check_writable_names_a_path_that_is_not_a_folder(tmp_path, case):
    """The audit's item 9: a work directory that is a file gave 350 lines of tracebacks."""
    target = tmp_path / "workdir"
    if case == "dangling-link":
        target.symlink_to(tmp_path / "nowhere")
    else:
        target.write_text("x")
    folder = target / "data" if case != "file" else target / "data" / "deeper"
    with pytest.raises(UserError) as info:
        files.check_writable(folder)
    message = str(info.value)
    assert message.startswith(str(target)) and "\n" not in message


def test_check_writable_refuses_a_read_only_or_full_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(files.os, "access", lambda path, mode: False)  # root ignores chmod
    with pytest.raises(UserError, match=r"not writable \(read-only file system"):
        files.check_writable(tmp_path / "data")
    monkeypatch.undo()
    usage = files.shutil.disk_usage(tmp_path)._replace(free=10 * 2**20)
    monkeypatch.setattr(files.shutil, "disk_usage", lambda path: usage)
    with pytest.raises(UserError, match="only 10 MB free, need at least 64 MB"):
        files.check_writable(tmp_path / "data")
