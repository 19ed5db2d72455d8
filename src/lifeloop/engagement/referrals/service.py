"""Referrals (老带新): each customer's invite code and link, the new customer's attribution when the
code arrives on one of their events, the completion on their first purchase with rewards for both
sides, fraud guards that refuse a referral with a recorded reason, and the referrers' leaderboard.

A referral moves ``joined`` → ``completed`` by one conditional UPDATE, so two first purchases landing
at once reward once; rewards carry keys derived from the referral's id, so a retry gives nothing twice.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from lifeloop.engagement.events import record_event
from lifeloop.engagement.referrals.config import ReferralProgram, Reward, parse_program
from lifeloop.engagement.referrals.models import referral_codes, referral_programs, referrals
from lifeloop.errors import InvalidInput, LifeloopError, NotFound
from lifeloop.events.messages import normalise_identity
from lifeloop.events.models import events
from lifeloop.events.own import savepoint
from lifeloop.profiles.models import identities, profiles
from lifeloop.profiles.service import resolve_profile_id

log = logging.getLogger(__name__)

ORDER_COMPLETED = "Order Completed"
REFERRAL_JOINED = "Referral Joined"
REFERRAL_COMPLETED = "Referral Completed"
REFERRAL_REJECTED = "Referral Rejected"
# No 0/O, 1/I/L: a code read aloud or typed from a poster is not mistaken.
ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LENGTH = 8


# The programme ----------------------------------------------------------------------------------
def set_program(conn: Connection, workspace_id: int, raw: Any, *, now: datetime) -> ReferralProgram:
    """Save the workspace's referral rules (checked first: a wrong field changes nothing)."""
    program = parse_program(raw)
    found = conn.execute(
        update(referral_programs)
        .where(referral_programs.c.workspace_id == workspace_id)
        .values(config=program.source, updated_at=now)
    ).rowcount
    if not found:
        conn.execute(
            insert(referral_programs).values(workspace_id=workspace_id, config=program.source, updated_at=now)
        )
    return program


def get_program(conn: Connection, workspace_id: int) -> ReferralProgram | None:
    config = conn.execute(
        select(referral_programs.c.config).where(referral_programs.c.workspace_id == workspace_id)
    ).scalar()
    return None if config is None else parse_program(config)


def require_program(conn: Connection, workspace_id: int) -> ReferralProgram:
    program = get_program(conn, workspace_id)
    if program is None:
        raise NotFound("this workspace has no referral programme; set one with PUT /api/v1/referrals/program")
    return program


# Codes and links --------------------------------------------------------------------------------
def normalise_code(code: Any) -> str | None:
    """A code as customers may type it (any case, spaces around), or None if it cannot be one."""
    if not isinstance(code, str):
        return None
    text = code.strip().upper()
    return text if len(text) == CODE_LENGTH and all(ch in ALPHABET for ch in text) else None


def _new_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def code_for(conn: Connection, workspace_id: int, profile_id: int, *, now: datetime) -> str:
    """The customer's invite code, made on first asking (one per customer, kept for good)."""
    profile_id = resolve_profile_id(conn, workspace_id, profile_id)
    for _ in range(5):
        existing = conn.execute(
            select(referral_codes.c.code).where(
                referral_codes.c.workspace_id == workspace_id, referral_codes.c.profile_id == profile_id
            )
        ).scalar()
        if existing is not None:
            return str(existing)
        try:
            with conn.begin_nested():  # a code taken meanwhile (or a twin request) is tried again
                code = _new_code()
                conn.execute(
                    insert(referral_codes).values(
                        workspace_id=workspace_id, profile_id=profile_id, code=code, created_at=now
                    )
                )
            return code
        except IntegrityError:
            continue
    raise LifeloopError("could not make a unique referral code")


def link_for(program: ReferralProgram, code: str, public_url: str | None) -> str | None:
    """``{public url}/r/{code}``, or None when no public URL is configured."""
    base = program.public_url or (public_url or "").rstrip("/") or None
    return None if base is None else f"{base}/r/{code}"


def landing_for(conn: Connection, code: str) -> str:
    """Where ``/r/{code}`` sends a browser: the programme's landing URL with ``?ref={code}``."""
    normal = normalise_code(code)
    row = None
    if normal is not None:
        row = conn.execute(
            select(referral_codes.c.workspace_id)
            .where(referral_codes.c.code == normal)
            .execution_options(cross_workspace=True)  # the code is what names the workspace
        ).first()
    program = None if row is None else get_program(conn, row.workspace_id)
    if program is None or normal is None:
        raise NotFound("no such referral code")
    parts = urlsplit(program.landing_url)
    query = "&".join(q for q in (parts.query, urlencode({"ref": normal})) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def _owner_of_code(conn: Connection, workspace_id: int, code: str) -> int | None:
    owner = conn.execute(
        select(referral_codes.c.profile_id).where(
            referral_codes.c.workspace_id == workspace_id, referral_codes.c.code == code
        )
    ).scalar()
    return None if owner is None else resolve_profile_id(conn, workspace_id, int(owner))


# Who a profile is, across merges -------------------------------------------------------------------
def _aliases(conn: Connection, workspace_id: int, profile_id: int) -> list[int]:
    """The live profile and every profile merged into it."""
    merged = conn.execute(
        select(profiles.c.id).where(
            profiles.c.workspace_id == workspace_id, profiles.c.merged_into == profile_id
        )
    ).scalars()
    return [profile_id, *merged]


def _phones(conn: Connection, workspace_id: int, ids: Sequence[int]) -> set[str]:
    found = {
        str(v)
        for v in conn.execute(
            select(identities.c.value).where(
                identities.c.workspace_id == workspace_id,
                identities.c.kind == "phone",
                identities.c.profile_id.in_(list(ids)),
            )
        ).scalars()
    }
    for traits in conn.execute(
        select(profiles.c.traits).where(profiles.c.workspace_id == workspace_id, profiles.c.id.in_(list(ids)))
    ).scalars():
        phone = normalise_identity("phone", (traits or {}).get("phone"))
        if phone:
            found.add(phone)
    return found


def _used_device(conn: Connection, workspace_id: int, ids: Sequence[int], device_id: str) -> bool:
    return (
        conn.execute(
            select(events.c.id)
            .where(
                events.c.workspace_id == workspace_id,
                events.c.profile_id.in_(list(ids)),
                events.c.context[("device", "id")].as_string() == device_id,
            )
            .limit(1)
        ).first()
        is not None
    )


def _used_payment(conn: Connection, workspace_id: int, ids: Sequence[int], fingerprint: str) -> bool:
    return (
        conn.execute(
            select(events.c.id)
            .where(
                events.c.workspace_id == workspace_id,
                events.c.profile_id.in_(list(ids)),
                events.c.type == "track",
                events.c.event == ORDER_COMPLETED,
                events.c.properties["payment_fingerprint"].as_string() == fingerprint,
            )
            .limit(1)
        ).first()
        is not None
    )


def _ordered_before(
    conn: Connection, workspace_id: int, ids: Sequence[int], *, join_message_id: str, joined_at: datetime
) -> bool:
    """Whether the customer had ordered before joining (an existing customer): an order placed before
    the event that carried the code (by the log's order, so an order later in the same batch is not
    "before"), or, for an attribution made by API, an order timed before it."""
    join_event = conn.execute(
        select(events.c.id).where(
            events.c.workspace_id == workspace_id, events.c.message_id == join_message_id
        )
    ).scalar()
    before = events.c.id < join_event if join_event is not None else events.c.timestamp < joined_at
    return (
        conn.execute(
            select(events.c.id)
            .where(
                events.c.workspace_id == workspace_id,
                events.c.profile_id.in_(list(ids)),
                events.c.type == "track",
                events.c.event == ORDER_COMPLETED,
                before,
            )
            .limit(1)
        ).first()
        is not None
    )


def _guard(
    conn: Connection,
    workspace_id: int,
    referrer_id: int,
    referee_id: int,
    *,
    device_id: str | None,
    payment: str | None = None,
) -> str | None:
    """Why this referral must not be rewarded, or None: the referrer referring themself (the same
    profile, or profiles merged into one), the same device, the same phone, the same payment identity."""
    if referrer_id == referee_id:
        return "self_referral"
    referrer = _aliases(conn, workspace_id, referrer_id)
    if device_id and _used_device(conn, workspace_id, referrer, device_id):
        return "same_device"
    if _phones(conn, workspace_id, referrer) & _phones(
        conn, workspace_id, _aliases(conn, workspace_id, referee_id)
    ):
        return "same_phone"
    if payment and _used_payment(conn, workspace_id, referrer, payment):
        return "same_payment"
    return None


# Attribution and completion ---------------------------------------------------------------------
def _referral(conn: Connection, workspace_id: int, referee_ids: Sequence[int]) -> Any:
    return conn.execute(
        select(referrals).where(
            referrals.c.workspace_id == workspace_id, referrals.c.referee_id.in_(list(referee_ids))
        )
    ).first()


def as_dict(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "referee_id": row.referee_id,
        "referrer_id": row.referrer_id,
        "code": row.code,
        "status": row.status,
        "reason": row.reason,
        "joined_at": row.joined_at,
        "completed_at": row.completed_at,
        "rejected_at": row.rejected_at,
    }


def _reward(
    conn: Connection,
    workspace_id: int,
    profile_id: int,
    reward: Reward,
    *,
    referral_id: int,
    side: str,
    now: datetime,
) -> dict[str, Any]:
    """Give one side its reward once per key: points, and a coupon in a savepoint (a template gone or
    used up is logged and skipped rather than refusing the purchase that earned it)."""
    key = f"referral:{referral_id}:{side}"
    given: dict[str, Any] = {"points": 0, "coupon": None}
    points = reward.points
    if points is None and side == "referrer":
        from lifeloop.engagement.points.settings import get_settings

        points = int(get_settings(conn, workspace_id).rules["referral"]["points"])
    if points:
        from lifeloop.engagement.points.ledger import award_points

        award_points(conn, workspace_id, profile_id, points, key=f"{key}:points", reason="referral", now=now)
        given["points"] = points
    if reward.coupon:
        from lifeloop.engagement.coupons.service import issue_coupon

        try:
            with savepoint(conn):  # a refused coupon takes its events with it
                issue_coupon(
                    conn,
                    workspace_id,
                    profile_id,
                    reward.coupon,
                    key=f"{key}:coupon",
                    now=now,
                    source="referral",
                )
            given["coupon"] = reward.coupon
        except LifeloopError as error:
            log.warning(
                "referral coupon %s for profile %s not issued: %s", reward.coupon, profile_id, error.message
            )
    return given


def attribute(
    conn: Connection,
    workspace_id: int,
    referee_id: int,
    code: str,
    *,
    message_id: str,
    device_id: str | None,
    now: datetime,
    strict: bool = False,
) -> dict[str, Any] | None:
    """Attribute a new customer to the code's owner, once (the first code wins). Refused with a reason
    (``Referral Rejected``) for a self-referral, the same device or phone, or an existing customer.
    ``strict`` (the API) raises on an unknown code; an event's unknown code is ignored."""
    program = get_program(conn, workspace_id)
    if program is None:
        if strict:
            raise NotFound("this workspace has no referral programme")
        return None
    normal = normalise_code(code)
    referrer_id = None if normal is None else _owner_of_code(conn, workspace_id, normal)
    if normal is None or referrer_id is None:
        if strict:
            raise InvalidInput(f"no referral code {code!r} in this workspace", field="code")
        return None
    referee_id = resolve_profile_id(conn, workspace_id, referee_id)
    referee = _aliases(conn, workspace_id, referee_id)
    existing = _referral(conn, workspace_id, referee)
    if existing is not None:
        return as_dict(existing)
    reason = _guard(conn, workspace_id, referrer_id, referee_id, device_id=device_id)
    if reason is None and _ordered_before(
        conn, workspace_id, referee, join_message_id=message_id, joined_at=now
    ):
        reason = "existing_customer"
    values = {
        "workspace_id": workspace_id,
        "referee_id": referee_id,
        "referrer_id": referrer_id,
        "code": normal,
        "status": "joined" if reason is None else "rejected",
        "reason": reason,
        "device_id": device_id,
        "join_message_id": message_id,
        "joined_at": now,
        "rejected_at": None if reason is None else now,
    }
    try:
        with conn.begin_nested():  # the API and the resolver attributing the same customer at once
            referral_id = conn.execute(
                insert(referrals).values(**values).returning(referrals.c.id)
            ).scalar_one()
    except IntegrityError:
        return as_dict(_referral(conn, workspace_id, referee))
    props = {"referral_id": referral_id, "code": normal, "referrer_id": referrer_id}
    if reason is not None:
        record_event(
            conn,
            workspace_id,
            referee_id,
            REFERRAL_REJECTED,
            {**props, "reason": reason, "stage": "join"},
            at=now,
            key=f"referral:{referral_id}:rejected",
        )
    else:
        record_event(
            conn,
            workspace_id,
            referee_id,
            REFERRAL_JOINED,
            props,
            at=now,
            key=f"referral:{referral_id}:joined",
        )
        if program.referee_reward.on == "join":
            _reward(
                conn,
                workspace_id,
                referee_id,
                program.referee_reward,
                referral_id=referral_id,
                side="referee",
                now=now,
            )
    return as_dict(_referral(conn, workspace_id, referee))


def complete_first_purchase(
    conn: Connection,
    workspace_id: int,
    referee_id: int,
    *,
    message_id: str,
    properties: dict[str, Any],
    device_id: str | None,
    now: datetime,
) -> dict[str, Any] | None:
    """The referee's first purchase: check the guards again (profiles may have merged since, and the
    order names its device and payment), then complete or reject the referral exactly once and reward
    both sides. Returns the referral if this call settled it, None otherwise."""
    program = get_program(conn, workspace_id)
    if program is None:
        return None
    referee_id = resolve_profile_id(conn, workspace_id, referee_id)
    row = _referral(conn, workspace_id, _aliases(conn, workspace_id, referee_id))
    if row is None or row.status != "joined":
        return None
    referrer_id = resolve_profile_id(conn, workspace_id, row.referrer_id)
    payment = properties.get("payment_fingerprint")
    reason = _guard(
        conn,
        workspace_id,
        referrer_id,
        referee_id,
        device_id=device_id,
        payment=str(payment) if isinstance(payment, str | int) and not isinstance(payment, bool) else None,
    )
    if reason is None and _ordered_before(
        conn,
        workspace_id,
        _aliases(conn, workspace_id, referee_id),
        join_message_id=row.join_message_id,
        joined_at=row.joined_at,
    ):
        reason = "existing_customer"  # a profile with earlier orders was merged in since joining
    status = "completed" if reason is None else "rejected"
    settled = conn.execute(
        update(referrals)
        .where(
            referrals.c.workspace_id == workspace_id, referrals.c.id == row.id, referrals.c.status == "joined"
        )
        .values(
            status=status,
            reason=reason,
            order_message_id=message_id,
            completed_at=now if reason is None else None,
            rejected_at=now if reason is not None else None,
        )
    ).rowcount
    if settled != 1:  # another transaction settled it first
        return None
    props = {"referral_id": row.id, "code": row.code, "referrer_id": referrer_id, "referee_id": referee_id}
    if reason is not None:
        record_event(
            conn,
            workspace_id,
            referee_id,
            REFERRAL_REJECTED,
            {**props, "reason": reason, "stage": "first_purchase"},
            at=now,
            key=f"referral:{row.id}:rejected",
        )
    else:
        referrer_given = _reward(
            conn,
            workspace_id,
            referrer_id,
            program.referrer_reward,
            referral_id=row.id,
            side="referrer",
            now=now,
        )
        referee_given: dict[str, Any] = {"points": 0, "coupon": None}
        if program.referee_reward.on == "first_purchase":
            referee_given = _reward(
                conn,
                workspace_id,
                referee_id,
                program.referee_reward,
                referral_id=row.id,
                side="referee",
                now=now,
            )
        record_event(
            conn,
            workspace_id,
            referee_id,
            REFERRAL_COMPLETED,
            {**props, "role": "referee", "reward": referee_given},
            at=now,
            key=f"referral:{row.id}:completed:referee",
        )
        record_event(
            conn,
            workspace_id,
            referrer_id,
            REFERRAL_COMPLETED,
            {**props, "role": "referrer", "reward": referrer_given},
            at=now,
            key=f"referral:{row.id}:completed:referrer",
        )
    return as_dict(_referral(conn, workspace_id, [row.referee_id]))


# Reading ------------------------------------------------------------------------------------------
def referrals_of(conn: Connection, workspace_id: int, profile_id: int) -> dict[str, Any]:
    """Whom a customer referred (with each referral's status), and who referred them."""
    profile_id = resolve_profile_id(conn, workspace_id, profile_id)
    ids = _aliases(conn, workspace_id, profile_id)
    made = conn.execute(
        select(referrals)
        .where(referrals.c.workspace_id == workspace_id, referrals.c.referrer_id.in_(ids))
        .order_by(referrals.c.joined_at, referrals.c.id)
    ).all()
    code = conn.execute(
        select(referral_codes.c.code).where(
            referral_codes.c.workspace_id == workspace_id, referral_codes.c.profile_id.in_(ids)
        )
    ).scalar()
    by = _referral(conn, workspace_id, ids)
    return {
        "profile_id": profile_id,
        "code": code,
        "referred": [as_dict(r) for r in made],
        "referred_by": None if by is None else as_dict(by),
    }


def leaderboard(
    conn: Connection, workspace_id: int, *, since: datetime, until: datetime, limit: int = 20
) -> list[dict[str, Any]]:
    """Referrers by completed referrals in [since, until): most first; on a tie, who got there first."""
    if since >= until:
        raise InvalidInput("since must be before until", field="since")
    if not 1 <= limit <= 1000:
        raise InvalidInput("limit must be from 1 to 1000", field="limit")
    count = func.count(referrals.c.id).label("completed")
    last = func.max(referrals.c.completed_at).label("last_completed_at")
    rows = conn.execute(
        select(referrals.c.referrer_id, count, last, profiles.c.user_id)
        .join(
            profiles,
            (profiles.c.workspace_id == referrals.c.workspace_id)
            & (profiles.c.id == referrals.c.referrer_id),
        )
        .where(
            referrals.c.workspace_id == workspace_id,
            profiles.c.workspace_id == workspace_id,
            referrals.c.status == "completed",
            referrals.c.completed_at >= since,
            referrals.c.completed_at < until,
        )
        .group_by(referrals.c.referrer_id, profiles.c.user_id)
        .order_by(count.desc(), last.asc(), referrals.c.referrer_id.asc())
        .limit(limit)
    ).all()
    return [
        {
            "rank": i,
            "profile_id": r.referrer_id,
            "user_id": r.user_id,
            "completed": int(r.completed),
            "last_completed_at": r.last_completed_at,
        }
        for i, r in enumerate(rows, start=1)
    ]
