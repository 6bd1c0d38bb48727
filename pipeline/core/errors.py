"""The two kinds of failure every layer may report, in a module that imports nothing.

`UserError` is a problem the user can fix (bad params, bad data, a bad storage URL): stages
report it as one line on stderr with exit status 2, never a traceback. `NotIdentifiableError`
is raised by the maths when the data do not determine the parameters (every count zero).
"""


class UserError(Exception):
    """A problem the user can fix; reported as one line with exit status 2."""


class NotIdentifiableError(ValueError):
    """The data do not determine the parameters (e.g. every count is zero)."""
