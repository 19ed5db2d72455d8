"""The analytics store's copy of the stored state: stages, recheck times, tags, memberships, merges.

``state_<source>`` tables (``lifeloop.store.state_log.SOURCES``) hold, per workspace, the rows of the
operational state tables as of the log id saved in ``sync_state`` (stream ``state``). ``sync_state_copy``
brings them up to date: it reads, in one snapshot, the profiles the log names after that id and replaces
their rows — or everything, when the copy is new, fell behind a pruning, or most profiles changed. The
log is then pruned up to the id read. A batch recompute starts from this copy
(``lifeloop.columnar.Workspace.state``) and reads only what changed since, instead of every row.

SQLite only (see ``lifeloop.store.state_log``); elsewhere the functions here do nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa
from sqlalchemy import Connection, Engine, column, func, select, table
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from lifeloop.analytics.streams import read_stream, save_stream
from lifeloop.store.engine import connect, transaction
from lifeloop.store.rows import IN_CHUNK, fetch_tuples, without_gc
from lifeloop.store.state_log import SOURCES, Source, state_changes, state_changes_pruned

STREAM = "state"
# Re-reading changed profiles one IN list at a time beats reading a whole table only while few changed.
FULL_READ_SHARE = 0.2

SCHEMA = "".join(
    f"CREATE TABLE IF NOT EXISTS state_{s.name} (workspace_id BIGINT NOT NULL, profile_id BIGINT NOT NULL"
    + "".join(f", {name} {kind}" for name, kind in s.columns.items())
    + ");\n"
    for s in SOURCES
)


def logged(conn: Connection) -> bool:
    """Whether this database keeps the state change log (SQLite)."""
    return conn.dialect.name == "sqlite"


def arrow_rows(rows: Sequence[Sequence[Any]], names: Iterable[str]) -> pa.Table:
    """Rows (tuples in ``names`` order) as an Arrow table; aware times become naive UTC."""
    names = list(names)
    arrays = {}
    with without_gc():
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
        for name, values in zip(names, columns, strict=True):
            array = pa.array(values)
            if pa.types.is_timestamp(array.type) and array.type.tz is not None:
                array = array.cast(pa.timestamp(array.type.unit))  # the same instants, in UTC, no zone
            arrays[name] = array
    return pa.table(arrays)


def insert_arrow(
    con: duckdb.DuckDBPyConnection, target: str, rows: pa.Table, types: dict[str, str], prefix: str = ""
) -> None:
    """``INSERT INTO target`` the Arrow ``rows``, each column cast to its type in ``types``;
    ``prefix`` adds leading constant columns (e.g. the workspace id)."""
    con.register("_arrow_rows", rows)
    try:
        selected = ", ".join(f"CAST({c} AS {t})" for c, t in types.items())
        con.execute(f"INSERT INTO {target} SELECT {prefix}{selected} FROM _arrow_rows")
    finally:
        con.unregister("_arrow_rows")


def replace_profiles(
    con: duckdb.DuckDBPyConnection,
    target: str,
    profile_ids: Iterable[int],
    rows: pa.Table,
    types: dict[str, str],
    *,
    where: str = "TRUE",
    prefix: str = "",
) -> None:
    """Replace the rows of ``profile_ids`` in ``target`` (among those ``where`` selects) by ``rows``."""
    con.register("_changed", pa.table({"pid": pa.array(sorted(profile_ids), pa.int64())}))
    try:
        con.execute(f"DELETE FROM {target} WHERE {where} AND profile_id IN (SELECT pid FROM _changed)")
    finally:
        con.unregister("_changed")
    insert_arrow(con, target, rows, types, prefix)


def source_types(source: Source) -> dict[str, str]:
    return {"profile_id": "BIGINT", **source.columns}


@dataclass(frozen=True, slots=True)
class Later:
    """A narrowing to the rows whose column is later than ``moment``."""

    moment: datetime


# (a copied column, the values of it to read, or Later: the rows after a moment)
Narrowing = tuple[str, Sequence[Any] | Later]


def read_source(
    conn: Connection,
    source: Source,
    workspace_id: int,
    profile_ids: Iterable[int] | None = None,
    narrow: Narrowing | None = None,
) -> list[tuple[Any, ...]]:
    """``source``'s rows of a workspace (of ``profile_ids`` only, and with ``narrow``'s values only, when
    given), in ``source_types`` order. Times stay text on SQLite: DuckDB casts them."""
    t = table(
        source.table, column("workspace_id"), column(source.profile_column), *map(column, source.columns)
    )
    query = select(t.c[source.profile_column], *(t.c[c] for c in source.columns)).where(
        t.c.workspace_id == workspace_id
    )
    if narrow is not None:
        narrowed, wanted = t.c[narrow[0]], narrow[1]
        query = query.where(
            narrowed > wanted.moment if isinstance(wanted, Later) else narrowed.in_(list(wanted))
        )
    if profile_ids is None:
        return fetch_tuples(conn, query)
    rows: list[tuple[Any, ...]] = []
    ids = sorted(profile_ids)
    for start in range(0, len(ids), IN_CHUNK):
        rows += fetch_tuples(conn, query.where(t.c[source.profile_column].in_(ids[start : start + IN_CHUNK])))
    return rows


def log_position(conn: Connection, workspace_id: int) -> tuple[int, int]:
    """(the newest log id of the workspace — or the pruned-through id when the log is empty, the
    pruned-through id)."""
    c, p = state_changes.c, state_changes_pruned.c
    newest = conn.execute(select(func.max(c.id)).where(c.workspace_id == workspace_id)).scalar()
    pruned = conn.execute(select(p.through_id).where(p.workspace_id == workspace_id)).scalar()
    return max(int(newest or 0), int(pruned or 0)), int(pruned or 0)


def changed_since(conn: Connection, workspace_id: int, after: int, through: int) -> dict[str, set[int]]:
    """The profiles the log names with ids in (after, through], per source."""
    c = state_changes.c
    query = (
        select(c.source, c.profile_id)
        .where(c.workspace_id == workspace_id, c.id > after, c.id <= through)
        .distinct()
    )
    found: dict[str, set[int]] = {s.name: set() for s in SOURCES}
    for name, pid in fetch_tuples(conn, query):
        found[name].add(pid)
    return found


def sync_state_copy(engine: Engine, con: duckdb.DuckDBPyConnection, workspace_id: int) -> int:
    """Bring the copy of a workspace up to date with the log, then prune the log; returns the number of
    profiles re-read (every copied profile on a full read)."""
    if engine.dialect.name != "sqlite":
        return 0
    cursor, _ = read_stream(con, workspace_id, STREAM)
    with connect(engine) as conn:  # one read transaction: the log and the rows, one snapshot
        end, pruned = log_position(conn, workspace_id)
        full = cursor is None or cursor < pruned or cursor > end
        changed: dict[str, set[int]] = {}
        if not full and end > (cursor or 0):
            changed = changed_since(conn, workspace_id, cursor or 0, end)
            held = con.execute(
                "SELECT count(*) FROM state_profiles WHERE workspace_id = ?", [workspace_id]
            ).fetchall()[0][0]
            full = sum(map(len, changed.values())) > FULL_READ_SHARE * max(held, 1) * len(SOURCES)
        if full:
            fresh = {s.name: read_source(conn, s, workspace_id) for s in SOURCES}
        else:
            fresh = {
                s.name: read_source(conn, s, workspace_id, ids)
                for s in SOURCES
                if (ids := changed.get(s.name))
            }
    con.begin()
    try:
        for source in SOURCES:
            if source.name not in fresh:
                continue
            target, types = f"state_{source.name}", source_types(source)
            rows, prefix = arrow_rows(fresh[source.name], types), f"{int(workspace_id)}, "
            if full:
                con.execute(f"DELETE FROM {target} WHERE workspace_id = ?", [workspace_id])
                insert_arrow(con, target, rows, types, prefix)
            else:
                where = f"workspace_id = {int(workspace_id)}"
                replace_profiles(con, target, changed[source.name], rows, types, where=where, prefix=prefix)
        save_stream(con, workspace_id, STREAM, cursor=end)
        con.commit()
    except BaseException:
        con.rollback()
        raise
    if end > pruned:
        transaction(engine, lambda conn: prune(conn, workspace_id, end), background=True)
    return len(fresh.get("profiles", ())) if full else sum(map(len, changed.values()))


def prune(conn: Connection, workspace_id: int, through: int) -> None:
    """Drop the log up to ``through`` (a copy has read it) and remember that it did."""
    c, p = state_changes.c, state_changes_pruned.c
    conn.execute(state_changes.delete().where(c.workspace_id == workspace_id, c.id <= through))
    statement = sqlite_insert(state_changes_pruned).values(workspace_id=workspace_id, through_id=through)
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[p.workspace_id],
            set_={"through_id": func.max(p.through_id, statement.excluded.through_id)},
        )
    )
