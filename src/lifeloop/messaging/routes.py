"""REST: test messages, deliveries, consent per channel, the contact policy."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Header, Query, Response
from pydantic import BaseModel, Field

from lifeloop.messaging import service
from lifeloop.messaging.models import OutboxEntry
from lifeloop.messaging.policy import ContactPolicy
from lifeloop.store.engine import transaction
from lifeloop.web.deps import Conn, CurrentGrant, EngineDep, require_role

router = APIRouter(prefix="/api/v1", tags=["messaging"])
WRITERS = ("admin", "operator")


class TestMessageCreate(BaseModel):
    channel: Literal["line", "wecom", "wechat", "email", "sms", "webhook"]
    profile_id: int | None = Field(None, description="Send to this profile's address on the channel …")
    recipient: str | None = Field(None, max_length=512, description="… or to this address (URL for webhook).")
    content: dict[str, Any] = Field(description='The rendered message, e.g. {"text": "hello"}.')
    transactional: bool = Field(True, description="Test messages skip caps and quiet hours unless false.")
    idempotency_key: str | None = Field(None, max_length=255)


class AttemptOut(BaseModel):
    attempt: int
    worker_id: str
    status: str
    provider_message_id: str | None
    retry_after: float | None
    reason: str | None
    started_at: datetime
    finished_at: datetime


class DeliveryOut(BaseModel):
    id: int
    profile_id: int | None
    channel: str
    recipient: str | None
    template: str | None
    content: dict[str, Any]
    idempotency_key: str
    transactional: bool
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    provider_message_id: str | None
    fallback_of: int | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None
    attempt_log: list[AttemptOut] | None = None

    @classmethod
    def of(cls, entry: OutboxEntry, attempts: list[dict[str, Any]] | None = None) -> DeliveryOut:
        data = service.delivery_dict(entry)
        return cls(**data, attempt_log=[AttemptOut(**a) for a in attempts] if attempts is not None else None)


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None


class ConsentUpdate(BaseModel):
    status: Literal["subscribed", "unsubscribed"]
    source: str = Field("api", min_length=1, max_length=100)


class ConsentOut(BaseModel):
    profile_id: int
    channel: str
    status: str
    source: str
    updated_at: datetime


@router.post("/messages/test", response_model=DeliveryOut, status_code=202)
def send_test_message(
    body: TestMessageCreate,
    engine: EngineDep,
    grant: CurrentGrant,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> DeliveryOut:
    """Queue a message to a profile or an address; the delivery worker sends it. Repeating the request
    with the same ``Idempotency-Key`` returns the same delivery (200) instead of sending twice."""
    require_role(grant, *WRITERS)
    entry, created = transaction(
        engine,
        lambda conn: service.send_message(
            conn,
            grant.workspace_id,
            channel=body.channel,
            content=body.content,
            profile_id=body.profile_id,
            recipient=body.recipient,
            template="test",
            transactional=body.transactional,
            optimize_send_time=False,
            idempotency_key=idempotency_key or body.idempotency_key,
        ),
    )
    if not created:
        response.status_code = 200
    return DeliveryOut.of(entry)


@router.get("/deliveries", response_model=DeliveryPage)
def list_deliveries(
    conn: Conn,
    grant: CurrentGrant,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
    status: str | None = None,
    channel: str | None = None,
    profile_id: int | None = None,
) -> DeliveryPage:
    """Deliveries newest first, filtered by status, channel or profile; pass ``next_cursor`` back."""
    entries, next_cursor = service.list_deliveries(
        conn,
        grant.workspace_id,
        limit=limit,
        cursor=cursor,
        status=status,
        channel=channel,
        profile_id=profile_id,
    )
    return DeliveryPage(items=[DeliveryOut.of(e) for e in entries], next_cursor=next_cursor)


@router.get("/deliveries/{delivery_id}", response_model=DeliveryOut)
def get_delivery(delivery_id: int, conn: Conn, grant: CurrentGrant) -> DeliveryOut:
    """One delivery with every attempt to send it."""
    entry, attempts = service.get_delivery(conn, grant.workspace_id, delivery_id)
    return DeliveryOut.of(entry, attempts)


@router.get("/profiles/{profile_id}/consent", response_model=list[ConsentOut])
def list_consent(profile_id: int, conn: Conn, grant: CurrentGrant) -> list[ConsentOut]:
    """Recorded consent per channel (a channel not listed has had no subscribe or unsubscribe)."""
    return [ConsentOut(**_consent(c)) for c in service.list_consents(conn, grant.workspace_id, profile_id)]


def _consent(c: service.Consent) -> dict[str, Any]:
    return asdict(c)


@router.put("/profiles/{profile_id}/consent/{channel}", response_model=ConsentOut)
def put_consent(
    profile_id: int, channel: str, body: ConsentUpdate, engine: EngineDep, grant: CurrentGrant
) -> ConsentOut:
    """Subscribe or unsubscribe a profile on one channel; sends after this see it."""
    require_role(grant, *WRITERS)
    consent = transaction(
        engine,
        lambda conn: service.set_consent(
            conn, grant.workspace_id, profile_id, channel, status=body.status, source=body.source
        ),
    )
    return ConsentOut(**_consent(consent))


@router.get("/contact-policy", response_model=ContactPolicy)
def get_contact_policy(conn: Conn, grant: CurrentGrant) -> ContactPolicy:
    """The workspace's contact policy, with the seed-004 defaults for everything not changed."""
    return service.load_policy(conn, grant.workspace_id)


@router.put("/contact-policy", response_model=ContactPolicy)
def put_contact_policy(
    engine: EngineDep, grant: CurrentGrant, changes: Annotated[dict[str, Any], Body()]
) -> ContactPolicy:
    """Change fields of the policy (each given field replaces its value); an invalid change stores nothing."""
    require_role(grant, "admin")
    return transaction(engine, lambda conn: service.update_policy(conn, grant.workspace_id, changes))
