"""The Makefile knows the DAG: each stage target lists exactly the modules the stage imports.

A stage whose code changed must rerun, and one whose code did not must not; so the Makefile's
per-stage module lists are checked against the real import graph (parsed, not imported).
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pipeline"
STAGES = {"GENERATE": "generate", "SWEEP": "sweep", "AGGREGATE": "aggregate"}


def _local_imports(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline"):
            parts = node.module.split(".")
            found |= {a.name for a in node.names} if len(parts) == 1 else {parts[1]}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("pipeline.")}
    return found


def _closure(module: str) -> set[str]:
    seen: set[str] = set()
    todo = [module]
    while todo:
        mod = todo.pop()
        if mod not in seen:
            seen.add(mod)
            todo.extend(_local_imports(mod))
    return seen


def _makefile_modules(var: str) -> set[str]:
    text = (ROOT / "Makefile").read_text()
    match = re.search(rf"^{var}_MODULES := (.+)$", text, re.MULTILINE)
    assert match, f"Makefile has no {var}_MODULES"
    return set(match.group(1).split())


@pytest.mark.parametrize("var", sorted(STAGES))
def test_stage_prerequisites_match_imports(var):
    assert _makefile_modules(var) == _closure(STAGES[var]) | {"__init__"}


def test_help_is_the_default_goal_and_lists_targets():
    out = subprocess.run(["make", "-s", "-C", str(ROOT)], capture_output=True, text=True)
    assert out.returncode == 0
    for target in ("all", "test", "ui", "tune", "dashboard", "data", "sweep", "report", "lint"):
        assert f"make {target} " in out.stdout
