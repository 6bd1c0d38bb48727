"""The file contract: every file a stage writes or reads, its kind, its stamp, one atomic write.

Every parquet file carries `zip.kind` (what it is) and `zip.params_hash` (the params that made
it) in its key-value metadata; `read` checks both, so a corrupt, foreign or stale file where a
stage expects its own output is reported (one line, exit 2), never silently reused. Every
write goes through `atomic`: a temp file beside the target, renamed over it when complete, so
an interrupted stage never leaves a half-written file under a real name.

`Layout(workdir)` names every path once; the Makefile's targets are the `MAKE_TARGETS`
(tests/test_makefile.py checks that they agree).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import polars as pl

from pipeline.core.errors import UserError

KIND_KEY = "zip.kind"
HASH_KEY = "zip.params_hash"
STUDY_KEY = "zip.study"


class File(NamedTuple):
    """A stage's parquet file: where it is and the `zip.kind` it carries."""

    path: Path
    kind: str


@dataclass(frozen=True)
class Layout:
    """Where everything lives under one work directory (`--workdir`).

    Attributes:
        workdir: the folder holding `data/`, `reports/` and `mlruns/`.
    """

    workdir: Path

    @property
    def data(self) -> Path:
        return self.workdir / "data"

    @property
    def reports(self) -> Path:
        return self.workdir / "reports"

    @property
    def figures(self) -> Path:
        return self.reports / "figures"

    @property
    def datasets(self) -> Path:
        return self.data / "datasets"

    def dataset(self, scenario: str, replicate: int) -> File:
        """The raw counts of one dataset (column `y`, int64)."""
        return File(self.datasets / scenario / f"{replicate:03d}.parquet", "dataset")

    @property
    def summary(self) -> File:
        """One row per dataset: seed, moments, exact MLE (the data stage's make target)."""
        return File(self.data / "summary.parquet", "summary")

    @property
    def histograms(self) -> File:
        return File(self.data / "histograms.parquet", "histograms")

    def reg_dataset(self, scenario: str) -> File:
        """A regression scenario's datasets: replicate, its design columns and `y`."""
        return File(self.data / "regression" / f"{scenario}.parquet", "reg_dataset")

    @property
    def reg_summary(self) -> File:
        """One row per regression dataset and coefficient: truth, Newton oracle, its SE."""
        return File(self.data / "reg_summary.parquet", "reg_summary")

    def reg(self, table: str, stage: str = "sweep") -> File:
        """A regression table of the sweep: "fits", "coefs" or "histories"."""
        prefix = "" if stage == "sweep" else f"{stage}_"
        return File(self.data / f"{prefix}reg_{table}.parquet", f"reg_{table}")

    def trial_reg(self, study: str, number: int, table: str) -> File:
        return File(self.trials(study) / f"{number:05d}.reg_{table}.parquet", f"trial_reg_{table}")

    def fits(self, stage: str = "sweep") -> File:
        """One row per fit of the stage's study ("sweep" is the sweep's make target)."""
        prefix = "" if stage == "sweep" else f"{stage}_"
        return File(self.data / f"{prefix}fits.parquet", "fits")

    def histories(self, stage: str = "sweep") -> File:
        """Long format: one row per fit and recorded step (nll, pi, lambda)."""
        prefix = "" if stage == "sweep" else f"{stage}_"
        return File(self.data / f"{prefix}histories.parquet", "histories")

    @property
    def blog(self) -> File:
        """The blog's fits reproduced by the sweep, beside the tuned learning rate."""
        return File(self.data / "blog.parquet", "blog")

    def trials(self, study: str) -> Path:
        return self.data / "trials" / study

    def trial_fits(self, study: str, number: int) -> File:
        return File(self.trials(study) / f"{number:05d}.parquet", "trial_fits")

    def trial_histories(self, study: str, number: int) -> File:
        return File(self.trials(study) / f"{number:05d}.histories.parquet", "trial_histories")

    def report(self, name: str) -> File:
        """A report table, e.g. `report("recovery")` (the aggregate stage's make target)."""
        return File(self.reports / f"{name}.parquet", name)

    @property
    def report_text(self) -> Path:
        return self.reports / "recovery.md"


MIN_FREE_BYTES = 64 * 2**20  # refuse to start a stage with less free space than this


def nearest_existing(path: Path) -> Path:
    """`path`, or the nearest folder above it that exists (where it would be created).

    Raises:
        UserError: a broken link on the way.
    """
    while not path.exists() and path != path.parent:
        if path.is_symlink():
            raise UserError(f"{path}: a broken link, not a folder")
        path = path.parent
    return path


def check_writable(*folders: Path, need: int = MIN_FREE_BYTES) -> None:
    """Make sure each folder can be written (creating nothing): it, or the nearest folder
    above it that exists, is a writable folder on a file system with space left.

    Run before a stage does any work, so that a work directory that is a file, lies on a
    read-only or full disk, or cannot be created is one line naming the path, not a traceback
    halfway through, and a refused run leaves no folder behind.

    Args:
        folders: the folders the stage writes into (e.g. `layout.data`, `workdir / "mlruns"`).
        need: free bytes each folder's file system must have.

    Raises:
        UserError: naming the folder and what is wrong with it.
    """
    for folder in folders:
        existing = nearest_existing(folder)
        if not existing.is_dir():
            raise UserError(f"{existing}: exists but is not a folder (needed for {folder})")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise UserError(f"{existing}: not writable (read-only file system or permissions)")
        free = shutil.disk_usage(existing).free
        if free < need:
            raise UserError(
                f"{existing}: only {free / 2**20:.0f} MB free, need at least {need / 2**20:.0f} MB"
            )


# The Makefile's file targets, relative to the work directory.
MAKE_TARGETS = {
    "generate": Layout(Path()).summary,
    "sweep": Layout(Path()).fits("sweep"),
    "aggregate": Layout(Path()).report("recovery"),
}


@contextlib.contextmanager
def atomic(path: Path | str) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success rename it over `path`, else remove it.

    Args:
        path: the target file (its folder is created).

    Yields:
        The temp path to write to.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write(df: pl.DataFrame, file: File, params_hash: str, **meta: str) -> None:
    """Write `df` to `file` atomically with its kind and stamp in the parquet metadata."""
    with atomic(file.path) as tmp:
        df.write_parquet(tmp, metadata={KIND_KEY: file.kind, HASH_KEY: params_hash, **meta})


def write_text(path: Path | str, text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic(path) as tmp:
        tmp.write_text(text)


def read_meta(file: File, params_hash: str | None = None) -> dict[str, str]:
    """The stamp of a stage's file; raises `UserError` if it is missing, corrupt or foreign.

    Args:
        file: the parquet file (its `kind` is what it must carry).
        params_hash: if given, the `zip.params_hash` it must carry (else it is stale).
    """
    path = file.path
    if not path.exists():
        raise UserError(f"{path}: missing (run the stage that writes it, e.g. `make data`)")
    try:
        meta = pl.read_parquet_metadata(path)
    except Exception:
        raise UserError(
            f"{path}: not a readable parquet file (corrupt?); delete it and rerun"
        ) from None
    if meta.get(KIND_KEY) != file.kind:
        raise UserError(
            f"{path}: not a {file.kind!r} file written by this pipeline (foreign file?)"
        )
    if params_hash is not None and meta.get(HASH_KEY) != params_hash:
        raise UserError(
            f"{path}: written for other params (hash {meta.get(HASH_KEY)}, expected "
            f"{params_hash}); rerun the stage that writes it"
        )
    return meta


def read(file: File, params_hash: str | None = None, columns=None) -> pl.DataFrame:
    """Read a stage's parquet file after checking its stamp (see `read_meta`)."""
    read_meta(file, params_hash)
    try:
        return pl.read_parquet(file.path, columns=columns)
    except Exception as err:
        raise UserError(
            f"{file.path}: cannot be read ({type(err).__name__}); delete it and rerun"
        ) from None
