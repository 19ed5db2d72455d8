"""Indexes that let a batch recompute read what it compares without visiting the tables.

A columnar recompute compares every profile's stage, recheck times and tags with what is stored.
SQLite found those rows through indexes that did not hold the columns read, and fetched each row from
its table: about 2–3 µs per row, seconds per million. These indexes hold them:

- live profile ids: (workspace, merged_into) — the id is the rowid;
- stages: (workspace, model, stage) gains the profile;
- recheck times, lifecycle and audience: (workspace, [model,] recheck_at) gains the profile (the sweep's
  due-profile read is covered too);
- tags: by expiry (with the profile) for expired tags and expiring ones, and by kind for rule tags, so
  neither read visits every event tag of the workspace.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# (table, old index columns or None, new index columns)
CHANGES = [
    ("profiles", None, ["workspace_id", "merged_into"]),
    ("profile_stages", ["workspace_id", "model", "stage"], ["workspace_id", "model", "stage", "profile_id"]),
    (
        "lifecycle_rechecks",
        ["workspace_id", "model", "recheck_at"],
        ["workspace_id", "model", "recheck_at", "profile_id"],
    ),
    ("audience_rechecks", ["workspace_id", "recheck_at"], ["workspace_id", "recheck_at", "profile_id"]),
    ("profile_tags", None, ["workspace_id", "expires_at", "profile_id"]),
    ("profile_tags", None, ["workspace_id", "kind", "tag"]),
]


def _name(table: str, columns: list[str]) -> str:
    return f"ix_{table}_{'_'.join(columns)}"


def upgrade() -> None:
    for table, old, new in CHANGES:
        op.create_index(_name(table, new), table, new)
        if old is not None:
            op.drop_index(_name(table, old), table_name=table)


def downgrade() -> None:
    for table, old, new in reversed(CHANGES):
        if old is not None:
            op.create_index(_name(table, old), table, old)
        op.drop_index(_name(table, new), table_name=table)
