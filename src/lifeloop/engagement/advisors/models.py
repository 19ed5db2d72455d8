"""Tables of advisors (导购): the advisors, how customers are assigned to them, their follow-up tasks, and
the WeCom notifications that tell them about a task.

- ``advisors``: one row per advisor of a workspace, with the WeCom userid the notifications go to; an
  advisor may be a console user (``user_id``, a member of the workspace) or a store clerk without one.
- ``advisor_assignment_rules``: how a customer without an advisor gets one, tried in ``position`` order.
- ``advisor_assignments``: each customer's current advisor (the history is the ``Advisor Assigned``
  events on the profile).
- ``advisor_task_rules``: which events create a follow-up task (e.g. ``Tag Added`` with tag ``vip``).
- ``advisor_tasks``: 1-on-1 follow-ups. ``open_slot`` is set while a rule's task is open, so the unique
  constraint keeps one open task per rule per customer; it is cleared when the task is done or cancelled.
- ``advisor_notifications``: a durable outbox of WeCom application messages, one per task and advisor,
  claimed under a lease by the sweep and settled once.
- ``advisor_requests``: idempotency keys of the writes that create things (``--key`` / ``Idempotency-Key``).
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
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

from lifeloop.store.schema import Id, Json, UTCDateTime, metadata

ASSIGNMENT_METHODS = ("wecom_contact", "store", "channel", "round_robin")
TASK_STATUSES = ("open", "in_progress", "done", "cancelled")
OPEN_STATUSES = ("open", "in_progress")
OUTCOMES = ("reached", "no_answer", "purchased", "declined")
NOTIFICATION_STATUSES = ("pending", "sending", "sent", "failed")

advisors = Table(
    "advisors",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", Id, ForeignKey("users.id", ondelete="SET NULL")),  # a console login, if any
    Column("name", String(200), nullable=False),
    Column("wecom_userid", String(64), nullable=False),  # the member's userid in the brand's WeCom
    Column("store", String(128)),  # the store (门店) they work in, matched against a customer trait
    Column("channels", Json, nullable=False),  # channels of arrival they serve: ["wecom", "line", …]
    Column("active", Boolean, nullable=False),
    Column("capacity", Integer),  # most customers assigned at once; NULL: no limit
    # Round-robin: the workspace-wide turn of the advisor's last assignment (NULL: never assigned yet).
    Column("last_turn", Integer),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("workspace_id", "wecom_userid"),
)

advisor_assignment_rules = Table(
    "advisor_assignment_rules",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("key", String(64), nullable=False),
    Column("position", Integer, nullable=False),
    Column("method", String(16), nullable=False),
    Column("config", Json, nullable=False),  # store: {"trait": "store"}; any: {"advisors": [ids]}
    Column("enabled", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("workspace_id", "key"),
    CheckConstraint("method IN ('wecom_contact', 'store', 'channel', 'round_robin')", name="method"),
)

advisor_assignments = Table(
    "advisor_assignments",
    metadata,
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("profile_id", Id, nullable=False),
    Column("advisor_id", Id, ForeignKey("advisors.id", ondelete="CASCADE")),  # NULL: left without one
    Column("method", String(16), nullable=False),  # an assignment method, "manual" or "unassigned"
    Column("rule_key", String(64)),
    Column("reason", Text),
    Column("version", Integer, nullable=False),  # how many times this customer was (re)assigned
    Column("assigned_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("workspace_id", "profile_id"),
    Index(None, "workspace_id", "advisor_id"),
)

advisor_task_rules = Table(
    "advisor_task_rules",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("key", String(64), nullable=False),
    Column("event", String(255), nullable=False),
    Column("where", Json, nullable=False),  # property → value the event must carry ({"tag": "vip"})
    Column("kind", String(32), nullable=False),
    Column("title", Text, nullable=False),  # Liquid, with customer and event
    Column("description", Text),  # Liquid, with customer and event
    Column("due_hours", Integer),  # due this many hours after the event; NULL: no due time
    Column("enabled", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("workspace_id", "key"),
)

advisor_tasks = Table(
    "advisor_tasks",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("key", String(255), nullable=False),  # the same key creates nothing twice
    Column("profile_id", Id, nullable=False),
    Column("advisor_id", Id, ForeignKey("advisors.id", ondelete="SET NULL")),  # NULL: nobody available
    Column("rule_id", Id, ForeignKey("advisor_task_rules.id", ondelete="SET NULL")),
    Column("open_slot", String(64)),  # "rule:<id>" while a rule's task is open
    Column("kind", String(32), nullable=False),
    Column("title", String(500), nullable=False),
    Column("description", Text),
    Column("source", String(255), nullable=False),  # "rule:vip-follow-up", "journey:…", "api", "cli"
    Column("status", String(16), nullable=False),
    Column("outcome", String(16)),
    Column("outcome_note", Text),
    Column("due_at", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("completed_at", UTCDateTime),
    UniqueConstraint("workspace_id", "key"),
    UniqueConstraint("workspace_id", "profile_id", "open_slot"),
    CheckConstraint("status IN ('open', 'in_progress', 'done', 'cancelled')", name="status"),
    CheckConstraint(
        "outcome IS NULL OR outcome IN ('reached', 'no_answer', 'purchased', 'declined')", name="outcome"
    ),
    Index(None, "workspace_id", "advisor_id", "status"),
)

advisor_notifications = Table(
    "advisor_notifications",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("task_id", Id, ForeignKey("advisor_tasks.id", ondelete="CASCADE"), nullable=False),
    Column("advisor_id", Id, ForeignKey("advisors.id", ondelete="CASCADE"), nullable=False),
    Column("touser", String(64), nullable=False),
    Column("content", Json, nullable=False),  # msgtype and its part, frozen so a retry repeats it exactly
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("claimed_by", String(64)),
    Column("claimed_until", UTCDateTime),
    Column("last_error", Text),
    Column("msgid", String(128)),
    Column("sent_at", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("task_id", "advisor_id"),
    CheckConstraint("status IN ('pending', 'sending', 'sent', 'failed')", name="status"),
    Index(None, "status", "next_attempt_at"),
)

advisor_requests = Table(
    "advisor_requests",
    metadata,
    Column("workspace_id", Id, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("key", String(255), nullable=False),
    Column("operation", String(64), nullable=False),
    Column("fingerprint", String(64), nullable=False),  # of the request: a key names one request forever
    Column("result", Json),  # {"id": …} of what the request made
    Column("created_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("workspace_id", "key"),
)
