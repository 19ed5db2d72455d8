"""A log, kept by the database itself, of which profiles' stored state changed.

A batch recompute compares every profile's stage, recheck times, tags and memberships with what is
stored. Reading a million such rows through the SQLite driver costs about a second per table, most of it
turning rows into Python objects, so the analytics store keeps a copy of them
(``lifeloop.analytics.state_copy``) and brings it up to date from this log: ``state_changes`` gets one row
(workspace, source, profile) from a trigger for every insert, update and delete of a state row, whatever
code or tool wrote it. A copy that read the log up to id N re-reads only the profiles logged after N.

``state_changes_pruned`` remembers, per workspace, the highest id deleted from the log once a copy has
read it: a copy behind that point (another analytics file, a restored one) reads everything again.

SQLite only: its writers are serialised, so log ids are in commit order. On PostgreSQL (ids allocated
out of commit order, and a driver that reads rows much faster) the tables exist but stay empty and the
batch reads the state tables directly.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Column, ForeignKey, Index, Integer, String, Table

from lifeloop.store.schema import Id, metadata

state_changes = Table(
    "state_changes",
    metadata,
    # AUTOINCREMENT: ids never come back after the log is pruned, so a copy's cursor stays meaningful.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("workspace_id", Id, nullable=False),
    Column("source", String(32), nullable=False),
    Column("profile_id", Id, nullable=False),
    Index(None, "workspace_id", "id"),
    sqlite_autoincrement=True,
)

state_changes_pruned = Table(
    "state_changes_pruned",
    metadata,
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True),
    Column("through_id", Integer, nullable=False),
)


@dataclass(frozen=True)
class Source:
    """A state table the log follows: ``columns`` are copied (the profile's column first, named
    ``profile_id`` in the copy), each with its DuckDB type."""

    name: str
    table: str
    profile_column: str
    columns: dict[str, str]
    # Only updates of these columns are logged (None: any update).
    watched: tuple[str, ...] | None = None


SOURCES = (
    Source("stages", "profile_stages", "profile_id", {"model": "VARCHAR", "stage": "VARCHAR"}),
    Source(
        "stage_rechecks", "lifecycle_rechecks", "profile_id", {"model": "VARCHAR", "recheck_at": "TIMESTAMP"}
    ),
    Source(
        "tags", "profile_tags", "profile_id", {"tag": "VARCHAR", "kind": "VARCHAR", "expires_at": "TIMESTAMP"}
    ),
    Source("members", "segment_members", "profile_id", {"segment_id": "BIGINT"}),
    Source("audience_rechecks", "audience_rechecks", "profile_id", {"recheck_at": "TIMESTAMP"}),
    # Live profiles and merges: a profile's other columns change with every event and are not copied.
    Source("profiles", "profiles", "id", {"merged_into": "BIGINT"}, watched=("merged_into",)),
)
SOURCE = {source.name: source for source in SOURCES}


def trigger_statements(source: Source) -> list[str]:
    """The SQLite triggers that log ``source``'s changes."""

    def log(row: str) -> str:
        return (
            "INSERT INTO state_changes (workspace_id, source, profile_id) "
            f"VALUES ({row}.workspace_id, '{source.name}', {row}.{source.profile_column});"
        )

    of = f" OF {', '.join(source.watched)}" if source.watched else ""
    name = f"state_log_{source.table}"
    return [
        f"CREATE TRIGGER {name}_insert AFTER INSERT ON {source.table} BEGIN {log('NEW')} END",
        f"CREATE TRIGGER {name}_update AFTER UPDATE{of} ON {source.table} "
        f"BEGIN {log('OLD')} {log('NEW')} END",
        f"CREATE TRIGGER {name}_delete AFTER DELETE ON {source.table} BEGIN {log('OLD')} END",
    ]


def trigger_names(source: Source) -> list[str]:
    return [f"state_log_{source.table}_{when}" for when in ("insert", "update", "delete")]
