"""The secret key: generated and kept beside an embedded store, required up front on PostgreSQL."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from lifeloop import cli
from lifeloop.config import Settings
from lifeloop.secret_key import KEY_FILE, MissingSecretKey, _create, key_file, secret_key
from lifeloop.web.app import create_app
from tests.cli_helpers import run_cli
from tests.conftest import Brand

BODY = {"credentials": {"channel_access_token": "tok-SECRET", "channel_secret": "sec-SECRET"}}
UNREACHABLE_PG = "postgresql://lifeloop@127.0.0.1:1/lifeloop"  # never opened: the check comes first
# Reads a channel's credentials back in a process of its own, as `lifeloop worker` would.
READ_BACK = """
import json, sys
import sqlalchemy as sa
from lifeloop.messaging.channels.config import load_config
engine = sa.create_engine(sys.argv[1])
with engine.connect() as conn:
    print(json.dumps(load_config(conn, int(sys.argv[2]), "line")[1]))
"""


@pytest.fixture
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIFELOOP_SECRET_KEY", raising=False)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_embedded_store_generates_a_key_keeps_it_private_and_reuses_it(
    settings: Settings,
    engine: sa.Engine,
    brand: Brand,
    no_key: None,
    process_database,
    caplog: pytest.LogCaptureFixture,
) -> None:
    process_database(settings.database_url)
    path = key_file()
    assert path == Path(settings.database_url.split(":///", 1)[1]).parent / KEY_FILE
    assert not path.exists()
    with (
        caplog.at_level(logging.WARNING, logger="lifeloop.secret_key"),
        TestClient(create_app(settings, engine)) as client,
    ):
        saved = client.put("/api/v1/channels/line/default", json=BODY, headers=brand.bearer)
        assert saved.status_code == 200, saved.text
        again = client.put("/api/v1/channels/line/second", json=BODY, headers=brand.bearer)
        assert again.status_code == 200, again.text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = path.read_text()
    warnings = [r.getMessage() for r in caplog.records if r.name == "lifeloop.secret_key"]
    assert len(warnings) == 1 and "set LIFELOOP_SECRET_KEY in production" in warnings[0]

    environment = {k: v for k, v in os.environ.items() if k != "LIFELOOP_SECRET_KEY"}
    environment["LIFELOOP_DATABASE_URL"] = settings.database_url
    done = subprocess.run(
        [sys.executable, "-c", READ_BACK, settings.database_url, str(brand.workspace_id)],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == BODY["credentials"]
    assert "set LIFELOOP_SECRET_KEY in production" in done.stderr
    assert path.read_text() == key  # reused, not replaced


def test_processes_racing_for_the_key_file_all_get_the_same_key(tmp_path: Path) -> None:
    path = tmp_path / "var" / KEY_FILE
    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: _create(path), range(16)))
    assert len(keys) == 1 and len(keys.pop()) >= 32
    assert [p.name for p in path.parent.iterdir()] == [KEY_FILE]  # no drafts left behind


def test_a_set_key_is_used_and_no_file_is_written(
    tmp_path: Path, process_database, monkeypatch: pytest.MonkeyPatch
) -> None:
    process_database(f"sqlite:///{tmp_path / 'lifeloop.db'}")
    monkeypatch.setenv("LIFELOOP_SECRET_KEY", "k" * 40)
    assert secret_key() == b"k" * 40
    monkeypatch.setenv("LIFELOOP_SECRET_KEY", "short")
    with pytest.raises(MissingSecretKey, match="shorter than 32"):
        secret_key()  # a key that was set is never silently replaced by a generated one
    assert not (tmp_path / KEY_FILE).exists()


@pytest.mark.parametrize("command", [["serve"], ["worker"], ["messages", "work"]])
def test_long_running_commands_refuse_postgresql_without_a_key(no_key: None, command: list[str]) -> None:
    result = run_cli(command, UNREACHABLE_PG)
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: LIFELOOP_SECRET_KEY is not set:"), result.output
    assert f"lifeloop {' '.join(command)} on PostgreSQL needs" in lines[0]


def test_serve_starts_on_postgresql_with_a_key_and_on_sqlite_without(
    settings: Settings, backend: str, process_database, monkeypatch: pytest.MonkeyPatch
) -> None:
    process_database(settings.database_url)
    if backend == "postgresql":
        monkeypatch.setenv("LIFELOOP_SECRET_KEY", "a-production-secret-key-of-enough-length-0123")
    else:
        monkeypatch.delenv("LIFELOOP_SECRET_KEY", raising=False)
    started: list[dict] = []
    monkeypatch.setattr("uvicorn.run", lambda *args, **kwargs: started.append(kwargs))
    result = CliRunner().invoke(cli.app, ["serve", "--port", "8765"])
    assert result.exit_code == 0, result.output
    assert started and started[0]["port"] == 8765


def test_a_worker_that_delivers_nothing_needs_no_key(settings: Settings, no_key: None) -> None:
    result = run_cli(["worker", "--once"], settings.database_url)
    assert result.exit_code == 0, result.output
