"""`fit_counts` writing into a pipe whose reader left (`... | head -1`): it ends quietly, with
exit status 141 (128 + SIGPIPE) and no BrokenPipeError traceback (`stages.cli.run`)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipeline.stages import cli
from pipeline.stages.cli import ROOT

EXAMPLE = ROOT / "examples" / "fish_caught.csv"


def command(tiny_params) -> list[str]:
    return [sys.executable, "-m", "pipeline.fit_counts", str(EXAMPLE), "--column", "count",
            "--no-mlflow", "--params", str(tiny_params), "--family", "zip"]  # fmt: skip


def test_a_pipe_closed_before_the_report_is_written(tiny_params, tmp_path):
    """The reader end is closed before the stage prints: its write fails for certain."""
    proc = subprocess.Popen(command(tiny_params), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=tmp_path, env={**os.environ, "CI": "true"})  # fmt: skip
    proc.stdout.close()  # no reader left
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == cli.EXIT_BROKEN_PIPE == 141
    assert err == "", err  # no traceback, no "Exception ignored ... BrokenPipeError"


def test_head_1_gets_the_first_line_and_nothing_else_is_said(tiny_params, tmp_path):
    """The shell recipe of the audit: `| head -1` (head may leave before or after the write)."""
    line = " ".join(f"'{a}'" for a in command(tiny_params)) + " | head -1"
    proc = subprocess.run(["bash", "-c", line], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "CI": "true"}, timeout=300)  # fmt: skip
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.startswith("Count families (zip): ") and proc.stdout.count("\n") == 1


def test_run_maps_a_broken_pipe_to_141_without_output(monkeypatch, capsys):
    monkeypatch.setattr(cli, "quiet_libraries", lambda: None)

    def main(argv):
        raise BrokenPipeError(32, "Broken pipe")

    with pytest.raises(SystemExit) as exit_:
        cli.run(main, [])
    assert exit_.value.code == 141
    assert capsys.readouterr() == ("", "")
