"""What every stage's entry point shares: one-line user errors, quiet libraries, progress bars.

Nothing here runs at import: the entry modules (`python -m pipeline.<stage>`) call
`run(main)`, which quiets the libraries first, so importing a stage in a test changes no
global state.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm import tqdm

from pipeline.core.errors import UserError, environment_problem
from pipeline.tracking.quiet import quiet_libraries

ROOT = Path(__file__).resolve().parents[2]  # the project: params.yaml, data/, mlruns/
DEFAULT_PARAMS = ROOT / "params.yaml"

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports when the reader left early


def in_ci() -> bool:
    """Whether `CI` says this runs in continuous integration (`CI=true`, `1` or `yes`)."""
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def show_progress() -> bool:
    """Progress bars only on an interactive terminal, never in CI (`CI=true`)."""
    return not in_ci() and sys.stderr.isatty()


def progress_lines() -> bool:
    """One plain line per finished unit of work (a trial) instead of a bar: output that is not
    a terminal (a log file, a pipe), outside CI, whose logs stay as they are."""
    return not in_ci() and not sys.stderr.isatty()


def progress(total: int, desc: str, unit: str = "it"):
    """A tqdm bar on a terminal; a disabled (silent) one otherwise."""

    return tqdm(total=total, desc=desc, unit=unit, disable=not show_progress(), leave=False)


def parser(description: str) -> argparse.ArgumentParser:
    """The argument parser every stage starts from: `--params PATH`."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--params",
        type=Path,
        default=DEFAULT_PARAMS,
        help="path to params.yaml (default: the project's)",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=ROOT,
        help="folder holding data/, reports/ and mlruns/ (default: the project root)",
    )
    return p


def _silence_stdout() -> None:
    """Point stdout at /dev/null: the reader is gone, and the interpreter's last flush of what
    is still buffered must not raise a second BrokenPipeError (Python's documented recipe)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by a stream without a descriptor
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None):
    """Run a stage's `main`, turning user errors and interrupts into exit codes.

    Args:
        main: the stage's `main(argv)`; may raise `UserError`.
        argv: command-line arguments (default: `sys.argv[1:]`).

    Returns:
        Never: exits the process with the status `main` returns (0 for None), 2 (user error,
        or the machine's: a full disk, a read-only or missing folder — see
        `errors.environment_problem`), 130 (interrupted) or, quietly, 141 (stdout was a pipe
        whose reader left early, as `| head -1` does).
    """
    quiet_libraries()
    try:
        code = main(argv)
        sys.stdout.flush()  # a closed pipe shows here, not as a traceback at interpreter exit
    except BrokenPipeError:
        _silence_stdout()
        code = EXIT_BROKEN_PIPE
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        code = EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except Exception as err:
        problem = environment_problem(err)
        if problem is None:
            raise  # a bug: keep the traceback
        print(f"error: {problem}", file=sys.stderr)
        code = EXIT_USER_ERROR
    sys.exit(code or 0)


def logged(tracker, log: Callable[[], str]) -> str:
    """Run `log` (which opens and fills one MLflow run, returning its id) after closing the
    store's orphaned runs; if it is interrupted or fails, every run this process opened is
    closed KILLED or FAILED (never left RUNNING), and the error goes on.

    Args:
        tracker: the stage's `tracking.runs.Tracker`.
        log: the logging call.

    Returns:
        The run id `log` returned.
    """
    try:
        tracker.close_orphans()
        return log()
    except KeyboardInterrupt:
        tracker.end_all("KILLED")
        raise
    except BaseException:
        tracker.end_all("FAILED")
        raise
