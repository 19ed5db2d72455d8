"""Advisors: advisors, assignments of customers, follow-up tasks, their WeCom notifications.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from lifeloop.store.schema import Id, Json, UTCDateTime

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def _workspace() -> sa.Column:
    return sa.Column("workspace_id", Id, sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "advisors",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        _workspace(),
        sa.Column("user_id", Id, sa.ForeignKey("users.id", ondelete="SET NULL")),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("wecom_userid", sa.String(64), nullable=False),
        sa.Column("store", sa.String(128)),
        sa.Column("channels", Json, nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("capacity", sa.Integer()),
        sa.Column("last_turn", sa.Integer()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("workspace_id", "wecom_userid", name="uq_advisors_workspace_id_wecom_userid"),
    )
    op.create_table(
        "advisor_assignment_rules",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        _workspace(),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("config", Json, nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("workspace_id", "key", name="uq_advisor_assignment_rules_workspace_id_key"),
        sa.CheckConstraint(
            "method IN ('wecom_contact', 'store', 'channel', 'round_robin')",
            name="ck_advisor_assignment_rules_method",
        ),
    )
    op.create_table(
        "advisor_assignments",
        _workspace(),
        sa.Column("profile_id", Id, nullable=False),
        sa.Column("advisor_id", Id, sa.ForeignKey("advisors.id", ondelete="CASCADE")),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("rule_key", sa.String(64)),
        sa.Column("reason", sa.Text()),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("assigned_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("workspace_id", "profile_id", name="pk_advisor_assignments"),
    )
    op.create_index(
        "ix_advisor_assignments_workspace_id_advisor_id",
        "advisor_assignments",
        ["workspace_id", "advisor_id"],
    )
    op.create_table(
        "advisor_task_rules",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        _workspace(),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("event", sa.String(255), nullable=False),
        sa.Column("where", Json, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("due_hours", sa.Integer()),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("workspace_id", "key", name="uq_advisor_task_rules_workspace_id_key"),
    )
    op.create_table(
        "advisor_tasks",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        _workspace(),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("profile_id", Id, nullable=False),
        sa.Column("advisor_id", Id, sa.ForeignKey("advisors.id", ondelete="SET NULL")),
        sa.Column("rule_id", Id, sa.ForeignKey("advisor_task_rules.id", ondelete="SET NULL")),
        sa.Column("open_slot", sa.String(64)),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("title", sa.String(500), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(16)),
        sa.Column("outcome_note", sa.Text()),
        sa.Column("due_at", UTCDateTime()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("completed_at", UTCDateTime()),
        sa.UniqueConstraint("workspace_id", "key", name="uq_advisor_tasks_workspace_id_key"),
        sa.UniqueConstraint(
            "workspace_id",
            "profile_id",
            "open_slot",
            name="uq_advisor_tasks_workspace_id_profile_id_open_slot",
        ),
        sa.CheckConstraint(
            "status IN ('open', 'in_progress', 'done', 'cancelled')", name="ck_advisor_tasks_status"
        ),
        sa.CheckConstraint(
            "outcome IS NULL OR outcome IN ('reached', 'no_answer', 'purchased', 'declined')",
            name="ck_advisor_tasks_outcome",
        ),
    )
    op.create_index(
        "ix_advisor_tasks_workspace_id_advisor_id_status",
        "advisor_tasks",
        ["workspace_id", "advisor_id", "status"],
    )
    op.create_table(
        "advisor_notifications",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        _workspace(),
        sa.Column("task_id", Id, sa.ForeignKey("advisor_tasks.id", ondelete="CASCADE"), nullable=False),
        sa.Column("advisor_id", Id, sa.ForeignKey("advisors.id", ondelete="CASCADE"), nullable=False),
        sa.Column("touser", sa.String(64), nullable=False),
        sa.Column("content", Json, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("claimed_by", sa.String(64)),
        sa.Column("claimed_until", UTCDateTime()),
        sa.Column("last_error", sa.Text()),
        sa.Column("msgid", sa.String(128)),
        sa.Column("sent_at", UTCDateTime()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("task_id", "advisor_id", name="uq_advisor_notifications_task_id_advisor_id"),
        sa.CheckConstraint(
            "status IN ('pending', 'sending', 'sent', 'failed')", name="ck_advisor_notifications_status"
        ),
    )
    op.create_index(
        "ix_advisor_notifications_status_next_attempt_at",
        "advisor_notifications",
        ["status", "next_attempt_at"],
    )
    op.create_table(
        "advisor_requests",
        _workspace(),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("operation", sa.String(64), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("result", Json),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("workspace_id", "key", name="pk_advisor_requests"),
    )


def downgrade() -> None:
    op.drop_table("advisor_requests")
    op.drop_index("ix_advisor_notifications_status_next_attempt_at", "advisor_notifications")
    op.drop_table("advisor_notifications")
    op.drop_index("ix_advisor_tasks_workspace_id_advisor_id_status", "advisor_tasks")
    op.drop_table("advisor_tasks")
    op.drop_table("advisor_task_rules")
    op.drop_index("ix_advisor_assignments_workspace_id_advisor_id", "advisor_assignments")
    op.drop_table("advisor_assignments")
    op.drop_table("advisor_assignment_rules")
    op.drop_table("advisors")
