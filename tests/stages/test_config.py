"""params.yaml validation: every error is one line naming the key path and the bad value."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import config_error

from pipeline.stages import config
from pipeline.stages.params_file import ConfigError

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = yaml.safe_load((ROOT / "params.yaml").read_text())
SCENARIO = {"name": "extra", "pi": 0.5, "lambda": 1.0}

# (id, overrides merged into the project's params.yaml, key path, bad value as it must appear)
BAD = [
    ("unknown-top", {"bogus": 1}, "bogus", "1"),
    ("unknown-data", {"data": {"size": 10}}, "data.size", "10"),
    (
        "unknown-scenario",
        {"data": {"scenarios": [{**SCENARIO, "mu": 3}]}},
        "data.scenarios[0].mu",
        "3",
    ),
    ("unknown-sweep", {"sweep": {"learning_rate": 0.1}}, "sweep.learning_rate", "0.1"),
    ("unknown-blog", {"blog": {"epochs": 5}}, "blog.epochs", "5"),
    ("moved-report-blog", {"report": {"blog": {"lr": 1.0}}}, "report.blog", "{'lr': 1.0}"),
    ("type-seed", {"seed": 1.5}, "seed", "1.5"),
    ("type-n-str", {"data": {"n": "many"}}, "data.n", "'many'"),
    ("type-n-fraction", {"data": {"n": 2.5}}, "data.n", "2.5"),
    ("type-n-bool", {"data": {"n": True}}, "data.n", "True"),
    (
        "type-pi",
        {"data": {"scenarios": [{**SCENARIO, "pi": "half"}]}},
        "data.scenarios[0].pi",
        "'half'",
    ),
    ("type-scenarios", {"data": {"scenarios": {"name": "x"}}}, "data.scenarios", "{'name': 'x'}"),
    ("type-data", {"data": [1, 2]}, "data", "[1, 2]"),
    ("type-log-fits", {"tracking": {"log_fits": "yes"}}, "tracking.log_fits", "'yes'"),
    ("type-lr-grid", {"sweep": {"lr_grid": 0.1}}, "sweep.lr_grid", "0.1"),
    ("type-lr-grid-item", {"sweep": {"lr_grid": [0.1, "fast"]}}, "sweep.lr_grid[1]", "'fast'"),
    ("literal-sampler", {"sweep": {"sampler": "random"}}, "sweep.sampler", "'random'"),
    ("pi-above", {"data": {"scenarios": [{**SCENARIO, "pi": 1.5}]}}, "data.scenarios[0].pi", "1.5"),
    (
        "pi-below",
        {"data": {"scenarios": [{**SCENARIO, "pi": -0.1}]}},
        "data.scenarios[0].pi",
        "-0.1",
    ),
    (
        "lambda-zero",
        {"data": {"scenarios": [{**SCENARIO, "lambda": 0}]}},
        "data.scenarios[0].lambda",
        "0.0",
    ),
    (
        "lambda-negative",
        {"data": {"scenarios": [SCENARIO, {**SCENARIO, "name": "b", "lambda": -2}]}},
        "data.scenarios[1].lambda",
        "-2.0",
    ),
    (
        "lambda-inf",
        {"data": {"scenarios": [{**SCENARIO, "lambda": float("inf")}]}},
        "data.scenarios[0].lambda",
        "inf",
    ),
    (
        "lambda-missing",
        {"data": {"scenarios": [{"name": "x", "pi": 0.1}]}},
        "data.scenarios[0].lambda",
        "None",
    ),
    ("n-zero", {"data": {"n": 0}}, "data.n", "0"),
    ("n-negative", {"data": {"n": -5}}, "data.n", "-5"),
    ("replicates-zero", {"data": {"replicates": 0}}, "data.replicates", "0"),
    ("no-scenarios", {"data": {"scenarios": []}}, "data.scenarios", "[]"),
    (
        "duplicate-names",
        {"data": {"scenarios": [SCENARIO, {**SCENARIO, "pi": 0.2}]}},
        "data.scenarios[1].name",
        "'extra'",
    ),
    (
        "name-dots",
        {"data": {"scenarios": [{**SCENARIO, "name": ".."}]}},
        "data.scenarios[0].name",
        "'..'",
    ),
    (
        "name-slash",
        {"data": {"scenarios": [{**SCENARIO, "name": "a/b"}]}},
        "data.scenarios[0].name",
        "'a/b'",
    ),
    ("blog-scenario", {"blog": {"scenario": "nope"}}, "blog.scenario", "'nope'"),
    # the audit's items 3, 8 and 10: names that become paths or filter strings, pi = 1,
    # a repeated grid point
    ("study-absolute", {"sweep": {"study": "/tmp/x"}}, "sweep.study", "'/tmp/x'"),
    (
        "study-escape",
        {"sweep": {"study": "../../../../tmp/x"}},
        "sweep.study",
        "'../../../../tmp/x'",
    ),
    ("study-quote", {"sweep": {"study": "o'brien"}}, "sweep.study", '"o\'brien"'),
    ("tune-study-quote", {"tune": {"study": "a'b"}}, "tune.study", '"a\'b"'),
    ("study-dots", {"sweep": {"study": ".."}}, "sweep.study", "'..'"),
    (
        "experiment-quote",
        {"tracking": {"experiment": "x' or '1"}},
        "tracking.experiment",
        "\"x' or '1\"",
    ),
    ("pi-one", {"data": {"scenarios": [{**SCENARIO, "pi": 1.0}]}}, "data.scenarios[0].pi", "1.0"),
    ("lr-grid-repeat", {"sweep": {"lr_grid": [0.1, 0.1]}}, "sweep.lr_grid[1]", "0.1"),
    ("n-huge", {"data": {"n": 10**20}}, "data.n", "100000000000000000000"),
    ("n-float-huge", {"data": {"n": 1e20}}, "data.n", "1e+20"),
    ("quoted-number", {"data": {"n": "1000"}}, "data.n", "'1000'"),
    ("quoted-float", {"sweep": {"lr_grid": ["0.1"]}}, "sweep.lr_grid[0]", "'0.1'"),
    ("tune-unknown", {"tune": {"bogus": 3}}, "tune.bogus", "3"),
    ("tune-bad-value", {"tune": {"lr_min": -1.0}}, "tune.lr_min", "-1.0"),
    (
        "tune-bad-optimizer",
        {"tune": {"optimizers": ["adam", "lbfgs"]}},
        "tune.optimizers[1]",
        "'lbfgs'",
    ),
]


def _merge(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        both = isinstance(value, dict) and isinstance(base.get(key), dict)
        out[key] = _merge(base[key], value) if both else value
    return out


def test_default_params_load():
    params = config.load(ROOT / "params.yaml")
    assert params.data.n >= 1 and params.data.scenarios
    assert params.tuned().sampler == "tpe"
    assert len(params.digest("seed", "data")) == 16


def test_tiny_params_load(tiny_params):
    params = config.load(tiny_params)
    assert [s.name for s in params.data.scenarios] == ["blog", "rare-events"]


@pytest.mark.parametrize("overrides, key, value", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_config_error_names_key_and_value(tmp_path, overrides, key, value):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_merge(DEFAULT, overrides)))
    message = config_error(path, key)
    assert message.endswith(f"got {value}"), message


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("missing", None, "not found"),
        ("directory", "DIR", "is a folder"),
        ("binary", b"\xff\xfe\x00bad", "cannot read"),
        ("bad-yaml", "data: [1, 2\nseed: 0\n", "not valid YAML at line"),
        ("tabs", "seed: 0\n\tdata: 1\n", "not valid YAML"),
        ("scalar", "42\n", "must be a mapping"),
        ("empty", "", "must be a mapping"),
    ],
)
def test_file_errors_name_the_file(tmp_path, name, content, expected):
    path = tmp_path / f"{name}.yaml"
    if content == "DIR":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert str(info.value).startswith(f"{path}:")
    assert expected in str(info.value)


def test_digest_depends_only_on_named_blocks(write_params):
    base = config.load(write_params())
    other = config.load(write_params({"sweep": {"inits": 3}}, name="other.yaml"))
    assert base.digest("seed", "data") == other.digest("seed", "data")
    assert base.digest("seed", "sweep") != other.digest("seed", "sweep")


BAD_FILES = {
    "missing": None,
    "bad-yaml": "seed: [\n",
    "pi": yaml.safe_dump(_merge(DEFAULT, {"data": {"scenarios": [{**SCENARIO, "pi": 2}]}})),
    "unknown": yaml.safe_dump(_merge(DEFAULT, {"dataa": {}})),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_stage_exits_2_with_one_line(tmp_path, name):
    path = tmp_path / f"{name}.yaml"
    if BAD_FILES[name] is not None:
        path.write_text(BAD_FILES[name])
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.generate",
            "--params",
            str(path),
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "mlruns").exists()


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_passes_params_through(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_merge(DEFAULT, {"data": {"replicates": 0}})))
    # -o: never (re)install the venv from here; the stamp rule validates params and stops.
    proc = subprocess.run(
        ["make", "-s", "-o", ".venv/.installed", "data", f"PARAMS={path}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 2, proc.stderr
    assert "error: data.replicates: must be in [1, 10000], got 0" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("written", [1.0e8, "1e8", 100_000_000])
def test_whole_number_counts_accepted_in_any_yaml_spelling(write_params, written):
    params = config.load(write_params({"data": {"n": written}}))
    assert params.data.n == 100_000_000 and isinstance(params.data.n, int)


def test_an_integer_beyond_float_range_is_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_merge(DEFAULT, {"fit": {"tol": 10**400}})))
    with pytest.raises(ConfigError, match=r"^fit.tol: must be a number within"):
        config.load(path)


@pytest.mark.parametrize("block", ["sweep", "tune"])
def test_the_removed_diverged_penalty_is_refused_with_its_reason(write_params, block):
    path = write_params({block: {"diverged_penalty": 1.0}})
    with pytest.raises(ConfigError, match=rf"^{block}.diverged_penalty: was removed: .* not "
                       r"recovered.*delete this key, got 1.0$"):  # fmt: skip
        config.load(path)


@pytest.mark.parametrize(
    "text, problem",
    [
        # an alias bomb under an unknown key (the audit's item 13): refused before expansion
        ("seed: 0\nbomb: &a [x, x]\nb2: &b [*a, *a]\nb3: [*b, *b]\n", "aliases"),
        ("seed: 0\nseed: 1\n", "duplicate key 'seed'"),
        ("seed: 0\ndata:\n  n: 5\n  n: 6\n", "duplicate key 'n'"),
    ],
)
def test_strict_yaml_refuses_aliases_and_duplicate_keys(tmp_path, text, problem):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not valid YAML at line ") and problem in message
    assert "\n" not in message and len(message) < 300


def test_exponent_numbers_are_numbers_and_quoted_numbers_are_not(tmp_path):
    path = tmp_path / "p.yaml"
    text = (ROOT / "params.yaml").read_text().replace("tol: 1.0e-10", "tol: 1e-10")
    path.write_text(text)
    assert config.load(path).fit.tol == 1e-10  # YAML 1.2 float, read as a number
    path.write_text(text.replace("tol: 1e-10", 'tol: "1e-10"'))
    with pytest.raises(ConfigError, match="fit.tol: must be a number .*remove the quotes"):
        config.load(path)


def test_the_params_optimizers_are_the_engines():
    import typing

    from pipeline.core.descent import optim

    assert typing.get_args(config.Optimizer) == optim.OPTIMIZERS
