"""Transaction-scoped locks that serialise one kind of work per workspace across processes."""

from __future__ import annotations

from sqlalchemy import Connection, text

# First key of pg_advisory_xact_lock(int, int); the second is the workspace id.
RESOLUTION = 0x1E50


def lock_workspace(conn: Connection, kind: int, workspace_id: int) -> None:
    """Wait for, then hold until commit, the ``kind`` lock of a workspace.

    On PostgreSQL an advisory lock; SQLite needs none, as its writers already take turns.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(
            text("SELECT pg_advisory_xact_lock(:kind, :workspace)"), {"kind": kind, "workspace": workspace_id}
        )
