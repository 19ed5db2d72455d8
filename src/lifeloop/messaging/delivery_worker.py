"""The delivery worker: claim due outbox messages, apply the contact policy, send, settle, emit events.

    python -m lifeloop.messaging.delivery_worker --database-url URL --worker-id w1

Run several (processes or machines) against PostgreSQL to add throughput; on SQLite they take turns.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

from sqlalchemy import Connection, Engine, update

from lifeloop.errors import LifeloopError
from lifeloop.messaging.channels.base import ChannelAdapter, OutboundMessage, SendResult, SendStatus
from lifeloop.messaging.channels.line import MAX_MULTICAST
from lifeloop.messaging.channels.wecom import FAIL_LIST_REASON, MAX_TASK_RECIPIENTS
from lifeloop.messaging.models import OutboxEntry, outbox
from lifeloop.messaging.outbox import RateLimiter, Settlement, backoff, claim_due, extend_lease, settle_all
from lifeloop.messaging.policy import Audience, ContactPolicy, best_hour, decide, load_message_audiences
from lifeloop.store.engine import connect, transaction
from lifeloop.store.schema import utcnow

log = logging.getLogger("lifeloop.delivery")
Clock = Callable[[], datetime]


class Adapters:
    """Adapters per (workspace, channel), built once per worker from the stored channel configuration.

    ``webhook_secret`` lets a workspace without a stored webhook configuration still post signed
    webhooks to recipient URLs (the CLI and tests use it).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        webhook_secret: str | None = None,
        factory: Callable[[int, str], ChannelAdapter] | None = None,
    ) -> None:
        self._engine = engine
        self._webhook_secret = webhook_secret
        self._factory = factory
        self._cache: dict[tuple[int, str], ChannelAdapter] = {}
        self._lock = threading.Lock()

    def get(self, workspace_id: int, channel: str) -> ChannelAdapter:
        with self._lock:
            adapter = self._cache.get((workspace_id, channel))
            if adapter is None:
                adapter = self._cache[(workspace_id, channel)] = self._build(workspace_id, channel)
            return adapter

    def _build(self, workspace_id: int, channel: str) -> ChannelAdapter:
        if self._factory is not None:
            return self._factory(workspace_id, channel)
        from lifeloop.errors import NotFound
        from lifeloop.messaging.channels import registry, webhook

        try:
            with connect(self._engine) as conn:
                return registry.build_adapter(conn, workspace_id, channel)
        except NotFound:
            if channel == "webhook" and self._webhook_secret:
                return webhook.WebhookAdapter(secret=self._webhook_secret)
            raise

    def close(self) -> None:
        with self._lock:
            for adapter in self._cache.values():
                adapter.close()
            self._cache.clear()


@dataclass(slots=True)
class _Request:
    """One provider call: a message to one recipient, or (``group``) one LINE multicast or WeCom advisor
    task to many."""

    entries: list[OutboxEntry]
    recipients: list[str]
    message: OutboundMessage
    group: str | None = None
    started: datetime | None = None


def _send(adapters: Adapters, limiter: RateLimiter, request: _Request, not_before: float) -> SendResult:
    """In a sending thread: wait for the rate limiter's slot, then call the provider.

    The slot is a moment (``time.monotonic``) reserved when the batch was planned, not a delay counted
    from when a thread gets to the request: the threads would otherwise serialise the waits."""
    entry, message = request.entries[0], request.message
    wait = not_before - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    paused = limiter.paused_for(entry.workspace_id, message.channel)
    if paused > 0:  # another message just got a 429 from this provider
        return SendResult(SendStatus.RATE_LIMITED, retry_after=paused, reason="paused by the provider's 429")
    try:
        adapter = adapters.get(entry.workspace_id, message.channel)
    except LifeloopError as error:  # not configured (yet): retry with backoff, dead letter in the end
        return SendResult(SendStatus.TRANSIENT, reason=error.message)
    try:
        if request.group is not None:
            result = adapter.multicast(request.recipients, message.content, idempotency_key=request.group)  # type: ignore[attr-defined]
        else:
            result = adapter.send(message)
    except Exception as error:  # an adapter must classify, but a bug in one must not kill the worker
        log.exception("adapter %s raised", message.channel)
        return SendResult(SendStatus.TRANSIENT, reason=f"adapter error: {error!r}"[:500])
    if result.status == SendStatus.RATE_LIMITED:  # hold back the rest of the batch right away
        limiter.pause(entry.workspace_id, message.channel, result.retry_after or 1.0)
    return result


def _outcome(entry: OutboxEntry, result: SendResult, policy: ContactPolicy, now: datetime) -> Settlement:
    if result.status == SendStatus.DELIVERED:
        return Settlement(entry, "delivered", result=result)
    if result.retryable and entry.attempts < policy.max_attempts:
        delay = backoff(entry.attempts, policy, result.retry_after)
        return Settlement(entry, "failed", result.reason, now + timedelta(seconds=delay), result=result)
    if result.retryable:
        return Settlement(
            entry, "dead", f"gave up after {entry.attempts} attempts: {result.reason}", result=result
        )
    return Settlement(entry, "dead", f"{result.status}: {result.reason}", result=result)


class _Batch:
    """Per-pass caches: each workspace's policy and time zone, each profile's audience."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.policies: dict[int, tuple[ContactPolicy, str]] = {}

    def policy(self, workspace_id: int) -> tuple[ContactPolicy, str]:
        if workspace_id not in self.policies:
            from lifeloop.messaging.service import load_policy
            from lifeloop.workspaces.service import get_workspace

            with connect(self.engine) as conn:
                self.policies[workspace_id] = (
                    load_policy(conn, workspace_id),
                    get_workspace(conn, workspace_id).timezone,
                )
        return self.policies[workspace_id]


def _content_for(entry: OutboxEntry, channel: str) -> dict[str, Any] | None:
    if channel == entry.channel:
        return entry.content
    if entry.fallback_content and channel in entry.fallback_content:
        return entry.fallback_content[channel]
    text = entry.content.get("text")
    return {"text": text} if isinstance(text, str) and text else None  # plain text goes anywhere


def _fallback_channels(entry: OutboxEntry) -> list[str] | None:
    text = entry.content.get("text")
    return None if isinstance(text, str) and text else list(entry.fallback_content or {})


def _fallback_kwargs(entry: OutboxEntry, channel: str, recipient: str) -> dict[str, Any]:
    return {
        "channel": channel,
        "recipient": recipient,
        "profile_id": entry.profile_id,
        "content": _content_for(entry, channel) or {},
        "template": entry.template,
        "transactional": entry.transactional,
        "idempotency_key": f"{entry.idempotency_key}/{channel}"[-255:],
        "origin": entry.origin,
    }


def _audiences(
    conn: Connection, batch: _Batch, entries: Sequence[OutboxEntry], now: datetime
) -> dict[int, Audience]:
    """Each claimed message's audience, read for a whole workspace's share of the batch at once."""
    by_workspace: dict[int, list[OutboxEntry]] = {}
    for entry in entries:
        by_workspace.setdefault(entry.workspace_id, []).append(entry)
    audiences: dict[int, Audience] = {}
    for workspace_id, group in by_workspace.items():
        policy, ws_tz = batch.policy(workspace_id)
        audiences |= load_message_audiences(
            conn,
            workspace_id,
            [(e.id, e.profile_id) for e in group],
            policy=policy,
            now=now,
            workspace_timezone=ws_tz,
        )
        for entry in group:
            if entry.optimize_send_time:
                audience = audiences[entry.id]
                audience.active_hour = best_hour(conn, workspace_id, audience, policy, now)
    return audiences


# Recipients per request for identical content, on the channels whose API sends one message to many.
GROUP_LIMITS = {"line": MAX_MULTICAST, "wecom": MAX_TASK_RECIPIENTS}


def _multicast_key(entry: OutboxEntry) -> tuple[int, str, str] | None:
    """Messages claimed together with the same key go out as one request: a LINE multicast, a WeCom
    advisor task (identical content, so the same advisor). Rich menu links and welcome messages, which
    name one user, go one by one."""
    if entry.channel not in GROUP_LIMITS or entry.delivery_group is not None:
        return None
    if "rich_menu_id" in entry.content or "welcome_code" in entry.content:
        return None
    return entry.workspace_id, entry.channel, json.dumps(entry.content, sort_keys=True, default=str)


def _group_name(entries: Sequence[OutboxEntry]) -> str:
    """A UUID naming exactly these messages: the multicast's retry key, the same on every attempt."""
    ids = ",".join(str(e.id) for e in sorted(entries, key=lambda e: e.id))
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"lifeloop:outbox:{entries[0].workspace_id}:{ids}"))


def _requests(ready: Sequence[tuple[OutboxEntry, str]]) -> list[_Request]:
    """Provider calls for the messages cleared to go: identical LINE messages in multicasts of up to
    500, identical WeCom messages in advisor tasks of up to 10,000, a group recorded by an earlier
    attempt exactly as it was, everything else one by one."""
    requests: list[_Request] = []
    groups: dict[tuple[int, str, str], list[tuple[OutboxEntry, str]]] = {}
    recorded: dict[str, list[tuple[OutboxEntry, str]]] = {}
    for entry, recipient in ready:
        key = _multicast_key(entry)
        if entry.delivery_group is not None:
            recorded.setdefault(entry.delivery_group, []).append((entry, recipient))
        elif key is not None:
            groups.setdefault(key, []).append((entry, recipient))
        else:
            requests.append(_Request([entry], [recipient], _message(entry, recipient)))
    chunks = [
        members[i : i + GROUP_LIMITS[channel]]
        for (_, channel, _), members in groups.items()
        for i in range(0, len(members), GROUP_LIMITS[channel])
    ]
    for chunk in chunks:
        if len(chunk) == 1:
            entry, recipient = chunk[0]
            requests.append(_Request([entry], [recipient], _message(entry, recipient)))
        else:
            entries = [e for e, _ in chunk]
            requests.append(
                _Request(entries, [r for _, r in chunk], _message(entries[0], ""), _group_name(entries))
            )
    for name, members in recorded.items():
        entries = [e for e, _ in members]
        requests.append(_Request(entries, [r for _, r in members], _message(entries[0], ""), name))
    return requests


def _message(entry: OutboxEntry, recipient: str) -> OutboundMessage:
    return OutboundMessage(
        idempotency_key=entry.idempotency_key,
        channel=entry.channel,
        recipient=recipient,
        content=entry.content,
        metadata={
            "workspace_id": entry.workspace_id,
            "profile_id": entry.profile_id,
            "outbox_id": entry.id,
            "template": entry.template,
        },
    )


def _record_groups(engine: Engine, worker_id: str, requests: Sequence[_Request]) -> list[_Request]:
    """Name each new multicast on its messages (and their recipients) before it is made, so a retry after
    a crash repeats exactly it. A group whose claim was lost meanwhile is not sent (the new owner will)."""
    fresh = [r for r in requests if r.group is not None and r.entries[0].delivery_group is None]
    if not fresh:
        return list(requests)
    lost: set[str] = set()
    with engine.begin() as conn:
        for request in fresh:
            written = 0
            for entry, recipient in zip(request.entries, request.recipients, strict=True):
                written += conn.execute(
                    update(outbox)
                    .where(
                        outbox.c.workspace_id == entry.workspace_id,
                        outbox.c.id == entry.id,
                        outbox.c.claimed_by == worker_id,
                        outbox.c.attempts == entry.attempts,
                        outbox.c.status == "sending",
                    )
                    .values(delivery_group=request.group, recipient=recipient)
                ).rowcount
            if written != len(request.entries):
                assert request.group is not None
                lost.add(request.group)
        if lost:  # nothing of a group half-recorded: its messages stay ungrouped for their new owner
            conn.execute(
                update(outbox)
                .where(outbox.c.delivery_group.in_(lost), outbox.c.claimed_by == worker_id)
                .values(delivery_group=None)
            )
    for request in fresh:
        for entry in request.entries:
            entry.delivery_group = request.group
    return [r for r in requests if r.group not in lost]


def deliver_due(
    engine: Engine,
    *,
    worker_id: str,
    adapters: Adapters,
    batch_size: int = 500,
    lease_seconds: float = 60.0,
    concurrency: int = 8,
    limiter: RateLimiter | None = None,
    clock: Clock = utcnow,
    pool: ThreadPoolExecutor | None = None,
) -> int:
    """One pass: claim a batch, decide, send, settle. Returns how many messages were claimed."""
    marks = [time.perf_counter()]
    entries = claim_due(
        engine, worker_id=worker_id, batch_size=batch_size, lease_seconds=lease_seconds, now=clock()
    )
    if not entries:
        return 0
    marks.append(time.perf_counter())  # claimed
    limiter = limiter or RateLimiter()
    batch = _Batch(engine)
    settlements: list[Settlement] = []
    ready: list[tuple[OutboxEntry, str]] = []
    sending: list[tuple[_Request, Future[SendResult]]] = []
    own_pool = pool is None
    pool = pool or ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"send-{worker_id}")
    try:
        now = clock()
        with connect(engine) as conn:
            audiences = _audiences(conn, batch, entries, now)
        marks.append(time.perf_counter())  # the policy's reads
        for entry in entries:
            policy, _ = batch.policy(entry.workspace_id)
            audience = audiences[entry.id]
            if entry.attempts > policy.max_attempts:  # reclaimed over and over: its sends keep dying
                settlements.append(Settlement(entry, "dead", f"gave up after {entry.attempts - 1} attempts"))
                continue
            if entry.delivery_group is not None and entry.recipient:
                ready.append((entry, entry.recipient))  # a multicast that may have gone out: repeat it as is
                continue
            verdict = decide(
                policy,
                channel=entry.channel,
                recipient=entry.recipient,
                transactional=entry.transactional,
                optimize_send_time=entry.optimize_send_time,
                audience=audience,
                now=now,
                jitter_key=entry.idempotency_key,
                fallback_channels=_fallback_channels(entry),
            )
            if verdict.action == "suppress":
                settlements.append(Settlement(entry, "suppressed", verdict.reason, counts_as_attempt=False))
            elif verdict.action == "defer":
                settlements.append(
                    Settlement(
                        entry,
                        "deferred",
                        verdict.reason,
                        verdict.until,
                        counts_as_attempt=False,
                        clear_optimize=verdict.optimized,
                    )
                )
            elif verdict.action == "fallback":
                assert verdict.channel is not None and verdict.recipient is not None
                settlements.append(
                    Settlement(
                        entry,
                        "suppressed",
                        verdict.reason,
                        counts_as_attempt=False,
                        fallback=_fallback_kwargs(entry, verdict.channel, verdict.recipient),
                    )
                )
            else:
                ready.append((entry, entry.recipient or audience.addresses[entry.channel]))

        allowed: list[tuple[_Request, float]] = []
        for request in _requests(ready):
            head = request.entries[0]
            policy, _ = batch.policy(head.workspace_id)
            # A multicast is one request to the provider, so it takes one token of the rate limit.
            delay = limiter.reserve(head.workspace_id, head.channel, policy, max_wait=1.0)
            if delay is None:  # over the provider's rate for longer than a moment: come back later
                hint = max(1.0, limiter.wait_hint(head.workspace_id, head.channel))
                until = now + timedelta(seconds=hint)
                settlements += [
                    Settlement(e, "deferred", f"rate limit of {e.channel}", until, counts_as_attempt=False)
                    for e in request.entries
                ]
                continue
            allowed.append((request, time.monotonic() + delay))
        sendable = {id(r) for r in _record_groups(engine, worker_id, [r for r, _ in allowed])}
        for request, not_before in allowed:
            if id(request) not in sendable:
                continue
            request.started = clock()
            sending.append((request, pool.submit(_send, adapters, limiter, request, not_before)))

        marks.append(time.perf_counter())  # decided, groups recorded
        pending = {f for _, f in sending}
        while pending:  # keep the lease alive while a slow provider answers
            _, pending = wait(pending, timeout=max(lease_seconds / 3, 0.05))
            if pending:
                alive = [e for r, f in sending if f in pending for e in r.entries]
                extend_lease(
                    engine, alive, worker_id=worker_id, until=clock() + timedelta(seconds=lease_seconds)
                )
        marks.append(time.perf_counter())  # every provider answered
        for request, future in sending:
            result = future.result()
            policy, _ = batch.policy(request.entries[0].workspace_id)
            finished = clock()
            # One outcome for a whole multicast: its messages retry together, at the same time.
            shared = _outcome(request.entries[0], result, policy, finished)
            refused = SendResult(SendStatus.BLOCKED, reason=FAIL_LIST_REASON)
            for entry, recipient in zip(request.entries, request.recipients, strict=True):
                own = refused if recipient in result.refused else result
                settlement = (
                    Settlement(entry, shared.status, shared.reason, shared.next_attempt_at, result=result)
                    if own is result
                    else _outcome(entry, own, policy, finished)
                )
                if own.status == SendStatus.BLOCKED and (request.group is None or own is refused):
                    settlement = _after_block(entry, own, policy, audiences[entry.id], finished) or settlement
                settlement.started_at, settlement.finished_at = request.started, finished
                settlement.recipient = recipient
                settlements.append(settlement)
    finally:
        if own_pool:
            pool.shutdown(wait=True)

    _emit_events(engine, settlements, audiences, clock())
    now = clock()
    transaction(engine, lambda conn: settle_all(conn, worker_id, settlements, now))
    marks.append(time.perf_counter())  # outcomes and their events written
    spans = [(b - a) * 1e3 for a, b in pairwise(marks)]
    # Where a batch's time goes, for an operator sizing workers (and bench/broadcast.py's shares).
    log.debug(
        "batch of %d: claim %.0f ms, policy reads %.0f ms, decide and record %.0f ms, provider %.0f ms, "
        "settle %.0f ms", len(entries), *spans,
    )  # fmt: skip
    return len(entries)


def _after_block(
    entry: OutboxEntry, result: SendResult, policy: ContactPolicy, audience: Audience, now: datetime
) -> Settlement | None:
    """The provider says this recipient cannot be reached here (unfollowed): try the fallback channel."""
    blocked = Audience(
        tier=audience.tier,
        timezone=audience.timezone,
        consents={**audience.consents, entry.channel: "unsubscribed"},
        addresses=audience.addresses,
        recent_sends=audience.recent_sends,
    )
    verdict = decide(
        policy,
        channel=entry.channel,
        recipient=None,
        transactional=entry.transactional,
        optimize_send_time=False,
        audience=blocked,
        now=now,
        jitter_key=entry.idempotency_key,
        fallback_channels=_fallback_channels(entry),
    )
    if verdict.action != "fallback" or verdict.channel is None or verdict.recipient is None:
        return None
    return Settlement(
        entry,
        "suppressed",
        f"blocked on {entry.channel} ({result.reason}); sent on {verdict.channel} instead",
        result=result,
        fallback=_fallback_kwargs(entry, verdict.channel, verdict.recipient),
    )


EVENT_NAMES = {"delivered": "Message Delivered", "dead": "Message Failed", "suppressed": "Message Suppressed"}


def _emit_events(
    engine: Engine, settlements: list[Settlement], audiences: dict[int, Audience], now: datetime
) -> None:
    """Delivery outcomes flow back as events, with deterministic ids so a resend stores nothing twice."""
    from lifeloop.messaging.service import emit_delivery_events

    final = [s for s in settlements if s.status in EVENT_NAMES and s.entry.profile_id is not None]
    if not final:
        return
    try:
        known = {i: (a.profile_id, a.identities) for i, a in audiences.items() if a.profile_id is not None}
        outcomes = [(s.entry, EVENT_NAMES[s.status], s.reason) for s in final]
        emit_delivery_events(engine, outcomes, now=now, known=known)
    except Exception:  # the delivery itself is settled regardless; the event is a report of it
        log.exception("could not store delivery events")


def run_delivery_worker(
    engine: Engine,
    *,
    stop_event: threading.Event,
    batch_size: int = 500,
    worker_id: str,
    adapters: Adapters | None = None,
    lease_seconds: float = 60.0,
    concurrency: int = 8,
    poll_interval: float = 0.5,
    clock: Clock = utcnow,
) -> int:
    """Deliver until ``stop_event`` is set; returns how many messages were handled."""
    adapters = adapters or Adapters(engine)
    limiter = RateLimiter()
    handled = 0
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"send-{worker_id}") as pool:
        try:
            while not stop_event.is_set():
                try:
                    claimed = deliver_due(
                        engine,
                        worker_id=worker_id,
                        adapters=adapters,
                        batch_size=batch_size,
                        lease_seconds=lease_seconds,
                        concurrency=concurrency,
                        limiter=limiter,
                        clock=clock,
                        pool=pool,
                    )
                except Exception:  # a database hiccup: the leases make it safe to just try again
                    log.exception("delivery pass failed")
                    claimed = 0
                    stop_event.wait(min(5.0, poll_interval * 4))
                handled += claimed
                if claimed < batch_size:
                    stop_event.wait(poll_interval)
        finally:
            adapters.close()
    return handled


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="lifeloop delivery worker")
    parser.add_argument("--database-url", default=os.environ.get("LIFELOOP_DATABASE_URL"))
    parser.add_argument("--worker-id", default=f"worker-{os.getpid()}")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--lease-seconds", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--poll-interval", type=float, default=0.5)
    parser.add_argument(
        "--webhook-secret",
        default=os.environ.get("LIFELOOP_WEBHOOK_SECRET"),
        help="Signing secret for webhook recipients of workspaces without a webhook channel configured.",
    )
    args = parser.parse_args(argv)
    from lifeloop.config import Settings, get_settings
    from lifeloop.store.engine import create_store_engine

    settings = Settings(database_url=args.database_url) if args.database_url else get_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    engine = create_store_engine(settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run_delivery_worker(
        engine,
        stop_event=stop,
        batch_size=args.batch_size,
        worker_id=args.worker_id,
        adapters=Adapters(engine, webhook_secret=args.webhook_secret),
        lease_seconds=args.lease_seconds,
        concurrency=args.concurrency,
        poll_interval=args.poll_interval,
    )
    engine.dispose()


if __name__ == "__main__":
    main()
