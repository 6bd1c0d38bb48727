"""`python -m pipeline.modules STAGE`: the package modules a stage imports, for the Makefile.

The package's import graph, parsed from the source (nothing is imported; standard library only,
so make can run it before the virtual environment exists). A stage's target depends on exactly
these files, so it reruns when its code changes and only then. `tests/test_layers.py` checks the
house's import rules on the same graph. Modules are named by their path under `pipeline/`
without `.py` (`core/oracle/mle`, `__init__`, `core/__init__`).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
ROOT = PACKAGE.parent
TYPING = {"TYPE_CHECKING", "typing.TYPE_CHECKING"}


def modules() -> list[str]:
    return sorted(p.relative_to(PACKAGE).with_suffix("").as_posix() for p in PACKAGE.rglob("*.py"))


def _name(dotted: str) -> str | None:
    """`pipeline.core.oracle.mle` -> `core/oracle/mle`; a package -> its `__init__`; outside ->
    None."""
    parts = dotted.split(".")
    if parts[0] != "pipeline":
        return None
    rel = "/".join(parts[1:])
    if not rel:
        return "__init__"
    if (PACKAGE / rel).is_dir():
        return f"{rel}/__init__"
    return rel if (PACKAGE / f"{rel}.py").exists() else None


def imports(module: str) -> list[tuple[str, int, bool]]:
    """(imported dotted name, line, inside a function) for every import statement."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found = []

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and ast.unparse(child.test) in TYPING:
                continue  # imports for annotations only: never run
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                if child.module == "pipeline" or (
                    child.module.startswith("pipeline.")
                    and (PACKAGE / child.module.split(".", 1)[1].replace(".", "/")).is_dir()
                ):
                    found.extend(
                        (f"{child.module}.{a.name}", child.lineno, in_function) for a in child.names
                    )
                else:
                    found.append((child.module, child.lineno, in_function))
            visit(child, inner)

    visit(tree, False)
    return found


def local_imports(module: str) -> set[str]:
    """The package modules `module` imports (a package import counts its `__init__`)."""
    out = set()
    for dotted, _, _ in imports(module):
        name = _name(dotted)
        if name is not None:
            out.add(name)
            parts = name.split("/")
            for i in range(1, len(parts)):  # importing a.b runs a/__init__ first
                out.add("/".join(parts[:i]) + "/__init__")
            out.add("__init__")
    return out


def closure(module: str) -> set[str]:
    seen: set[str] = set()
    todo = [module]
    while todo:
        mod = todo.pop()
        if mod not in seen:
            seen.add(mod)
            todo.extend(local_imports(mod))
    return seen | {"__init__"}


def main(argv: list[str]) -> int:
    """Print the sorted module files (`pipeline/...py`) the entry module of each named stage
    reaches."""
    if not argv or any(not (PACKAGE / f"{stage}.py").exists() for stage in argv):
        print(
            f"usage: python -m pipeline.modules STAGE... (entry modules under {PACKAGE.name}/)",
            file=sys.stderr,
        )
        return 2
    found = set().union(*(closure(stage) for stage in argv))
    print(" ".join(f"pipeline/{m}.py" for m in sorted(found)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
