"""The kinds of failure every layer may report, in a module that imports only the stdlib.

`UserError` is a problem the user can fix (bad params, bad data, a bad storage URL): stages
report it as one line on stderr with exit status 2, never a traceback. `NotIdentifiableError`
is raised by the maths when the data do not determine the parameters (every count zero).
`environment_problem` recognises failures of the machine rather than of the code (a full
disk, a read-only file system, a path that is a file or does not exist), whichever library
raised them, so that they too are one line.
"""

import errno

_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
           errno.EISDIR, errno.ENOENT, errno.EDQUOT, errno.EIO, errno.ENAMETOOLONG}  # fmt: skip
# What SQLite (through SQLAlchemy and MLflow) says when the disk, not the code, is at fault.
_PHRASES = ("database or disk is full", "attempt to write a readonly database",
            "unable to open database file", "disk i/o error", "no space left on device",
            "read-only file system")  # fmt: skip


class UserError(Exception):
    """A problem the user can fix; reported as one line with exit status 2."""


class NotIdentifiableError(ValueError):
    """The data do not determine the parameters (e.g. every count is zero)."""


def environment_problem(err: BaseException) -> str | None:
    """One line naming the path and what is wrong, if `err` (or what caused it) is the
    machine's fault; else None (a bug keeps its traceback).

    Args:
        err: the exception, possibly wrapping the real cause (`__cause__`, `__context__`).
    """
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in _ERRNOS:
            where = err.filename if err.filename is not None else "a file"
            return f"{where}: {err.strerror or type(err).__name__}"
        text = str(err).lower()
        for phrase in _PHRASES:
            if phrase in text:
                return f"the tracking store or a file: {phrase}"
        err = err.__cause__ or err.__context__
    return None
