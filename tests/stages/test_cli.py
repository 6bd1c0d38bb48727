"""Tests of `pipeline.stages.cli`: exit codes and one-line errors, progress bars, the parser.

`run` is called in-process with `quiet_libraries` replaced by a recorder (the real one sets
process-wide warning filters and logger levels); its `sys.exit` is caught as `SystemExit`.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from pathlib import Path

import pytest

from pipeline.core.errors import UserError
from pipeline.stages import cli

REPO = Path(__file__).resolve().parents[2]  # tests/stages/test_cli.py -> the project root


class FakeTerminal(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def calls(monkeypatch) -> list[str]:
    """What ran, in order: "quiet" for `quiet_libraries`, then whatever the stage appends."""
    record: list[str] = []
    monkeypatch.setattr(cli, "quiet_libraries", lambda: record.append("quiet"))
    return record


def exit_code(main, argv=None) -> int:
    with pytest.raises(SystemExit) as info:
        cli.run(main, argv)
    return info.value.code


def test_exit_codes_are_the_conventional_ones():
    assert (cli.EXIT_USER_ERROR, cli.EXIT_INTERRUPTED) == (2, 130)  # 130 = 128 + SIGINT


@pytest.mark.parametrize("returned", [None, 0])
def test_a_stage_that_finishes_exits_0_silently(calls, capsys, returned):
    def main(argv):
        calls.append(f"main {argv}")
        return returned

    assert exit_code(main, ["--params", "p.yaml"]) == 0
    assert calls == ["quiet", "main ['--params', 'p.yaml']"]  # libraries quieted first
    assert capsys.readouterr() == ("", "")


def test_a_stages_own_status_passes_through(calls, capsys):
    # e.g. the dashboard returns its server's exit status
    assert exit_code(lambda argv: 3) == 3
    assert capsys.readouterr() == ("", "")


def test_user_error_is_one_line_and_exit_2(calls, capsys):
    def main(argv):
        print("partial output")
        raise UserError("params.yaml: fit.max_steps: must be >= 1, got 0")

    assert exit_code(main) == 2
    out, err = capsys.readouterr()
    assert out == "partial output\n"
    assert err == "error: params.yaml: fit.max_steps: must be >= 1, got 0\n"


def test_interrupt_is_exit_130(calls, capsys):
    def main(argv):
        raise KeyboardInterrupt

    assert exit_code(main) == 130
    assert capsys.readouterr() == ("", "interrupted\n")


def test_a_bug_keeps_its_traceback(calls, capsys):
    def main(argv):
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError, match="a bug"):
        cli.run(main)
    assert capsys.readouterr() == ("", "")


def test_run_quiets_the_libraries_before_main(monkeypatch):
    # the real quiet_libraries: the environment MLflow and matplotlib read at import is set
    # before main runs; its warning filters and logger levels are restored afterwards
    keys = ("MLFLOW_LOGGING_LEVEL", "MPLBACKEND", "DO_NOT_TRACK")
    for key in keys:
        monkeypatch.setenv(key, "placeholder")  # recorded, so the original comes back
        monkeypatch.delenv(key)
    monkeypatch.setenv("MPLBACKEND", "pdf")  # a user's choice is kept (setdefault)
    seen = {}
    levels = {name: logging.getLogger(name).level for name in ("mlflow", "optuna")}
    try:
        with warnings.catch_warnings():
            assert exit_code(lambda argv: seen.update({k: os.environ.get(k) for k in keys})) == 0
        assert {name: logging.getLogger(name).level for name in levels} == {
            "mlflow": logging.WARNING,
            "optuna": logging.WARNING,
        }
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    assert seen == {"MLFLOW_LOGGING_LEVEL": "WARNING", "MPLBACKEND": "pdf", "DO_NOT_TRACK": "1"}


@pytest.mark.parametrize(
    ("ci", "tty", "shown"),
    [
        (None, True, True),
        (None, False, False),
        ("true", True, False),
        ("TRUE", True, False),
        ("1", True, False),
        ("yes", True, False),
        ("false", True, True),
        ("0", True, True),
        ("", True, True),
        ("false", False, False),
    ],
)
def test_show_progress_only_on_a_terminal_outside_ci(monkeypatch, ci, tty, shown):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    monkeypatch.setattr("sys.stderr", FakeTerminal() if tty else io.StringIO())
    assert cli.show_progress() is shown


def test_progress_bar_is_silent_in_ci_even_on_a_terminal(monkeypatch):
    terminal = FakeTerminal()
    monkeypatch.setattr("sys.stderr", terminal)
    monkeypatch.setenv("CI", "true")
    bar = cli.progress(10, "fits", "fit")
    bar.update(4)
    bar.close()
    assert bar.disable is True and terminal.getvalue() == ""


def test_progress_bar_is_silent_when_stderr_is_not_a_terminal(monkeypatch):
    pipe = io.StringIO()
    monkeypatch.setattr("sys.stderr", pipe)
    monkeypatch.delenv("CI", raising=False)
    bar = cli.progress(10, "fits")
    bar.update(10)
    bar.close()
    assert bar.disable is True and pipe.getvalue() == ""


def test_progress_bar_on_a_terminal(monkeypatch):
    terminal = FakeTerminal()
    monkeypatch.setattr("sys.stderr", terminal)
    monkeypatch.delenv("CI", raising=False)
    bar = cli.progress(8, "gradient descent", "step")
    assert (bar.disable, bar.total, bar.desc, bar.unit, bar.leave) == (
        False,
        8,
        "gradient descent",
        "step",
        False,
    )
    bar.update(3)
    bar.refresh()
    assert "gradient descent:  38%" in terminal.getvalue()  # 3 of 8 steps
    assert "3/8" in terminal.getvalue()
    bar.close()


def test_parser_defaults_are_the_projects_files():
    p = cli.parser("Say what the stage does.")
    args = p.parse_args([])
    assert vars(args) == {"params": REPO / "params.yaml", "workdir": REPO}
    assert cli.ROOT == REPO and cli.DEFAULT_PARAMS == REPO / "params.yaml"
    assert (REPO / "pyproject.toml").is_file() and (REPO / "pipeline" / "__init__.py").is_file()
    assert p.description == "Say what the stage does."


def test_parser_reads_paths(tmp_path):
    args = cli.parser("x").parse_args(["--params", "other.yaml", "--workdir", str(tmp_path)])
    assert args.params == Path("other.yaml") and args.workdir == tmp_path  # Paths, not str


def test_parser_rejects_unknown_options(capsys):
    with pytest.raises(SystemExit) as info:
        cli.parser("x").parse_args(["--nope"])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith("unrecognized arguments: --nope")
