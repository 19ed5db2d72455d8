"""Coupon templates: what a coupon gives, how long it lasts, how many may be issued, how it is typed.

A template's terms (kind, value, max discount, threshold, gift, code mode and shared code) are fixed when
it is made: coupons already in customers' hands keep meaning what they meant. Its name, validity and
limits can change and apply to the coupons issued from then on. Archiving stops issuing and redeeming.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from sqlalchemy import Connection, select, update

from lifeloop.engagement.coupons.codes import SHARED_CODE, typed
from lifeloop.engagement.coupons.models import CODE_MODES, KINDS, TEMPLATE_STATUSES, coupon_templates
from lifeloop.errors import Conflict, InvalidInput, NotFound

KEY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MAX_DAYS = 3650
MAX_AMOUNT = Decimal("999999999999.99")


@dataclass(frozen=True, slots=True)
class CouponTemplate:
    id: int
    key: str
    name: str
    kind: str
    value: float | None
    max_discount: float | None
    threshold: float | None
    gift: str | None
    valid_from: datetime | None
    valid_until: datetime | None
    valid_days: int | None
    starts_after_days: int | None
    per_user_limit: int | None
    total_limit: int | None
    issued_count: int
    code_mode: str
    shared_code: str | None
    status: str
    created_at: datetime
    updated_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def template_of(row: Any) -> CouponTemplate:
    return CouponTemplate(**{f.name: getattr(row, f.name) for f in fields(CouponTemplate)})


# --- checks ------------------------------------------------------------------------------------------


def money(value: Any, field: str, *, allow_zero: bool = False) -> float | None:
    """An amount to the cent, refused when it is not a positive number (or zero where allowed)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidInput(f"{field} must be a number", field=field)
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise InvalidInput(f"{field} must be a number", field=field) from None
    if not amount.is_finite() or amount < 0 or (amount == 0 and not allow_zero) or amount > MAX_AMOUNT:
        what = "zero or more" if allow_zero else "more than zero"
        raise InvalidInput(f"{field} must be a number {what}", field=field)
    return float(amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def _count(value: Any, field: str, *, low: int, high: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"{field} must be a whole number from {low} to {high}", field=field)
    return value


def _time(value: Any, field: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidInput(f"{field} must be an ISO 8601 time", field=field) from None
    if not isinstance(value, datetime):
        raise InvalidInput(f"{field} must be an ISO 8601 time", field=field)
    if value.tzinfo is None:
        raise InvalidInput(f"{field} needs a time zone offset, e.g. 2026-12-31T23:59:59+08:00", field=field)
    return value.astimezone(UTC)


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > 200:
        raise InvalidInput("a coupon template's name is 1-200 characters", field="name")
    return value.strip()


def _terms(spec: dict[str, Any]) -> dict[str, Any]:
    """Kind, value, max discount, threshold and gift, checked together."""
    kind = spec.get("kind")
    if kind not in KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(KINDS)}", field="kind")
    value = money(spec.get("value"), "value")
    max_discount = money(spec.get("max_discount"), "max_discount")
    threshold = money(spec.get("threshold"), "threshold")
    gift = spec.get("gift")
    if kind in ("fixed", "percent", "threshold") and value is None:
        raise InvalidInput(f"a {kind} coupon needs a value (the amount or percentage off)", field="value")
    if kind in ("free_shipping", "gift") and value is not None:
        raise InvalidInput(f"a {kind} coupon takes no value", field="value")
    if kind == "percent" and value is not None and value >= 100:
        raise InvalidInput("a percent coupon takes less than 100 % off", field="value")
    if kind != "percent" and max_discount is not None:
        raise InvalidInput("only a percent coupon has a max_discount", field="max_discount")
    if kind == "threshold":
        if threshold is None:
            raise InvalidInput("a threshold coupon needs the order total it applies from", field="threshold")
        if value is not None and value > threshold:
            raise InvalidInput("a threshold coupon cannot take off more than its threshold", field="value")
    if kind == "gift":
        if not isinstance(gift, str) or not gift.strip() or len(gift.strip()) > 200:
            raise InvalidInput("a gift coupon names its gift item (1-200 characters)", field="gift")
        gift = gift.strip()
    elif gift is not None:
        raise InvalidInput("only a gift coupon names a gift item", field="gift")
    return {"kind": kind, "value": value, "max_discount": max_discount, "threshold": threshold, "gift": gift}


def _validity(spec: dict[str, Any]) -> dict[str, Any]:
    """Either absolute (valid_from / valid_until) or relative (valid_days, optionally starts_after_days)."""
    valid_from = _time(spec.get("valid_from"), "valid_from")
    valid_until = _time(spec.get("valid_until"), "valid_until")
    valid_days = _count(spec.get("valid_days"), "valid_days", low=1, high=MAX_DAYS)
    starts_after = _count(spec.get("starts_after_days"), "starts_after_days", low=0, high=MAX_DAYS)
    if valid_days is not None and (valid_from is not None or valid_until is not None):
        raise InvalidInput(
            "validity is either valid_days from issue or valid_from / valid_until, not both",
            field="valid_days",
        )
    if starts_after is not None and valid_days is None:
        raise InvalidInput("starts_after_days goes with valid_days", field="starts_after_days")
    if valid_from is not None and valid_until is not None and valid_until <= valid_from:
        raise InvalidInput("valid_until must be after valid_from", field="valid_until")
    return {
        "valid_from": valid_from,
        "valid_until": valid_until,
        "valid_days": valid_days,
        "starts_after_days": starts_after,
    }


def _limits(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "per_user_limit": _count(spec.get("per_user_limit"), "per_user_limit", low=1, high=1_000_000),
        "total_limit": _count(spec.get("total_limit"), "total_limit", low=1, high=1_000_000_000),
    }


def _code(spec: dict[str, Any]) -> dict[str, Any]:
    mode = spec.get("code_mode", "unique")
    if mode not in CODE_MODES:
        raise InvalidInput(f"code_mode must be one of {', '.join(CODE_MODES)}", field="code_mode")
    shared = spec.get("shared_code")
    if mode == "unique":
        if shared is not None:
            raise InvalidInput("a shared_code goes with code_mode shared", field="shared_code")
        return {"code_mode": mode, "shared_code": None}
    if not isinstance(shared, str) or not SHARED_CODE.match(typed(shared)):
        raise InvalidInput(
            "a shared coupon needs a shared_code of 3-32 letters, digits or _", field="shared_code"
        )
    return {"code_mode": mode, "shared_code": typed(shared)}


_FIELDS = {
    "name", "kind", "value", "max_discount", "threshold", "gift", "valid_from", "valid_until",
    "valid_days", "starts_after_days", "per_user_limit", "total_limit", "code_mode", "shared_code",
}  # fmt: skip
_CHANGEABLE = {"name", "valid_from", "valid_until", "valid_days", "starts_after_days"} | {
    "per_user_limit",
    "total_limit",
}


# --- reading and writing -----------------------------------------------------------------------------


def create_template(
    conn: Connection, workspace_id: int, key: str, spec: dict[str, Any], *, now: datetime
) -> CouponTemplate:
    """A new active template; every field is checked before anything is stored."""
    if not isinstance(key, str) or not KEY.match(key):
        raise InvalidInput("a coupon template key is 1-64 lower-case letters, digits, _ or -", field="key")
    unknown = sorted(set(spec) - _FIELDS)
    if unknown:
        raise InvalidInput(f"unknown field {unknown[0]!r}", field=unknown[0])
    values = {
        "name": _name(spec.get("name", key)),
        **_terms(spec),
        **_validity(spec),
        **_limits(spec),
        **_code(spec),
    }
    taken = conn.execute(
        select(coupon_templates.c.key).where(
            coupon_templates.c.workspace_id == workspace_id, coupon_templates.c.key == key
        )
    ).first()
    if taken is not None:
        raise Conflict(f"a coupon template {key!r} already exists", field="key")
    if values["shared_code"] is not None:
        clash = conn.execute(
            select(coupon_templates.c.key).where(
                coupon_templates.c.workspace_id == workspace_id,
                coupon_templates.c.shared_code == values["shared_code"],
            )
        ).first()
        if clash is not None:
            raise Conflict(
                f"template {clash.key!r} already uses the code {values['shared_code']}", field="shared_code"
            )
    row = conn.execute(
        coupon_templates.insert()
        .values(
            workspace_id=workspace_id,
            key=key,
            issued_count=0,
            status="active",
            created_at=now,
            updated_at=now,
            **values,
        )
        .returning(*coupon_templates.c)
    ).one()
    return template_of(row)


def get_template(
    conn: Connection, workspace_id: int, key: str, *, for_update: bool = False
) -> CouponTemplate:
    """A template by key; ``for_update`` locks its row until commit (issues of one template take turns)."""
    query = select(coupon_templates).where(
        coupon_templates.c.workspace_id == workspace_id, coupon_templates.c.key == key
    )
    row = conn.execute(query.with_for_update() if for_update else query).first()
    if row is None:
        raise NotFound(f"no coupon template {key!r} in this workspace", field="template")
    return template_of(row)


def list_templates(conn: Connection, workspace_id: int, *, status: str | None = None) -> list[CouponTemplate]:
    query = select(coupon_templates).where(coupon_templates.c.workspace_id == workspace_id)
    if status is not None:
        if status not in TEMPLATE_STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(TEMPLATE_STATUSES)}", field="status")
        query = query.where(coupon_templates.c.status == status)
    return [template_of(r) for r in conn.execute(query.order_by(coupon_templates.c.key))]


def update_template(
    conn: Connection, workspace_id: int, key: str, changes: dict[str, Any], *, now: datetime
) -> CouponTemplate:
    """Change a template's name, validity or limits (its terms stay as they were made)."""
    fixed = sorted(set(changes) & (_FIELDS - _CHANGEABLE))
    if fixed:
        raise InvalidInput(
            f"{fixed[0]} cannot change: coupons already issued keep their terms; make a new template",
            field=fixed[0],
        )
    unknown = sorted(set(changes) - _FIELDS)
    if unknown:
        raise InvalidInput(f"unknown field {unknown[0]!r}", field=unknown[0])
    current = get_template(conn, workspace_id, key, for_update=True)
    merged = {**current.as_dict(), **changes}
    if changes.keys() & {"valid_days", "starts_after_days"} and "valid_from" not in changes:
        merged.update(valid_from=None, valid_until=None)  # switching to relative validity
    if changes.keys() & {"valid_from", "valid_until"} and "valid_days" not in changes:
        merged.update(valid_days=None, starts_after_days=None)  # switching to absolute validity
    values: dict[str, Any] = {"name": _name(merged["name"]), **_validity(merged), **_limits(merged)}
    if values["total_limit"] is not None and values["total_limit"] < current.issued_count:
        raise InvalidInput(
            f"total_limit cannot be below the {current.issued_count} coupons already issued",
            field="total_limit",
        )
    row = conn.execute(
        update(coupon_templates)
        .where(coupon_templates.c.workspace_id == workspace_id, coupon_templates.c.id == current.id)
        .values(updated_at=now, **values)
        .returning(*coupon_templates.c)
    ).one()
    return template_of(row)


def archive_template(conn: Connection, workspace_id: int, key: str, *, now: datetime) -> CouponTemplate:
    """Stop issuing and redeeming a template's coupons (they stay in the customers' history)."""
    current = get_template(conn, workspace_id, key, for_update=True)
    row = conn.execute(
        update(coupon_templates)
        .where(coupon_templates.c.workspace_id == workspace_id, coupon_templates.c.id == current.id)
        .values(status="archived", updated_at=now)
        .returning(*coupon_templates.c)
    ).one()
    return template_of(row)
