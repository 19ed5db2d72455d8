"""Journeys: definitions, published versions, one run per user entry, and the step log.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from lifeloop.store.schema import Id, Json, UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "journeys",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("workspace_id", Id, sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("name", Json, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("draft", Json, nullable=False),
        sa.Column("version", sa.Integer()),
        sa.Column("trigger_kind", sa.String(24)),
        sa.Column("trigger_name", sa.String(200)),
        sa.Column("goal_event", sa.String(200)),
        sa.Column("playbook", sa.String(64)),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("next_schedule_at", UTCDateTime()),
        sa.UniqueConstraint("workspace_id", "key", name="uq_journeys_workspace_id_key"),
        sa.CheckConstraint("status IN ('draft', 'active', 'paused', 'archived')", name="ck_journeys_status"),
    )
    op.create_index(
        "ix_journeys_workspace_id_status_trigger_kind_trigger_name",
        "journeys",
        ["workspace_id", "status", "trigger_kind", "trigger_name"],
    )
    op.create_table(
        "journey_versions",
        sa.Column("workspace_id", Id, sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
        sa.Column("journey_id", Id, sa.ForeignKey("journeys.id", ondelete="CASCADE"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("definition", Json, nullable=False),
        sa.Column("published_at", UTCDateTime(), nullable=False),
        sa.Column("published_by", sa.String(200)),
        sa.UniqueConstraint("journey_id", "version", name="uq_journey_versions_journey_id_version"),
    )
    op.create_table(
        "journey_runs",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("workspace_id", Id, sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
        sa.Column("journey_id", Id, sa.ForeignKey("journeys.id", ondelete="CASCADE"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("profile_id", Id, nullable=False),
        sa.Column("entry_key", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("step", sa.String(64)),
        sa.Column("due_at", UTCDateTime()),
        sa.Column("in_wait", sa.Boolean(), nullable=False),
        sa.Column("wait_event", sa.String(200)),
        sa.Column("steps_done", sa.Integer(), nullable=False),
        sa.Column("arm", sa.String(64)),
        sa.Column("trigger", Json),
        sa.Column("entered_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("exited_at", UTCDateTime()),
        sa.Column("exit_reason", sa.String(64)),
        sa.Column("converted_at", UTCDateTime()),
        sa.Column("conversion_value", sa.Float()),
        sa.Column("error", sa.Text()),
        sa.UniqueConstraint(
            "journey_id", "profile_id", "entry_key", name="uq_journey_runs_journey_id_profile_id_entry_key"
        ),
        sa.CheckConstraint(
            "status IN ('waiting', 'completed', 'exited', 'failed')", name="ck_journey_runs_status"
        ),
    )
    op.create_index(
        "ix_journey_runs_due",
        "journey_runs",
        ["due_at"],
        sqlite_where=sa.text("status = 'waiting'"),
        postgresql_where=sa.text("status = 'waiting'"),
    )
    op.create_index(
        "ix_journey_runs_workspace_id_profile_id_status",
        "journey_runs",
        ["workspace_id", "profile_id", "status"],
    )
    op.create_index(
        "ix_journey_runs_journey_id_version_status_step",
        "journey_runs",
        ["journey_id", "version", "status", "step"],
    )
    op.create_table(
        "journey_steps",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("workspace_id", Id, sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
        sa.Column("run_id", Id, sa.ForeignKey("journey_runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("journey_id", Id, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("step", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("outcome", sa.String(64), nullable=False),
        sa.Column("outbox_id", Id),
        sa.Column("at", UTCDateTime(), nullable=False),
    )
    op.create_index(
        "ix_journey_steps_journey_id_version_step", "journey_steps", ["journey_id", "version", "step"]
    )
    op.create_index("ix_journey_steps_run_id", "journey_steps", ["run_id"])


def downgrade() -> None:
    op.drop_table("journey_steps")
    op.drop_table("journey_runs")
    op.drop_table("journey_versions")
    op.drop_index("ix_journeys_workspace_id_status_trigger_kind_trigger_name", table_name="journeys")
    op.drop_table("journeys")
