"""Where the study lives: a journal file on one machine, or a database for several (DESIGN §4, §8).

`open_storage` opens `OPTUNA_STORAGE` / `sweep.storage`, else the journal file
`mlruns/optuna.log` (several processes on one machine). A database URL opens an `RDBStorage`
with Optuna's heartbeat: every running trial records a heartbeat each `ZIP_HEARTBEAT_INTERVAL`
seconds (default 10), and a trial silent for `ZIP_GRACE_PERIOD` seconds (default 60) is failed
by whichever live worker looks next, which then re-runs its grid point (`heartbeat`). Only
`RDBStorage` has heartbeats; the journal file keeps the host/pid check of `study`.

`check_params` keeps workers with different params files apart: on a shared database, a
worker refuses to start a second study beside a live one of the same name but other params.
`study_lock` keeps a second sweep of the same study out of a work directory whose sweep runs.

The journal file survives a write cut short (`Journal`): a full disk, a killed writer.

A service lost during a sweep (the tracking server, the database) ends it in one line within
`ZIP_SERVICE_RETRY_S` seconds of retries (default 60; `bounded_retries`, `lost_service`):
MLflow's client alone would retry each call for ~4 minutes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import re
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.storages.journal._file import get_lock_file
from optuna.trial import TrialState

from pipeline.core.errors import UserError
from pipeline.tracking.values import redact

HEARTBEAT_ENV, GRACE_ENV = "ZIP_HEARTBEAT_INTERVAL", "ZIP_GRACE_PERIOD"
# A trial's worker misses a few beats on a busy machine; `grace` must outlast that, and a
# dead worker's trial waits this long before another worker retries it.
DEFAULT_HEARTBEAT_S, DEFAULT_GRACE_S = 10, 60
_PARAMS_HASH = "params_hash"  # study user attr: the full hash of the blocks the study uses


RETRY_ENV, DEFAULT_RETRY_S = "ZIP_SERVICE_RETRY_S", 60
_MLFLOW_RETRIES = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
_LOST = "stopped answering"


class ServiceLost(UserError):
    """The tracking server or the Optuna database stopped answering during the sweep."""


def retry_plan(budget: int) -> dict[str, str]:
    """MLflow's HTTP retry settings whose pauses add up to at most `budget` seconds.

    urllib3 2.x (under MLflow 3.17) retries at once, then sleeps `factor * 2**(n - 1)` plus
    up to `jitter` before the n-th retry: with factor 1, k retries sleep 2**k - 2 s (+ k *
    jitter). MLflow's defaults (7 retries, factor 2) sleep ~4 minutes per call.
    """
    jitter, retries = 0.5, 0
    while 2 ** (retries + 1) - 2 + (retries + 1) * jitter <= budget:
        retries += 1
    return {_MLFLOW_RETRIES: str(retries), "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
            "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": str(jitter)}  # fmt: skip


@contextlib.contextmanager
def bounded_retries():
    """Within the block (and in processes it spawns), MLflow's client gives up on a lost
    server within `ZIP_SERVICE_RETRY_S` seconds; MLflow's own `MLFLOW_HTTP_REQUEST_*`
    settings, when the user set them, win. The environment is restored at the end.

    Raises:
        UserError: `ZIP_SERVICE_RETRY_S` is not a whole number of seconds.
    """
    text = os.environ.get(RETRY_ENV) or str(DEFAULT_RETRY_S)
    if not text.isdigit():
        raise UserError(f"{RETRY_ENV}: must be a whole number of seconds >= 0, got {text!r}")
    plan = retry_plan(int(text))
    keys = [*plan, _MLFLOW_RETRIES]
    previous = {key: os.environ.get(key) for key in keys}
    os.environ.update({k: v for k, v in plan.items() if previous[k] is None})
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def give_up_retries() -> None:
    """After a lost service: later MLflow calls (closing runs on the way out) fail at once."""
    os.environ[_MLFLOW_RETRIES] = "0"


def lost_service(err: BaseException, tracking_uri: str, storage_url: str | None) -> str | None:
    """One line naming the service that stopped answering, if `err` (or its cause) says so:
    the MLflow tracking server (its client gave up retrying) or the Optuna database (its
    connection failed); else None.

    Args:
        err: the exception, possibly wrapping the real cause.
        tracking_uri: MLflow's URI (only an http(s) server can be lost).
        storage_url: the Optuna storage's URL (only a database can be lost).
    """
    server = tracking_uri.startswith(("http://", "https://"))
    database = storage_url is not None and "://" in storage_url
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        text = str(err)
        if server and text.startswith("API request to") and " failed with exception " in text:
            return (f"MLflow tracking server {redact(tracking_uri)!r} {_LOST} "
                    f"({_reason(text)}); the next start resumes the study")  # fmt: skip
        if database and _connection_lost(err):
            return (f"Optuna storage {redact(storage_url)!r} {_LOST} ({_reason(text)}); "
                    "the next start resumes the study")  # fmt: skip
        err = err.__cause__ or err.__context__
    return None


def _connection_lost(err: BaseException) -> bool:
    """SQLAlchemy's `OperationalError` / `InterfaceError` (a connection refused or dropped), by
    name: the tracking room does not import SQLAlchemy itself (tests/test_layers.py)."""
    return any(c.__module__.startswith("sqlalchemy") and c.__name__ in
               {"OperationalError", "InterfaceError"} for c in type(err).__mro__)  # fmt: skip


def _reason(text: str) -> str:
    """The short cause in a client's error text: `connection refused`, `HTTP 500`, …"""
    if "too many 5" in text:
        found = re.search(r"too many (\d+) error responses", text)
        return f"HTTP {found.group(1) if found else '5xx'} on every retry"
    found = re.search(r"\[Errno -?\d+\] ([^\"'\)\n]+)", text)
    if found:
        return found.group(1).strip().lower()
    for phrase in ("connection refused", "timed out", "server closed the connection"):
        if phrase in text.lower():
            return phrase
    line = (text.strip().splitlines() or ["no answer"])[0]
    return re.sub(r"^\([\w.]+\) ", "", line)[:160]


def heartbeat_settings() -> tuple[int, int]:
    """(heartbeat interval, grace period) in seconds, from the environment or the defaults.

    Raises:
        UserError: not whole positive seconds, or a grace period not above the interval.
    """
    values = []
    for key, default in ((HEARTBEAT_ENV, DEFAULT_HEARTBEAT_S), (GRACE_ENV, DEFAULT_GRACE_S)):
        text = os.environ.get(key) or str(default)
        if not text.isdigit() or int(text) < 1:
            raise UserError(f"{key}: must be a whole number of seconds >= 1, got {text!r}")
        values.append(int(text))
    if values[1] <= values[0]:
        raise UserError(f"{GRACE_ENV} ({values[1]} s) must exceed {HEARTBEAT_ENV} ({values[0]} s)")
    return values[0], values[1]


_RECORD_START = b'{"op_code":'  # every journal record (Optuna 5.0 `JournalStorage._write_log`)


class Journal(JournalFileBackend):
    """Optuna's journal file, whose records a failed write cannot tear (issue 21, item 2).

    Optuna 5.0's `JournalFileBackend.append_logs` appends with a buffered `write`: when the
    disk fills mid-write, part of a record stays without its newline, the writer gets the
    error, and the next append glues a whole record onto the torn one. `read_logs` then raises
    `JSONDecodeError` on every later open. Here, under the journal's own lock, an append
    writes with `os.write` and, on any error, truncates the file back to its size before the
    write (shrinking needs no free space): a failed write leaves nothing, which is what its
    writer was told. A record torn by a writer killed mid-write (SIGKILL, power loss) is cut
    off by the next append before it writes. `repair` drops the torn records an older
    journal already holds, keeping a whole record glued onto one.
    """

    def append_logs(self, logs: list[dict]) -> None:
        data = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs).encode()
        with get_lock_file(self._lock):
            fd = os.open(self._file_path, os.O_RDWR | os.O_APPEND)
            try:
                start = _cut_torn_tail(fd)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fsync(fd)
                except BaseException:
                    os.ftruncate(fd, start)
                    raise
            finally:
                os.close(fd)

    def repair(self) -> int:
        """Drop torn records (a last record without its newline, a line that is not JSON);
        a whole record glued after a torn one is kept. Returns how many were dropped."""
        with get_lock_file(self._lock):
            lines = Path(self._file_path).read_bytes().split(b"\n")
            tail = int(lines.pop() != b"")  # what follows the last newline
            kept = []
            for line in lines:
                if _is_record(line):
                    kept.append(line)
                    continue
                glued = _glued_record(line)
                if glued is not None:
                    kept.append(glued)
            if kept == lines and tail:  # only the tail: cut it in place
                os.truncate(self._file_path, sum(len(line) + 1 for line in lines))
            elif kept != lines:
                tmp = Path(f"{self._file_path}.repair")
                with open(tmp, "wb") as out:
                    out.write(b"".join(line + b"\n" for line in kept))
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, self._file_path)
            return tail + sum(not _is_record(line) for line in lines)


def _is_record(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _glued_record(line: bytes) -> bytes | None:
    """The whole record at the end of `line` (a torn record with the next one glued on)."""
    at = line.rfind(_RECORD_START)
    while at > 0:
        if _is_record(line[at:]):
            return line[at:]
        at = line.rfind(_RECORD_START, 0, at)
    return None


def _cut_torn_tail(fd: int) -> int:
    """Cut the journal open as `fd` back to its last newline; returns its size after."""
    size = os.fstat(fd).st_size
    end = size
    while end > 0:
        chunk = os.pread(fd, min(end, 1 << 16), end - min(end, 1 << 16))
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            end = end - len(chunk) + newline + 1
            break
        end -= len(chunk)
    if end != size:
        os.ftruncate(fd, end)
    return end


@contextlib.contextmanager
def study_lock(workdir: Path, study: str):
    """Hold the work directory's lock on `study` for the block: one sweep per study and work
    directory (its `data/` tables are written by one parent only).

    A second sweep is refused rather than made to wait: it would add nothing the first does
    not do (`--workers` adds processes to a sweep; a database storage adds hosts, each with
    its own work directory), and a wait would look like a hang in a log. The kernel drops the
    lock when its holder dies, so a killed sweep never leaves it behind.

    Raises:
        UserError: another live process holds it (one line, with its pid).
    """
    path = workdir / "mlruns" / f".{study}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 20, 0).decode(errors="replace").strip() or "unknown"
            raise UserError(
                f"study {study} already runs in {workdir} (pid {holder}): wait for it to end, "
                "or give that sweep more --workers"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _rdb(url: str, on_stale):
    interval, grace = heartbeat_settings()
    with warnings.catch_warnings():  # heartbeat_interval is 'experimental' since Optuna 2.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # Several workers starting at once on an empty database race to create the tables
        # (PostgreSQL: duplicate key in pg_type); the loser retries and finds them made.
        for attempt in range(5):
            try:
                return RDBStorage(url, heartbeat_interval=interval, grace_period=grace,
                                  heartbeat_stale_trial_callback=on_stale)  # fmt: skip
            except Exception as err:
                text = str(err).lower()
                if attempt == 4 or not ("duplicate key" in text or "already exists" in text):
                    raise
                time.sleep(0.2 + random.random())
    raise AssertionError("unreachable")


def open_storage(url: str | None, workdir: Path, tracking_uri: str, on_stale=None):
    """The Optuna storage: `url` (any Optuna storage URL, or a journal file path), else the
    journal file `workdir/mlruns/optuna.log` (safe for several processes on one machine).

    Args:
        url: `OPTUNA_STORAGE` or `sweep.storage`, or None.
        workdir: the workdir.
        tracking_uri: MLflow's URI; Optuna must not share MLflow's SQLite file.
        on_stale: for a database, `on_stale(study, frozen_trial)` runs after a live worker
            failed a trial whose heartbeat stopped (`heartbeat.Heartbeat`).

    Returns:
        (storage, its URL or path for messages and `make dashboard`).

    Raises:
        UserError: the storage cannot be opened (one line).
    """

    if not url:
        url = str(workdir / "mlruns" / "optuna.log")
    # Relative file paths belong to the work directory, not to wherever the stage was started
    # (a copied or moved work directory then keeps its own study).
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).is_absolute():
        url = f"sqlite:///{workdir / url[len('sqlite:///') :]}"
    elif "://" not in url and not Path(url).is_absolute():
        url = str(workdir / url)
    mlflow_db = (
        tracking_uri.removeprefix("sqlite:///") if tracking_uri.startswith("sqlite:///") else None
    )
    if url.startswith("sqlite:///") and mlflow_db is not None:
        if Path(url[len("sqlite:///") :]).resolve() == Path(mlflow_db).resolve():
            raise UserError(
                f"Optuna storage {redact(url)!r} is MLflow's store: use a separate file"
            )
    try:
        if "://" not in url:
            Path(url).parent.mkdir(parents=True, exist_ok=True)
            journal = Journal(url)
            torn = journal.repair()
            if torn:
                print(f"{url}: dropped {torn} torn record(s), writes cut short by a full disk "
                      "or a killed process", file=sys.stderr)  # fmt: skip
            return JournalStorage(journal), url
        return _rdb(url, on_stale), url
    except UserError:
        raise
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        where = redact(url)
        raise UserError(f"Optuna storage {where!r} cannot be opened: {first[:200]}") from None


def has_heartbeat(storage) -> bool:
    """Whether trials in `storage` record heartbeats (a database opened by `open_storage`)."""
    return isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None


def check_params(storage, name: str, stamp: str) -> None:
    """Refuse a worker whose params differ from the study's (DESIGN §8).

    The study's name carries the first 8 hex of `stamp`; its user attr `params_hash` the whole
    hash, set by the worker that created it. A worker refuses when its study exists with
    another hash, or, on a shared database, when its study does not exist yet but a study of
    the same base name (other params) has trials waiting or running.

    Raises:
        UserError: one line naming both hashes.
    """
    names = optuna.study.get_all_study_names(storage)
    where = redact(getattr(storage, "url", "") or "the storage")
    if name in names:
        theirs = optuna.load_study(study_name=name, storage=storage).user_attrs.get(_PARAMS_HASH)
        others = [(name, theirs)] if theirs not in (None, stamp) else []
    elif isinstance(storage, RDBStorage):
        base = name.rsplit("-", 1)[0]
        live = (TrialState.WAITING, TrialState.RUNNING)
        others = []
        for other in names:
            if other.rsplit("-", 1)[0] == base:
                study = optuna.load_study(study_name=other, storage=storage)
                if study.get_trials(deepcopy=False, states=live):
                    others.append((other, study.user_attrs.get(_PARAMS_HASH) or other[-8:]))
    else:
        others = []
    for other, theirs in others[:1]:
        raise UserError(
            f"study {other} on {where} runs other params (hash {theirs[:8]}; this worker's "
            f"{stamp[:8]}): give every worker the same params file"
        )


def record_params(study, stamp: str) -> None:
    """Write the study's full params hash once (its creator's); see `check_params`."""
    if _PARAMS_HASH not in study.user_attrs:
        study.set_user_attr(_PARAMS_HASH, stamp)


def check_server(uri: str, timeout: float = 10.0) -> None:
    """For an http(s) tracking URI, check that the server answers /health, in one line.

    (MLflow's client would retry for minutes before failing with a traceback.)

    Raises:
        UserError: the server does not answer.
    """
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as reply:
            if reply.status == 200:
                return
            problem = f"HTTP {reply.status}"
    except Exception as err:  # refused, unknown host, timeout, HTTP error
        problem = str(getattr(err, "reason", None) or err).strip() or type(err).__name__
    with contextlib.suppress(Exception):
        problem = problem.splitlines()[0][:200]
    raise UserError(f"MLflow tracking server {redact(uri)!r} does not answer: {problem}")
