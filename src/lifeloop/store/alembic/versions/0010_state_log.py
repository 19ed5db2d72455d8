"""The state change log that lets the analytics store keep a copy of stages, tags and memberships.

See ``lifeloop.store.state_log``: triggers on SQLite log every changed profile of the state tables; the
batch recompute re-reads only those instead of every row.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from lifeloop.store.schema import Id
from lifeloop.store.state_log import SOURCES, trigger_names, trigger_statements

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "state_changes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("workspace_id", Id, nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("profile_id", Id, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_state_changes_workspace_id_id", "state_changes", ["workspace_id", "id"])
    op.create_table(
        "state_changes_pruned",
        sa.Column("workspace_id", Id, sa.ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("through_id", sa.Integer, nullable=False),
    )
    if op.get_bind().dialect.name == "sqlite":
        for source in SOURCES:
            for statement in trigger_statements(source):
                op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for source in SOURCES:
            for name in trigger_names(source):
                op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table("state_changes_pruned")
    op.drop_index("ix_state_changes_workspace_id_id", table_name="state_changes")
    op.drop_table("state_changes")
