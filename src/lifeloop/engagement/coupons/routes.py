"""REST: /api/v1/coupons — templates, issuing and redeeming (with an ``Idempotency-Key``), a customer's
coupons."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from pydantic import BaseModel, Field
from sqlalchemy import Connection

from lifeloop.engagement.coupons import service, templates
from lifeloop.errors import InvalidInput
from lifeloop.store.engine import transaction
from lifeloop.store.schema import utcnow
from lifeloop.web.deps import Conn, CurrentGrant, EngineDep, require_role

router = APIRouter(prefix="/api/v1/coupons", tags=["coupons"])

WRITERS = ("admin", "operator")
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key", description="Required: a retry with the same key returns the first result."
    ),
]


class TemplateFields(BaseModel):
    name: str | None = None
    valid_from: datetime | None = Field(None, description="Absolute validity: from (with a zone offset).")
    valid_until: datetime | None = Field(None, description="Absolute validity: until (with a zone offset).")
    valid_days: int | None = Field(
        None, description="Relative validity: N days from issue, in the workspace's zone."
    )
    starts_after_days: int | None = Field(
        None, description="Relative validity: the first valid day, M days after issue."
    )
    per_user_limit: int | None = Field(
        None, description="Coupons of this template one customer can be issued."
    )
    total_limit: int | None = Field(None, description="Coupons of this template that can be issued in all.")


class TemplateCreate(TemplateFields):
    key: str = Field(description="Lower-case letters, digits, _ or -; unique in the workspace.")
    kind: str = Field(description="fixed, percent, threshold, free_shipping or gift")
    value: float | None = Field(None, description="fixed / threshold: amount off; percent: percentage off.")
    max_discount: float | None = Field(None, description="percent: the most it takes off.")
    threshold: float | None = Field(None, description="The order total it needs (required for threshold).")
    gift: str | None = Field(None, description="gift: the gift item's name.")
    code_mode: str = Field("unique", description="unique (a code per coupon) or shared (one code for all)")
    shared_code: str | None = Field(None, description="shared: the code customers type.")


class IssueBody(BaseModel):
    template: str
    profile_id: int | None = None
    user_id: str | None = None


class RedeemBody(BaseModel):
    code: str
    profile_id: int | None = None
    user_id: str | None = None
    order_id: str | None = None
    order_total: float | None = Field(None, description="The order's total before this coupon's discount.")


def _key(header: str | None) -> str:
    if header is None or not header.strip():
        raise InvalidInput(
            "an Idempotency-Key header is required: a retry with it changes nothing", field="Idempotency-Key"
        )
    return header.strip()


@router.post("/templates", status_code=201)
def create_template(body: TemplateCreate, engine: EngineDep, grant: CurrentGrant) -> dict[str, Any]:
    require_role(grant, *WRITERS)
    spec = body.model_dump(exclude={"key"}, exclude_none=True)
    with engine.begin() as conn:
        template = templates.create_template(conn, grant.workspace_id, body.key, spec, now=utcnow())
    return template.as_dict()


@router.get("/templates")
def list_templates(conn: Conn, grant: CurrentGrant, status: str | None = None) -> list[dict[str, Any]]:
    return [t.as_dict() for t in templates.list_templates(conn, grant.workspace_id, status=status)]


@router.get("/templates/{key}")
def get_template(key: str, conn: Conn, grant: CurrentGrant) -> dict[str, Any]:
    return templates.get_template(conn, grant.workspace_id, key).as_dict()


@router.patch("/templates/{key}")
def update_template(key: str, body: TemplateFields, engine: EngineDep, grant: CurrentGrant) -> dict[str, Any]:
    """Change a template's name, validity or limits; they apply to the coupons issued from now on."""
    require_role(grant, *WRITERS)
    changes = body.model_dump(exclude_unset=True)
    with engine.begin() as conn:
        return templates.update_template(conn, grant.workspace_id, key, changes, now=utcnow()).as_dict()


@router.post("/templates/{key}/archive")
def archive_template(key: str, engine: EngineDep, grant: CurrentGrant) -> dict[str, Any]:
    """Stop issuing and redeeming its coupons."""
    require_role(grant, *WRITERS)
    with engine.begin() as conn:
        return templates.archive_template(conn, grant.workspace_id, key, now=utcnow()).as_dict()


@router.post("/issue")
def issue(
    body: IssueBody, engine: EngineDep, grant: CurrentGrant, idempotency_key: IdempotencyKey = None
) -> dict[str, Any]:
    """Issue a coupon of a template to a customer (by profile_id or user_id)."""
    require_role(grant, *WRITERS)
    key = _key(idempotency_key)

    def work(conn: Connection) -> dict[str, Any]:
        pid = service.customer(conn, grant.workspace_id, profile_id=body.profile_id, user_id=body.user_id)
        coupon = service.issue_coupon(conn, grant.workspace_id, pid, body.template, key=key, now=utcnow())
        return coupon.as_dict()

    return transaction(engine, work)


@router.post("/redeem")
def redeem(
    body: RedeemBody, engine: EngineDep, grant: CurrentGrant, idempotency_key: IdempotencyKey = None
) -> dict[str, Any]:
    """Redeem a customer's coupon by its code, once; refusals say why (``code`` coupon_expired,
    coupon_redeemed, coupon_below_threshold…)."""
    require_role(grant, *WRITERS)
    key = _key(idempotency_key)

    def work(conn: Connection) -> dict[str, Any]:
        pid = service.customer(conn, grant.workspace_id, profile_id=body.profile_id, user_id=body.user_id)
        redemption = service.redeem_coupon(
            conn,
            grant.workspace_id,
            body.code,
            profile_id=pid,
            key=key,
            now=utcnow(),
            order_id=body.order_id,
            order_total=body.order_total,
        )
        return redemption.as_dict()

    return transaction(engine, work)


@router.get("")
def customer_coupons(
    conn: Conn,
    grant: CurrentGrant,
    profile_id: Annotated[int | None, Query(description="The customer's profile id.")] = None,
    user_id: Annotated[str | None, Query(description="Or the customer's user id.")] = None,
) -> list[dict[str, Any]]:
    """A customer's coupons, newest first, with their status now."""
    pid = service.customer(conn, grant.workspace_id, profile_id=profile_id, user_id=user_id)
    return [c.as_dict() for c in service.coupons_of(conn, grant.workspace_id, pid, now=utcnow())]
