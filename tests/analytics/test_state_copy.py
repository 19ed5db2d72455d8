"""The analytics store's copy of the stored state follows every write, whoever makes it.

On SQLite the database logs each changed profile of the state tables (triggers), and the copy re-reads
only those; these tests check the copy row for row against the tables after real recomputes, after
writes made behind lifeloop's back in plain SQL, after the log was pruned by another copy, and that a
columnar recompute repairs what such a write broke. On PostgreSQL there is no log: the same recompute
reads the tables, and its results are checked the same way.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlalchemy as sa

from lifeloop.analytics.state_copy import source_types
from lifeloop.analytics.sync import sync
from lifeloop.audience import definitions
from lifeloop.columnar import Workspace
from lifeloop.recompute import recompute_workspace
from lifeloop.store.schema import utcnow
from lifeloop.store.state_log import SOURCE, SOURCES, Source, state_changes
from tests.conftest import Brand
from tests.lifecycle.test_recompute_scale import histories, install, send

SEGMENTS = {
    "buyers": 'count("Order Completed", within="10d") >= 1',
    "habit_vips": 'in_stage("habit") or has_tag("vip")',
}


def stored(engine: sa.Engine, source: Source, workspace_id: int) -> set[tuple[Any, ...]]:
    """The source's rows as the operational database holds them, times as naive UTC."""
    columns = ", ".join([source.profile_column, *source.columns])
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(f"SELECT {columns} FROM {source.table} WHERE workspace_id = :ws"), {"ws": workspace_id}
        ).all()
    out = set()
    for row in rows:
        values = []
        for value, kind in zip(row, source_types(source).values(), strict=True):
            if kind == "TIMESTAMP" and value is not None:
                value = naive_utc(value)
            values.append(value)
        out.add(tuple(values))
    return out


def naive_utc(value: str | datetime) -> datetime:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def copied(path: Path, source: Source, workspace_id: int) -> set[tuple[Any, ...]]:
    columns = ", ".join(source_types(source))
    with duckdb.connect(str(path)) as con:
        query = f"SELECT {columns} FROM state_{source.name} WHERE workspace_id = ?"
        return set(con.execute(query, [workspace_id]).fetchall())


def assert_copy_current(engine: sa.Engine, path: Path, workspace_id: int) -> None:
    for source in SOURCES:
        assert copied(path, source, workspace_id) == stored(engine, source, workspace_id), source.name


def populated(engine: sa.Engine, brand: Brand, path: Path) -> None:
    """A workspace with a model, the audience presets and two segments, histories, and one recompute."""
    ws = brand.workspace_id
    install(engine, ws, "custom")
    with engine.begin() as conn:
        for key in definitions.PRESET_KEYS:
            definitions.install_preset(conn, ws, key)
        for key, condition in SEGMENTS.items():
            definitions.create_segment(conn, ws, key, key, condition)
    send(engine, brand, histories(seed=5, users=30, base=utcnow()))
    recompute_workspace(engine, ws, analytics_path=path, now=utcnow() + timedelta(days=2))


@pytest.fixture
def sqlite_only(backend: str) -> None:
    if backend != "sqlite":
        pytest.skip("the state change log is SQLite's (PostgreSQL reads the state tables)")


def test_the_copy_equals_the_tables_after_recomputes_and_plain_sql_writes(
    engine: sa.Engine, brand: Brand, tmp_path: Path, sqlite_only: None
) -> None:
    path, ws = tmp_path / "analytics.duckdb", brand.workspace_id
    populated(engine, brand, path)
    report = sync(engine, path, workspace_id=ws)
    assert_copy_current(engine, path, ws)
    with engine.connect() as conn:  # what the copy read is pruned from the log
        left = conn.execute(sa.select(sa.func.count()).where(state_changes.c.workspace_id == ws)).scalar()
    assert left == 0

    # Writes behind lifeloop's back: the triggers log them, the copy re-reads only those profiles.
    with engine.begin() as conn:
        first = {
            table: conn.execute(
                sa.text(f"SELECT min(profile_id) FROM {table} WHERE workspace_id = :ws"), {"ws": ws}
            ).scalar_one()
            for table in ("profile_stages", "profile_tags", "lifecycle_rechecks")
        }
        staged, tagged, rechecked = first.values()
        run = lambda sql, p: conn.execute(sa.text(sql), {"ws": ws, "p": p})  # noqa: E731
        run("UPDATE profile_stages SET stage = 'bogus' WHERE workspace_id = :ws AND profile_id = :p", staged)
        run("DELETE FROM profile_tags WHERE workspace_id = :ws AND profile_id = :p", tagged)
        run("DELETE FROM lifecycle_rechecks WHERE workspace_id = :ws AND profile_id = :p", rechecked)
        run(
            "INSERT INTO profile_tags (workspace_id, profile_id, tag, kind, added_at, expires_at) "
            "VALUES (:ws, :p, 'hand', 'manual', '2026-01-01 00:00:00.000000', '2030-01-01 00:00:00.000000')",
            rechecked,
        )
    changed = {("stages", staged), ("tags", tagged), ("stage_rechecks", rechecked), ("tags", rechecked)}
    report = sync(engine, path, workspace_id=ws)
    assert report.state_profiles == len(changed)
    assert_copy_current(engine, path, ws)


def test_a_columnar_recompute_repairs_state_written_behind_its_back(
    engine: sa.Engine, brand: Brand, tmp_path: Path
) -> None:
    path, ws = tmp_path / "analytics.duckdb", brand.workspace_id
    populated(engine, brand, path)
    now = utcnow() + timedelta(days=2)
    again = recompute_workspace(engine, ws, analytics_path=path, now=now, from_log=False)
    assert again.stage_changes == [] and again.audience_changes == []
    with engine.connect() as conn:
        before = dict(
            conn.execute(
                sa.text("SELECT profile_id, stage FROM profile_stages WHERE workspace_id = :ws"), {"ws": ws}
            ).all()
        )
        member = conn.execute(
            sa.text(
                "SELECT profile_id, segment_id FROM segment_members "
                "WHERE workspace_id = :ws ORDER BY 1 LIMIT 1"
            ),
            {"ws": ws},
        ).one()
    wrong = min(before)
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE profile_stages SET stage = 'bogus' WHERE workspace_id = :ws AND profile_id = :p"),
            {"ws": ws, "p": wrong},
        )
        conn.execute(
            sa.text(
                "DELETE FROM segment_members WHERE workspace_id = :ws AND profile_id = :p AND segment_id = :s"
            ),
            {"ws": ws, "p": member[0], "s": member[1]},
        )
    repaired = recompute_workspace(engine, ws, analytics_path=path, now=now, from_log=False)
    assert [(c.profile_id, c.from_stage, c.to_stage) for c in repaired.stage_changes] == [
        (wrong, "bogus", before[wrong])
    ]
    assert [(c.profile_id, c.action) for c in repaired.audience_changes] == [(member[0], "entered")]
    with engine.connect() as conn:
        assert (
            dict(
                conn.execute(
                    sa.text("SELECT profile_id, stage FROM profile_stages WHERE workspace_id = :ws"),
                    {"ws": ws},
                ).all()
            )
            == before
        )
    if engine.dialect.name == "sqlite":
        sync(engine, path, workspace_id=ws)
        assert_copy_current(engine, path, ws)


def test_a_copy_behind_the_pruned_log_reads_everything_again(
    engine: sa.Engine, brand: Brand, tmp_path: Path, sqlite_only: None
) -> None:
    first, second, ws = tmp_path / "a.duckdb", tmp_path / "b.duckdb", brand.workspace_id
    populated(engine, brand, first)
    sync(engine, second, workspace_id=ws)
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE profile_stages SET stage = 'bogus' WHERE workspace_id = :ws"), {"ws": ws}
        )
    sync(engine, first, workspace_id=ws)  # reads the change and prunes it from the log
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM profile_tags WHERE workspace_id = :ws"), {"ws": ws})
    report = sync(engine, second, workspace_id=ws)  # missed the pruned change: a full read
    assert report.state_profiles == len(stored(engine, SOURCE["profiles"], ws))
    assert_copy_current(engine, second, ws)
    sync(engine, first, workspace_id=ws)
    assert_copy_current(engine, first, ws)


def test_the_working_state_forgets_a_rolled_back_transaction(
    engine: sa.Engine, brand: Brand, tmp_path: Path
) -> None:
    path, ws = tmp_path / "analytics.duckdb", brand.workspace_id
    populated(engine, brand, path)
    sync(engine, path, workspace_id=ws)
    tags = SOURCE["tags"]
    with Workspace(engine, ws, path, now=utcnow()) as columnar:
        with pytest.raises(RuntimeError), engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM profile_tags WHERE workspace_id = :ws"), {"ws": ws})
            columnar.state(conn, "tags")  # sees its own transaction's delete
            assert columnar.db.execute("SELECT count(*) FROM st_tags").fetchone() == (0,)
            raise RuntimeError("roll back")
        columnar.state(None, "tags")
        held = set(columnar.db.execute(f"SELECT {', '.join(source_types(tags))} FROM st_tags").fetchall())
    assert held == stored(engine, tags, ws) and held
