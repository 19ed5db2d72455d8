"""The durable outbox: idempotent enqueue, claiming due messages under a lease, settling outcomes.

A worker claims a batch in one short transaction (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so workers
never wait for each other; ``BEGIN IMMEDIATE`` on SQLite, so there is one claimer at a time), calls the
provider outside any transaction, then settles each message, fenced by (claimed_by, attempts): a worker
whose lease was taken over cannot overwrite the new owner's result. A worker killed mid-batch leaves its
messages ``sending`` until the lease expires; the next claimer sends them again with the SAME idempotency
key, and the provider's de-duplication turns that second send into a no-op — exactly-once delivery.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, bindparam, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from lifeloop.errors import Conflict, InvalidInput
from lifeloop.messaging.channels.base import SendResult
from lifeloop.messaging.models import DUE_STATUSES, FINAL_STATUSES, OutboxEntry, delivery_attempts, outbox
from lifeloop.messaging.policy import CHANNELS, ContactPolicy
from lifeloop.store.schema import utcnow

MAX_KEY_LENGTH = 255


def _insert(conn: Connection) -> Any:
    return pg_insert(outbox) if conn.dialect.name == "postgresql" else sqlite_insert(outbox)


def enqueue(
    conn: Connection,
    workspace_id: int,
    *,
    channel: str,
    content: dict[str, Any],
    idempotency_key: str,
    profile_id: int | None = None,
    recipient: str | None = None,
    template: str | None = None,
    transactional: bool = False,
    optimize_send_time: bool = False,
    fallback_content: dict[str, dict[str, Any]] | None = None,
    send_at: datetime | None = None,
    fallback_of: int | None = None,
    now: datetime | None = None,
    dead_reason: str | None = None,
    origin: str | None = None,
) -> tuple[OutboxEntry, bool]:
    """Queue one message; the same key again returns the stored message (and False) instead of a copy.

    Reusing a key for a different message is a ``Conflict``: the key names one message forever.
    With ``dead_reason`` the message is recorded straight as a dead letter (never sent), e.g. when
    its template failed to render.
    """
    values = outbox_values(
        workspace_id,
        channel=channel,
        content=content,
        idempotency_key=idempotency_key,
        profile_id=profile_id,
        recipient=recipient,
        template=template,
        transactional=transactional,
        optimize_send_time=optimize_send_time,
        fallback_content=fallback_content,
        send_at=send_at,
        fallback_of=fallback_of,
        now=now,
        dead_reason=dead_reason,
        origin=origin,
    )
    created = conn.execute(
        _insert(conn)
        .values(values)
        .on_conflict_do_nothing(index_elements=["workspace_id", "idempotency_key"])
        .returning(outbox.c.id)
    ).first()
    row = conn.execute(
        select(outbox).where(
            outbox.c.workspace_id == workspace_id, outbox.c.idempotency_key == idempotency_key
        )
    ).one()
    entry = OutboxEntry.from_row(row)
    if created is None:
        stored = (entry.channel, entry.profile_id, entry.recipient, entry.content)
        if stored != (channel, profile_id, recipient, content):
            raise Conflict(
                f"idempotency key {idempotency_key!r} was already used for a different message",
                field="idempotency_key",
            )
    return entry, created is not None


def outbox_values(
    workspace_id: int,
    *,
    channel: str,
    content: dict[str, Any],
    idempotency_key: str,
    profile_id: int | None = None,
    recipient: str | None = None,
    template: str | None = None,
    transactional: bool = False,
    optimize_send_time: bool = False,
    fallback_content: dict[str, dict[str, Any]] | None = None,
    send_at: datetime | None = None,
    fallback_of: int | None = None,
    now: datetime | None = None,
    dead_reason: str | None = None,
    origin: str | None = None,
) -> dict[str, Any]:
    """The outbox row ``enqueue`` writes for a message, checked (``InvalidInput`` as ``enqueue``)."""
    if channel not in CHANNELS:
        raise InvalidInput(f"channel must be one of {', '.join(CHANNELS)}", field="channel")
    if not idempotency_key or len(idempotency_key) > MAX_KEY_LENGTH:
        raise InvalidInput(f"idempotency_key must be 1-{MAX_KEY_LENGTH} characters", field="idempotency_key")
    if not isinstance(content, dict) or not content:
        raise InvalidInput("content must be a non-empty JSON object", field="content")
    if profile_id is None and not recipient:
        raise InvalidInput("a message needs a profile_id or a recipient", field="recipient")
    if recipient is not None and not 0 < len(recipient) <= 512:
        raise InvalidInput("recipient must be 1-512 characters", field="recipient")
    for other in fallback_content or {}:
        if other not in CHANNELS:
            raise InvalidInput(f"fallback_content has an unknown channel {other!r}", field="fallback_content")
    now = now or utcnow()
    values = {
        "workspace_id": workspace_id,
        "profile_id": profile_id,
        "channel": channel,
        "recipient": recipient,
        "template": template,
        "content": content,
        "fallback_content": fallback_content or None,
        "idempotency_key": idempotency_key,
        "transactional": transactional,
        "optimize_send_time": optimize_send_time and not transactional,
        "status": "dead" if dead_reason else "queued",
        "last_error": dead_reason[:1000] if dead_reason else None,
        "attempts": 0,
        "next_attempt_at": max(send_at or now, now),
        "fallback_of": fallback_of,
        "origin": origin,
        "created_at": now,
        "updated_at": now,
    }
    return values


def insert_new(conn: Connection, rows: Sequence[dict[str, Any]]) -> dict[str, int] | None:
    """Insert ``outbox_values`` rows of one workspace in multi-row statements, in order; their ids by key.

    None as soon as a key is found already taken: the caller then rolls back to before the first of
    these inserts and queues the messages with ``enqueue``, which answers for a key already used.
    """
    if not rows:
        return {}
    # An executemany: SQLAlchemy batches it into multi-row VALUES ("insertmanyvalues") from one cached
    # compilation; ``.values(list)`` would compile a new statement of every row count, bind by bind.
    statement = (
        _insert(conn)
        .on_conflict_do_nothing(index_elements=["workspace_id", "idempotency_key"])
        .returning(outbox.c.id, outbox.c.idempotency_key)
    )
    found = conn.execute(statement, list(rows)).all()
    if len(found) != len(rows):
        return None
    return {key: row_id for row_id, key in found}


def _due(now: datetime) -> Any:
    return or_(
        and_(outbox.c.status.in_(DUE_STATUSES), outbox.c.next_attempt_at <= now),
        # A lease that ran out: its worker died or hung; the message is taken over and sent again.
        and_(outbox.c.status == "sending", outbox.c.claimed_until < now),
    )


def claim_due(
    engine: Engine, *, worker_id: str, batch_size: int, lease_seconds: float, now: datetime | None = None
) -> list[OutboxEntry]:
    """Take up to ``batch_size`` due messages of any workspace for ``worker_id``, under a lease."""
    now = now or utcnow()
    with engine.begin() as conn:
        found = conn.execute(
            select(outbox.c.id, outbox.c.delivery_group)
            .where(_due(now))
            .order_by(outbox.c.next_attempt_at, outbox.c.id)
            .limit(batch_size)
            .with_for_update(skip_locked=True)  # PostgreSQL; SQLite's BEGIN IMMEDIATE serialises claimers
            .execution_options(cross_workspace=True)
        ).all()
        ids = [r.id for r in found]
        groups = {r.delivery_group for r in found if r.delivery_group is not None}
        if groups:
            ids = _whole_groups(conn, ids, groups, now)
        if not ids:
            return []
        rows = conn.execute(
            update(outbox)
            .where(outbox.c.id.in_(ids))
            .values(
                status="sending",
                claimed_by=worker_id,
                claimed_until=now + timedelta(seconds=lease_seconds),
                attempts=outbox.c.attempts + 1,
                updated_at=now,
            )
            .returning(*outbox.c)
            .execution_options(cross_workspace=True)
        ).all()
    return sorted((OutboxEntry.from_row(r) for r in rows), key=lambda e: (e.next_attempt_at, e.id))


def _whole_groups(conn: Connection, ids: list[int], groups: set[str], now: datetime) -> list[int]:
    """``ids`` with every recorded multicast among them complete: a group is repeated as one request
    under its retry key, so it is claimed whole (its other due members locked too) or not at all."""
    members: dict[str, list[int]] = {}
    for r in conn.execute(
        select(outbox.c.id, outbox.c.delivery_group)
        .where(outbox.c.delivery_group.in_(groups), outbox.c.status.not_in(FINAL_STATUSES))
        .execution_options(cross_workspace=True)
    ):
        members.setdefault(r.delivery_group, []).append(r.id)
    held = set(ids)
    missing = sorted({i for group in members.values() for i in group} - held)
    if missing:
        held |= {
            r.id
            for r in conn.execute(
                select(outbox.c.id)
                .where(outbox.c.id.in_(missing), _due(now))
                .with_for_update(skip_locked=True)
                .execution_options(cross_workspace=True)
            )
        }
    incomplete = {i for group in members.values() if not held.issuperset(group) for i in group}
    return sorted(held - incomplete)


def extend_lease(engine: Engine, entries: Sequence[OutboxEntry], *, worker_id: str, until: datetime) -> None:
    """Keep the lease on messages still being sent (a slow provider must not make them look abandoned)."""
    by_workspace: dict[int, list[int]] = {}
    for e in entries:
        by_workspace.setdefault(e.workspace_id, []).append(e.id)
    with engine.begin() as conn:
        for workspace_id, ids in by_workspace.items():
            conn.execute(
                update(outbox)
                .where(
                    outbox.c.workspace_id == workspace_id,
                    outbox.c.id.in_(ids),
                    outbox.c.claimed_by == worker_id,
                    outbox.c.status == "sending",
                )
                .values(claimed_until=until)
            )


def backoff(attempts: int, policy: ContactPolicy, retry_after: float | None = None) -> float:
    """Seconds before the next try: exponential with jitter, never sooner than the provider asked."""
    ceiling = min(policy.retry_max_seconds, policy.retry_base_seconds * 2 ** max(attempts - 1, 0))
    delay = ceiling * random.uniform(0.5, 1.0)  # jitter: retries of a burst do not arrive together
    return max(delay, retry_after or 0.0)


@dataclass(slots=True)
class Settlement:
    """What happened to one claimed message, written back by ``settle``."""

    entry: OutboxEntry
    status: str  # delivered | failed | dead | deferred | suppressed
    reason: str | None = None
    next_attempt_at: datetime | None = None
    result: SendResult | None = None  # the provider's answer, when it was called
    started_at: datetime | None = None
    finished_at: datetime | None = None
    recipient: str | None = None  # resolved from the profile at send time
    counts_as_attempt: bool = True  # False when the policy or the rate limiter deferred it unsent
    clear_optimize: bool = False
    fallback: dict[str, Any] | None = None  # enqueue kwargs of the replacement on another channel


def _settled_row(worker_id: str, settlement: Settlement, now: datetime) -> dict[str, Any]:
    """Every column a settlement may change, for one executemany (unchanged ones keep the claimed values)."""
    entry, result = settlement.entry, settlement.result
    delivered = settlement.status == "delivered"
    provider_id = result.provider_message_id if result is not None and result.provider_message_id else None
    return {
        "b_workspace_id": entry.workspace_id,
        "b_id": entry.id,
        "b_worker": worker_id,
        "b_attempts": entry.attempts,
        "status": settlement.status,
        "last_error": None if delivered or not settlement.reason else settlement.reason[:1000],
        "next_attempt_at": settlement.next_attempt_at or entry.next_attempt_at,
        "attempts": entry.attempts if settlement.counts_as_attempt else entry.attempts - 1,
        "recipient": settlement.recipient or entry.recipient,
        "optimize_send_time": False if settlement.clear_optimize else entry.optimize_send_time,
        "delivered_at": (settlement.finished_at or now) if delivered else entry.delivered_at,
        "provider_message_id": provider_id[:255] if provider_id else entry.provider_message_id,
        "updated_at": now,
    }


_SETTLE = (
    update(outbox)
    .where(
        outbox.c.workspace_id == bindparam("b_workspace_id"),
        outbox.c.id == bindparam("b_id"),
        outbox.c.claimed_by == bindparam("b_worker"),
        outbox.c.attempts == bindparam("b_attempts"),
        outbox.c.status == "sending",
    )
    .values(
        {
            name: bindparam(name)
            for name in (
                "status",
                "last_error",
                "next_attempt_at",
                "attempts",
                "recipient",
                "optimize_send_time",
                "delivered_at",
                "provider_message_id",
                "updated_at",
            )
        }
        | {"claimed_by": None, "claimed_until": None}
    )
)


def settle_all(conn: Connection, worker_id: str, settlements: Sequence[Settlement], now: datetime) -> int:
    """Write a batch of outcomes in a few statements, only for claims this worker still owns (a lease
    taken over by another worker is left alone). Returns how many were written."""
    by_workspace: dict[int, list[Settlement]] = {}
    for s in settlements:
        by_workspace.setdefault(s.entry.workspace_id, []).append(s)
    owned: list[Settlement] = []
    for workspace_id, group in by_workspace.items():
        # Lock the rows we still hold, so nobody takes them over between this check and the update.
        held = {
            (r.id, r.attempts)
            for r in conn.execute(
                select(outbox.c.id, outbox.c.attempts)
                .where(
                    outbox.c.workspace_id == workspace_id,
                    outbox.c.id.in_([s.entry.id for s in group]),
                    outbox.c.claimed_by == worker_id,
                    outbox.c.status == "sending",
                )
                .with_for_update()
            )
        }
        owned += [s for s in group if (s.entry.id, s.entry.attempts) in held]
    if not owned:
        return 0
    conn.execute(_SETTLE, [_settled_row(worker_id, s, now) for s in owned])
    attempts = [
        {
            "workspace_id": s.entry.workspace_id,
            "outbox_id": s.entry.id,
            "attempt": s.entry.attempts,
            "worker_id": worker_id,
            "channel": s.entry.channel,
            "status": str(s.result.status),
            "provider_message_id": s.result.provider_message_id,
            "retry_after": s.result.retry_after,
            "reason": s.result.reason[:1000] if s.result.reason else None,
            "started_at": s.started_at or now,
            "finished_at": s.finished_at or now,
        }
        for s in owned
        if s.result is not None
    ]
    if attempts:
        conn.execute(insert(delivery_attempts), attempts)
    for s in owned:
        if s.fallback is not None:
            # An earlier attempt may have queued it already, to an address that has changed since.
            with contextlib.suppress(Conflict):
                enqueue(conn, s.entry.workspace_id, now=now, fallback_of=s.entry.id, **s.fallback)
    return len(owned)


def settle(conn: Connection, worker_id: str, settlement: Settlement, now: datetime) -> bool:
    """Write one outcome; False when the lease was lost to another worker."""
    return settle_all(conn, worker_id, [settlement], now) == 1


class TokenBucket:
    """``per_second`` tokens a second, at most ``burst`` saved up; a provider's Retry-After pauses it."""

    def __init__(self, per_second: float, burst: int) -> None:
        self.per_second = per_second
        self.burst = float(burst)
        self.tokens = float(burst)
        self.updated = time.monotonic()
        self.paused_until = 0.0

    def reserve(self, now: float) -> float:
        """Take one token; returns how long to wait before using it (0 when one was available)."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.per_second)
        self.updated = now
        self.tokens -= 1.0
        wait = 0.0 if self.tokens >= 0 else -self.tokens / self.per_second
        return max(wait, self.paused_until - now)

    def refund(self) -> None:
        self.tokens = min(self.burst, self.tokens + 1.0)


class RateLimiter:
    """Token buckets per (workspace, channel), shared by the sending threads of one worker."""

    def __init__(self) -> None:
        self._buckets: dict[tuple[int, str], TokenBucket] = {}
        self._lock = threading.Lock()

    def _bucket(self, workspace_id: int, channel: str, policy: ContactPolicy) -> TokenBucket:
        limit = policy.rate_limits.get(channel)
        key = (workspace_id, channel)
        bucket = self._buckets.get(key)
        if bucket is None or (limit and (bucket.per_second, bucket.burst) != (limit.per_second, limit.burst)):
            per_second, burst = (limit.per_second, limit.burst) if limit else (1e9, 1_000_000)
            bucket = self._buckets[key] = TokenBucket(per_second, burst)
        return bucket

    def reserve(
        self, workspace_id: int, channel: str, policy: ContactPolicy, *, max_wait: float
    ) -> float | None:
        """Seconds to wait before sending, or None when that is longer than ``max_wait`` (defer instead)."""
        with self._lock:
            bucket = self._bucket(workspace_id, channel, policy)
            wait = bucket.reserve(time.monotonic())
            if wait > max_wait:
                bucket.refund()
                return None
            return wait

    def wait_hint(self, workspace_id: int, channel: str) -> float:
        with self._lock:
            bucket = self._buckets.get((workspace_id, channel))
            if bucket is None:
                return 0.0
            return max(0.0, bucket.paused_until - time.monotonic(), -bucket.tokens / bucket.per_second)

    def pause(self, workspace_id: int, channel: str, seconds: float) -> None:
        """The provider said 429 / Retry-After: nobody in this worker sends there before it passes."""
        with self._lock:
            bucket = self._buckets.get((workspace_id, channel))
            if bucket is not None:
                bucket.paused_until = max(bucket.paused_until, time.monotonic() + seconds)

    def paused_for(self, workspace_id: int, channel: str) -> float:
        with self._lock:
            bucket = self._buckets.get((workspace_id, channel))
            return 0.0 if bucket is None else max(0.0, bucket.paused_until - time.monotonic())


def cancel_messages(conn: Connection, workspace_id: int, ids: Any, reason: str, *, now: datetime) -> int:
    """Suppress the messages among ``ids`` (a list or a SELECT of ids) that no worker is sending yet;
    how many. A message being sent is left to finish: it may already be at the provider."""
    result = conn.execute(
        update(outbox)
        .where(
            outbox.c.workspace_id == workspace_id,
            outbox.c.id.in_(ids),
            outbox.c.status.in_(DUE_STATUSES),
            outbox.c.delivery_group.is_(None),  # claimed for a provider request that may have gone out
        )
        .values(status="suppressed", last_error=reason[:1000], updated_at=now, claimed_by=None)
    )
    return int(result.rowcount or 0)
