"""Stages, tags and segments that read the programme's facts (``points() >= 100``, ``tier() == "vip"``…)
follow the programme's own events: every change of points, tier, coupons or check-ins records one
(``Points Earned``, ``Tier Changed``, ``Coupon Issued``…, message id ``engagement:…``), and this
``events.own`` listener re-checks its profiles in the same transaction.

The audience and lifecycle passes write under the workspace's resolution lock (``store.locks``), which
the resolver holds while it places events and reacts (so an order's points re-check at once). A change
made elsewhere (an API award) already holds its own row locks, and waiting for the resolution lock
there could deadlock with a resolver waiting for those rows; so it only *tries* the lock, and when
the resolver has it, marks the profiles due for the sweeps (``recheck_at`` = now), which re-check them
within a sweep's period.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from lifeloop.audience import service as audience
from lifeloop.audience.definitions import load, uses
from lifeloop.audience.models import audience_rechecks
from lifeloop.conditions.ast import Fact
from lifeloop.events.messages import Message
from lifeloop.lifecycle import service as lifecycle
from lifeloop.lifecycle.models import lifecycle_rechecks
from lifeloop.store.locks import RESOLUTION

OWN_PREFIX = "engagement:"  # the message ids of the programme's events (engagement/events.py)


def _try_resolution_lock(conn: Connection, workspace_id: int) -> bool:
    """Take the resolution lock if it is free (or already ours: advisory locks are re-entrant)."""
    if conn.dialect.name != "postgresql":
        return True  # SQLite's writers take turns
    query = text("SELECT pg_try_advisory_xact_lock(:kind, :workspace)")
    return bool(conn.execute(query, {"kind": RESOLUTION, "workspace": workspace_id}).scalar())


def _mark_due(conn: Connection, table: object, keys: list[dict[str, object]], now: datetime) -> None:
    """Upsert ``recheck_at = now`` (or keep an earlier one) for each row key."""
    if not keys:
        return
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    for key in keys:
        statement = dialect_insert(table).values(**key, recheck_at=now)  # type: ignore[arg-type]
        conn.execute(
            statement.on_conflict_do_update(
                index_elements=list(key),
                set_={"recheck_at": now},
                where=statement.excluded.recheck_at < table.c.recheck_at,  # type: ignore[attr-defined]
            )
        )


def recheck_after_programme_events(
    conn: Connection, workspace_id: int, placed: Sequence[tuple[int, Message]]
) -> None:
    """``events.own`` listener: re-check the stages and audience of profiles whose facts just changed,
    when a condition of the workspace reads a fact at all."""
    mine = [(pid, m) for pid, m in placed if (m.message_id or "").startswith(OWN_PREFIX)]
    if not mine:
        return
    model = lifecycle.active_model(conn, workspace_id)
    stages_read = model is not None and any(uses(s.condition, Fact) for s in model.stages)
    definitions = load(conn, workspace_id)
    audience_reads = any(uses(c, Fact) for c in definitions.conditions())
    if not stages_read and not audience_reads:
        return
    ids = sorted({pid for pid, _ in mine})
    now = max(m.timestamp for _, m in mine)
    if not _try_resolution_lock(conn, workspace_id):
        if stages_read and model is not None:
            rows = [{"workspace_id": workspace_id, "profile_id": p, "model": model.key} for p in ids]
            _mark_due(conn, lifecycle_rechecks, rows, now)
        if audience_reads:
            _mark_due(
                conn, audience_rechecks, [{"workspace_id": workspace_id, "profile_id": p} for p in ids], now
            )
        return
    if stages_read:
        lifecycle.assign_stages(conn, workspace_id, ids, now=now, reason="engagement")
    if audience_reads:
        audience.evaluate_profiles(
            conn, workspace_id, ids, now=now, reason="engagement", audience=definitions
        )
