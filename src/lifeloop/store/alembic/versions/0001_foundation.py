"""Foundation: workspaces, sources, API tokens, events, profiles, identities, merges.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from lifeloop.store.schema import Id, Json, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workspaces",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("slug", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("slug", name="uq_workspaces_slug"),
    )
    op.create_table(
        "sources",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("workspace_id", Id, sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("write_key_hash", sa.String(64), nullable=False),
        sa.Column("write_key_prefix", sa.String(12), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("disabled_at", UTCDateTime),
        sa.UniqueConstraint("write_key_hash", name="uq_sources_write_key_hash"),
        sa.UniqueConstraint("workspace_id", "name", name="uq_sources_workspace_id_name"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("workspace_id", Id, sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("token_prefix", sa.String(12), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("revoked_at", UTCDateTime),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )
    op.create_index("ix_api_tokens_workspace_id", "api_tokens", ["workspace_id"])
    op.create_table(
        "events",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("workspace_id", Id, sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
        sa.Column("source_id", Id),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("event", sa.String(255)),
        sa.Column("name", sa.String(255)),
        sa.Column("profile_id", Id, nullable=False),
        sa.Column("user_id", sa.String(255)),
        sa.Column("anonymous_id", sa.String(255)),
        sa.Column("group_id", sa.String(255)),
        sa.Column("previous_id", sa.String(255)),
        sa.Column("timestamp", UTCDateTime, nullable=False),
        sa.Column("original_timestamp", UTCDateTime),
        sa.Column("sent_at", UTCDateTime),
        sa.Column("received_at", UTCDateTime, nullable=False),
        sa.Column("properties", Json),
        sa.Column("traits", Json),
        sa.Column("context", Json),
        sa.Column("integrations", Json),
        sa.Column("extra", Json),
        sa.UniqueConstraint("workspace_id", "message_id", name="uq_events_workspace_id_message_id"),
    )
    op.create_index(
        "ix_events_workspace_id_profile_id_timestamp", "events", ["workspace_id", "profile_id", "timestamp"]
    )
    op.create_table(
        "profiles",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("workspace_id", Id, sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
        sa.Column("user_id", sa.String(255)),
        sa.Column("traits", Json, nullable=False),
        sa.Column("timezone", sa.String(64)),
        sa.Column("locale", sa.String(35)),
        sa.Column("first_seen", UTCDateTime, nullable=False),
        sa.Column("last_seen", UTCDateTime, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("merged_into", Id),
    )
    op.create_index("ix_profiles_workspace_id_user_id", "profiles", ["workspace_id", "user_id"])
    op.create_index("ix_profiles_workspace_id_last_seen", "profiles", ["workspace_id", "last_seen"])
    op.create_table(
        "identities",
        sa.Column("workspace_id", Id, sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("value", sa.String(255), nullable=False),
        sa.Column("profile_id", Id, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("workspace_id", "kind", "value", name="pk_identities"),
    )
    op.create_index("ix_identities_workspace_id_profile_id", "identities", ["workspace_id", "profile_id"])
    op.create_table(
        "profile_merges",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("workspace_id", Id, sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
        sa.Column("winner_id", Id, nullable=False),
        sa.Column("loser_id", Id, nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("message_id", sa.String(255)),
        sa.Column("events_moved", sa.Integer, nullable=False),
        sa.Column("merged_at", UTCDateTime, nullable=False),
    )
    op.create_index(
        "ix_profile_merges_workspace_id_winner_id", "profile_merges", ["workspace_id", "winner_id"]
    )
    op.create_index("ix_profile_merges_workspace_id_loser_id", "profile_merges", ["workspace_id", "loser_id"])


def downgrade() -> None:
    for table in (
        "profile_merges",
        "identities",
        "profiles",
        "events",
        "api_tokens",
        "sources",
        "workspaces",
    ):
        op.drop_table(table)
