"""Many rows in few statements: the batch paths' writes (lifecycle changes, tags, memberships)."""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import ColumnElement, Connection, Executable, String, Table, cast, delete, insert, type_coerce

from lifeloop.store.schema import UTCDateTime, sqlite_time

_SQLITE_VARIABLES = 30_000  # SQLite allows 32,766 bound values per statement
IN_CHUNK = 900  # values per IN list: bounded statements on both databases


Rows = Sequence[Sequence[Any]]


def sqlite_rows(table: Table, columns: Sequence[str], rows: Rows) -> Rows:
    """``rows`` (tuples in ``columns`` order) as the SQLite driver takes them: the times of ``UTCDateTime``
    columns as the text it keeps, so rows read back like any other; the other values as they are."""
    times = [i for i, c in enumerate(columns) if isinstance(table.c[c].type, UTCDateTime)]
    if not times:
        return rows

    def serialised(row: Sequence[Any]) -> list[Any]:
        out = list(row)
        for i in times:
            if out[i] is not None:
                out[i] = sqlite_time(out[i])
        return out

    return [serialised(row) for row in rows]


def insert_rows(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    returning: str = "",
) -> list[Any]:
    """Insert ``rows`` (tuples in ``columns`` order) as multi-row statements; RETURNING rows if asked.

    SQLite gets pre-serialised values in one driver statement per chunk (SQLAlchemy's per-value bind
    processing would cost more than the insert); PostgreSQL gets SQLAlchemy's batched executemany.
    """
    if not rows:
        return []
    if conn.dialect.name != "sqlite":
        statement: Any = insert(table)
        if returning:
            statement = statement.returning(
                *(table.c[c.strip()] for c in returning.split(",")), sort_by_parameter_order=True
            )
        result = conn.execute(statement, [dict(zip(columns, row, strict=True)) for row in rows])
        return list(result) if returning else []
    per_statement = max(1, _SQLITE_VARIABLES // len(columns))
    marks = "(" + ",".join("?" * len(columns)) + ")"
    out: list[Any] = []
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES " + ",".join([marks] * len(chunk))
        if returning:
            sql += f" RETURNING {returning}"
        params = tuple(v for row in sqlite_rows(table, columns, chunk) for v in row)
        result = conn.exec_driver_sql(sql, params)
        if returning:
            out += result.all()
    return out


def delete_in(
    conn: Connection, table: Table, column: str, values: Sequence[Any], *where: ColumnElement[bool]
) -> None:
    """``DELETE FROM table WHERE *where AND column IN values``, in bounded IN lists."""
    for start in range(0, len(values), IN_CHUNK):
        chunk = list(values[start : start + IN_CHUNK])
        conn.execute(delete(table).where(*where, table.c[column].in_(chunk)))


def json_text(conn: Connection, column: Any) -> Any:
    """A JSON column as its text, without decoding it in Python."""
    return type_coerce(column, String) if conn.dialect.name == "sqlite" else cast(column, String)


def time_value(conn: Connection, column: Any) -> Any:
    """A time column as the database gives it (text on SQLite: cast in DuckDB or pandas, not parsed in
    Python)."""
    return type_coerce(column, String) if conn.dialect.name == "sqlite" else column


def fetch_tuples(conn: Connection, query: Executable) -> list[tuple[Any, ...]]:
    """All rows of ``query`` as the driver's tuples: for reads of many rows, where SQLAlchemy's per-value
    result processing would cost more than the read (times stay text on SQLite, JSON stays undecoded
    when selected as text)."""
    result = conn.execute(query)
    with without_gc():
        rows = list(result.cursor.fetchall()) if result.cursor is not None else []
    result.close()
    return rows


@contextmanager
def without_gc() -> Iterator[None]:
    """Build millions of small objects without the cyclic collector rescanning them as they come (they
    hold no cycles); it doubled the cost of reading a million rows."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
