"""REST: /api/v1/points (rules, award, spend, a customer's balance and history, new-user tasks) and
/api/v1/checkins (check in, make up, a customer's streak, settings).

A customer is addressed as the other routes do: ``profile_id`` in the path (a merged profile's id
reaches its survivor), or in a write's body ``profile_id`` or ``user_id``; ``/points/lookup`` finds a
balance by identity (``user_id:42``, ``email:a@b.com``…). Award, spend and make-up need an
``Idempotency-Key`` header: the same key again answers with the first result and changes nothing.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query
from pydantic import BaseModel, Field
from sqlalchemy import Connection

from lifeloop.engagement.points import checkin, ledger, tasks
from lifeloop.engagement.points.settings import get_settings, save_section
from lifeloop.errors import InvalidInput
from lifeloop.profiles.service import find_by_identity, resolve_profile_id
from lifeloop.store.engine import transaction
from lifeloop.store.schema import utcnow
from lifeloop.web.deps import Conn, CurrentGrant, EngineDep, require_role

router = APIRouter(prefix="/api/v1/points", tags=["points"])
checkins_router = APIRouter(prefix="/api/v1/checkins", tags=["points"])

WRITERS = ("admin", "operator")
IdempotencyKey = Annotated[
    str | None, Header(max_length=200, description="Retrying with the same key changes nothing.")
]


class Customer(BaseModel):
    profile_id: int | None = Field(None, description="The customer's profile id …")
    user_id: str | None = Field(None, description="… or the brand's user id for them.")


class PointsChange(Customer):
    points: int = Field(description="A whole number of points, at least 1.")
    reason: str = Field(description="Shown in the customer's history.")


class Award(PointsChange):
    expires_at: datetime | None = Field(None, description="Default: the workspace's validity rule.")


class MakeUp(Customer):
    day: str = Field(description="The missed day, on the workspace's calendar (YYYY-MM-DD).")


def _profile(conn: Connection, workspace_id: int, who: Customer) -> int:
    if (who.profile_id is None) == (who.user_id is None):
        raise InvalidInput("give the customer's profile_id or user_id (one of them)", field="profile_id")
    if who.profile_id is not None:
        return resolve_profile_id(conn, workspace_id, who.profile_id)
    return find_by_identity(conn, workspace_id, "user_id", str(who.user_id))


def _key(idempotency_key: str | None) -> str:
    if not idempotency_key or not idempotency_key.strip():
        raise InvalidInput("an Idempotency-Key header is required", field="Idempotency-Key")
    return f"manual:{idempotency_key.strip()}"


def _account(conn: Connection, workspace_id: int, profile_id: int) -> dict[str, Any]:
    now = utcnow()
    totals = ledger.account_totals(conn, workspace_id, profile_id)
    return {
        "profile_id": profile_id,
        "balance": ledger.balance(conn, workspace_id, profile_id, now=now),
        "earned": totals["earned"],
        "spent": totals["spent"],
        "expired": totals["expired"],
    }


# Rules --------------------------------------------------------------------------------------------
@router.get("/rules")
def get_rules(conn: Conn, grant: CurrentGrant) -> dict[str, Any]:
    """The earn rules (per amount spent, review, check-in, referral) and validity, defaults filled in."""
    return get_settings(conn, grant.workspace_id).rules


@router.put("/rules")
def put_rules(
    engine: EngineDep, grant: CurrentGrant, rules: Annotated[dict[str, Any], Body()]
) -> dict[str, Any]:
    """Replace the earn rules; what is left out takes its default."""
    require_role(grant, *WRITERS)
    return transaction(
        engine, lambda conn: save_section(conn, grant.workspace_id, "rules", rules, now=utcnow())
    )


# Award and spend -------------------------------------------------------------------------------------
@router.post("/award")
def award(
    body: Award, engine: EngineDep, grant: CurrentGrant, idempotency_key: IdempotencyKey = None
) -> dict[str, Any]:
    """Give a customer points (a goodwill gesture, a campaign); they expire as the validity rule says."""
    require_role(grant, *WRITERS)
    key = _key(idempotency_key)

    def work(conn: Connection) -> dict[str, Any]:
        pid = _profile(conn, grant.workspace_id, body)
        entry = ledger.award_points(
            conn,
            grant.workspace_id,
            pid,
            body.points,
            key=key,
            reason=body.reason,
            now=utcnow(),
            expires_at=body.expires_at,
        )
        return entry.as_dict()

    return transaction(engine, work)


@router.post("/spend")
def spend(
    body: PointsChange, engine: EngineDep, grant: CurrentGrant, idempotency_key: IdempotencyKey = None
) -> dict[str, Any]:
    """Take points from a customer (a redemption in the points mall); 409 with the shortfall if the
    balance is short."""
    require_role(grant, *WRITERS)
    key = _key(idempotency_key)

    def work(conn: Connection) -> dict[str, Any]:
        pid = _profile(conn, grant.workspace_id, body)
        entry = ledger.spend_points(
            conn, grant.workspace_id, pid, body.points, key=key, reason=body.reason, now=utcnow()
        )
        return entry.as_dict()

    return transaction(engine, work)


# A customer's points -----------------------------------------------------------------------------------
ProfileQuery = Annotated[int | None, Query(description="The customer's profile id.")]
UserQuery = Annotated[str | None, Query(description="Or the customer's user id.")]


@router.get("")
def customer_balance(
    conn: Conn, grant: CurrentGrant, profile_id: ProfileQuery = None, user_id: UserQuery = None
) -> dict[str, Any]:
    """A customer's balance and totals, by ``?profile_id=`` or ``?user_id=`` (as ``/api/v1/coupons``)."""
    return _account(
        conn,
        grant.workspace_id,
        _profile(conn, grant.workspace_id, Customer(profile_id=profile_id, user_id=user_id)),
    )


@router.get("/history")
def customer_history(
    conn: Conn,
    grant: CurrentGrant,
    profile_id: ProfileQuery = None,
    user_id: UserQuery = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[int | None, Query(description="Entries older than this entry id.")] = None,
) -> dict[str, Any]:
    """A customer's entries by ``?profile_id=`` or ``?user_id=``, newest first."""
    pid = _profile(conn, grant.workspace_id, Customer(profile_id=profile_id, user_id=user_id))
    return _history_page(conn, grant.workspace_id, pid, limit, before)


@router.get("/lookup")
def lookup(
    conn: Conn,
    grant: CurrentGrant,
    identity: Annotated[str, Query(description="kind:value, e.g. user_id:42, email:a@b.com")],
) -> dict[str, Any]:
    """A customer's balance and totals, found by an identity."""
    kind, sep, value = identity.partition(":")
    if not sep or not value:
        raise InvalidInput("identity must look like kind:value, e.g. user_id:42", field="identity")
    return _account(conn, grant.workspace_id, find_by_identity(conn, grant.workspace_id, kind, value))


@router.get("/profiles/{profile_id}")
def profile_balance(profile_id: int, conn: Conn, grant: CurrentGrant) -> dict[str, Any]:
    """A customer's spendable balance now, and what they earned, spent and lost to expiry in all."""
    return _account(conn, grant.workspace_id, resolve_profile_id(conn, grant.workspace_id, profile_id))


@router.get("/profiles/{profile_id}/history")
def profile_history(
    profile_id: int,
    conn: Conn,
    grant: CurrentGrant,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[int | None, Query(description="Entries older than this entry id.")] = None,
) -> dict[str, Any]:
    """A customer's entries, newest first; pass ``next_before`` back for the next page."""
    return _history_page(
        conn, grant.workspace_id, resolve_profile_id(conn, grant.workspace_id, profile_id), limit, before
    )


def _history_page(
    conn: Connection, workspace_id: int, pid: int, limit: int, before: int | None
) -> dict[str, Any]:
    entries = ledger.history(conn, workspace_id, pid, limit=limit + 1, before=before)
    page = entries[:limit]
    return {
        "profile_id": pid,
        "items": [e.as_dict() for e in page],
        "next_before": page[-1].id if len(entries) > limit else None,
    }


# New-user tasks ------------------------------------------------------------------------------------------
@router.get("/tasks")
def get_task_settings(conn: Conn, grant: CurrentGrant) -> dict[str, Any]:
    """The new-user tasks' window, the traits of a complete profile, and each task's reward."""
    return get_settings(conn, grant.workspace_id).tasks


@router.put("/tasks")
def put_task_settings(
    engine: EngineDep, grant: CurrentGrant, settings: Annotated[dict[str, Any], Body()]
) -> dict[str, Any]:
    """Replace the new-user task settings; a task rewarded 0 points is off."""
    require_role(grant, *WRITERS)
    return transaction(
        engine, lambda conn: save_section(conn, grant.workspace_id, "tasks", settings, now=utcnow())
    )


@router.get("/tasks/{profile_id}")
def profile_tasks(profile_id: int, conn: Conn, grant: CurrentGrant) -> dict[str, Any]:
    """A customer's new-user tasks: done or not, the reward, and until when they count."""
    return tasks.task_progress(conn, grant.workspace_id, profile_id, now=utcnow())


# Check-in ----------------------------------------------------------------------------------------------
@checkins_router.get("/config")
def get_checkin_settings(conn: Conn, grant: CurrentGrant) -> dict[str, Any]:
    """Streak rewards, the make-up cost and look-back, and the event that requests a check-in."""
    return get_settings(conn, grant.workspace_id).checkin


@checkins_router.put("/config")
def put_checkin_settings(
    engine: EngineDep, grant: CurrentGrant, settings: Annotated[dict[str, Any], Body()]
) -> dict[str, Any]:
    """Replace the check-in settings; what is left out takes its default."""
    require_role(grant, *WRITERS)
    return transaction(
        engine, lambda conn: save_section(conn, grant.workspace_id, "checkin", settings, now=utcnow())
    )


@checkins_router.post("")
def check_in(body: Customer, engine: EngineDep, grant: CurrentGrant) -> dict[str, Any]:
    """Check a customer in for today (the workspace's day); again the same day answers the first
    check-in with ``already: true``."""
    require_role(grant, *WRITERS)

    def work(conn: Connection) -> dict[str, Any]:
        pid = _profile(conn, grant.workspace_id, body)
        return checkin.check_in(conn, grant.workspace_id, pid, now=utcnow()).as_dict()

    return transaction(engine, work)


@checkins_router.post("/makeup")
def make_up(
    body: MakeUp, engine: EngineDep, grant: CurrentGrant, idempotency_key: IdempotencyKey = None
) -> dict[str, Any]:
    """Make up a missed day (补签) within the look-back, paid in points; 409 if the points are short
    or the day is already checked in."""
    require_role(grant, *WRITERS)
    if not idempotency_key or not idempotency_key.strip():
        raise InvalidInput("an Idempotency-Key header is required", field="Idempotency-Key")
    key = idempotency_key.strip()
    try:  # parsed here, not by the model, so a bad day is refused after the role check like the rest
        missed = date.fromisoformat(body.day)
    except ValueError:
        raise InvalidInput(f"day {body.day!r} is not a day; write it as YYYY-MM-DD", field="day") from None

    def work(conn: Connection) -> dict[str, Any]:
        pid = _profile(conn, grant.workspace_id, body)
        return checkin.make_up(conn, grant.workspace_id, pid, missed, key=key, now=utcnow()).as_dict()

    return transaction(engine, work)


@checkins_router.get("/{profile_id}")
def streak(profile_id: int, conn: Conn, grant: CurrentGrant) -> dict[str, Any]:
    """A customer's check-in state: today, the streak, the next bonus, the days that can be made up."""
    return checkin.streak_summary(conn, grant.workspace_id, profile_id, now=utcnow())
