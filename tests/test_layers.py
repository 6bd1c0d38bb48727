"""The house's rules, checked on the parsed import graph (nothing is imported).

- Imports point down: core < {analysis, store} < report < tracking < stages < entry modules
  (`pipeline/<stage>.py`, `pipeline/__init__.py`); analysis and store do not import each other.
- Each room imports only the third-party libraries its layer may use (DESIGN §1): the core
  only torch, numpy and scipy — no files, YAML, MLflow, Optuna or polars.
- No import circle; no function-local import except the two that save measured start-up
  time (stages/fit_counts: bad input is rejected before torch/scipy/matplotlib load;
  tracking/runs: MLflow loads only when a run is logged).
"""

from __future__ import annotations

import sys

import pytest

from pipeline.modules import PACKAGE, imports, local_imports, modules

RANK = {"core": 0, "analysis": 1, "store": 1, "report": 2, "tracking": 3, "stages": 4}
THIRD_PARTY = {
    "core": {"torch", "numpy", "scipy"},
    "analysis": {"numpy", "polars"},
    "store": {"numpy", "polars", "pyarrow", "formulaic"},
    "report": {"numpy", "polars", "matplotlib", "PIL", "optuna"},
    "tracking": {"numpy", "polars", "optuna", "mlflow"},
}
LAZY = {"stages/fit_counts", "tracking/runs"}


def _room(module: str) -> str:
    return module.split("/")[0] if "/" in module else "entry"


def _rank(module: str) -> int:
    return RANK.get(_room(module), 5)


@pytest.mark.parametrize("module", modules())
def test_imports_point_down(module):
    for target in local_imports(module):
        if target.endswith("__init__"):
            continue  # packages' docstring-only __init__ files
        room, other = _room(module), _room(target)
        if room == other:
            continue
        assert _rank(target) < _rank(module), f"{module} imports {target} (upward or sideways)"


@pytest.mark.parametrize("module", [m for m in modules() if _room(m) in THIRD_PARTY])
def test_rooms_use_only_their_libraries(module):
    allowed = THIRD_PARTY[_room(module)] | set(sys.stdlib_module_names) | {"pipeline"}
    used = {dotted.split(".")[0] for dotted, _, _ in imports(module)}
    assert used <= allowed, f"{module} imports {sorted(used - allowed)}"


def test_no_import_circle():
    graph = {m: {t for t in local_imports(m) if not t.endswith("__init__")} for m in modules()}
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph[node]):
            assert state.get(nxt) != 1, "import circle: " + " -> ".join([*path, nxt])
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in modules():
        if module not in state:
            visit(module, [module])


@pytest.mark.parametrize("module", modules())
def test_no_function_local_imports(module):
    local = [(dotted, line) for dotted, line, inside in imports(module) if inside]
    if module in LAZY:
        return
    assert not local, f"{module}: function-local imports {local}"


def test_every_room_is_documented_in_the_module_map():
    import pipeline

    for room in RANK:
        assert (PACKAGE / room / "__init__.py").exists()
        assert f"pipeline/{room}/" in (pipeline.__doc__ or ""), room
