"""The Makefile knows the DAG: each stage target lists exactly the modules the stage imports.

A stage whose code changed must rerun, and one whose code did not must not; so the Makefile's
per-stage module lists are checked against the real import graph (parsed, not imported).
"""

from __future__ import annotations

import re
import subprocess

import pytest

from pipeline.modules import ROOT, closure

TARGETS = {
    "data/summary.parquet": "generate",
    "data/fits.parquet": "sweep",
    "reports/recovery.parquet": "aggregate",
}


def _prerequisites(target: str) -> set[str]:
    """The target's prerequisites as make itself reads them (its printed database)."""
    out = subprocess.run(["make", "-pnq", "-C", str(ROOT), target], capture_output=True, text=True)
    match = re.search(rf"^{re.escape(target)}: (.+)$", out.stdout, re.MULTILINE)
    assert match, f"make knows no rule for {target}"
    return set(match.group(1).split())


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_stage_prerequisites_match_imports(target):
    """Every module file the stage's entry point reaches is a prerequisite, and no other."""
    modules = {p for p in _prerequisites(target) if p.startswith("pipeline/")}
    assert modules == {f"pipeline/{m}.py" for m in closure(TARGETS[target])}
    assert "pipeline/core/oracle/mle.py" in _prerequisites("data/summary.parquet")


def test_help_is_the_default_goal_and_lists_targets():
    out = subprocess.run(["make", "-s", "-C", str(ROOT)], capture_output=True, text=True)
    assert out.returncode == 0
    for target in ("all", "test", "ui", "tune", "dashboard", "data", "sweep", "report", "lint"):
        assert f"make {target} " in out.stdout
