"""A brand with journeys, driven through the public paths: events ingested and resolved, a moving clock."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from lifeloop.events.messages import parse_message
from lifeloop.events.service import ingest
from lifeloop.journeys import scheduler, service
from lifeloop.journeys.engine import run_until_idle
from lifeloop.journeys.models import journey_runs, journey_steps
from lifeloop.messaging.models import outbox
from lifeloop.messaging.templates.service import create_template
from lifeloop.profiles.resolver import resolve_pending
from lifeloop.profiles.service import find_by_identity
from lifeloop.store.schema import utcnow
from lifeloop.workspaces.models import SourceKey
from tests.conftest import Brand


@dataclass
class World:
    engine: sa.Engine
    brand: Brand
    now: datetime = field(default_factory=utcnow)
    _n: int = 0

    @property
    def ws(self) -> int:
        return self.brand.workspace_id

    # Set-up ------------------------------------------------------------------------------------
    def template(self, key: str, channel: str = "line", text: str | None = None) -> None:
        with self.engine.begin() as conn:
            create_template(
                conn,
                self.ws,
                key=key,
                channel=channel,
                variants={"en": {"text": text or f"{key} {{{{ event.sku }}}}"}},
            )

    def journey(self, definition: str | dict[str, Any], *, publish: bool = True) -> None:
        with self.engine.begin() as conn:
            journey = service.save_draft(conn, self.ws, definition, now=self.now)
            if publish:
                service.publish(conn, self.ws, journey.key, now=self.now)

    def segment(self, key: str, condition: str) -> None:
        """A segment, made before the users it holds: membership then follows their events."""
        from lifeloop.audience import batch
        from lifeloop.audience.definitions import create_segment

        with self.engine.begin() as conn:
            _row, definition = create_segment(conn, self.ws, key, None, condition)
        batch.after_definition_change(self.engine, self.ws, definition, now=self.now)

    def lifecycle(self, source: str) -> None:
        from lifeloop.lifecycle.service import install_model

        with self.engine.begin() as conn:
            install_model(conn, self.ws, source)

    def publish(self, key: str) -> int:
        with self.engine.begin() as conn:
            version = service.publish(conn, self.ws, key, now=self.now).version
        assert version is not None
        return version

    def set_status(self, key: str, status: str) -> None:
        with self.engine.begin() as conn:
            service.set_status(conn, self.ws, key, status, now=self.now)

    # Acting ------------------------------------------------------------------------------------
    def tag(self, user: str, tag: str) -> None:
        from lifeloop.audience.service import add_manual_tag

        pid = self.pid(user)  # before the write transaction: SQLite has one writer
        with self.engine.begin() as conn:
            add_manual_tag(conn, self.ws, pid, tag, now=self.now)

    def untag(self, user: str, tag: str) -> None:
        from lifeloop.audience.service import remove_manual_tag

        pid = self.pid(user)
        with self.engine.begin() as conn:
            remove_manual_tag(conn, self.ws, pid, tag, now=self.now)

    def unsubscribe(self, user: str, channel: str) -> None:
        from lifeloop.messaging.service import set_consent

        pid = self.pid(user)
        with self.engine.begin() as conn:
            set_consent(conn, self.ws, pid, channel, status="unsubscribed")

    def play(self, acts: Sequence[Act]) -> None:
        """Act out a case's script: events in, clock moves, checks on the way."""
        for act in acts:
            act(self)

    def enter(
        self,
        journey: str,
        users: list[str] | None = None,
        *,
        segment: str | None = None,
        key: str = "request-1",
        properties: dict[str, Any] | None = None,
    ) -> int:
        """A manual entry, as the API makes it: the runs start in the same transaction."""
        pids = None if users is None else [self.pid(u) for u in users]
        with self.engine.begin() as conn:
            ids = service.enter_profiles(
                conn,
                self.ws,
                journey,
                profile_ids=pids,
                segment=segment,
                idempotency_key=key,
                properties=properties,
                now=self.now,
            )
            if ids:
                service.advance_now(conn, self.ws, ids, now=self.now)
        return len(ids)

    def send(self, user: str, event: str, properties: dict[str, Any] | None = None, **raw: Any) -> None:
        self._n += 1
        message = {
            "type": "track",
            "userId": user,
            "event": event,
            "properties": properties or {},
            "messageId": f"m-{self._n}",
            "timestamp": self.now.isoformat(),
            **raw,
        }
        self.ingest([message])

    def send_all(self, users: Sequence[str], event: str, properties: dict[str, Any] | None = None) -> None:
        """The same event of many users, in one ingest batch (one resolver transaction)."""
        messages = []
        for user in users:
            self._n += 1
            messages.append(
                {
                    "type": "track",
                    "userId": user,
                    "event": event,
                    "properties": properties or {},
                    "messageId": f"m-{self._n}",
                    "timestamp": self.now.isoformat(),
                }
            )
        self.ingest(messages)

    def identify(self, user: str, traits: dict[str, Any] | None = None, timezone: str | None = None) -> None:
        self._n += 1
        message: dict[str, Any] = {
            "type": "identify",
            "userId": user,
            "traits": traits or {},
            "messageId": f"m-{self._n}",
            "timestamp": self.now.isoformat(),
            "context": {"timezone": timezone} if timezone else {},
        }
        self.ingest([message])

    def ingest(self, messages: list[dict[str, Any]]) -> None:
        key = SourceKey(workspace_id=self.ws, source_id=self.brand.source_id)
        ingest(self.engine, key, [parse_message(m, received_at=utcnow()) for m in messages])
        # The resolver (stages, segments, journeys' reactions) runs at the World's clock, not the wall's.
        resolve_pending(self.engine, now=self.now)

    def move(self, by: timedelta | str) -> None:
        """Move the clock by a duration ("1h", also compound: "1h59m") and do what is due."""
        self.now += duration(by) if isinstance(by, str) else by
        self.work()

    def work(self) -> None:
        scheduler.tick(self.engine, now=self.now)
        run_until_idle(self.engine, now=self.now)

    # Reading -----------------------------------------------------------------------------------
    def pid(self, user: str) -> int:
        with self.engine.connect() as conn:
            return find_by_identity(conn, self.ws, "user_id", user)

    def users_by_pid(self) -> dict[int, str]:
        from lifeloop.profiles.models import profiles

        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(profiles.c.id, profiles.c.user_id).where(profiles.c.workspace_id == self.ws)
            )
            return {r.id: r.user_id for r in rows}

    def sends(self) -> list[tuple[str, str, str]]:
        """(user, channel, template or recipient) of every queued message, in order."""
        users = self.users_by_pid()
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(outbox.c.profile_id, outbox.c.channel, outbox.c.template, outbox.c.recipient)
                .where(outbox.c.workspace_id == self.ws)
                .order_by(outbox.c.id)
            )
            return [
                (users.get(r.profile_id, r.recipient or ""), r.channel, r.template or r.recipient)
                for r in rows
            ]

    def runs(self, user: str | None = None) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            query = (
                sa.select(journey_runs)
                .where(journey_runs.c.workspace_id == self.ws)
                .order_by(journey_runs.c.id)
            )
            if user is not None:
                query = query.where(journey_runs.c.profile_id == self.pid(user))
            return [dict(r._mapping) for r in conn.execute(query)]

    def state(self, user: str) -> list[tuple[str, str | None, str | None]]:
        """(status, step, exit reason) of each of the user's runs."""
        return [(r["status"], r["step"], r["exit_reason"]) for r in self.runs(user)]

    def steps(self) -> list[tuple[str, str]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(journey_steps.c.step, journey_steps.c.outcome)
                .where(journey_steps.c.workspace_id == self.ws)
                .order_by(journey_steps.c.id)
            )
            return [(r.step, r.outcome) for r in rows]

    def outbox(self) -> list[dict[str, Any]]:
        """Every queued message with its content, in order; ``user`` for a profile's message."""
        users = self.users_by_pid()
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(outbox).where(outbox.c.workspace_id == self.ws).order_by(outbox.c.id)
            )
            return [{**dict(r._mapping), "user": users.get(r.profile_id)} for r in rows]

    def log(self, user: str) -> list[tuple[str, str, str]]:
        """(step, type, outcome) of each step the user's runs completed, in order."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(journey_steps.c.step, journey_steps.c.kind, journey_steps.c.outcome)
                .join(journey_runs, journey_runs.c.id == journey_steps.c.run_id)
                .where(
                    journey_steps.c.workspace_id == self.ws,
                    journey_runs.c.workspace_id == self.ws,
                    journey_runs.c.profile_id == self.pid(user),
                )
                .order_by(journey_steps.c.id)
            )
            return [(r.step, r.kind, r.outcome) for r in rows]

    def tags(self, user: str) -> set[str]:
        from lifeloop.audience.query import profile_tag_list

        with self.engine.connect() as conn:
            return {t["tag"] for t in profile_tag_list(conn, self.ws, self.pid(user), self.now)}

    def traits(self, user: str) -> dict[str, Any]:
        from lifeloop.profiles.service import get_profile

        with self.engine.connect() as conn:
            return dict(get_profile(conn, self.ws, self.pid(user)).traits)

    def events(self, user: str, name: str) -> list[dict[str, Any]]:
        """The properties of the user's events of that name (lifeloop's own included), in order."""
        from lifeloop.events.models import events

        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(events.c.properties)
                .where(
                    events.c.workspace_id == self.ws,
                    events.c.profile_id == self.pid(user),
                    events.c.event == name,
                )
                .order_by(events.c.id)
            )
            return [dict(r.properties or {}) for r in rows]


def duration(text: str) -> timedelta:
    """A duration as the journeys write it, or several run together: "1h59m" = 1 h + 59 min."""
    from lifeloop.journeys.definition import parse_duration

    parts = re.findall(r"\d+[smhdw]", text)
    assert parts and "".join(parts) == text, f"not a duration: {text!r}"
    return sum((parse_duration(p) for p in parts), timedelta())


# A case's script, as data: each act is called with the World. ---------------------------------------
Act = Callable[[World], None]


@dataclass(frozen=True)
class Send:
    user: str
    event: str
    properties: dict[str, Any] = field(default_factory=dict)

    def __call__(self, world: World) -> None:
        world.send(self.user, self.event, self.properties)


@dataclass(frozen=True)
class SendAll:
    """The same event of many users, in one batch."""

    users: tuple[str, ...]
    event: str

    def __call__(self, world: World) -> None:
        world.send_all(self.users, self.event)


@dataclass(frozen=True)
class Identify:
    user: str
    traits: dict[str, Any] = field(default_factory=dict)
    timezone: str | None = None

    def __call__(self, world: World) -> None:
        world.identify(self.user, self.traits, timezone=self.timezone)


@dataclass(frozen=True)
class Move:
    """Move the clock by a duration ("1h") and let the workers do what is due."""

    by: str

    def __call__(self, world: World) -> None:
        world.move(self.by)


@dataclass(frozen=True)
class MoveTo:
    """Move the clock to a moment and let the workers do what is due."""

    at: datetime

    def __call__(self, world: World) -> None:
        assert self.at >= world.now, "the clock only moves forward"
        world.move(self.at - world.now)


@dataclass(frozen=True)
class Tag:
    user: str
    tag: str

    def __call__(self, world: World) -> None:
        world.tag(self.user, self.tag)


@dataclass(frozen=True)
class Untag:
    user: str
    tag: str

    def __call__(self, world: World) -> None:
        world.untag(self.user, self.tag)


@dataclass(frozen=True)
class Enter:
    """A manual entry of users (or a segment's members) under an idempotency key."""

    journey: str
    users: tuple[str, ...] | None = None
    segment: str | None = None
    key: str = "request-1"
    entered: int | None = None  # how many the request should enter

    def __call__(self, world: World) -> None:
        users = None if self.users is None else list(self.users)
        count = world.enter(self.journey, users, segment=self.segment, key=self.key)
        if self.entered is not None:
            assert count == self.entered, f"{self} entered {count}"


@dataclass(frozen=True)
class Expect:
    """A check on the way: the sends so far (user, channel, template; in any order: runs due at the same
    moment may be advanced in any order) and some users' run states."""

    sends: list[tuple[str, str, str]] | None = None
    state: dict[str, list[tuple[str, str | None, str | None]]] = field(default_factory=dict)

    def __call__(self, world: World) -> None:
        at = f"{world.now:%Y-%m-%d %H:%M}Z"
        if self.sends is not None:
            sends = sorted(world.sends())
            assert sends == sorted(self.sends), f"at {at}: sent {sends}, not {sorted(self.sends)}"
        for user, runs in self.state.items():
            state = world.state(user)
            assert state == runs, f"{user} at {at}: {state}, not {runs}"
