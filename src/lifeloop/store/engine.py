"""Engine creation with the connection settings each database needs, and retried transactions."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, TypeVar

import orjson
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, OperationalError

from lifeloop.config import Settings, get_settings

T = TypeVar("T")


class RetryTransaction(Exception):
    """Raised inside ``transaction`` work when a concurrent writer changed what it read; the work reruns."""


def create_store_engine(settings: Settings | None = None, **engine_kwargs: Any) -> Engine:
    """An engine for ``settings.database_url``: WAL and immediate writers on SQLite, a pool on PostgreSQL."""
    settings = settings or get_settings()
    url = settings.database_url
    engine_kwargs.setdefault("json_serializer", _json_dumps)
    engine_kwargs.setdefault("json_deserializer", orjson.loads)
    if settings.is_sqlite:
        path = settings.sqlite_path()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            pool_pre_ping=False,
            **engine_kwargs,
        )
        _configure_sqlite(engine, settings.sqlite_synchronous)
    else:
        if "poolclass" not in engine_kwargs:
            engine_kwargs.setdefault("pool_size", 10)
            engine_kwargs.setdefault("max_overflow", 10)
        engine = create_engine(url, pool_pre_ping=True, **engine_kwargs)
    if settings.strict_scoping:
        from lifeloop.store.scoping import install_scoping_guard

        install_scoping_guard(engine)
    return engine


def _json_dumps(value: object) -> str:
    return orjson.dumps(value).decode()


def _configure_sqlite(engine: Engine, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's implicit BEGIN is deferred).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # IMMEDIATE takes the write lock up front, so two writers never deadlock on a lock upgrade;
        # read-only connections (see ``connect``) begin deferred and read alongside writers under WAL.
        deferred = conn.get_execution_options().get("read_only", False)
        conn.exec_driver_sql("BEGIN" if deferred else "BEGIN IMMEDIATE")


# SQLite has one writer at a time and its busy handler sleeps 1-100 ms between tries, so the threads of
# one process queue for it here instead, and are woken at once. Foreground writers (ingest requests, whose
# client is waiting) go before background ones (the resolver), which wait at most MAX_BACKGROUND_WAIT
# while foreground writers keep coming. Other processes still meet the busy handler.
MAX_BACKGROUND_WAIT = 1.0


class _WriterTurns:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = False
        self._foreground_waiting = 0

    @contextmanager
    def turn(self, *, background: bool) -> Iterator[None]:
        with self._cond:
            if background:
                deadline = time.monotonic() + MAX_BACKGROUND_WAIT
                while self._busy or (self._foreground_waiting and time.monotonic() < deadline):
                    self._cond.wait(max(deadline - time.monotonic(), 0.01))
            else:
                self._foreground_waiting += 1
                try:
                    while self._busy:
                        self._cond.wait()
                finally:
                    self._foreground_waiting -= 1
            self._busy = True
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    @property
    def busy(self) -> bool:
        return self._busy


_sqlite_writers: weakref.WeakKeyDictionary[Engine, _WriterTurns] = weakref.WeakKeyDictionary()


def sqlite_writer_busy(engine: Engine) -> bool:
    """Whether a thread of this process holds the SQLite write turn right now (a hint, not a lock)."""
    turns = _sqlite_writers.get(engine)
    return turns is not None and turns.busy


def _writer_turn(engine: Engine, *, background: bool) -> AbstractContextManager[object]:
    if engine.dialect.name != "sqlite":
        return nullcontext()
    turns = _sqlite_writers.get(engine)
    if turns is None:
        turns = _sqlite_writers.setdefault(engine, _WriterTurns())
    return turns.turn(background=background)


def _is_retryable(error: DBAPIError) -> bool:
    sqlstate = getattr(error.orig, "sqlstate", None)
    if sqlstate in {"40001", "40P01"}:  # serialization failure, deadlock detected
        return True
    return isinstance(error, OperationalError) and "database is locked" in str(error.orig)


def transaction(
    engine: Engine,
    work: Callable[[Connection], T],
    *,
    attempts: int = 8,
    serialize_retries_on: int | None = None,
    background: bool = False,
) -> T:
    """Run ``work`` in one transaction, retrying from scratch on deadlocks, serialization failures and
    ``RetryTransaction``. With ``serialize_retries_on`` a retry on PostgreSQL first takes an advisory lock
    on that key, so writers that keep colliding take turns instead of colliding again. ``background``
    work (nobody waits on it) lets foreground writers of the process go first on SQLite.
    """
    for attempt in range(1, attempts + 1):
        try:
            with _writer_turn(engine, background=background), engine.begin() as conn:
                if attempt > 1 and serialize_retries_on is not None and conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": serialize_retries_on})
                return work(conn)
        except RetryTransaction:
            if attempt == attempts:
                raise
        except DBAPIError as error:
            if attempt == attempts or not _is_retryable(error):
                raise
        time.sleep(0.002 * 2**attempt)
    raise AssertionError("unreachable")


@contextmanager
def connect(engine: Engine) -> Iterator[Connection]:
    """A connection for reading: on SQLite it does not take the write lock."""
    with engine.connect().execution_options(read_only=True) as conn:
        yield conn
