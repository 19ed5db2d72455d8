"""Tables of lifecycle models, current stages and stage history."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from lifeloop.store.schema import Id, UTCDateTime, metadata

# The stage each profile is in now, per lifecycle model (what in_stage(model, stage) reads).
profile_stages = Table(
    "profile_stages",
    metadata,
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("profile_id", Id, nullable=False),
    Column("model", String(64), nullable=False),
    Column("stage", String(64), nullable=False),
    Column("entered_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("workspace_id", "profile_id", "model"),
    Index(None, "workspace_id", "model", "stage", "profile_id"),  # covering (0009)
)

# Every installed version of a workspace's lifecycle models; exactly one row per workspace is active.
lifecycle_models = Table(
    "lifecycle_models",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("key", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("source", Text, nullable=False),  # the YAML as installed
    Column("active", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("workspace_id", "key", "version"),
)

# Each change of stage: from, to, when and why ("event", "time", "recompute", "merge").
stage_history = Table(
    "stage_history",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("profile_id", Id, nullable=False),
    Column("model", String(64), nullable=False),
    Column("from_stage", String(64)),
    Column("to_stage", String(64)),
    Column("reason", String(32), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Index(None, "workspace_id", "profile_id", "at"),
    Index(None, "workspace_id", "model", "at"),
)

# When a profile's stage could next change by time alone; the sweep reads only what is due.
lifecycle_rechecks = Table(
    "lifecycle_rechecks",
    metadata,
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("profile_id", Id, nullable=False),
    Column("model", String(64), nullable=False),
    Column("recheck_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("workspace_id", "profile_id", "model"),
    Index(None, "workspace_id", "model", "recheck_at", "profile_id"),  # covering (0009)
)
