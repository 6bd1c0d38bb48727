"""The README's quoted `make fit-counts` sessions are what the program prints today.

Each ```console block of README.md that starts with `$ make fit-counts …` is run as written
(through make, with NO_MLFLOW=1 so the run leaves nothing in the project's store) and its
quoted lines, up to the closing `…` line, must be the program's first lines exactly. A report
change that leaves the README behind fails here (issue 19 item 4: the README once quoted a
`FAMILY=zip` layout two generations old).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess

import pytest

from pipeline.stages.cli import ROOT

BLOCKS = [b.splitlines() for b in re.findall(r"```console\n(.*?)```",
                                             (ROOT / "README.md").read_text(), re.S)]  # fmt: skip
SESSIONS = [b for b in BLOCKS if b and b[0].startswith("$ make fit-counts ")]


def test_the_readme_quotes_fit_counts_sessions():
    assert len(SESSIONS) >= 3  # column (all), column (zip), formula (zip)


@pytest.mark.parametrize("block", SESSIONS, ids=[" ".join(b[0].split()[3:]) for b in SESSIONS])
def test_a_quoted_session_is_what_the_program_prints(block):
    cut = next(i for i, line in enumerate(block) if line.startswith("…"))
    quoted = block[1:cut]
    argv = shlex.split(block[0][2:])  # `make fit-counts FILE=… COLUMN=…`, quotes as a shell reads
    env = {**os.environ, "CI": "true"}
    done = subprocess.run([*argv[:1], "-s", "-o", ".venv/.installed", *argv[1:], "NO_MLFLOW=1"],
                          cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    printed = done.stdout.splitlines()
    assert _steady(printed[: len(quoted)]) == _steady(quoted)


def _steady(lines: list[str]) -> list[str]:
    """The lines with the gradient-descent section's numbers masked: its step count and its
    distance from the oracle (~1e-7 SE) follow float rounding, which another CPU's vector
    kernels may change; its wording still counts. Every other number is the oracle's, exact to
    the printed digits."""
    out, descent = [], False
    for line in lines:
        descent = line.startswith("Gradient descent (") or (descent and line.strip() != "")
        out.append(re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "#", line) if descent else line)
    return out
