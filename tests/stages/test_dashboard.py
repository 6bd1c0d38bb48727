"""Tests of `pipeline.stages.dashboard`: which Optuna storage it serves and how it starts.

No server is started: `main` is run only up to its refusal when there is no storage yet.
"""

from __future__ import annotations

import sys

import pytest

from pipeline.core.errors import UserError
from pipeline.stages import config, dashboard


def test_dashboard_serves_the_sweeps_storage(tmp_path, tiny_params, monkeypatch):
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    params = config.load(tiny_params)
    assert dashboard.storage_location(params, tmp_path) == str(tmp_path / "mlruns" / "optuna.log")
    monkeypatch.setenv("OPTUNA_STORAGE", "postgresql://db/optuna")
    assert dashboard.storage_location(params, tmp_path, tune=True) == "postgresql://db/optuna"
    cmd = dashboard.dashboard_command("x.log", 8123)
    assert cmd[1:] == ["x.log", "--host", "127.0.0.1", "--port", "8123", "--server", "wsgiref"]
    monkeypatch.delenv("OPTUNA_STORAGE")
    argv = ["--params", str(tiny_params), "--workdir", str(tmp_path)]
    with pytest.raises(UserError, match="no Optuna storage yet"):
        dashboard.main(argv)


# (OPTUNA_STORAGE, sweep.storage, tune.storage, tune?) -> expected ("journal": the default file)
@pytest.mark.parametrize(
    ("env", "sweep", "tune", "use_tune", "expected"),
    [
        (None, None, None, False, "journal"),
        (None, None, None, True, "journal"),
        (None, "sqlite:///sweep.db", None, False, "sqlite:///sweep.db"),
        (None, "sqlite:///sweep.db", None, True, "sqlite:///sweep.db"),  # tune inherits it
        (None, "sqlite:///sweep.db", "sqlite:///tune.db", True, "sqlite:///tune.db"),
        (None, "sqlite:///sweep.db", "sqlite:///tune.db", False, "sqlite:///sweep.db"),
        ("mysql://db/x", "sqlite:///sweep.db", "sqlite:///tune.db", False, "mysql://db/x"),
        ("mysql://db/x", "sqlite:///sweep.db", "sqlite:///tune.db", True, "mysql://db/x"),
        ("", "sqlite:///sweep.db", None, False, "sqlite:///sweep.db"),  # empty: unset
    ],
)
def test_storage_precedence(
    write_params, tmp_path, monkeypatch, env, sweep, tune, use_tune, expected
):
    overrides = {"sweep": {"storage": sweep}, "tune": {} if tune is None else {"storage": tune}}
    params = config.load(write_params(overrides))
    if env is None:
        monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    else:
        monkeypatch.setenv("OPTUNA_STORAGE", env)
    workdir = tmp_path / "work"
    location = dashboard.storage_location(params, workdir, tune=use_tune)
    assert location == (
        str(workdir / "mlruns" / "optuna.log") if expected == "journal" else expected
    )


def test_dashboard_command_prefers_the_one_beside_python(tmp_path, monkeypatch):
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    # neither beside python nor on PATH: the bare name (the launch then fails with a hint)
    assert dashboard.dashboard_command("s.log", 8080)[0] == "optuna-dashboard"
    on_path = tmp_path / "empty"
    on_path.mkdir()
    (on_path / "optuna-dashboard").write_text("#!/bin/sh\n")
    (on_path / "optuna-dashboard").chmod(0o755)
    assert dashboard.dashboard_command("s.log", 8080)[0] == str(on_path / "optuna-dashboard")
    (bin_dir / "optuna-dashboard").write_text("#!/bin/sh\n")
    cmd = dashboard.dashboard_command("sqlite:///a.db", 9000, host="0.0.0.0")
    assert cmd == [
        str(bin_dir / "optuna-dashboard"),
        "sqlite:///a.db",
        "--host",
        "0.0.0.0",
        "--port",
        "9000",
        "--server",
        "wsgiref",
    ]


@pytest.mark.parametrize("tune", [False, True])
def test_main_refuses_a_missing_journal_in_one_line(
    tiny_params, tmp_path, monkeypatch, capsys, tune
):
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    argv = ["--params", str(tiny_params), "--workdir", str(tmp_path), *(["--tune"] if tune else [])]
    with pytest.raises(UserError) as info:
        dashboard.main(argv)
    journal = tmp_path.resolve() / "mlruns" / "optuna.log"
    assert str(info.value) == f"{journal}: no Optuna storage yet (run `make sweep` or `make tune`)"
    assert capsys.readouterr().out == ""  # refused before announcing a URL
