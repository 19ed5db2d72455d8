"""Tables of journeys: definitions and their published versions, one run per user entry, the step log."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from lifeloop.store.schema import Id, Json, UTCDateTime, metadata

JOURNEY_STATUSES = ("draft", "active", "paused", "archived")
# waiting: parked until due_at (a wait, a wait-for-event's timeout, or "run now" when due_at <= now);
# completed / exited / failed are final.
RUN_STATUSES = ("waiting", "completed", "exited", "failed")

journeys = Table(
    "journeys",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("key", String(64), nullable=False),
    Column("name", Json, nullable=False),  # {"zh-CN": …, "en": …}
    Column("status", String(16), nullable=False),
    Column("draft", Json, nullable=False),  # the definition being edited
    Column("version", Integer),  # the published version new entries take; NULL until first published
    Column("trigger_kind", String(24)),  # of the published version: what the trigger index reads
    Column("trigger_name", String(200)),  # the event / stage / segment / tag the trigger watches
    Column("goal_event", String(200)),  # of any version still holding runs
    Column("playbook", String(64)),  # the playbook it was installed from
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("next_schedule_at", UTCDateTime),  # schedule and date triggers: the next time to look
    UniqueConstraint("workspace_id", "key"),
    CheckConstraint("status IN ('draft', 'active', 'paused', 'archived')", name="status"),
    Index(None, "workspace_id", "status", "trigger_kind", "trigger_name"),
)

journey_versions = Table(
    "journey_versions",
    metadata,
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("journey_id", Id, ForeignKey("journeys.id", ondelete="CASCADE"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("definition", Json, nullable=False),
    Column("published_at", UTCDateTime, nullable=False),
    Column("published_by", String(200)),
    UniqueConstraint("journey_id", "version"),
)

journey_runs = Table(
    "journey_runs",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("journey_id", Id, ForeignKey("journeys.id", ondelete="CASCADE"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("profile_id", Id, nullable=False),
    Column("entry_key", String(255), nullable=False),  # what makes an entry unique (re-entry rules)
    Column("status", String(16), nullable=False),
    Column("step", String(64)),  # the step to run when due, or the one being waited in
    Column("due_at", UTCDateTime),
    Column("in_wait", Boolean, nullable=False),  # parked inside step (a wait): when due, the wait is over
    Column("wait_event", String(200)),  # wait-for-event: the event that resumes the run
    Column("steps_done", Integer, nullable=False),
    Column("arm", String(64)),  # the A/B arm (or "holdout") the run was split into
    Column("trigger", Json),  # {event, message_id, properties, timestamp}: what the run entered with
    Column("entered_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("exited_at", UTCDateTime),
    Column("exit_reason", String(64)),
    Column("converted_at", UTCDateTime),
    Column("conversion_value", Float),
    Column("error", Text),
    UniqueConstraint("journey_id", "profile_id", "entry_key"),
    CheckConstraint("status IN ('waiting', 'completed', 'exited', 'failed')", name="status"),
    Index(None, "workspace_id", "profile_id", "status"),
    Index(None, "journey_id", "version", "status", "step"),
)
# Due runs: a range scan on due_at, so the cost follows the runs that are due, not those parked.
Index(
    "ix_journey_runs_due",
    journey_runs.c.due_at,
    sqlite_where=journey_runs.c.status == "waiting",
    postgresql_where=journey_runs.c.status == "waiting",
)

# One row per step a run completed, with the message it queued: the per-step statistics.
journey_steps = Table(
    "journey_steps",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("run_id", Id, ForeignKey("journey_runs.id", ondelete="CASCADE"), nullable=False),
    Column("journey_id", Id, nullable=False),
    Column("version", Integer, nullable=False),
    Column("step", String(64), nullable=False),
    Column("kind", String(24), nullable=False),
    Column("outcome", String(64), nullable=False),
    Column("outbox_id", Id),
    Column("at", UTCDateTime, nullable=False),
    Index(None, "journey_id", "version", "step"),
    Index(None, "run_id"),
)
