"""Points and check-in: accounts, ledger entries, lots and their allocations, check-ins, new-user task
completions, and each workspace's points settings.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from lifeloop.store.schema import Id, Json, UTCDateTime

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def _workspace() -> sa.Column[int]:
    return sa.Column("workspace_id", Id, sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "points_accounts",
        sa.Column("workspace_id", Id, sa.ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("profile_id", Id, primary_key=True),
        sa.Column("balance", sa.Integer(), nullable=False),
        sa.Column("earned", sa.Integer(), nullable=False),
        sa.Column("spent", sa.Integer(), nullable=False),
        sa.Column("expired", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("balance >= 0", name="ck_points_accounts_balance_not_negative"),
        sa.CheckConstraint("balance = earned - spent - expired", name="ck_points_accounts_balances"),
    )
    op.create_table(
        "points_entries",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        _workspace(),
        sa.Column("profile_id", Id, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("balance_after", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("expires_at", UTCDateTime()),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("ref", sa.String(255)),
        sa.UniqueConstraint("workspace_id", "key", name="uq_points_entries_workspace_id_key"),
        sa.CheckConstraint("kind IN ('earn', 'spend', 'expire')", name="ck_points_entries_kind"),
        sa.CheckConstraint("points > 0", name="ck_points_entries_points_positive"),
    )
    op.create_index(
        "ix_points_entries_workspace_id_profile_id_id", "points_entries", ["workspace_id", "profile_id", "id"]
    )
    op.create_index(
        "ix_points_entries_workspace_id_kind_at", "points_entries", ["workspace_id", "kind", "at"]
    )
    op.create_index("ix_points_entries_workspace_id_ref", "points_entries", ["workspace_id", "ref"])
    op.create_table(
        "points_lots",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        _workspace(),
        sa.Column("profile_id", Id, nullable=False),
        sa.Column("entry_id", Id, sa.ForeignKey("points_entries.id", ondelete="CASCADE"), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("remaining", sa.Integer(), nullable=False),
        sa.Column("earned_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime()),
        sa.CheckConstraint(
            "remaining >= 0 AND remaining <= points", name="ck_points_lots_remaining_in_range"
        ),
    )
    op.create_index(
        "ix_points_lots_workspace_id_profile_id_remaining",
        "points_lots",
        ["workspace_id", "profile_id", "remaining"],
    )
    op.create_index("ix_points_lots_expires_at_remaining", "points_lots", ["expires_at", "remaining"])
    op.create_table(
        "points_allocations",
        _workspace(),
        sa.Column("entry_id", Id, sa.ForeignKey("points_entries.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("lot_id", Id, sa.ForeignKey("points_lots.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.CheckConstraint("points > 0", name="ck_points_allocations_points_positive"),
    )
    op.create_index("ix_points_allocations_lot_id", "points_allocations", ["lot_id"])
    op.create_table(
        "checkins",
        sa.Column("workspace_id", Id, sa.ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("profile_id", Id, primary_key=True),
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("streak", sa.Integer(), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("cost", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(255)),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("workspace_id", "key", name="uq_checkins_workspace_id_key"),
        sa.CheckConstraint("kind IN ('daily', 'makeup')", name="ck_checkins_kind"),
    )
    op.create_table(
        "points_task_completions",
        sa.Column("workspace_id", Id, sa.ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("profile_id", Id, primary_key=True),
        sa.Column("task", sa.String(32), primary_key=True),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("completed_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "points_settings",
        sa.Column("workspace_id", Id, sa.ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("rules", Json, nullable=False),
        sa.Column("checkin", Json, nullable=False),
        sa.Column("tasks", Json, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("points_settings")
    op.drop_table("points_task_completions")
    op.drop_table("checkins")
    op.drop_index("ix_points_allocations_lot_id", "points_allocations")
    op.drop_table("points_allocations")
    op.drop_index("ix_points_lots_expires_at_remaining", "points_lots")
    op.drop_index("ix_points_lots_workspace_id_profile_id_remaining", "points_lots")
    op.drop_table("points_lots")
    op.drop_index("ix_points_entries_workspace_id_ref", "points_entries")
    op.drop_index("ix_points_entries_workspace_id_kind_at", "points_entries")
    op.drop_index("ix_points_entries_workspace_id_profile_id_id", "points_entries")
    op.drop_table("points_entries")
    op.drop_table("points_accounts")
