"""A brand with a tier programme, driven through the ingest API and the resolver on a moving clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from lifeloop.engagement.coupons.models import coupons
from lifeloop.engagement.coupons.templates import create_template
from lifeloop.engagement.points.ledger import balance
from lifeloop.events.models import events
from lifeloop.profiles.resolver import resolve_pending
from lifeloop.profiles.service import find_by_identity
from tests.conftest import Brand

# 2026-12-07 10:00 in Asia/Taipei (the brand's zone, UTC+8): the day before the member day (the 8th).
NOW = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)


@dataclass
class Shop:
    client: TestClient
    engine: sa.Engine
    brand: Brand
    now: datetime = NOW
    sent: int = 0
    last_message_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ws(self) -> int:
        return self.brand.workspace_id

    def call(self, kind: str, body: dict[str, Any], *, message_id: str | None = None) -> str:
        """One call to the ingest API, then the resolver at the shop's clock."""
        self.sent += 1
        message_id = message_id or f"m-{self.sent}"
        payload = {"messageId": message_id, "timestamp": self.now.isoformat(), **body}
        answer = self.client.post(f"/v1/{kind}", json=payload, auth=self.brand.auth)
        assert answer.status_code == 200, answer.text
        resolve_pending(self.engine, now=self.now)
        self.last_message_id = message_id
        return message_id

    def identify(self, user: str, traits: dict[str, Any] | None = None, **body: Any) -> int:
        self.call("identify", {"userId": user, "traits": traits or {}, **body})
        return self.pid(user)

    def track(self, user: str, event: str, properties: dict[str, Any], **body: Any) -> str:
        return self.call("track", {"userId": user, "event": event, "properties": properties, **body})

    def order(self, user: str, revenue: float, *, message_id: str | None = None, **properties: Any) -> str:
        return self.call(
            "track",
            {"userId": user, "event": "Order Completed", "properties": {"revenue": revenue, **properties}},
            message_id=message_id,
        )

    def template(self, key: str) -> None:
        with self.engine.begin() as conn:
            create_template(
                conn,
                self.ws,
                key,
                {"name": key, "kind": "fixed", "value": 50, "valid_days": 30},
                now=self.now,
            )

    def pid(self, user: str) -> int:
        with self.engine.connect() as conn:
            return find_by_identity(conn, self.ws, "user_id", user)

    def points(self, pid: int) -> int:
        with self.engine.connect() as conn:
            return balance(conn, self.ws, pid, now=self.now)

    def coupons_of(self, pid: int) -> list[str]:
        with self.engine.connect() as conn:
            from lifeloop.engagement.coupons.models import coupon_templates

            rows = conn.execute(
                sa.select(coupon_templates.c.key)
                .select_from(coupons.join(coupon_templates, coupon_templates.c.id == coupons.c.template_id))
                .where(
                    coupons.c.workspace_id == self.ws,
                    coupon_templates.c.workspace_id == self.ws,
                    coupons.c.profile_id == pid,
                )
                .order_by(coupons.c.id)
            )
            return list(rows.scalars())

    def recorded(self, name: str) -> list[tuple[int, dict[str, Any]]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(events.c.profile_id, events.c.properties)
                .where(events.c.workspace_id == self.ws, events.c.event == name)
                .order_by(events.c.id)
            )
            return [(r.profile_id, r.properties) for r in rows]
