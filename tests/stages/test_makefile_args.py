"""`make fit-counts FILE=… COLUMN=… WHERE=…` hands the user's text to the program verbatim.

The recipe never splices user text into its command line (make exports it, the shell reads it
as "$ZIP_…"), so quotes, `$(…)`, backticks, `;`, newlines and make's own `$(shell …)` reach
`pipeline.fit_counts` as typed and run nothing. Most tests run the real Makefile with
`PY=<a script that prints its argv as JSON>` in `tmp_path` (`-o .venv/.installed`: no install);
one runs the real program.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAKEFILE = ROOT / "Makefile"
INSTALLED = ".venv/.installed"

# Each value names the sentinel file `{s}` that a shell (or make) would create if it ran it.
HOSTILE = {
    "single-quote": "camper = 1'; touch {s}; echo '",
    "sql-literal": "group = 'a' and name <> 'it''s'",
    "double-quote": 'camper = 1"; touch {s}; echo "',
    "command-subst": "camper = $(touch {s})",
    "backticks": "camper = `touch {s}`",
    "make-shell": "camper = $(shell touch {s})",
    "make-var": "camper = $(HOME) ${{HOME}}",
    "semicolon": "camper = 1; touch {s}",
    "newline": "camper = 1\ntouch {s}\n'\"",
    "dollar-dollar": "camper = $$HOME and $HOME",
    "leading-dash": "-count < 0 or x = 'a=b'",
    "glob-and-pipe": "* | touch {s} && echo > {s} # \\",
}
USER_VARIABLES = {"FILE", "COLUMN", "FORMULA", "WHERE", "WEIGHTS", "JSON", "FAMILY",
                  "NO_MLFLOW", "PORT", "DASHBOARD_PORT", "WORKERS", "SERVICES_HOST", "ALLOW",
                  "PARAMS"}  # fmt: skip


@pytest.fixture
def argv_printer(tmp_path) -> Path:
    """An executable that prints its arguments as one JSON list (stands in for .venv's python)."""
    script = tmp_path / "bin" / "python"
    script.parent.mkdir()
    script.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    script.chmod(0o755)
    return script


def _make(cwd: Path, *assignments: str, py: Path | None = None, dry: bool = False):
    cmd = ["make", "-s", "-f", str(MAKEFILE), "-o", INSTALLED, "fit-counts", *assignments]
    if py is not None:
        cmd.append(f"PY={py}")
    if dry:
        cmd.insert(1, "-n")
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=120)


def _env() -> dict[str, str]:
    """This environment without the variables a user sets on make's command line."""
    return {k: v for k, v in os.environ.items() if k not in USER_VARIABLES}


def _argv(out) -> list[str]:
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("template", HOSTILE.values(), ids=HOSTILE.keys())
def test_where_reaches_the_program_verbatim_and_runs_nothing(template, argv_printer, tmp_path):
    sentinel = tmp_path / "pwned"
    where = template.format(s=sentinel)
    out = _make(tmp_path, "FILE=data.csv", "COLUMN=count", f"WHERE={where}", py=argv_printer)
    argv = _argv(out)
    assert argv == [
        "-m", "pipeline.fit_counts", "--column=count", "--params=params.yaml",
        f"--where={where}", "--", "data.csv",
    ]  # fmt: skip
    assert not sentinel.exists(), "the value was run, not passed"


@pytest.mark.parametrize("template", HOSTILE.values(), ids=HOSTILE.keys())
def test_file_and_column_reach_the_program_verbatim(template, argv_printer, tmp_path):
    sentinel = tmp_path / "pwned"
    value = template.format(s=sentinel)
    out = _make(tmp_path, f"FILE={value}", f"COLUMN={value}", "JSON=1", py=argv_printer)
    argv = _argv(out)
    assert argv == [
        "-m", "pipeline.fit_counts", f"--column={value}", "--params=params.yaml",
        "--json", "--", value,
    ]  # fmt: skip
    assert not sentinel.exists(), "the value was run, not passed"


def test_the_recipe_line_shows_no_user_text(tmp_path):
    """`make -n` prints the command make gives the shell: user text is not part of it."""
    sentinel = tmp_path / "pwned"
    where = HOSTILE["single-quote"].format(s=sentinel)
    out = _make(tmp_path, "FILE=f.csv", "COLUMN=count", f"WHERE={where}", dry=True)
    assert out.returncode == 0, out.stderr
    assert "pwned" not in out.stdout and '"$ZIP_WHERE"' in out.stdout
    assert not sentinel.exists()


def test_optional_flags_and_params(argv_printer, tmp_path):
    plain = _argv(_make(tmp_path, "FILE=f.csv", "COLUMN=n", py=argv_printer))
    program = ["-m", "pipeline.fit_counts", "--column=n"]
    assert plain == [*program, "--params=params.yaml", "--", "f.csv"]
    params = tmp_path / "my params.yaml"
    argv = _argv(_make(tmp_path, "FILE=f.csv", "COLUMN=n", "WHERE=", "JSON=1",
                       f"PARAMS={params}", py=argv_printer))  # fmt: skip
    assert argv == [*program, f"--params={params}", "--json", "--", "f.csv"]
    argv = _argv(_make(tmp_path, "FILE=f.csv", "COLUMN=n", "NO_MLFLOW=1", py=argv_printer))
    assert argv == [*program, "--params=params.yaml", "--no-mlflow", "--", "f.csv"]


@pytest.mark.parametrize("args", [["COLUMN=count"], ["FILE=f.csv"], [], ["FILE=", "COLUMN=n"]])
def test_missing_file_or_column_prints_the_usage(args, argv_printer, tmp_path):
    out = _make(tmp_path, *args, py=argv_printer)
    assert out.returncode == 2
    assert "usage: make fit-counts FILE=path COLUMN=name" in out.stderr
    assert out.stdout == ""  # the program did not run


def test_the_real_program_gets_the_hostile_where_verbatim(tmp_path):
    """The real `make fit-counts` (no PY override): polars rejects the text, nothing runs.

    The column does not exist, so the program stops with its one-line error (exit 2) before
    it fits or logs anything; the error quotes the condition exactly as it was typed.
    """
    sentinel = tmp_path / "pwned"
    where = f"nosuch = 1'; touch {sentinel}; echo '\n`touch {sentinel}` $(touch {sentinel})"
    out = subprocess.run(
        ["make", "-s", "-o", INSTALLED, "fit-counts", "FILE=examples/fish_caught.csv",
         "COLUMN=count", f"WHERE={where}"],
        cwd=ROOT, env={**_env(), "CI": "true"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    error = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert error and error[0].startswith(f"error: --where {where!r}: "), out.stderr
    assert not sentinel.exists()


# Every other variable a user sets: (target, extra `-o` files, assignment, expected argv).
# `-o` marks upstream files as up to date, so that only the target's own recipe runs.
OTHER_VARIABLES = {
    "FAMILY": ("fit-counts", [], "FAMILY",
               ["pipeline.fit_counts", "--column=n", "--params=params.yaml", "--family={v}", "--",
                "f.csv"]),
    "WEIGHTS": ("fit-counts", [], "WEIGHTS",
                ["pipeline.fit_counts", "--column=n", "--params=params.yaml", "--weights={v}",
                 "--", "f.csv"]),
    "PORT": ("ui", [], "PORT", ["pipeline.ui", "--port={v}"]),
    "DASHBOARD_PORT": ("dashboard", [], "DASHBOARD_PORT",
                       ["pipeline.dashboard", "--params=params.yaml", "--port={v}"]),
    "WORKERS-tune": ("tune", ["data/summary.parquet"], "WORKERS",
                     ["pipeline.sweep", "--params", "params.yaml", "--tune", "--workers={v}"]),
    "WORKERS-sweep": ("data/fits.parquet", ["data/summary.parquet", ".stamps/sweep.params"],
                      "WORKERS", ["pipeline.sweep", "--params", "params.yaml", "--workers={v}"]),
    "SERVICES_HOST": ("services", [], "SERVICES_HOST",
                      ["pipeline.services", "start", "--host={v}"]),
    "ALLOW": ("services", [], "ALLOW",
              ["pipeline.services", "start", "--host=127.0.0.1", "--allow={v}"]),
}  # fmt: skip


def _make_target(cwd: Path, target: str, old: list[str], *assignments: str, py: Path):
    """`make target` in `cwd` with `PY=py`; `PYTHON=true`: no module lists (no repository)."""
    marks = [arg for path in old for arg in ("-o", path)]
    cmd = ["make", "-s", "-f", str(MAKEFILE), "-o", INSTALLED, *marks, target, f"PY={py}",
           "PYTHON=true", *assignments]  # fmt: skip
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("template", HOSTILE.values(), ids=HOSTILE.keys())
@pytest.mark.parametrize("case", OTHER_VARIABLES.values(), ids=OTHER_VARIABLES.keys())
def test_every_variable_reaches_its_program_verbatim(case, template, argv_printer, tmp_path):
    target, old, name, expected = case
    sentinel = tmp_path / "pwned"
    value = template.format(s=sentinel)
    extra = ["FILE=f.csv", "COLUMN=n"] if target == "fit-counts" else []
    out = _make_target(tmp_path, target, old, f"{name}={value}", *extra, py=argv_printer)
    assert _argv(out) == ["-m", *(arg.replace("{v}", value) for arg in expected)]
    assert not sentinel.exists(), "the value was run, not passed"


@pytest.mark.parametrize("template", HOSTILE.values(), ids=HOSTILE.keys())
def test_help_shows_the_ports_as_set_and_runs_nothing(template, tmp_path):
    sentinel = tmp_path / "pwned"
    value = template.format(s=sentinel).replace("\n", " ")  # help shows one line per target
    plain = subprocess.run(["make", "-s", "-f", str(MAKEFILE), "help", "PYTHON=true"], cwd=tmp_path,
                           env=_env(), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert "http://127.0.0.1:5000" in plain.stdout and "http://127.0.0.1:8080" in plain.stdout
    assert "$(PORT)" not in plain.stdout and "$(DASHBOARD_PORT)" not in plain.stdout
    out = subprocess.run(["make", "-s", "-f", str(MAKEFILE), "help", "PYTHON=true", "PORT=5123",
                          f"DASHBOARD_PORT={value}"], cwd=tmp_path, env=_env(),
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "http://127.0.0.1:5123" in out.stdout
    assert f"http://127.0.0.1:{value}" in out.stdout
    assert not sentinel.exists()


def test_json_output_is_all_that_reaches_stdout(argv_printer, tmp_path):
    """`make fit-counts ... JSON=1 | python -m json.tool`: make echoes no command line."""
    out = _make(tmp_path, "FILE=f.csv", "COLUMN=n", "JSON=1", py=argv_printer)
    cmd = ["make", "-f", str(MAKEFILE), "-o", INSTALLED, "fit-counts", "FILE=f.csv", "COLUMN=n",
           "JSON=1", f"PY={argv_printer}", "PYTHON=true"]  # fmt: skip
    loud = subprocess.run(
        cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120
    )
    for done in (out, loud):  # with and without make's -s
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == _argv(out)
