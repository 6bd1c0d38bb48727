"""Tests of `pipeline.stages.dashboard`: which Optuna storage it serves and how it starts.

No server is started: `main` is run only up to its refusal when there is no storage yet.
"""

from __future__ import annotations

import socket
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
    cmd, env = dashboard.dashboard_command("x.log", 8123)
    assert cmd[-2:] == ["127.0.0.1", "8123"] and env[dashboard.STORAGE_VARIABLE] == "x.log"
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


def test_the_storage_and_its_password_stay_out_of_the_command_line():
    """`ps` shows every user the command lines: the storage reaches the server in its
    environment (the launcher's own line masks a password: `tracking.values.redact`)."""
    url = "postgresql+psycopg://zip:s3cret@10.0.0.5:5433/optuna"
    cmd, env = dashboard.dashboard_command(url, 9000, host="0.0.0.0")
    assert cmd == [sys.executable, "-c", dashboard.SERVER, "0.0.0.0", "9000"]
    assert not any("s3cret" in arg for arg in cmd)
    assert env[dashboard.STORAGE_VARIABLE] == url


def test_a_busy_port_is_one_line_before_anything_starts(tmp_path, tiny_params, monkeypatch, capsys):
    monkeypatch.setenv("OPTUNA_STORAGE", "sqlite:///unused.db")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["--params", str(tiny_params), "--workdir", str(tmp_path), "--port", str(port)]
        with pytest.raises(UserError) as info:
            dashboard.main(argv)
    assert str(info.value) == (
        f"127.0.0.1:{port} is in use (another `make dashboard`?); choose another port, "
        f"e.g. `make dashboard DASHBOARD_PORT={port + 1}`"
    )
    assert capsys.readouterr().out == ""


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
