"""Fixtures: every storage test runs on a fresh SQLite file and a fresh PostgreSQL database.

Each database is cloned from a template migrated once per test process (a file copy for SQLite,
CREATE DATABASE … TEMPLATE for PostgreSQL), so tests never share state and start in milliseconds.
"""

from __future__ import annotations

import os
import queue
import shutil
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
import uvicorn
from fastapi.testclient import TestClient

from lifeloop.config import Settings, get_settings
from lifeloop.store.engine import create_store_engine
from lifeloop.store.migrate import upgrade
from lifeloop.store.schema import load_all_tables
from lifeloop.web.app import create_app
from lifeloop.workspaces.service import create_api_token, create_source, create_workspace

PG_ADMIN_URL = os.environ.get("LIFELOOP_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
BACKENDS = ["sqlite", "postgresql"]
# What production sets in LIFELOOP_SECRET_KEY, for worker and server processes the tests start on PostgreSQL.
TEST_SECRET_KEY = "test-secret-key-for-channel-credentials-0123456789"


def pg_admin(sql: str) -> None:
    """Run one statement (CREATE/DROP DATABASE) on the maintenance database, outside a transaction."""
    url = sa.make_url(PG_ADMIN_URL)
    with psycopg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        dbname=url.database,
        autocommit=True,
    ) as conn:
        conn.execute(sql)


def _pg_url(database: str) -> str:
    """A test database's URL. Its commits do not wait for the disk (``synchronous_commit=off``): a killed
    client process still loses nothing committed, only a crash of the server itself could."""
    url = sa.make_url(PG_ADMIN_URL).set(database=database, query={"options": "-c synchronous_commit=off"})
    return url.render_as_string(hide_password=False)


@pytest.fixture(autouse=True)
def own_analytics_store(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Code that falls back to the default analytics store (the demo, the worker and CLI subprocesses)
    writes a file of this test's own: never the checkout's ./var/analytics.duckdb, which a later
    ``make demo`` would otherwise read as the copy of its own, different database."""
    path = tmp_path_factory.mktemp("analytics") / "analytics.duckdb"
    monkeypatch.setenv("LIFELOOP_ANALYTICS_PATH", str(path))


@pytest.fixture
def process_database(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], Settings]]:
    """Point the process's own configuration (``get_settings()``, as the CLI and ``lifeloop serve`` read
    it) at a database URL, for the duration of the test."""

    def use(url: str) -> Settings:
        monkeypatch.setenv("LIFELOOP_DATABASE_URL", url)
        get_settings.cache_clear()
        return get_settings()

    yield use
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = create_store_engine(Settings(database_url=f"sqlite:///{path}"), poolclass=sa.NullPool)
    upgrade(engine)
    engine.dispose()
    with sqlite3.connect(path) as raw:  # fold the WAL into the file so a plain copy is complete
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


class DatabasePool:
    """Fresh PostgreSQL databases cloned from the template a step ahead of the tests that take them, and
    dropped after them, in a thread of this test process: a clone costs about 200 ms of the server's
    time, which the test before it can overlap instead of waiting for."""

    AHEAD = 2

    def __init__(self, template: str) -> None:
        self.template = template
        self.ready: queue.Queue[str | Exception] = queue.Queue()
        self.work: queue.Queue[str | None] = queue.Queue()  # "" = clone one more, a name = drop it
        self.thread = threading.Thread(target=self._run, name="pg-database-pool", daemon=True)
        self.thread.start()
        for _ in range(self.AHEAD):
            self.work.put("")

    def _run(self) -> None:
        while (job := self.work.get()) is not None:
            name = job or f"lifeloop_t_{uuid.uuid4().hex[:12]}"
            try:
                if job:
                    pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                else:
                    pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
            except Exception as error:  # the next test that takes a database fails with the server's reason
                self.ready.put(error)
            else:
                if not job:
                    self.ready.put(name)

    def take(self) -> str:
        self.work.put("")  # the next test's, while this one runs
        name = self.ready.get(timeout=60)
        if isinstance(name, Exception):
            raise name
        return name

    def give_back(self, name: str) -> None:
        self.work.put(name)

    def close(self) -> None:
        self.work.put(None)
        self.thread.join(timeout=60)
        while not self.ready.empty():
            if isinstance(name := self.ready.get(), str):
                pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_template(worker_id: str) -> Iterator[str]:
    name = f"lifeloop_tpl_{worker_id}_{uuid.uuid4().hex[:8]}"
    pg_admin(f'CREATE DATABASE "{name}"')
    engine = create_store_engine(Settings(database_url=_pg_url(name)), poolclass=sa.NullPool)
    upgrade(engine)
    engine.dispose()
    yield name
    pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_databases(pg_template: str) -> Iterator[DatabasePool]:
    pool = DatabasePool(pg_template)
    yield pool
    pool.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def settings(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Settings]:
    if backend == "sqlite":
        path = tmp_path / "lifeloop.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield Settings(database_url=f"sqlite:///{path}", strict_scoping=True, resolve_in_server=False)
        return
    pool: DatabasePool = request.getfixturevalue("pg_databases")
    name = pool.take()
    yield Settings(database_url=_pg_url(name), strict_scoping=True, resolve_in_server=False)
    pool.give_back(name)


@pytest.fixture
def engine(settings: Settings) -> Iterator[sa.Engine]:
    engine = create_store_engine(settings)
    yield engine
    engine.dispose()


@dataclass
class Brand:
    """A workspace with one source and an admin token, as a brand's engineers would set it up."""

    workspace_id: int
    source_id: int
    write_key: str
    token: str

    @property
    def auth(self) -> tuple[str, str]:
        return (self.write_key, "")

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def make_brand(engine: sa.Engine, slug: str) -> Brand:
    with engine.begin() as conn:
        ws = create_workspace(conn, slug=slug, timezone="Asia/Taipei")
        source, key = create_source(conn, ws.id, name="web")
        _token, secret = create_api_token(conn, ws.id, name="tests", role="admin")
    return Brand(workspace_id=ws.id, source_id=source.id, write_key=key, token=secret)


@pytest.fixture
def brand(engine: sa.Engine) -> Brand:
    return make_brand(engine, "acme")


@pytest.fixture
def client(settings: Settings, engine: sa.Engine, tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(settings, engine)
    app.state.analytics_path = tmp_path / "analytics.duckdb"  # the test's own analytics store
    with TestClient(app) as test_client:
        yield test_client


def snapshot(engine: sa.Engine) -> dict[str, Any]:
    """Every table's row count and content digest: equal snapshots mean nothing was written."""
    metadata = load_all_tables()
    state: dict[str, Any] = {}
    with engine.connect().execution_options(cross_workspace=True) as conn:
        for table in metadata.sorted_tables:
            rows = conn.execute(sa.select(table).execution_options(cross_workspace=True)).all()
            state[table.name] = sorted(repr(tuple(r)) for r in rows)
    return state


@contextmanager
def rows_written(engine: sa.Engine) -> Iterator[list[str]]:
    """The statements run through ``engine`` meanwhile that inserted, updated or deleted at least one row.

    The event log's appends on SQLite use the driver's cursor directly and are not seen here: a test that
    must see them compares the events themselves."""
    written: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        verb = statement.lstrip().split(None, 1)[0].upper()
        if verb in {"INSERT", "UPDATE", "DELETE"} and (cursor.rowcount or 0) > 0:
            written.append(statement)

    sa.event.listen(engine, "after_cursor_execute", record)
    try:
        yield written
    finally:
        sa.event.remove(engine, "after_cursor_execute", record)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LiveServer:
    url: str
    server: uvicorn.Server
    thread: threading.Thread


@pytest.fixture
def live_server(settings: Settings, engine: sa.Engine, tmp_path: Path) -> Iterator[LiveServer]:
    """The real app on a real socket, for clients that speak HTTP themselves."""
    port = free_port()
    app = create_app(settings, engine)
    app.state.analytics_path = tmp_path / "analytics.duckdb"
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    yield LiveServer(url=f"http://127.0.0.1:{port}", server=server, thread=thread)
    server.should_exit = True
    thread.join(timeout=10)
