"""Lifecycle models (versions), stage history and the sweep's recheck schedule.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from lifeloop.store.schema import Id, UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _workspace_fk() -> sa.Column:
    return sa.Column("workspace_id", Id, sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "lifecycle_models",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        _workspace_fk(),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint(
            "workspace_id", "key", "version", name="uq_lifecycle_models_workspace_id_key_version"
        ),
    )
    op.create_table(
        "stage_history",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        _workspace_fk(),
        sa.Column("profile_id", Id, nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("from_stage", sa.String(64)),
        sa.Column("to_stage", sa.String(64)),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
    )
    op.create_index(
        "ix_stage_history_workspace_id_profile_id_at", "stage_history", ["workspace_id", "profile_id", "at"]
    )
    op.create_index(
        "ix_stage_history_workspace_id_model_at", "stage_history", ["workspace_id", "model", "at"]
    )
    op.create_table(
        "lifecycle_rechecks",
        _workspace_fk(),
        sa.Column("profile_id", Id, nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("recheck_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("workspace_id", "profile_id", "model", name="pk_lifecycle_rechecks"),
    )
    op.create_index(
        "ix_lifecycle_rechecks_workspace_id_model_recheck_at",
        "lifecycle_rechecks",
        ["workspace_id", "model", "recheck_at"],
    )


def downgrade() -> None:
    op.drop_table("lifecycle_rechecks")
    op.drop_table("stage_history")
    op.drop_table("lifecycle_models")
