"""Telling an advisor about a task: a WeCom application message (``message/send``), sent once.

The notification is a row written in the task's transaction (``enqueue``), so it exists exactly when
the task does. The sweep (``hooks.sweep``, every 60 s in the worker) claims due rows under a lease in a
short transaction (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, the single writer on SQLite), calls WeCom
outside any transaction, and settles each row fenced by its claim (``claimed_by``, ``attempts``): a
settled row is never claimed again, so a second sweep sends nothing.

A process killed after WeCom accepted the message but before the row was settled leaves it ``sending``;
when the lease runs out the next sweep sends it again. The request is byte-for-byte the first one
(the content is frozen in the row) with ``enable_duplicate_check`` on, and WeCom drops a repeated
request within ``duplicate_check_interval`` (4 hours, its maximum): the advisor sees it once. Only a
retry more than 4 hours after the first attempt (a worker down that long between the two) could show
it twice; that is the documented limit.

Channel configuration (the workspace's ``wecom`` channel): ``settings.agent_id`` (the self-built app's
AgentId, required) and ``credentials.agent_secret`` (that app's Secret; default: ``secret``, when the
customer-contact secret is the app's own). Optional ``settings.task_url`` (with ``{task_id}``) makes
the message a ``textcard`` linking to the task; otherwise it is ``text``.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, and_, or_, select, update

from lifeloop.errors import LifeloopError
from lifeloop.messaging.channels.base import SendResult, SendStatus
from lifeloop.store.engine import connect
from lifeloop.store.schema import utcnow

from .models import advisor_notifications

SEND_PATH = "/cgi-bin/message/send"
DUPLICATE_CHECK_SECONDS = 4 * 3600  # WeCom's longest duplicate-check window
LEASE_SECONDS = 120.0
MAX_ATTEMPTS = 8
BATCH = 50
SWEEP_BUDGET = 20.0  # seconds of sending per sweep


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    workspace_id: int
    task_id: int
    touser: str
    content: dict[str, Any]
    attempts: int


def _wecom_settings(conn: Connection, workspace_id: int) -> dict[str, Any]:
    from lifeloop.messaging.channels.models import channel_configs

    t = channel_configs.c
    row = conn.execute(
        select(t.settings)
        .where(t.workspace_id == workspace_id, t.channel == "wecom", t.enabled.is_(True))
        .order_by(t.id)
        .limit(1)
    ).first()
    return dict(row.settings or {}) if row is not None else {}


def message_content(
    conn: Connection,
    workspace_id: int,
    *,
    task_id: int,
    title: str,
    customer: str,
    due_at: datetime | None,
    description: str | None,
    zone: ZoneInfo,
) -> dict[str, Any]:
    """The message's ``msgtype`` and its part, naming the customer (text, or a textcard with a link)."""
    due = due_at.astimezone(zone).strftime("%Y-%m-%d %H:%M") if due_at else None
    lines = [f"客户：{customer}"]
    if due:
        lines.append(f"截止：{due}")
    if description:
        lines.append(description)
    url = _wecom_settings(conn, workspace_id).get("task_url")
    if isinstance(url, str) and url:
        card = {
            "title": f"跟进任务：{title}"[:128],
            "description": "\n".join(lines)[:512],
            "url": url.replace("{task_id}", str(task_id)),
            "btntxt": "查看",
        }
        return {"msgtype": "textcard", "textcard": card}
    text = "\n".join([f"【跟进任务】{title}", *lines, f"任务 #{task_id}"])
    return {"msgtype": "text", "text": {"content": text[:2048]}}


def enqueue(
    conn: Connection,
    workspace_id: int,
    *,
    task_id: int,
    advisor_id: int,
    touser: str,
    content: dict[str, Any],
    now: datetime,
) -> None:
    """Record the notification in the caller's transaction; a second one for the same task and advisor
    is ignored."""
    from .service import insert_for

    conn.execute(
        insert_for(conn, advisor_notifications)
        .values(
            workspace_id=workspace_id,
            task_id=task_id,
            advisor_id=advisor_id,
            touser=touser,
            content=content,
            status="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing()
    )


def withdraw(
    conn: Connection, workspace_id: int, *, advisor_id: int, task_ids: list[int], reason: str
) -> None:
    """Pending notifications of tasks an advisor no longer holds are not sent (one being sent may be)."""
    if not task_ids:
        return
    n = advisor_notifications.c
    conn.execute(
        update(advisor_notifications)
        .where(
            n.workspace_id == workspace_id,
            n.advisor_id == advisor_id,
            n.task_id.in_(task_ids),
            n.status == "pending",
        )
        .values(status="failed", last_error=reason, updated_at=utcnow())
    )


def _due(now: datetime) -> Any:
    n = advisor_notifications.c
    return or_(
        and_(n.status == "pending", n.next_attempt_at <= now),
        and_(n.status == "sending", n.claimed_until < now),  # its sender died or hung: take it over
    )


def claim_due(engine: Engine, *, worker_id: str, now: datetime, batch: int = BATCH) -> list[Claimed]:
    """Take up to ``batch`` due notifications of any workspace under a lease, in one short transaction."""
    n = advisor_notifications.c
    with engine.begin() as conn:
        ids = list(
            conn.execute(
                select(n.id)
                .where(_due(now))
                .order_by(n.next_attempt_at, n.id)
                .limit(batch)
                .with_for_update(skip_locked=True)
                .execution_options(cross_workspace=True)
            ).scalars()
        )
        if not ids:
            return []
        rows = conn.execute(
            update(advisor_notifications)
            .where(n.id.in_(ids), _due(now))
            .values(
                status="sending",
                claimed_by=worker_id,
                claimed_until=now + timedelta(seconds=LEASE_SECONDS),
                attempts=n.attempts + 1,
                updated_at=now,
            )
            .returning(n.id, n.workspace_id, n.task_id, n.touser, n.content, n.attempts)
            .execution_options(cross_workspace=True)
        ).all()
    return sorted(
        (Claimed(r.id, r.workspace_id, r.task_id, r.touser, dict(r.content), r.attempts) for r in rows),
        key=lambda c: c.id,
    )


def request_body(claimed: Claimed, agent_id: int) -> dict[str, Any]:
    """What goes to ``message/send``: the same bytes on every attempt, so WeCom's duplicate check holds."""
    return {
        "touser": claimed.touser,
        "agentid": agent_id,
        **claimed.content,
        "enable_duplicate_check": 1,
        "duplicate_check_interval": DUPLICATE_CHECK_SECONDS,
    }


def send(engine: Engine, claimed: Claimed) -> SendResult:
    """One ``message/send`` call with the workspace's WeCom app credentials; never raises for the
    provider's or the configuration's errors, it classifies them."""
    from lifeloop.messaging.channels.config import load_config
    from lifeloop.messaging.channels.http import call_with_token
    from lifeloop.messaging.channels.wecom import WeComAdapter, classify_errcode

    try:
        with connect(engine) as conn:
            config, credentials = load_config(conn, claimed.workspace_id, "wecom")
        agent_id = int(str(config.settings.get("agent_id") or credentials.get("agent_id") or ""))
    except (LifeloopError, ValueError) as error:
        reason = error.message if isinstance(error, LifeloopError) else "settings.agent_id is not set"
        # The operator can still fix the channel: wait and try again, as for a provider outage.
        return SendResult(SendStatus.TRANSIENT, reason=f"WeCom app not usable: {reason}")
    secret = credentials.get("agent_secret") or credentials.get("secret")
    try:
        adapter = WeComAdapter({**config.settings, **credentials, "secret": secret})
    except ValueError as error:
        return SendResult(SendStatus.TRANSIENT, reason=f"WeCom app not usable: {error}")
    try:
        called = call_with_token("WeCom", lambda: adapter.call(SEND_PATH, request_body(claimed, agent_id)))
    finally:
        adapter.close()
    if isinstance(called, SendResult):
        return called
    response, answer = called
    if response.status_code == 429:
        return SendResult(SendStatus.RATE_LIMITED, retry_after=60.0, reason="WeCom HTTP 429")
    result = classify_errcode(int(answer.get("errcode", -1)), str(answer.get("errmsg", "no errcode")))
    if result.status is not SendStatus.DELIVERED:
        return result
    invalid = {u.lower() for u in str(answer.get("invaliduser") or "").split("|") if u}
    if claimed.touser.lower() in invalid:
        return SendResult(
            SendStatus.PERMANENT, reason=f"WeCom says {claimed.touser!r} is not a member of the app"
        )
    return SendResult(SendStatus.DELIVERED, provider_message_id=answer.get("msgid"))


def backoff(attempts: int, retry_after: float | None) -> timedelta:
    seconds = min(60.0 * 2 ** (attempts - 1), 6 * 3600.0)
    return timedelta(seconds=max(seconds, retry_after or 0.0))


def settle(engine: Engine, claimed: Claimed, result: SendResult, *, worker_id: str, now: datetime) -> bool:
    """Write the outcome if this worker still holds the claim; True when it was written."""
    n = advisor_notifications.c
    if result.status is SendStatus.DELIVERED:
        values: dict[str, Any] = {
            "status": "sent",
            "sent_at": now,
            "msgid": result.provider_message_id,
            "last_error": None,
        }
    elif result.retryable and claimed.attempts < MAX_ATTEMPTS:
        when = now + backoff(claimed.attempts, result.retry_after)
        values = {"status": "pending", "next_attempt_at": when, "last_error": result.reason}
    else:
        values = {"status": "failed", "last_error": result.reason}
    with engine.begin() as conn:
        written = conn.execute(
            update(advisor_notifications)
            .where(
                n.workspace_id == claimed.workspace_id,
                n.id == claimed.id,
                n.status == "sending",
                n.claimed_by == worker_id,
                n.attempts == claimed.attempts,
            )
            .values(claimed_by=None, claimed_until=None, updated_at=now, **values)
        )
    return bool(written.rowcount)


def release(engine: Engine, claimed: Claimed, *, worker_id: str, now: datetime) -> None:
    """Hand back a claim that was not tried (its workspace's WeCom is failing, or the sweep ran out of
    time), as if it had not been claimed: the attempt does not count."""
    n = advisor_notifications.c
    with engine.begin() as conn:
        conn.execute(
            update(advisor_notifications)
            .where(
                n.workspace_id == claimed.workspace_id,
                n.id == claimed.id,
                n.status == "sending",
                n.claimed_by == worker_id,
                n.attempts == claimed.attempts,
            )
            .values(
                status="pending",
                attempts=claimed.attempts - 1,
                claimed_by=None,
                claimed_until=None,
                next_attempt_at=now + timedelta(seconds=60),
                updated_at=now,
            )
        )


def deliver_due(
    engine: Engine, now: datetime, *, worker_id: str | None = None, budget_seconds: float = SWEEP_BUDGET
) -> int:
    """Claim, send and settle the due notifications; how many were sent.

    The sweep shares the worker's tick loop with event placement, so it stops trying a workspace whose
    WeCom failed (a down or slow provider would otherwise hold the loop for a timeout per message) and
    stops after ``budget_seconds``; what it did not try is handed back for the next sweep.
    """
    worker_id = worker_id or f"advisors-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + budget_seconds
    failing: set[int] = set()
    sent = 0
    while True:
        claimed = claim_due(engine, worker_id=worker_id, now=now)
        for each in claimed:
            if each.workspace_id in failing or time.monotonic() > deadline:
                release(engine, each, worker_id=worker_id, now=now)
                continue
            result = send(engine, each)
            if result.retryable:
                failing.add(each.workspace_id)
            if settle(engine, each, result, worker_id=worker_id, now=now):
                sent += result.status is SendStatus.DELIVERED
        if len(claimed) < BATCH or time.monotonic() > deadline:
            return sent


def notifications_of(conn: Connection, workspace_id: int, task_id: int) -> list[dict[str, Any]]:
    n = advisor_notifications.c
    rows = conn.execute(
        select(
            n.advisor_id, n.touser, n.status, n.attempts, n.last_error, n.sent_at, n.next_attempt_at, n.msgid
        )
        .where(n.workspace_id == workspace_id, n.task_id == task_id)
        .order_by(n.id)
    )
    return [dict(r._mapping) for r in rows]
