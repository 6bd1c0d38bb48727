"""`environment_problem`: the machine's failures are recognised through any wrapping, bugs not."""

from __future__ import annotations

import errno
import sqlite3

import pytest

from pipeline.core.errors import environment_problem


@pytest.mark.parametrize(
    "err, expected",
    [
        (OSError(errno.ENOSPC, "No space left on device", "/data/x"), "/data/x: No space left"),
        (OSError(errno.EROFS, "Read-only file system", "/ro/y"), "/ro/y: Read-only file system"),
        (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/f/data"), "/f/data: Not a dir"),
        (sqlite3.OperationalError("database or disk is full"), "database or disk is full"),
        (
            RuntimeError("(sqlite3.OperationalError) attempt to write a readonly database"),
            "attempt to write a readonly database",
        ),
    ],
)
def test_the_machines_failures_are_one_line(err, expected):
    problem = environment_problem(err)
    assert problem is not None and expected in problem and "\n" not in problem


def test_the_cause_is_found_through_wrapping_exceptions():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/full/db")
        except OSError as inner:
            raise ValueError("MLflow could not log the batch") from inner
    except ValueError as outer:
        assert environment_problem(outer) == "/full/db: No space left on device"


@pytest.mark.parametrize(
    "err",
    [
        ValueError("bad shape"),
        KeyError("x"),
        OSError(errno.ECONNREFUSED, "refused"),
        ZeroDivisionError(),
    ],
)
def test_bugs_and_other_failures_keep_their_traceback(err):
    assert environment_problem(err) is None
