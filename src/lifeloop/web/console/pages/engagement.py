"""Engagement (会员运营): coupon templates (issued / redeemed counts, create, archive, issue one to a
customer), points (earn rules, a customer's balance and ledger, award and spend), check-in and new-user
task settings. Tiers, referrals and advisors are in ``engagement_programs``.

Every write calls the function the REST route calls (``lifeloop.engagement.*``) and is audit-logged.
Money-like forms (issue, award, spend) carry an idempotency key made when the form is drawn: a form sent
twice (a double click, a resent POST) is one operation.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import yaml
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Connection

from lifeloop.accounts.models import ConsoleSession
from lifeloop.accounts.service import record_action
from lifeloop.engagement.coupons import service as coupons
from lifeloop.engagement.coupons import templates as coupon_templates
from lifeloop.engagement.points import ledger
from lifeloop.engagement.points.settings import TASK_EVENTS, get_settings, save_section
from lifeloop.engagement.summary import coupon_counts
from lifeloop.errors import InvalidInput, LifeloopError, NotFound
from lifeloop.profiles import service as profiles
from lifeloop.store.engine import transaction
from lifeloop.store.schema import utcnow
from lifeloop.web.console.auth import Editor, Reader
from lifeloop.web.console.i18n import N_
from lifeloop.web.console.pages.data import fresh
from lifeloop.web.console.render import page
from lifeloop.web.deps import Conn, EngineDep
from lifeloop.workspaces.service import get_workspace

router = APIRouter(include_in_schema=False)

# The engagement pages' tabs: path, label.
TABS = [
    ("/engagement", N_("Coupons")),
    ("/engagement/points", N_("Points")),
    ("/engagement/checkin", N_("Check-in and tasks")),
    ("/engagement/tiers", N_("Member tiers")),
    ("/engagement/referrals", N_("Referrals")),
    ("/engagement/advisors", N_("Advisors")),
]
COUPON_KINDS = {
    "fixed": N_("Amount off"),
    "percent": N_("Percent off"),
    "threshold": N_("Amount off above a threshold"),
    "free_shipping": N_("Free shipping"),
    "gift": N_("Gift"),
}
COUPON_STATUSES = {N_("issued"): "ok", N_("redeemed"): "", N_("expired"): "bad", N_("active"): "ok",
                   N_("archived"): "bad"}  # fmt: skip
DONE = {  # ?done=… after a write: what the page says
    "created": N_("Coupon template created."),
    "archived": N_("Coupon template archived: its coupons can no longer be issued or redeemed."),
    "issued": N_("Coupon issued."),
    "awarded": N_("Points awarded."),
    "spent": N_("Points spent."),
    "saved": N_("Settings saved."),
    "advisor": N_("Advisor added."),
    "rule": N_("Rule saved."),
    "task": N_("Task updated."),
}
HISTORY_ROWS = 50


# --- shared by the engagement pages ------------------------------------------------------------------
def new_key() -> str:
    """The idempotency key of one drawn form."""
    return uuid.uuid4().hex


def form_key(key: str) -> str:
    if not key.strip():
        raise InvalidInput("the form has no idempotency key; reload the page and try again", field="key")
    return f"console:{key.strip()}"


def as_yaml(value: Any) -> str:
    return yaml.safe_dump(value, allow_unicode=True, sort_keys=False, default_flow_style=False)


def read_yaml(text: str, field: str) -> Any:
    """An operator's YAML; InvalidInput naming the field when it does not read."""
    try:
        return yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as error:
        raise InvalidInput(f"{field} is not valid YAML: {error}", field=field) from None


def find_customer(conn: Connection, workspace_id: int, text: str) -> int:
    """A customer typed as a profile id, ``kind:value`` (``email:a@b.com``) or a user id."""
    wanted = text.strip()
    if not wanted:
        raise InvalidInput("name the customer: a profile id, a user id or kind:value", field="customer")
    if wanted.isdigit() and len(wanted) <= 18:
        return profiles.resolve_profile_id(conn, workspace_id, int(wanted))
    kind, sep, value = wanted.partition(":")
    if sep and kind in profiles.IDENTITY_KINDS:
        return profiles.find_by_identity(conn, workspace_id, kind, value.strip())
    return profiles.find_by_identity(conn, workspace_id, "user_id", wanted)


def whole(text: str, field: str, *, required: bool = False) -> int | None:
    """A form's whole number (None when left empty)."""
    if not text.strip():
        if required:
            raise InvalidInput(f"{field} is required", field=field)
        return None
    try:
        return int(text.strip())
    except ValueError:
        raise InvalidInput(f"{field} must be a whole number", field=field) from None


def local_time(text: str, timezone: str, field: str) -> str | None:
    """A ``datetime-local`` field, read in the workspace's time zone, as an ISO time with its offset."""
    if not text.strip():
        return None
    try:
        naive = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(f"{field} must be a date and time", field=field) from None
    return naive.replace(tzinfo=ZoneInfo(timezone)).isoformat()


def audit(conn: Connection, session: ConsoleSession, action: str, target: str, **detail: Any) -> None:
    record_action(conn, session.workspace_id, user_id=session.user.id, action=action, target=target,
                  detail=detail or None)  # fmt: skip


def engagement_page(
    request: Request,
    session: ConsoleSession,
    conn: Connection,
    template: str,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, Any] | None = None,
    status: int = 200,
    done: str = "",
    **context: Any,
) -> HTMLResponse:
    """One engagement tab: ``errors`` (by form) are shown beside their form, ``values`` keep what was
    typed in a refused form."""
    return page(
        request,
        session,
        template,
        status=status,
        workspace=get_workspace(conn, session.workspace_id),
        tabs=TABS,
        errors=errors or {},
        values=values or {},
        flash=DONE.get(done, ""),
        flash_kind="",
        **context,
    )


# --- coupon templates -------------------------------------------------------------------------------
def _coupons_page(request: Request, session: ConsoleSession, conn: Connection, **kwargs: Any) -> HTMLResponse:
    ws, now = session.workspace_id, utcnow()
    return engagement_page(
        request,
        session,
        conn,
        "engagement_coupons.html",
        templates=coupon_templates.list_templates(conn, ws),
        counts=coupon_counts(conn, ws, now=now),
        kinds=COUPON_KINDS,
        statuses=COUPON_STATUSES,
        issue_key=new_key(),
        **kwargs,
    )


@router.get("/engagement", response_class=HTMLResponse)
def coupon_templates_page(request: Request, session: Reader, conn: Conn, done: str = "") -> HTMLResponse:
    return _coupons_page(request, session, conn, done=done)


def _template_spec(form: dict[str, str], timezone: str) -> dict[str, Any]:
    """The create form as the API's template fields: only what was filled in."""
    spec: dict[str, Any] = {"kind": form["kind"]}
    for name in ("name", "gift", "shared_code"):
        if form[name].strip():
            spec[name] = form[name].strip()
    for name in ("value", "max_discount", "threshold"):
        if form[name].strip():
            spec[name] = form[name].strip()
    for name in ("valid_days", "starts_after_days", "per_user_limit", "total_limit"):
        if (number := whole(form[name], name)) is not None:
            spec[name] = number
    for name in ("valid_from", "valid_until"):
        if (when := local_time(form[name], timezone, name)) is not None:
            spec[name] = when
    spec["code_mode"] = "shared" if spec.get("shared_code") else "unique"
    return spec


@router.post("/engagement/coupons", response_class=HTMLResponse)
def create_coupon_template(
    request: Request,
    session: Editor,
    engine: EngineDep,
    conn: Conn,
    key: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
    kind: Annotated[str, Form()] = "fixed",
    value: Annotated[str, Form()] = "",
    max_discount: Annotated[str, Form()] = "",
    threshold: Annotated[str, Form()] = "",
    gift: Annotated[str, Form()] = "",
    valid_days: Annotated[str, Form()] = "",
    starts_after_days: Annotated[str, Form()] = "",
    valid_from: Annotated[str, Form()] = "",
    valid_until: Annotated[str, Form()] = "",
    per_user_limit: Annotated[str, Form()] = "",
    total_limit: Annotated[str, Form()] = "",
    shared_code: Annotated[str, Form()] = "",
) -> Response:
    form = {"key": key, "name": name, "kind": kind, "value": value, "max_discount": max_discount,
            "threshold": threshold, "gift": gift, "valid_days": valid_days,
            "starts_after_days": starts_after_days, "valid_from": valid_from, "valid_until": valid_until,
            "per_user_limit": per_user_limit, "total_limit": total_limit,
            "shared_code": shared_code}  # fmt: skip
    try:
        timezone = get_workspace(conn, session.workspace_id).timezone
        spec = _template_spec(form, timezone)
        with engine.begin() as tx:
            made = coupon_templates.create_template(tx, session.workspace_id, key.strip(), spec, now=utcnow())
            audit(tx, session, "coupon_template.create", made.key, kind=made.kind)
    except LifeloopError as failure:
        return _coupons_page(request, session, fresh(conn), errors={"create": failure.message},
                             values=form, status=failure.status)  # fmt: skip
    return RedirectResponse("/engagement?done=created", status_code=303)


@router.post("/engagement/coupons/{key}/archive", response_class=HTMLResponse)
def archive_coupon_template(
    request: Request, key: str, session: Editor, engine: EngineDep, conn: Conn
) -> Response:
    coupon_templates.get_template(conn, session.workspace_id, key)  # another workspace's key: 404
    try:
        with engine.begin() as tx:
            coupon_templates.archive_template(tx, session.workspace_id, key, now=utcnow())
            audit(tx, session, "coupon_template.archive", key)
    except LifeloopError as failure:
        return _coupons_page(request, session, fresh(conn), errors={"list": failure.message},
                             status=failure.status)  # fmt: skip
    return RedirectResponse("/engagement?done=archived", status_code=303)


@router.post("/engagement/coupons/issue", response_class=HTMLResponse)
def issue_coupon(
    request: Request,
    session: Editor,
    engine: EngineDep,
    conn: Conn,
    template: Annotated[str, Form()] = "",
    customer: Annotated[str, Form()] = "",
    key: Annotated[str, Form()] = "",
) -> Response:
    """One coupon of a template to one customer (a goodwill gesture, a service recovery)."""
    ws = session.workspace_id
    try:
        issue_key = form_key(key)

        def work(tx: Connection) -> int:
            pid = find_customer(tx, ws, customer)
            made = coupons.issue_coupon(tx, ws, pid, template, key=issue_key, now=utcnow(), source="console")
            audit(tx, session, "coupon.issue", f"profile:{pid} {template}", profile_id=pid, coupon_id=made.id)
            return pid

        pid = transaction(engine, work)
    except LifeloopError as failure:
        values = {"template": template, "customer": customer}
        return _coupons_page(request, session, fresh(conn), errors={"issue": failure.message},
                             values=values, status=failure.status)  # fmt: skip
    return RedirectResponse(f"/engagement?done=issued&profile={pid}", status_code=303)


# --- points -----------------------------------------------------------------------------------------
def _points_page(
    request: Request,
    session: ConsoleSession,
    conn: Connection,
    *,
    customer: str = "",
    rules_text: str | None = None,
    **kwargs: Any,
) -> HTMLResponse:
    ws, now = session.workspace_id, utcnow()
    rules = get_settings(conn, ws).rules
    account: dict[str, Any] | None = None
    lookup_error, status = "", int(kwargs.pop("status", 200))
    if customer.strip():
        try:
            pid = find_customer(conn, ws, customer)
            account = {
                "profile_id": pid,
                "balance": ledger.balance(conn, ws, pid, now=now),
                **ledger.account_totals(conn, ws, pid),
                "history": ledger.history(conn, ws, pid, limit=HISTORY_ROWS),
            }
        except (NotFound, InvalidInput) as failure:
            lookup_error, status = failure.message, status if status != 200 else failure.status
    errors = kwargs.pop("errors", None) or {}
    if lookup_error:
        errors = {"lookup": lookup_error, **errors}
    return engagement_page(
        request,
        session,
        conn,
        "engagement_points.html",
        status=status,
        errors=errors,
        rules=rules,
        rules_text=rules_text if rules_text is not None else as_yaml(rules),
        customer=customer,
        account=account,
        award_key=new_key(),
        spend_key=new_key(),
        **kwargs,
    )


@router.get("/engagement/points", response_class=HTMLResponse)
def points_page(
    request: Request, session: Reader, conn: Conn, customer: str = "", done: str = ""
) -> HTMLResponse:
    return _points_page(request, session, conn, customer=customer, done=done)


@router.post("/engagement/points/rules", response_class=HTMLResponse)
def save_points_rules(
    request: Request,
    session: Editor,
    engine: EngineDep,
    conn: Conn,
    rules: Annotated[str, Form()] = "",
) -> Response:
    try:
        parsed = read_yaml(rules, "rules")
        with engine.begin() as tx:
            save_section(tx, session.workspace_id, "rules", parsed, now=utcnow())
            audit(tx, session, "points.rules", "points-rules")
    except LifeloopError as failure:
        return _points_page(request, session, fresh(conn), rules_text=rules,
                            errors={"rules": failure.message}, status=failure.status)  # fmt: skip
    return RedirectResponse("/engagement/points?done=saved", status_code=303)


def _change_points(
    request: Request,
    session: ConsoleSession,
    engine: Any,
    conn: Connection,
    *,
    kind: str,
    customer: str,
    points: str,
    reason: str,
    key: str,
) -> Response:
    ws = session.workspace_id
    try:
        change_key = form_key(key)
        amount = whole(points, "points", required=True)
        assert amount is not None

        def work(tx: Connection) -> int:
            pid = find_customer(tx, ws, customer)
            change = ledger.award_points if kind == "award" else ledger.spend_points
            entry = change(tx, ws, pid, amount, key=change_key, reason=reason.strip(), now=utcnow())
            audit(tx, session, f"points.{kind}", f"profile:{pid}", profile_id=pid, points=amount,
                  reason=entry.reason, entry_id=entry.id)  # fmt: skip
            return pid

        pid = transaction(engine, work)
    except LifeloopError as failure:
        values = {f"{kind}_points": points, f"{kind}_reason": reason}
        return _points_page(request, session, fresh(conn), customer=customer, values=values,
                            errors={kind: failure.message}, status=failure.status)  # fmt: skip
    done = "awarded" if kind == "award" else "spent"
    return RedirectResponse(f"/engagement/points?customer={pid}&done={done}", status_code=303)


@router.post("/engagement/points/award", response_class=HTMLResponse)
def award_points(
    request: Request,
    session: Editor,
    engine: EngineDep,
    conn: Conn,
    customer: Annotated[str, Form()] = "",
    points: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
    key: Annotated[str, Form()] = "",
) -> Response:
    return _change_points(request, session, engine, conn, kind="award", customer=customer, points=points,
                          reason=reason, key=key)  # fmt: skip


@router.post("/engagement/points/spend", response_class=HTMLResponse)
def spend_points(
    request: Request,
    session: Editor,
    engine: EngineDep,
    conn: Conn,
    customer: Annotated[str, Form()] = "",
    points: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
    key: Annotated[str, Form()] = "",
) -> Response:
    return _change_points(request, session, engine, conn, kind="spend", customer=customer, points=points,
                          reason=reason, key=key)  # fmt: skip


# --- check-in and new-user tasks --------------------------------------------------------------------
TASK_LABELS = {
    "complete_profile": N_("Complete the profile"),
    "browse": N_("Browse a product"),
    "add_to_cart": N_("Add to cart"),
    "follow": N_("Follow the official account"),
}


def _checkin_page(
    request: Request,
    session: ConsoleSession,
    conn: Connection,
    *,
    texts: dict[str, str] | None = None,
    **kwargs: Any,
) -> HTMLResponse:
    settings = get_settings(conn, session.workspace_id)
    shown = {"checkin": as_yaml(settings.checkin), "tasks": as_yaml(settings.tasks), **(texts or {})}
    return engagement_page(
        request,
        session,
        conn,
        "engagement_checkin.html",
        checkin=settings.checkin,
        tasks=settings.tasks,
        task_events=TASK_EVENTS,
        task_labels=TASK_LABELS,
        texts=shown,
        **kwargs,
    )


@router.get("/engagement/checkin", response_class=HTMLResponse)
def checkin_page(request: Request, session: Reader, conn: Conn, done: str = "") -> HTMLResponse:
    return _checkin_page(request, session, conn, done=done)


@router.post("/engagement/checkin/{section}", response_class=HTMLResponse)
def save_checkin_settings(
    request: Request,
    section: str,
    session: Editor,
    engine: EngineDep,
    conn: Conn,
    settings: Annotated[str, Form()] = "",
) -> Response:
    """The check-in settings (``checkin``) or the new-user tasks' (``tasks``), as YAML."""
    if section not in ("checkin", "tasks"):
        raise NotFound(f"no settings called {section!r}")
    try:
        parsed = read_yaml(settings, section)
        with engine.begin() as tx:
            save_section(tx, session.workspace_id, section, parsed, now=utcnow())
            audit(tx, session, f"points.{section}", f"points-{section}")
    except LifeloopError as failure:
        return _checkin_page(request, session, fresh(conn), texts={section: settings},
                             errors={section: failure.message}, status=failure.status)  # fmt: skip
    return RedirectResponse("/engagement/checkin?done=saved", status_code=303)
