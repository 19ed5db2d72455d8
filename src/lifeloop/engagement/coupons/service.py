"""Issuing, redeeming and reading coupons; the functions other parts and the journey engine call.

Both money-like operations take an idempotency key: the same key again returns the first result and
changes nothing. Concurrency: issues of one template take turns on the template's row (``FOR UPDATE``),
so its total and per-customer limits hold; a redemption is a conditional ``UPDATE … WHERE status =
'issued'`` plus a redemption row unique per coupon, so a coupon is redeemed once whatever the race.
SQLite has one writer at a time and needs neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import Connection, Table, and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from lifeloop.engagement.coupons.codes import as_unique, new_unique_code, shown_unique, typed
from lifeloop.engagement.coupons.models import coupon_redemptions, coupon_templates, coupons
from lifeloop.engagement.coupons.templates import CouponTemplate, get_template, money
from lifeloop.engagement.events import record_event
from lifeloop.errors import Conflict, InvalidInput, NotFound
from lifeloop.profiles.models import profiles
from lifeloop.store.rows import IN_CHUNK

ISSUED, REDEEMED, EXPIRED = "issued", "redeemed", "expired"


class CouponRefused(Conflict):
    """A coupon that exists but cannot be issued or redeemed now; ``code`` names the reason
    (``coupon_expired``, ``coupon_redeemed``, ``coupon_below_threshold``, ``coupon_limit_reached``…)."""

    def __init__(self, reason: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.reason = reason
        self.code = f"coupon_{reason}"


@dataclass(frozen=True, slots=True)
class IssuedCoupon:
    id: int
    template: str
    name: str
    kind: str
    value: float | None
    max_discount: float | None
    threshold: float | None
    gift: str | None
    profile_id: int
    code: str
    status: str  # issued, redeemed or expired, as of the moment it was read
    source: str
    issued_at: datetime
    starts_at: datetime
    expires_at: datetime | None
    redeemed_at: datetime | None
    expired_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def event_properties(self) -> dict[str, Any]:
        return {
            "template": self.template,
            "code": self.code,
            "coupon_id": self.id,
            "kind": self.kind,
            "value": self.value,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
        }


@dataclass(frozen=True, slots=True)
class Redemption:
    id: int
    coupon: IssuedCoupon
    profile_id: int
    order_id: str | None
    order_total: float | None
    discount: float | None
    redeemed_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- reading -----------------------------------------------------------------------------------------

_COUPON_COLUMNS = (
    coupons.c.id,
    coupons.c.profile_id,
    coupons.c.unique_code,
    coupons.c.status,
    coupons.c.issue_key,
    coupons.c.source,
    coupons.c.issued_at,
    coupons.c.starts_at,
    coupons.c.expires_at,
    coupons.c.redeemed_at,
    coupons.c.expired_at,
    coupon_templates.c.key.label("template"),
    coupon_templates.c.name,
    coupon_templates.c.kind,
    coupon_templates.c.value,
    coupon_templates.c.max_discount,
    coupon_templates.c.threshold,
    coupon_templates.c.gift,
    coupon_templates.c.shared_code,
)


def _coupon_query(workspace_id: int) -> Any:
    joined = coupons.join(
        coupon_templates,
        and_(coupon_templates.c.id == coupons.c.template_id, coupon_templates.c.workspace_id == workspace_id),
    )
    return select(*_COUPON_COLUMNS).select_from(joined).where(coupons.c.workspace_id == workspace_id)


def _coupon_of(row: Any, now: datetime | None = None) -> IssuedCoupon:
    status = row.status
    if status == ISSUED and now is not None and row.expires_at is not None and row.expires_at <= now:
        status = EXPIRED  # past its end; the sweep has not come by yet
    return IssuedCoupon(
        id=row.id,
        template=row.template,
        name=row.name,
        kind=row.kind,
        value=row.value,
        max_discount=row.max_discount,
        threshold=row.threshold,
        gift=row.gift,
        profile_id=row.profile_id,
        code=shown_unique(row.unique_code) if row.unique_code else row.shared_code,
        status=status,
        source=row.source,
        issued_at=row.issued_at,
        starts_at=row.starts_at,
        expires_at=row.expires_at,
        redeemed_at=row.redeemed_at,
        expired_at=row.expired_at,
    )


def get_coupon(
    conn: Connection, workspace_id: int, coupon_id: int, *, now: datetime | None = None
) -> IssuedCoupon:
    row = conn.execute(_coupon_query(workspace_id).where(coupons.c.id == coupon_id)).first()
    if row is None:
        raise NotFound(f"no coupon {coupon_id} in this workspace")
    return _coupon_of(row, now)


def survivor(conn: Connection, workspace_id: int, profile_id: int) -> int:
    """The profile that holds ``profile_id``'s coupons now (itself, or the one it was merged into)."""
    row = conn.execute(
        select(profiles.c.id, profiles.c.merged_into).where(
            profiles.c.workspace_id == workspace_id, profiles.c.id == profile_id
        )
    ).first()
    if row is None:
        raise NotFound(f"no profile {profile_id} in this workspace", field="profile_id")
    return int(row.merged_into or row.id)


def customer(conn: Connection, workspace_id: int, *, profile_id: int | None, user_id: str | None) -> int:
    """The profile a request means, named by its id or by its user id (as ``/api/v1/profiles`` does)."""
    if (profile_id is None) == (user_id is None):
        raise InvalidInput("name the customer by profile_id or by user_id (one of them)", field="profile_id")
    if user_id is not None:
        from lifeloop.profiles.service import find_by_identity

        return find_by_identity(conn, workspace_id, "user_id", user_id)
    assert profile_id is not None
    return survivor(conn, workspace_id, profile_id)


def _holders(conn: Connection, workspace_id: int, profile_id: int) -> list[int]:
    """A surviving profile and the profiles merged into it: coupons stay on the id they were issued to."""
    merged = conn.execute(
        select(profiles.c.id).where(
            profiles.c.workspace_id == workspace_id, profiles.c.merged_into == profile_id
        )
    ).scalars()
    return [profile_id, *merged]


def coupons_of(conn: Connection, workspace_id: int, profile_id: int, *, now: datetime) -> list[IssuedCoupon]:
    """A customer's coupons, newest first, each with its status at ``now``."""
    holders = _holders(conn, workspace_id, survivor(conn, workspace_id, profile_id))
    rows = conn.execute(
        _coupon_query(workspace_id).where(coupons.c.profile_id.in_(holders)).order_by(coupons.c.id.desc())
    )
    return [_coupon_of(r, now) for r in rows]


def unused_coupons(
    conn: Connection,
    workspace_id: int,
    profile_ids: Sequence[int],
    *,
    now: datetime,
    template_key: str | None = None,
) -> dict[int, int]:
    """How many issued, unexpired, unredeemed coupons each profile holds (of one template if given);
    every asked profile is in the answer, a profile merged into another counting for the survivor."""
    counts = dict.fromkeys(profile_ids, 0)
    owner = func.coalesce(profiles.c.merged_into, profiles.c.id)
    for start in range(0, len(profile_ids), IN_CHUNK):
        chunk = list(profile_ids[start : start + IN_CHUNK])
        joined = coupons.join(
            profiles, and_(profiles.c.id == coupons.c.profile_id, profiles.c.workspace_id == workspace_id)
        ).join(
            coupon_templates,
            and_(
                coupon_templates.c.id == coupons.c.template_id,
                coupon_templates.c.workspace_id == workspace_id,
            ),
        )
        query = (
            select(owner.label("owner"), func.count())
            .select_from(joined)
            .where(
                coupons.c.workspace_id == workspace_id,
                coupons.c.status == ISSUED,
                or_(coupons.c.expires_at.is_(None), coupons.c.expires_at > now),
                or_(profiles.c.id.in_(chunk), profiles.c.merged_into.in_(chunk)),
            )
            .group_by(owner)
        )
        if template_key is not None:
            query = query.where(coupon_templates.c.key == template_key)
        for row in conn.execute(query):
            if row.owner in counts:
                counts[row.owner] += row[1]
    return counts


# --- issuing -----------------------------------------------------------------------------------------


def _insert_once(conn: Connection, table: Table, values: dict[str, Any]) -> Any:
    """Insert a row unless it breaks a unique constraint; the new row's id, or None."""
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = dialect_insert(table).values(values).on_conflict_do_nothing().returning(table.c.id)
    return conn.execute(statement).scalar()


def _zone(conn: Connection, workspace_id: int) -> Any:
    from lifeloop.messaging.policy import zone
    from lifeloop.workspaces.service import get_workspace

    return zone(get_workspace(conn, workspace_id).timezone)


def validity_window(
    conn: Connection, workspace_id: int, template: CouponTemplate, now: datetime
) -> tuple[datetime, datetime | None]:
    """When a coupon issued at ``now`` starts and ends.

    Relative validity counts calendar days in the workspace's zone: ``valid_days`` N lasts through the
    N-th day counting the first valid day (1 day: until midnight tonight); ``starts_after_days`` M makes
    the first valid day M days after the issue day, from its midnight."""
    if template.valid_days is None:
        starts = max(now, template.valid_from) if template.valid_from else now
        return starts, template.valid_until
    tz = _zone(conn, workspace_id)
    local = now.astimezone(tz)
    after = template.starts_after_days or 0

    def midnight(days: int) -> datetime:
        day = local.date() + timedelta(days=days)
        return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(now.tzinfo)

    starts = midnight(after) if after else now
    return starts, midnight(after + template.valid_days)


def _by_issue_key(conn: Connection, workspace_id: int, key: str) -> Any:
    return conn.execute(
        _coupon_query(workspace_id).where(coupons.c.issue_key == key).add_columns(coupons.c.template_id)
    ).first()


def _replay_issue(row: Any, template_key: str, holders: list[int]) -> IssuedCoupon:
    if row.template != template_key or row.profile_id not in holders:
        raise Conflict(
            f"idempotency key {row.issue_key!r} was used to issue {row.template!r} "
            f"to profile {row.profile_id}",
            field="key",
        )
    return _coupon_of(row)


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not key.strip() or len(key.strip()) > 255:
        raise InvalidInput("an idempotency key of 1-255 characters is required", field="key")
    return key.strip()


def issue_coupon(
    conn: Connection,
    workspace_id: int,
    profile_id: int,
    template_key: str,
    *,
    key: str,
    now: datetime,
    source: str = "api",
) -> IssuedCoupon:
    """Issue one coupon of a template to a customer and record ``Coupon Issued``; the same ``key``
    again returns the coupon it issued and changes nothing.

    Refused (``CouponRefused``) when the template is archived, its absolute validity has ended, or the
    customer's or the total limit is reached; ``NotFound`` for an unknown template or profile."""
    key = _check_key(key)
    pid = survivor(conn, workspace_id, profile_id)
    holders = _holders(conn, workspace_id, pid)
    existing = _by_issue_key(conn, workspace_id, key)
    if existing is not None:
        return _replay_issue(existing, template_key, holders)
    template = get_template(conn, workspace_id, template_key, for_update=True)
    # The lock is ours: a request with the same key that was waiting on it now sees our coupon.
    existing = _by_issue_key(conn, workspace_id, key)
    if existing is not None:
        return _replay_issue(existing, template_key, holders)
    if template.status != "active":
        raise CouponRefused("archived", f"coupon template {template.key!r} is archived", field="template")
    if template.valid_until is not None and template.valid_until <= now:
        raise CouponRefused(
            "expired",
            f"coupon template {template.key!r} ended on {template.valid_until:%Y-%m-%d}",
            field="template",
        )
    if template.total_limit is not None and template.issued_count >= template.total_limit:
        raise CouponRefused(
            "limit_reached",
            f"all {template.total_limit} coupons of {template.key!r} are issued",
            field="template",
        )
    if template.per_user_limit is not None:
        held = conn.execute(
            select(func.count()).where(
                coupons.c.workspace_id == workspace_id,
                coupons.c.template_id == template.id,
                coupons.c.profile_id.in_(holders),
            )
        ).scalar_one()
        if held >= template.per_user_limit:
            raise CouponRefused(
                "limit_reached",
                f"profile {pid} already holds {held} of {template.key!r} "
                f"(at most {template.per_user_limit} each)",
                field="template",
            )
    starts_at, expires_at = validity_window(conn, workspace_id, template, now)
    values = {
        "workspace_id": workspace_id,
        "template_id": template.id,
        "profile_id": pid,
        "status": ISSUED,
        "issue_key": key,
        "source": source[:64],
        "issued_at": now,
        "starts_at": starts_at,
        "expires_at": expires_at,
    }
    coupon_id = None
    for _attempt in range(5):  # a unique code can collide (60 random bits): draw again
        if template.code_mode == "unique":
            values["unique_code"] = new_unique_code()
        coupon_id = _insert_once(conn, coupons, values)
        if coupon_id is not None:
            break
        existing = _by_issue_key(conn, workspace_id, key)
        if existing is not None:  # the key was taken meanwhile, by an issue of another template
            return _replay_issue(existing, template_key, holders)
    if coupon_id is None:
        raise AssertionError("five unique coupon codes in a row were taken")
    conn.execute(
        update(coupon_templates)
        .where(coupon_templates.c.workspace_id == workspace_id, coupon_templates.c.id == template.id)
        .values(issued_count=coupon_templates.c.issued_count + 1)
    )
    coupon = get_coupon(conn, workspace_id, coupon_id)
    record_event(
        conn,
        workspace_id,
        pid,
        "Coupon Issued",
        {**coupon.event_properties(), "source": coupon.source},
        at=now,
        key=f"coupon-issued:{coupon.id}",
    )
    return coupon


# --- redeeming ---------------------------------------------------------------------------------------


def discount_of(coupon: IssuedCoupon, order_total: float | None) -> float | None:
    """What the coupon takes off an order (None for free shipping, a gift, or a percentage of an
    order whose total is unknown)."""
    if coupon.kind in ("fixed", "threshold") and coupon.value is not None:
        off = Decimal(str(coupon.value))
        if order_total is not None:
            off = min(off, Decimal(str(order_total)))
    elif coupon.kind == "percent" and coupon.value is not None and order_total is not None:
        off = Decimal(str(order_total)) * Decimal(str(coupon.value)) / 100
        if coupon.max_discount is not None:
            off = min(off, Decimal(str(coupon.max_discount)))
    else:
        return None
    return float(off.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def _find_for_redemption(
    conn: Connection, workspace_id: int, code: str, holders: list[int], now: datetime
) -> Any:
    """The coupon a customer means by a typed code: a unique code's coupon, or for a shared code the
    customer's own coupon of that template (the one ending soonest that can be used now)."""
    if not isinstance(code, str) or not typed(code):
        raise InvalidInput("a coupon code is required", field="code")
    shared = conn.execute(
        select(coupon_templates.c.id).where(
            coupon_templates.c.workspace_id == workspace_id, coupon_templates.c.shared_code == typed(code)
        )
    ).first()
    if shared is None:
        row = conn.execute(
            _coupon_query(workspace_id).where(coupons.c.unique_code == as_unique(code))
        ).first()
        if row is None or row.profile_id not in holders:
            raise NotFound(f"this customer holds no coupon with the code {code!r}", field="code")
        return row
    mine = list(
        conn.execute(
            _coupon_query(workspace_id).where(
                coupons.c.template_id == shared.id, coupons.c.profile_id.in_(holders)
            )
        )
    )
    if not mine:
        raise NotFound(f"this customer holds no coupon with the code {code!r}", field="code")

    def usable_first(row: Any) -> tuple[int, datetime, int]:
        usable = (
            row.status == ISSUED and row.starts_at <= now and (row.expires_at is None or row.expires_at > now)
        )
        far = datetime.max.replace(tzinfo=now.tzinfo)
        return (0 if usable else 1 if row.status == ISSUED else 2, row.expires_at or far, row.id)

    return min(mine, key=usable_first)


def _refuse_unusable(row: Any, template_status: str, now: datetime, order_total: float | None) -> None:
    code = shown_unique(row.unique_code) if row.unique_code else row.shared_code
    if row.status == REDEEMED:
        raise CouponRefused("redeemed", f"coupon {code} was already redeemed on {row.redeemed_at:%Y-%m-%d}")
    if row.status == EXPIRED or (row.expires_at is not None and row.expires_at <= now):
        raise CouponRefused("expired", f"coupon {code} expired on {row.expires_at:%Y-%m-%d %H:%M} UTC")
    if row.starts_at > now:
        raise CouponRefused(
            "not_started", f"coupon {code} can be used from {row.starts_at:%Y-%m-%d %H:%M} UTC"
        )
    if template_status != "active":
        raise CouponRefused("archived", f"coupon {code}'s template {row.template!r} is archived")
    if row.threshold is not None:
        if order_total is None:
            raise InvalidInput(f"coupon {code} needs the order's total (order_total)", field="order_total")
        if order_total < row.threshold:
            raise CouponRefused(
                "below_threshold",
                f"coupon {code} needs an order of at least {row.threshold:g}; this one is {order_total:g}",
                field="order_total",
            )


def _by_redemption_key(conn: Connection, workspace_id: int, key: str) -> Any:
    return conn.execute(
        select(coupon_redemptions).where(
            coupon_redemptions.c.workspace_id == workspace_id, coupon_redemptions.c.key == key
        )
    ).first()


def _redemption_of(conn: Connection, workspace_id: int, row: Any) -> Redemption:
    return Redemption(
        id=row.id,
        coupon=get_coupon(conn, workspace_id, row.coupon_id),
        profile_id=row.profile_id,
        order_id=row.order_id,
        order_total=row.order_total,
        discount=row.discount,
        redeemed_at=row.redeemed_at,
    )


def _replay_redemption(
    conn: Connection, workspace_id: int, row: Any, code: str, holders: list[int]
) -> Redemption:
    redemption = _redemption_of(conn, workspace_id, row)
    same_code = typed(redemption.coupon.code) in (typed(code), as_unique(code))
    if row.profile_id not in holders or not same_code:
        raise Conflict(f"idempotency key {row.key!r} was used for another redemption", field="key")
    return redemption


def redeem_coupon(
    conn: Connection,
    workspace_id: int,
    code: str,
    *,
    profile_id: int,
    key: str,
    now: datetime,
    order_id: str | None = None,
    order_total: float | None = None,
) -> Redemption:
    """Redeem a customer's coupon by its code, once ever, and record ``Coupon Redeemed``; the same
    ``key`` again returns the first redemption and changes nothing.

    Refused (``CouponRefused``, nothing changed) when it was redeemed, has expired, has not started,
    its template is archived, or the order is below its threshold; ``NotFound`` when the customer holds
    no coupon with that code."""
    key = _check_key(key)
    total = money(order_total, "order_total", allow_zero=True)
    if order_id is not None and (not isinstance(order_id, str) or len(order_id) > 255):
        raise InvalidInput("order_id is a text of at most 255 characters", field="order_id")
    holders = _holders(conn, workspace_id, survivor(conn, workspace_id, profile_id))
    done = _by_redemption_key(conn, workspace_id, key)
    if done is not None:
        return _replay_redemption(conn, workspace_id, done, code, holders)
    row = _find_for_redemption(conn, workspace_id, code, holders, now)
    template_status = conn.execute(
        select(coupon_templates.c.status).where(
            coupon_templates.c.workspace_id == workspace_id, coupon_templates.c.key == row.template
        )
    ).scalar_one()
    _refuse_unusable(row, template_status, now, total)
    claimed = conn.execute(
        update(coupons)
        .where(coupons.c.workspace_id == workspace_id, coupons.c.id == row.id, coupons.c.status == ISSUED)
        .values(status=REDEEMED, redeemed_at=now)
    ).rowcount
    if claimed != 1:
        # Another transaction redeemed it first. If it was this very request (same key), answer with it.
        done = _by_redemption_key(conn, workspace_id, key)
        if done is not None:
            return _replay_redemption(conn, workspace_id, done, code, holders)
        raise CouponRefused("redeemed", f"coupon {_coupon_of(row).code} was already redeemed")
    coupon = _coupon_of(row)
    discount = discount_of(coupon, total)
    redemption_id = _insert_once(
        conn,
        coupon_redemptions,
        {
            "workspace_id": workspace_id,
            "coupon_id": row.id,
            "key": key,
            "profile_id": row.profile_id,
            "order_id": order_id,
            "order_total": total,
            "discount": discount,
            "redeemed_at": now,
        },
    )
    if redemption_id is None:  # the key is another redemption's, made meanwhile
        raise Conflict(f"idempotency key {key!r} was used for another redemption", field="key")
    redeemed = get_coupon(conn, workspace_id, row.id)
    record_event(
        conn,
        workspace_id,
        row.profile_id,
        "Coupon Redeemed",
        {**redeemed.event_properties(), "order_id": order_id, "order_total": total, "discount": discount},
        at=now,
        key=f"coupon-redeemed:{row.id}",
    )
    return Redemption(
        id=redemption_id,
        coupon=redeemed,
        profile_id=row.profile_id,
        order_id=order_id,
        order_total=total,
        discount=discount,
        redeemed_at=now,
    )


# --- expiring ----------------------------------------------------------------------------------------


def expire_due(conn: Connection, now: datetime, *, limit: int) -> tuple[int, int]:
    """Expire up to ``limit`` issued coupons past their end, across workspaces, each with its
    ``Coupon Expired`` event; (how many were looked at, how many expired)."""
    due = conn.execute(
        select(coupons.c.id, coupons.c.workspace_id)
        .where(coupons.c.status == ISSUED, coupons.c.expires_at <= now)
        .order_by(coupons.c.id)
        .limit(limit)
        .execution_options(cross_workspace=True)
    ).all()
    by_workspace: dict[int, list[int]] = {}
    for row in due:
        by_workspace.setdefault(row.workspace_id, []).append(row.id)
    expired = 0
    for workspace_id, ids in by_workspace.items():
        # Conditional: a coupon redeemed since it was read stays redeemed.
        changed = conn.execute(
            update(coupons)
            .where(
                coupons.c.workspace_id == workspace_id,
                coupons.c.id.in_(ids),
                coupons.c.status == ISSUED,
                coupons.c.expires_at <= now,
            )
            .values(status=EXPIRED, expired_at=now)
            .returning(coupons.c.id)
        ).scalars()
        for coupon_id in sorted(changed):
            coupon = get_coupon(conn, workspace_id, coupon_id)
            record_event(
                conn,
                workspace_id,
                coupon.profile_id,
                "Coupon Expired",
                coupon.event_properties(),
                at=now,
                key=f"coupon-expired:{coupon.id}",
            )
            expired += 1
    return len(due), expired
