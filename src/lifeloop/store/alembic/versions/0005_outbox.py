"""Messaging: outbox, delivery attempts, consent per channel and the workspace contact policy.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from lifeloop.store.schema import Id, Json, UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _workspace_fk() -> sa.Column:
    return sa.Column("workspace_id", Id, sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        _workspace_fk(),
        sa.Column("profile_id", Id),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("recipient", sa.String(512)),
        sa.Column("template", sa.String(200)),
        sa.Column("content", Json, nullable=False),
        sa.Column("fallback_content", Json),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("transactional", sa.Boolean, nullable=False),
        sa.Column("optimize_send_time", sa.Boolean, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", UTCDateTime, nullable=False),
        sa.Column("claimed_by", sa.String(100)),
        sa.Column("claimed_until", UTCDateTime),
        sa.Column("last_error", sa.String(1000)),
        sa.Column("provider_message_id", sa.String(255)),
        sa.Column("fallback_of", Id),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("delivered_at", UTCDateTime),
        sa.UniqueConstraint("workspace_id", "idempotency_key", name="uq_outbox_workspace_id_idempotency_key"),
    )
    op.create_index("ix_outbox_status_next_attempt_at", "outbox", ["status", "next_attempt_at"])
    op.create_index(
        "ix_outbox_workspace_id_profile_id_status", "outbox", ["workspace_id", "profile_id", "status"]
    )
    op.create_index("ix_outbox_workspace_id_id", "outbox", ["workspace_id", "id"])
    op.create_table(
        "delivery_attempts",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        _workspace_fk(),
        sa.Column("outbox_id", Id, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("worker_id", sa.String(100), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("provider_message_id", sa.String(255)),
        sa.Column("retry_after", sa.Float),
        sa.Column("reason", sa.String(1000)),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("finished_at", UTCDateTime, nullable=False),
    )
    op.create_index(
        "ix_delivery_attempts_workspace_id_outbox_id", "delivery_attempts", ["workspace_id", "outbox_id"]
    )
    op.create_table(
        "consents",
        _workspace_fk(),
        sa.Column("profile_id", Id, nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("workspace_id", "profile_id", "channel", name="pk_consents"),
    )
    op.create_table(
        "contact_policies",
        _workspace_fk(),
        sa.Column("policy", Json, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("workspace_id", name="pk_contact_policies"),
    )


def downgrade() -> None:
    op.drop_table("contact_policies")
    op.drop_table("consents")
    op.drop_index("ix_delivery_attempts_workspace_id_outbox_id", "delivery_attempts")
    op.drop_table("delivery_attempts")
    op.drop_index("ix_outbox_workspace_id_id", "outbox")
    op.drop_index("ix_outbox_workspace_id_profile_id_status", "outbox")
    op.drop_index("ix_outbox_status_next_attempt_at", "outbox")
    op.drop_table("outbox")
