"""The Makefile knows the DAG: each stage target lists exactly the modules the stage imports.

A stage whose code changed must rerun, and one whose code did not must not; so the Makefile's
per-stage module lists are checked against the real import graph (parsed, not imported).
"""

from __future__ import annotations

import re
import subprocess

import pytest
from import_graph import ROOT, closure

STAGES = {"GENERATE": "generate", "SWEEP": "sweep", "AGGREGATE": "aggregate"}


def _makefile_modules(var: str) -> set[str]:
    text = (ROOT / "Makefile").read_text()
    match = re.search(rf"^{var}_MODULES := (.+)$", text, re.MULTILINE)
    assert match, f"Makefile has no {var}_MODULES"
    return set(match.group(1).split())


@pytest.mark.parametrize("var", sorted(STAGES))
def test_stage_prerequisites_match_imports(var):
    """Every module file the stage's entry point reaches, as paths under pipeline/."""
    assert _makefile_modules(var) == closure(STAGES[var])


def test_help_is_the_default_goal_and_lists_targets():
    out = subprocess.run(["make", "-s", "-C", str(ROOT)], capture_output=True, text=True)
    assert out.returncode == 0
    for target in ("all", "test", "ui", "tune", "dashboard", "data", "sweep", "report", "lint"):
        assert f"make {target} " in out.stdout
