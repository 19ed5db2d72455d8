"""Where each synced stream of a workspace stands in the analytics store (``sync_state``): the events' id
cursor, the profiles' time watermark, the state copy's log id (``state_copy.STREAM``)."""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb


def read_stream(
    con: duckdb.DuckDBPyConnection, workspace_id: int, stream: str
) -> tuple[int | None, datetime | None]:
    """(cursor, watermark) of a stream; (None, None) when it was never synced."""
    rows = con.execute(
        "SELECT cursor, watermark FROM sync_state WHERE workspace_id = ? AND stream = ?",
        [workspace_id, stream],
    ).fetchall()  # (fetchone would leave the result open, which DuckDB refuses the next statement)
    if not rows:
        return None, None
    cursor, watermark = rows[0]
    return (None if cursor is None else int(cursor)), watermark


def save_stream(
    con: duckdb.DuckDBPyConnection,
    workspace_id: int,
    stream: str,
    *,
    cursor: int | None = None,
    watermark: datetime | None = None,
) -> None:
    """Record where a stream stands (in the caller's transaction, with the rows it copied)."""
    con.execute(
        """
        INSERT INTO sync_state (workspace_id, stream, cursor, watermark, synced_at) VALUES (?, ?, ?, ?, ?)
        ON CONFLICT (workspace_id, stream) DO UPDATE
        SET cursor = excluded.cursor, watermark = excluded.watermark, synced_at = excluded.synced_at
        """,
        [workspace_id, stream, cursor, watermark, datetime.now(UTC).replace(tzinfo=None)],
    )
