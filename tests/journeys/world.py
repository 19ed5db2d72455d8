"""A brand with journeys, driven through the public paths: events ingested and resolved, a moving clock."""

from __future__ import annotations

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

    # Acting ------------------------------------------------------------------------------------
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
        resolve_pending(self.engine)

    def move(self, by: timedelta | str) -> None:
        from lifeloop.journeys.definition import parse_duration

        self.now += parse_duration(by) if isinstance(by, str) else by
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
