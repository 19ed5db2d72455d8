"""Sending a broadcast: take its audience when it is due, then queue one outbox row per recipient.

A worker's tick starts due broadcasts (the audience is frozen into ``broadcast_recipients`` with each
user's variant, in one transaction), then queues the next chunk of recipients per transaction: their
messages rendered, written with the key ``broadcast:<id>:p<profile id>``, and the broadcast's cursor
moved, together. A worker killed mid-way leaves the cursor at the last committed chunk, and the next
tick (of any worker) goes on from there; the key makes a message impossible to queue twice. The
delivery worker applies the contact policy to each row and sends identical LINE messages as multicasts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, select, update

from lifeloop.broadcasts.audience import audience_ids, variant_of
from lifeloop.broadcasts.definition import ChannelMessage, Definition, parse_definition
from lifeloop.broadcasts.models import HOLDOUT, broadcast_recipients, broadcasts
from lifeloop.broadcasts.service import (
    address_of,
    channel_order,
    in_utc,
    message_ids,
    origin_of,
    outbox_key,
    reachable,
    workspace_zone,
)
from lifeloop.errors import NotFound
from lifeloop.store.schema import utcnow

CHUNK = 1000  # recipients per queueing transaction
FINISH_CHECK_SECONDS = 5.0  # how often a sending broadcast is looked at for having settled
_last_finish_check: dict[int, float] = {}


def tick(
    engine: Engine, *, now: datetime | None = None, budget_seconds: float = 2.0, check_now: bool = False
) -> int:
    """Start due broadcasts, queue chunks of those sending for up to ``budget_seconds``, mark those whose
    every message has settled as sent. Returns how many recipients' messages were queued."""
    from lifeloop.store.engine import connect, transaction

    clock = (lambda: now) if now is not None else utcnow
    with connect(engine) as conn:
        active = list(
            conn.execute(
                select(broadcasts.c.id, broadcasts.c.workspace_id, broadcasts.c.status)
                .where(
                    (broadcasts.c.status == "sending")
                    | ((broadcasts.c.status == "scheduled") & (broadcasts.c.send_at <= clock()))
                )
                .order_by(broadcasts.c.id)
                .execution_options(cross_workspace=True)
            )
        )
    done = 0
    deadline = time.monotonic() + budget_seconds
    for broadcast_id, workspace_id, status in active:

        def start(conn: Connection, b: int = broadcast_id, ws: int = workspace_id) -> int:
            return start_broadcast(conn, ws, b, now=clock())

        def queue(conn: Connection, b: int = broadcast_id, ws: int = workspace_id) -> int:
            return queue_chunk(conn, ws, b, now=clock())

        # A start is not counted (it queues nothing itself), but its first chunk is queued in any case.
        started = status == "scheduled" and transaction(engine, start, background=True) > 0
        while started or time.monotonic() < deadline:
            started = False
            queued = transaction(engine, queue, background=True)
            done += queued
            if not queued:
                break
        if check_now or time.monotonic() - _last_finish_check.get(broadcast_id, 0.0) >= FINISH_CHECK_SECONDS:
            _last_finish_check[broadcast_id] = time.monotonic()

            def finish(conn: Connection, b: int = broadcast_id, ws: int = workspace_id) -> bool:
                return finish_if_settled(conn, ws, b, now=clock())

            transaction(engine, finish, background=True)
    return done


def send_all(engine: Engine, *, now: datetime | None = None) -> int:
    """Tick until nothing is left to queue (the CLI's ``worker --once`` and tests)."""
    total = 0
    while queued := tick(engine, now=now, check_now=True):
        total += queued
    return total


def _locked(conn: Connection, workspace_id: int, broadcast_id: int) -> Any:
    """The broadcast row, locked for this transaction (None when another worker holds it)."""
    query = select(broadcasts).where(
        broadcasts.c.workspace_id == workspace_id, broadcasts.c.id == broadcast_id
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return conn.execute(query).first()


def _set(conn: Connection, workspace_id: int, broadcast_id: int, **values: Any) -> None:
    conn.execute(
        update(broadcasts)
        .where(broadcasts.c.workspace_id == workspace_id, broadcasts.c.id == broadcast_id)
        .values(**values)
    )


def start_broadcast(conn: Connection, workspace_id: int, broadcast_id: int, *, now: datetime) -> int:
    """scheduled → sending: the audience taken now, each member with a variant or in the holdout."""
    from lifeloop.store.rows import insert_rows

    row = _locked(conn, workspace_id, broadcast_id)
    if row is None or row.status != "scheduled" or row.send_at > now:
        return 0
    definition = parse_definition(row.definition)
    ids = audience_ids(conn, workspace_id, definition.audience, now=now)
    if not ids:
        _set(conn, workspace_id, broadcast_id, status="cancelled", finished_at=now, updated_at=now,
             audience_size=0, note="nobody was in the audience at send time")  # fmt: skip
        return 0
    rows = []
    for pid in ids:
        variant = variant_of(definition, broadcast_id, pid)
        rows.append((workspace_id, broadcast_id, pid, HOLDOUT if variant is None else variant.key))
    insert_rows(conn, broadcast_recipients, ["workspace_id", "broadcast_id", "profile_id", "variant"], rows)
    _set(conn, workspace_id, broadcast_id, status="sending", audience_size=len(ids), queued=0, cursor=None,
         started_at=now, updated_at=now)  # fmt: skip
    return len(ids)


def queue_chunk(conn: Connection, workspace_id: int, broadcast_id: int, *, now: datetime) -> int:
    """The next chunk of recipients' messages into the outbox; how many recipients it covered."""
    from lifeloop.messaging.outbox import insert_new

    row = _locked(conn, workspace_id, broadcast_id)
    if row is None or row.status != "sending" or row.queued >= (row.audience_size or 0):
        return 0
    r = broadcast_recipients.c
    chunk = conn.execute(
        select(r.profile_id, r.variant)
        .where(
            r.workspace_id == workspace_id, r.broadcast_id == broadcast_id, r.profile_id > (row.cursor or 0)
        )
        .order_by(r.profile_id)
        .limit(CHUNK)
    ).all()
    if not chunk:  # cannot happen while queued < audience_size; never loop on it
        _set(conn, workspace_id, broadcast_id, queued=row.audience_size, updated_at=now)
        return 0
    planner = _Planner(conn, workspace_id, broadcast_id, parse_definition(row.definition), now=now,
                       scheduled_at=row.send_at or now)  # fmt: skip
    outbox_rows = planner.rows([(pid, variant) for pid, variant in chunk if variant != HOLDOUT])
    # A key already taken (only an API caller choosing a broadcast's key could) keeps its message.
    insert_new(conn, outbox_rows)
    _set(conn, workspace_id, broadcast_id, cursor=chunk[-1].profile_id, queued=row.queued + len(chunk),
         updated_at=now)  # fmt: skip
    return len(chunk)


def finish_if_settled(conn: Connection, workspace_id: int, broadcast_id: int, *, now: datetime) -> bool:
    """sending → sent once every message is queued and settled (delivered, suppressed or dead)."""
    from lifeloop.messaging.models import FINAL_STATUSES, outbox

    row = _locked(conn, workspace_id, broadcast_id)
    if row is None or row.status != "sending" or row.queued < (row.audience_size or 0):
        return False
    pending = conn.execute(
        select(func.count()).where(
            outbox.c.workspace_id == workspace_id,
            outbox.c.id.in_(message_ids(workspace_id, broadcast_id)),
            outbox.c.status.not_in(FINAL_STATUSES),
        )
    ).scalar_one()
    if pending:
        return False
    _set(conn, workspace_id, broadcast_id, status="sent", finished_at=now, updated_at=now)
    return True


class _Planner:
    """Outbox rows for a chunk of recipients: channel order per user, the rendered message, the time."""

    def __init__(
        self, conn: Connection, workspace_id: int, broadcast_id: int, definition: Definition, *,
        now: datetime, scheduled_at: datetime,
    ) -> None:  # fmt: skip
        from lifeloop.messaging.service import load_policy
        from lifeloop.workspaces.service import get_workspace

        self.conn, self.ws, self.id, self.definition, self.now = (
            conn,
            workspace_id,
            broadcast_id,
            definition,
            now,
        )
        self.tz = workspace_zone(conn, workspace_id)
        until = definition.schedule.until
        self.start, self.until = scheduled_at, in_utc(until, self.tz) if until is not None else None
        self.variants = {v.key: v for v in definition.all_variants()}
        self.policy = load_policy(conn, workspace_id)
        self.workspace = get_workspace(conn, workspace_id)
        self.templates: dict[str, Any] = {}
        self.static: dict[tuple[str, str], dict[str, Any]] = {}  # (template, locale) → content for anyone
        self.best_hour = definition.schedule.mode == "best_hour"
        self.choosing = self.best_hour or any(len(v.channels) > 1 for v in self.variants.values())

    def rows(self, recipients: Sequence[tuple[int, str]]) -> list[dict[str, Any]]:
        from lifeloop.messaging.outbox import outbox_values
        from lifeloop.messaging.policy import load_audiences, next_best_time, set_active_hours
        from lifeloop.profiles.service import read_profiles

        pids = [pid for pid, _ in recipients]
        profiles = read_profiles(self.conn, self.ws, pids)
        audiences = {}
        if self.choosing:
            audiences = load_audiences(self.conn, self.ws, pids, policy=self.policy, now=self.now,
                                       workspace_timezone=self.tz.key)  # fmt: skip
        if self.best_hour:
            set_active_hours(self.conn, self.ws, audiences, self.policy, self.now)
        out = []
        for pid, variant_key in recipients:
            profile = profiles.get(pid) or self._moved(pid)
            variant = self.variants.get(variant_key)
            if variant is None:  # cannot happen: definitions of a sending broadcast do not change
                continue
            audience = audiences.get(pid)
            order = channel_order(variant, audience)
            first = order[0]
            key = outbox_key(self.id, pid)
            dead: str | None
            if profile is None:
                content, dead = {"text": ""}, "the profile no longer exists"
            elif profile.id != pid and self._is_recipient(profile.id):
                content, dead = {"text": ""}, f"merged into profile {profile.id}, which receives it already"
            else:
                content, dead = self._render(first, profile)
            fallback: dict[str, Any] = {}
            for other in order[1:]:
                if (
                    profile is not None
                    and dead is None
                    and (audience is None or reachable(other.channel, audience))
                ):
                    other_content, failed = self._render(other, profile)
                    if failed is None:
                        fallback[other.channel] = other_content
            send_at = self.now
            if self.best_hour and audience is not None and self.until is not None:
                best = next_best_time(self.policy, max(self.start, self.now), audience)
                send_at = best if best < self.until else max(self.start, self.now)
            out.append(
                outbox_values(
                    self.ws,
                    channel=first.channel,
                    content=content,
                    idempotency_key=key,
                    profile_id=profile.id if profile is not None else pid,
                    recipient=address_of(first, audience, profile.user_id if profile else None, pid),
                    template=first.template,
                    optimize_send_time=False,  # the broadcast's own schedule says when
                    fallback_content=fallback or None,
                    send_at=send_at,
                    now=self.now,
                    dead_reason=dead,
                    origin=origin_of(self.id),
                )
            )
        return out

    def _moved(self, pid: int) -> Any:
        """A recipient merged into another profile since the audience was taken: the survivor."""
        from lifeloop.profiles.service import get_profile

        try:
            return get_profile(self.conn, self.ws, pid)
        except NotFound:
            return None

    def _is_recipient(self, pid: int) -> bool:
        r = broadcast_recipients.c
        found = self.conn.execute(
            select(r.profile_id).where(
                r.workspace_id == self.ws, r.broadcast_id == self.id, r.profile_id == pid
            )
        ).first()
        return found is not None

    def _render(self, message: ChannelMessage, profile: Any) -> tuple[dict[str, Any], str | None]:
        """The message for one user, or a dead letter's content and reason when it does not render."""
        from lifeloop.messaging.templates.render import TemplateRenderError, choose_variant
        from lifeloop.messaging.templates.service import context_of, get_template, locale_of, render_template

        if message.template not in self.templates:
            self.templates[message.template] = get_template(self.conn, self.ws, message.template)
        template = self.templates[message.template]
        locale = choose_variant(template.variants, locale_of(profile), template.default_locale)
        cached = self.static.get((message.template, locale))
        if cached is not None:
            return cached, None
        context, preferred = context_of(profile, self.workspace)
        try:
            content = render_template(template, context, locale=preferred).content
        except TemplateRenderError as error:
            reason = f"template {message.template!r} did not render: {error.message}"
            return {"template_error": error.message}, reason
        source = json.dumps(template.variants[locale], ensure_ascii=False)
        if "{{" not in source and "{%" not in source:  # the same for everyone: render it once
            self.static[(message.template, locale)] = content
        return content, None
