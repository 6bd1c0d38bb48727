"""The study's storage: a journal file that a write cut short cannot corrupt, and the lock that
keeps a second sweep of a study out of a work directory."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import signal
import socket

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from pipeline.core.errors import UserError
from pipeline.tracking.storage import (
    RETRY_ENV,
    Journal,
    bounded_retries,
    lost_service,
    open_storage,
    retry_plan,
    study_lock,
)


@contextlib.contextmanager
def _file_size_limit(limit: int):
    """Writes past `limit` bytes fail with EFBIG after writing what fits: a torn write, as on
    a disk that fills mid-record (SIGXFSZ ignored, so the write returns the error)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def _study_with_trials(storage, n: int = 3):
    """A study with `n` COMPLETE trials (values 0, 1, …) and one RUNNING (number `n`)."""
    study = optuna.create_study(study_name="s", storage=storage)
    for i in range(n):
        study.enqueue_trial({"x": float(i)})
        trial = study.ask()
        study.tell(trial, trial.suggest_float("x", 0, 10))
    study.ask()
    return study


def _attr(trial_id: int, **attr) -> dict:
    """A journal record setting a user attr of a trial (Optuna 5.0's format)."""
    return {"op_code": 8, "worker_id": "w", "trial_id": trial_id, "user_attr": attr}


@pytest.mark.parametrize("backend", [JournalFileBackend, Journal])
def test_a_write_cut_short_by_a_full_disk(tmp_path, backend):
    path = tmp_path / "optuna.log"
    _study_with_trials(JournalStorage(backend(str(path))))
    before = path.read_bytes()
    log = backend(str(path))
    with _file_size_limit(len(before) + 50), pytest.raises(OSError) as err:
        log.append_logs([_attr(3, k="v" * 200)])
    assert err.value.errno == errno.EFBIG
    log.append_logs([_attr(3, a=1)])  # the disk has room again
    log.append_logs([_attr(3, b=2)])
    if backend is JournalFileBackend:  # Optuna 5.0's: torn, the next record glued on
        with pytest.raises(ValueError):
            optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path))))
        return
    assert path.read_bytes().startswith(before) and path.read_bytes().endswith(b"\n")
    study = optuna.load_study(study_name="s", storage=JournalStorage(Journal(str(path))))
    assert [t.value for t in study.trials] == [0.0, 1.0, 2.0, None]
    assert study.trials[3].user_attrs == {"a": 1, "b": 2}  # the failed write left nothing


def test_repair_drops_torn_records_and_keeps_a_whole_one_glued_on(tmp_path, capsys):
    path = tmp_path / "optuna.log"
    _study_with_trials(JournalStorage(Journal(str(path))), n=4)
    Journal(str(path)).append_logs([_attr(4, b=2)])
    lines = path.read_bytes().split(b"\n")[:-1]
    tell = max(i for i, line in enumerate(lines) if json.loads(line)["op_code"] == 6)
    # Journal of an older version after a full disk: the last trial's result torn and the
    # next record (the last trial's creation) glued on it; then a record torn by a writer
    # killed mid-write.
    torn = lines[tell][: len(lines[tell]) // 2] + lines[tell + 1]
    damaged = [*lines[:tell], torn, *lines[tell + 2 :]]
    path.write_bytes(b"\n".join(damaged) + b"\n" + lines[0][:10])
    with pytest.raises(ValueError):  # what every resume said before
        optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path))))

    storage, _ = open_storage(str(path), tmp_path, "sqlite:///unused.db")
    assert "dropped 2 torn record(s)" in capsys.readouterr().err
    study = optuna.load_study(study_name="s", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3 + ["RUNNING"] * 2
    assert study.trials[4].user_attrs == {"b": 2}  # the glued creation kept
    assert Journal(str(path)).repair() == 0  # repaired once, nothing left to drop


def test_the_torn_record_of_a_killed_writer_is_cut_before_the_next(tmp_path):
    path = tmp_path / "optuna.log"
    storage = JournalStorage(Journal(str(path)))
    _study_with_trials(storage, n=1)
    with path.open("ab") as f:
        f.write(json.dumps(_attr(1, dead=True)).encode()[:30])
    storage.set_trial_user_attr(1, "b", 2)
    fresh = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path))))
    assert fresh.trials[1].user_attrs == {"b": 2}


def test_one_sweep_per_study_and_work_directory(tmp_path):
    with study_lock(tmp_path, "zip-1234abcd"):
        with pytest.raises(UserError, match=r"study zip-1234abcd already runs in .* \(pid \d+\)"):
            with study_lock(tmp_path, "zip-1234abcd"):
                pass
        with study_lock(tmp_path, "zip-other"):  # another study: its own lock
            pass
    with study_lock(tmp_path, "zip-1234abcd"):  # released at the end of the block
        pass


@pytest.mark.parametrize("budget", [0, 1, 2, 5, 60, 600])
def test_mlflow_retries_pause_at_most_the_budget(budget):
    plan = retry_plan(budget)
    k, jitter = (
        int(plan["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]),
        float(plan["MLFLOW_HTTP_REQUEST_BACKOFF_JITTER"]),
    )
    assert plan["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] == "1"
    pauses = lambda n: 2**n - 2 + n * jitter  # noqa: E731 (urllib3 2.x: see retry_plan)
    assert pauses(k) <= budget < pauses(k + 1)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_lost_tracking_server_is_one_line_after_bounded_retries(monkeypatch):
    """Issue 21, item 9, with a URL nothing answers (a killed server refuses connections the
    same way; tests/stages/test_sweep_services.py kills real ones). MLflow's own retries would
    take ~4 minutes for this one call."""
    from mlflow.tracking import MlflowClient

    uri = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv(RETRY_ENV, "1")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    with bounded_retries():
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"  # at once, no pause
        with pytest.raises(Exception) as info:
            MlflowClient(tracking_uri=uri).get_experiment_by_name("x")
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # restored
    assert lost_service(info.value, uri, None) == (
        f"MLflow tracking server '{uri}' stopped answering (connection refused); "
        "the next start resumes the study"
    )
    assert lost_service(info.value, "sqlite:///local.db", None) is None  # no server to lose
    assert lost_service(ValueError("a bug"), uri, None) is None


def test_a_lost_database_is_one_line():
    import sqlalchemy

    url = f"postgresql+psycopg://zip:s3cret@127.0.0.1:{_closed_port()}/optuna"
    with pytest.raises(sqlalchemy.exc.OperationalError) as info:
        sqlalchemy.create_engine(url).connect()
    line = lost_service(info.value, "sqlite:///local.db", url)
    assert line.startswith("Optuna storage 'postgresql+psycopg://zip:***@127.0.0.1:")
    assert "stopped answering (connection refused)" in line and "s3cret" not in line
    assert lost_service(info.value, "sqlite:///local.db", "/work/mlruns/optuna.log") is None


def test_the_retry_budget_is_checked(monkeypatch):
    monkeypatch.setenv(RETRY_ENV, "soon")
    with pytest.raises(UserError, match="ZIP_SERVICE_RETRY_S: must be a whole number"):
        with bounded_retries():
            pass
