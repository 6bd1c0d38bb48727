"""Property-based tests (Hypothesis) of `params.yaml` against hostile edits.

Mutations of the project's valid params (tests/conftest.py `TINY` and the real `params.yaml`):
a key deleted, an unknown key added (at the top or nested), a value replaced by a random YAML
value (null, booleans, huge/negative/NaN/infinite floats, integers up to 10**400, strings with
quotes, slashes, '..', unicode, empty or very long, lists, nested mappings), a list duplicated
or truncated; and raw edits of the file's text (random bytes appended, a line deleted or
repeated (a duplicate key), a tab, an alias bomb, the file cut short).

- Property A (in-process, many examples): `config.load` returns `Params` or raises one
  `ConfigError` line, under 500 characters besides the file's path, that starts with a key path
  of the file or the schema (`data.n: ...`, `sweep.lr_grid[1]: ...`) or with the file's path;
  never another exception, and within a time bound.
- Property B (a subprocess per example, few examples): `python -m pipeline.generate` on a
  mutated file exits 0, or 2 with exactly one stderr line `error: ...`; never a traceback, never
  past a timeout, and it writes nothing outside its work directory (not beside it, not in its
  TMPDIR, not in the repository).

Bugs the properties found (now fixed) have regression cases at the end of this module; the
strategies still leave those inputs to them, so the properties keep their speed.

The example counts come from the Hypothesis profile (tests/conftest.py): `ci` (CI=true) is
derandomized and small. Run longer by hand with
    HYPOTHESIS_PROFILE=long .venv/bin/pytest tests/stages/test_hostile_params.py
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import re
import signal
import subprocess
import sys
import time
import typing
from pathlib import Path

import pytest
import yaml
from conftest import TINY, merge
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from pipeline.stages import config
from pipeline.stages.cli import ROOT
from pipeline.stages.params_file import ConfigError, key_of, key_text, read_yaml

REAL = yaml.safe_load((ROOT / "params.yaml").read_text())
BASES = (TINY, REAL)
LOAD_SECONDS = 10.0  # config.load takes milliseconds; this bounds a hang
STAGE_SECONDS = 120  # one `pipeline.generate` run on the clamped params (~25 s on 2 busy cores)
MAX_MESSAGE = 500  # characters of a ConfigError line besides the file's path
SMALL_N, SMALL_REPLICATES = 200, 1  # valid runs of the stage are clamped to these


def hostile_examples(share: int) -> int:
    """The profile's example count divided by `share` (at least 1): slow properties run a
    fixed fraction of the cheap ones' count, so every profile scales them together."""
    return max(1, settings.default.max_examples // share)


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise `TimeoutError` in this (main) thread if the block runs longer than `seconds`."""

    def expire(signum, frame):
        raise TimeoutError(f"took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# -- the key paths an error line may start with ----------------------------------------------
def _schema_paths(cls, prefix: str) -> set[str]:
    """Every key path of the schema, list indices left out (`data.scenarios.pi`)."""
    out = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{prefix}.{key_of(f)}" if prefix else key_of(f)
        out.add(path)
        tp = hints[f.name]
        inner = typing.get_args(tp)[0] if typing.get_origin(tp) is tuple else tp
        if dataclasses.is_dataclass(inner):
            out |= _schema_paths(inner, path)
    return out


SCHEMA = _schema_paths(config.Params, "") | _schema_paths(config.SweepConfig, "tune") | {"params"}


def raw_paths(obj, prefix: str = "") -> set[str]:
    """Every key path of raw YAML data as `build` names it (`key_text(key)`, `[i]` for items)."""
    out = set()
    if isinstance(obj, dict):
        for key, value in obj.items():
            path = f"{prefix}.{key_text(key)}" if prefix else key_text(key)
            out |= {path} | raw_paths(value, path)
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            path = f"{prefix}[{i}]"
            out |= {path} | raw_paths(value, path)
    return out


def names_key_or_file(message: str, path: Path) -> bool:
    """Whether the error line starts with `path: ` or with a key path of the file or schema."""
    if message.startswith(f"{path}: "):
        return True
    keys = raw_paths(read_yaml(path))  # the file parsed: the error is about a key
    for colon in re.finditer(": ", message):
        head = message[: colon.start()]
        if head in keys or re.sub(r"\[\d+\]", "", head) in SCHEMA:
            return True
    return False


def check_error_line(message: str, path: Path) -> None:
    assert "\n" not in message and "\r" not in message, message
    assert len(message.replace(str(path), "")) < MAX_MESSAGE, message
    assert names_key_or_file(message, path), message


# -- strategies ------------------------------------------------------------------------------
FIELDS = sorted({p.rsplit(".", 1)[-1] for p in SCHEMA})
# Keys without a line break and of at most 40 characters keep the examples fast; longer keys
# and keys with line breaks have their own regression cases below.
KEYS = st.one_of(
    st.sampled_from(FIELDS),
    st.from_regex(r"[a-z_][a-z0-9_]{0,15}", fullmatch=True),
    st.text(st.characters(blacklist_categories=["Cs", "Zl", "Zp", "Cc"]), max_size=40),
    st.integers(-(10**6), 10**6),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False),
)
NAMES = st.one_of(
    st.sampled_from(["", ".", "..", "/", "../../../../tmp/x", "/tmp/x", "a/b", "a\\b", "x'y",
                     'x"y', "~", "名前", "\u202e", "blog", "rare-events", "zip-lr", "a" * 101,
                     "adam", "sgd", "lbfgs", "zip", "mixture", "grid", "tpe", "median", "none",
                     "cpu", "cuda", "cuda:0", "1000", "0.1", "null", "true"]),
    st.text(max_size=30),
    st.integers(1, 20_000).map(lambda n: "x" * n),  # very long strings
)  # fmt: skip
NUMBERS = st.one_of(
    st.integers(-3, 5),
    st.integers(-(10**400), 10**400),
    st.sampled_from([2**31, 2**53 + 1, 2**63, 2**64, 10**10, 10**10 + 1, 10**400, -(10**400)]),
    st.floats(),  # NaN and infinities included
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324, 0.5, 1.0, 1e-3, 1.5]),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, NAMES)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=8,
)


def _nodes(obj, where=()):
    """(location, node) of every mapping and list, the root first."""
    yield where, obj
    items = obj.items() if isinstance(obj, dict) else enumerate(obj)
    for key, value in items:
        if isinstance(value, (dict, list)):
            yield from _nodes(value, (*where, key))


def _get(obj, where):
    for key in where:
        obj = obj[key]
    return obj


@st.composite
def mutated(draw) -> dict:
    """A valid params dict with one to three random edits."""
    raw = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 3))):
        nodes = [(w, n) for w, n in _nodes(raw)]
        where, node = draw(st.sampled_from(nodes))
        op = draw(st.sampled_from(["delete", "add", "replace", "replace", "duplicate", "cut"]))
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if op == "add" or not keys:
            if isinstance(node, dict):
                node[draw(KEYS)] = draw(VALUES)
            else:
                node.append(draw(VALUES))
        elif op == "delete":
            del node[draw(st.sampled_from(keys))]
        elif op == "replace":
            node[draw(st.sampled_from(keys))] = draw(VALUES)
        elif op == "duplicate" and isinstance(node, list):
            node.extend(copy.deepcopy(node[: draw(st.integers(1, len(node)))]))
        elif op == "cut" and isinstance(node, list):
            del node[draw(st.integers(0, len(node) - 1)) :]
        elif where:  # a mapping: duplicate or cut means its parent's list/mapping entry
            parent = _get(raw, where[:-1])
            parent[where[-1]] = draw(VALUES) if op == "cut" else [node, copy.deepcopy(node)]
    return raw


ALIAS_BOMB = (
    "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
    "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
    "g: [*f, *f, *f, *f, *f, *f, *f, *f, *f]\n"
)


@st.composite
def mutated_text(draw) -> bytes:
    """The text of a params file (the real one with its comments, or a dumped mutation) with
    one to three raw edits."""
    source = draw(st.sampled_from(["real", "tiny", "mutated"]))
    if source == "real":
        text = (ROOT / "params.yaml").read_bytes()
    else:
        raw = TINY if source == "tiny" else draw(mutated())
        text = dump(raw)
    for _ in range(draw(st.integers(1, 3))):
        lines = text.splitlines(keepends=True) or [b""]
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["bytes", "delete", "repeat", "tab", "bomb", "cut", "insert",
                                   "crlf", "bom"]))  # fmt: skip
        if op == "bytes":
            text += draw(st.binary(max_size=40))
        elif op == "delete":
            text = b"".join(lines[:i] + lines[i + 1 :])
        elif op == "repeat":  # a duplicate key (or list item)
            text = b"".join(lines[: i + 1] + lines[i:])
        elif op == "tab":
            lines[i] = b"\t" + lines[i].lstrip(b" ")
            text = b"".join(lines)
        elif op == "bomb":
            text = ALIAS_BOMB.encode() if draw(st.booleans()) else text + ALIAS_BOMB.encode()
        elif op == "cut":
            text = text[: draw(st.integers(0, len(text)))]
        elif op == "insert":
            at = draw(st.integers(0, len(text)))
            text = text[:at] + draw(st.text(max_size=20)).encode("utf-8", "replace") + text[at:]
        elif op == "crlf":
            text = text.replace(b"\n", b"\r\n")
        else:
            text = b"\xef\xbb\xbf" + text
    return text


def dump(raw: dict) -> bytes:
    return yaml.safe_dump(raw, sort_keys=False, allow_unicode=True).encode()


PARAM_FILES = st.one_of(mutated().map(dump), mutated_text())


# -- property A: config.load --------------------------------------------------------------------
def _event(text: str) -> None:
    """`hypothesis.event`, also callable from the plain regression tests below."""
    with contextlib.suppress(InvalidArgument):
        event(text)


def check_load(path: Path) -> config.Params | None:
    """`config.load(path)` within `LOAD_SECONDS`: Params, or None after checking the error."""
    start = time.monotonic()
    try:
        with time_limit(LOAD_SECONDS):
            params = config.load(path)
    except ConfigError as err:
        check_error_line(str(err), path)
        _event("refused: " + ("file" if str(err).startswith(f"{path}: ") else "key"))
        return None
    else:
        _event("loaded")
        return params
    finally:
        assert time.monotonic() - start < LOAD_SECONDS


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=PARAM_FILES)
@example(text=ALIAS_BOMB.encode())
@example(text=yaml.safe_dump(TINY).encode() + b"seed: 1\n")  # a duplicate key
@example(text=b"seed: 0\n\tdata: 1\n")  # a tab
def test_load_returns_params_or_one_config_error_line(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_bytes(text)
    params = check_load(path)
    assert params is None or isinstance(params, config.Params)


# -- property B: the data stage as a subprocess --------------------------------------------------
def clamp(path: Path) -> None:
    """Make a valid file's run fast: data.n <= SMALL_N, data.replicates <= SMALL_REPLICATES."""
    try:
        config.load(path)
    except ConfigError:
        return
    raw = read_yaml(path)
    data = raw["data"]
    data["n"], data["replicates"] = (
        min(data["n"], SMALL_N),
        min(data["replicates"], SMALL_REPLICATES),
    )
    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    config.load(path)


SKIP_PARTS = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis"}


def tree(folder: Path, skip=frozenset()) -> dict[str, tuple[int, int] | None]:
    """Relative path -> (size, mtime_ns) of every file (None for a folder) under `folder`."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if d not in SKIP_PARTS | skip]
        out.update({str((Path(dirpath) / d).relative_to(folder)): None for d in dirnames})
        for name in filenames:
            p = Path(dirpath) / name
            with contextlib.suppress(FileNotFoundError):
                info = p.lstat()
                out[str(p.relative_to(folder))] = (info.st_size, info.st_mtime_ns)
    return out


@settings(
    max_examples=hostile_examples(50),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=PARAM_FILES)
@example(text=yaml.safe_dump(TINY).encode())  # a valid run: nothing outside the work directory
def test_generate_exits_0_or_2_with_one_line_and_stays_in_its_workdir(tmp_path, stage_env, text):
    sandbox = Path(os.path.realpath(tmp_path)) / f"run-{time.monotonic_ns()}"
    workdir, tmp = sandbox / "work", sandbox / "tmp"
    tmp.mkdir(parents=True)
    params = sandbox / "params.yaml"
    params.write_bytes(text)
    clamp(params)
    before_sandbox, before_repo = tree(sandbox), tree(ROOT)
    env = {**stage_env, "TMPDIR": str(tmp)}
    env.pop("ZIP_INVOCATION", None)
    cmd = [sys.executable, "-m", "pipeline.generate", "--params", str(params),
           "--workdir", str(workdir)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=sandbox,
                          timeout=STAGE_SECONDS)  # fmt: skip
    event(f"exit {proc.returncode}")
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode in (0, 2), proc.stderr
    if proc.returncode == 2:
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
        check_error_line(lines[0].removeprefix("error: "), params)
    else:
        assert (workdir / "data" / "summary.parquet").is_file(), proc.stderr
    assert tree(sandbox, skip={"work"}) == before_sandbox  # nothing beside the work directory
    # Nor in the repository: new paths only (an edit of a file is someone else's), less the
    # screenshot the browser test saves there outside CI (it may run beside this one, -n 2).
    new = set(tree(ROOT)) - set(before_repo) - {"reports", "reports/mlflow-ui.png"}
    assert not new, sorted(new)


# -- bugs found by the properties (fixed) ---------------------------------------------------
BASE_TEXT = yaml.safe_dump(TINY, sort_keys=False)


@pytest.mark.parametrize("line", ["seed: " + "9" * 4301, "seed: !!int " + "1" * 5000])
def test_an_integer_of_over_4300_digits_is_one_config_error(tmp_path, line):
    path = tmp_path / "params.yaml"
    path.write_text(BASE_TEXT.replace("seed: 0", line))
    check_load(path)


@pytest.mark.parametrize("raw", [{"a\nb": 0}, {"data": {"\r": 0}}])
def test_an_unknown_key_with_a_line_break_is_one_line(tmp_path, raw):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(merge(TINY, raw)))
    check_load(path)


def test_a_long_unknown_key_gives_a_bounded_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({**TINY, "k" * 1000: 0}))
    check_load(path)
