"""Engagement, continued: member tiers (the ladder with members per tier, the member day), referrals (the
programme, the leaderboard) and advisors (the list, assignment and task rules, an advisor's task list
where operators move tasks on and mark them done with an outcome). Writes call what the REST routes
call and are audit-logged."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Connection

from lifeloop.accounts.models import ConsoleSession
from lifeloop.engagement.advisors import service as advisors
from lifeloop.engagement.advisors import tasks as advisor_tasks
from lifeloop.engagement.advisors.models import ASSIGNMENT_METHODS, OUTCOMES, TASK_STATUSES
from lifeloop.engagement.referrals import service as referrals
from lifeloop.engagement.summary import advisor_load, tier_counts
from lifeloop.engagement.tiers import service as tiers
from lifeloop.errors import InvalidInput, LifeloopError
from lifeloop.profiles import service as profiles
from lifeloop.store.schema import utcnow
from lifeloop.web.console.auth import Editor, Reader
from lifeloop.web.console.i18n import N_
from lifeloop.web.console.pages.customers import display_name
from lifeloop.web.console.pages.data import fresh
from lifeloop.web.console.pages.engagement import as_yaml, audit, engagement_page, read_yaml, whole
from lifeloop.web.deps import Conn, EngineDep

router = APIRouter(include_in_schema=False)

METHOD_LABELS = {
    "wecom_contact": N_("The advisor the customer added on WeCom"),
    "store": N_("Round-robin among the advisors of the customer's store"),
    "channel": N_("Round-robin among the advisors of the customer's channel of arrival"),
    "round_robin": N_("Round-robin among every active advisor"),
}
TASK_STATUS_LABELS = {"open": N_("open"), "in_progress": N_("in progress"), "done": N_("done"),
                      "cancelled": N_("cancelled")}  # fmt: skip
OUTCOME_LABELS = {"reached": N_("reached"), "no_answer": N_("no answer"), "purchased": N_("purchased"),
                  "declined": N_("declined")}  # fmt: skip
LEADERBOARD_DAYS = (30, 90, 365)
TIERS_EXAMPLE = {
    "window_days": 365,
    "match": "any",
    "review": {"every": "month", "day": 1},
    "downgrade": "one_step",
    "member_day": {"day": 8, "points_multiplier": 2},
    "tiers": [
        {"key": "member", "name": "一般會員"},
        {"key": "silver", "name": "銀卡", "min_spend": 3000, "points_multiplier": 1.2},
        {"key": "gold", "name": "金卡", "min_spend": 10000, "points_multiplier": 1.5},
    ],
}
REFERRALS_EXAMPLE = {
    "landing_url": "https://shop.example.com/welcome",
    "referrer_reward": {"points": 200},
    "referee_reward": {"points": 100, "on": "join"},
}


# --- member tiers -----------------------------------------------------------------------------------
def _tiers_page(
    request: Request, session: ConsoleSession, conn: Connection, *, text: str | None = None, **kwargs: Any
) -> HTMLResponse:
    program = tiers.get_program(conn, session.workspace_id)
    counts = tier_counts(conn, session.workspace_id, program) if program else {}
    source = program.source if program and program.source else TIERS_EXAMPLE
    return engagement_page(request, session, conn, "engagement_tiers.html", program=program, counts=counts,
                           text=text if text is not None else as_yaml(source), **kwargs)  # fmt: skip


@router.get("/engagement/tiers", response_class=HTMLResponse)
def tiers_page(request: Request, session: Reader, conn: Conn, done: str = "") -> HTMLResponse:
    return _tiers_page(request, session, conn, done=done)


@router.post("/engagement/tiers", response_class=HTMLResponse)
def save_tiers(
    request: Request, session: Editor, engine: EngineDep, conn: Conn, config: Annotated[str, Form()] = ""
) -> Response:
    try:
        parsed = read_yaml(config, "config")
        with engine.begin() as tx:
            program = tiers.set_program(tx, session.workspace_id, parsed, now=utcnow())
            audit(tx, session, "tiers.program", "tier-program", tiers=[t.key for t in program.tiers])
    except LifeloopError as failure:
        return _tiers_page(request, session, fresh(conn), text=config, errors={"config": failure.message},
                           status=failure.status)  # fmt: skip
    return RedirectResponse("/engagement/tiers?done=saved", status_code=303)


# --- referrals --------------------------------------------------------------------------------------
def _referrals_page(
    request: Request,
    session: ConsoleSession,
    conn: Connection,
    *,
    days: int = 30,
    text: str | None = None,
    **kwargs: Any,
) -> HTMLResponse:
    ws, now = session.workspace_id, utcnow()
    days = days if days in LEADERBOARD_DAYS else 30
    program = referrals.get_program(conn, ws)
    board = referrals.leaderboard(conn, ws, since=now - timedelta(days=days), until=now, limit=20)
    names = _names(conn, ws, [row["profile_id"] for row in board])
    source = program.source if program and program.source else REFERRALS_EXAMPLE
    return engagement_page(request, session, conn, "engagement_referrals.html", program=program,
                           board=board, names=names, days=days, choices=LEADERBOARD_DAYS,
                           text=text if text is not None else as_yaml(source), **kwargs)  # fmt: skip


@router.get("/engagement/referrals", response_class=HTMLResponse)
def referrals_page(
    request: Request, session: Reader, conn: Conn, days: int = 30, done: str = ""
) -> HTMLResponse:
    return _referrals_page(request, session, conn, days=days, done=done)


@router.post("/engagement/referrals", response_class=HTMLResponse)
def save_referrals(
    request: Request, session: Editor, engine: EngineDep, conn: Conn, config: Annotated[str, Form()] = ""
) -> Response:
    try:
        parsed = read_yaml(config, "config")
        with engine.begin() as tx:
            referrals.set_program(tx, session.workspace_id, parsed, now=utcnow())
            audit(tx, session, "referrals.program", "referral-program")
    except LifeloopError as failure:
        return _referrals_page(request, session, fresh(conn), text=config,
                               errors={"config": failure.message}, status=failure.status)  # fmt: skip
    return RedirectResponse("/engagement/referrals?done=saved", status_code=303)


# --- advisors ---------------------------------------------------------------------------------------
def _names(conn: Connection, workspace_id: int, ids: list[int]) -> dict[int, str]:
    """How customers are called in lists, read in one go."""
    found = profiles.read_profiles(conn, workspace_id, sorted(set(ids)))
    return {pid: display_name(p.traits, p.user_id, pid) for pid, p in found.items()}


def _advisors_page(
    request: Request, session: ConsoleSession, conn: Connection, **kwargs: Any
) -> HTMLResponse:
    ws = session.workspace_id
    return engagement_page(
        request,
        session,
        conn,
        "engagement_advisors.html",
        advisors=advisors.list_advisors(conn, ws),
        load=advisor_load(conn, ws, now=utcnow()),
        rules=advisors.list_assignment_rules(conn, ws),
        task_rules=advisors.list_task_rules(conn, ws),
        methods=ASSIGNMENT_METHODS,
        method_labels=METHOD_LABELS,
        channels=advisors.ARRIVAL_CHANNELS,
        advisor_key=uuid.uuid4().hex,
        as_yaml=as_yaml,
        **kwargs,
    )


@router.get("/engagement/advisors", response_class=HTMLResponse)
def advisors_page(request: Request, session: Reader, conn: Conn, done: str = "") -> HTMLResponse:
    return _advisors_page(request, session, conn, done=done)


@router.post("/engagement/advisors", response_class=HTMLResponse)
def add_advisor(
    request: Request,
    session: Editor,
    engine: EngineDep,
    conn: Conn,
    name: Annotated[str, Form()] = "",
    wecom_userid: Annotated[str, Form()] = "",
    store: Annotated[str, Form()] = "",
    channels: Annotated[list[str] | None, Form()] = None,
    capacity: Annotated[str, Form()] = "",
    key: Annotated[str, Form()] = "",
) -> Response:
    form = {"name": name, "wecom_userid": wecom_userid, "store": store, "capacity": capacity,
            "channels": channels or []}  # fmt: skip
    try:
        with engine.begin() as tx:
            made = advisors.create_advisor(
                tx,
                session.workspace_id,
                name=name.strip(),
                wecom_userid=wecom_userid.strip(),
                store=store.strip() or None,
                channels=channels or [],
                capacity=whole(capacity, "capacity"),
                key=f"console:{key}" if key.strip() else None,
                now=utcnow(),
            )
            audit(tx, session, "advisor.create", f"advisor:{made.id}", wecom_userid=made.wecom_userid)
    except LifeloopError as failure:
        return _advisors_page(request, session, fresh(conn), errors={"advisor": failure.message},
                              values=form, status=failure.status)  # fmt: skip
    return RedirectResponse("/engagement/advisors?done=advisor", status_code=303)


@router.post("/engagement/advisors/rules", response_class=HTMLResponse)
def save_assignment_rule(
    request: Request,
    session: Editor,
    engine: EngineDep,
    conn: Conn,
    key: Annotated[str, Form()] = "",
    method: Annotated[str, Form()] = "",
    position: Annotated[str, Form()] = "",
    config: Annotated[str, Form()] = "",
    enabled: Annotated[str, Form()] = "",
) -> Response:
    form = {"rule_key": key, "method": method, "position": position, "rule_config": config}
    try:
        parsed = read_yaml(config, "config") or None
        with engine.begin() as tx:
            advisors.put_assignment_rule(tx, session.workspace_id, key.strip(), method=method,
                                         position=whole(position, "position"), config=parsed,
                                         enabled=enabled != "off")  # fmt: skip
            audit(tx, session, "advisor_rule.put", key.strip(), method=method)
    except LifeloopError as failure:
        return _advisors_page(request, session, fresh(conn), errors={"rule": failure.message}, values=form,
                              status=failure.status)  # fmt: skip
    return RedirectResponse("/engagement/advisors?done=rule", status_code=303)


@router.post("/engagement/advisors/task-rules", response_class=HTMLResponse)
def save_task_rule(
    request: Request,
    session: Editor,
    engine: EngineDep,
    conn: Conn,
    key: Annotated[str, Form()] = "",
    event: Annotated[str, Form()] = "",
    where: Annotated[str, Form()] = "",
    title: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
    due_hours: Annotated[str, Form()] = "",
) -> Response:
    form = {"task_key": key, "event": event, "where": where, "title": title, "description": description,
            "due_hours": due_hours}  # fmt: skip
    try:
        parsed = read_yaml(where, "where") or None
        with engine.begin() as tx:
            advisors.put_task_rule(tx, session.workspace_id, key.strip(), event=event.strip(), where=parsed,
                                   title=title, description=description.strip() or None,
                                   due_hours=whole(due_hours, "due_hours"), now=utcnow())  # fmt: skip
            audit(tx, session, "advisor_task_rule.put", key.strip(), event=event.strip())
    except LifeloopError as failure:
        return _advisors_page(request, session, fresh(conn), errors={"task_rule": failure.message},
                              values=form, status=failure.status)  # fmt: skip
    return RedirectResponse("/engagement/advisors?done=rule", status_code=303)


# --- one advisor's task list ------------------------------------------------------------------------
def _advisor_page(
    request: Request,
    session: ConsoleSession,
    conn: Connection,
    advisor_id: int,
    *,
    show: str = "",
    **kwargs: Any,
) -> HTMLResponse:
    ws, now = session.workspace_id, utcnow()
    advisor = advisors.get_advisor(conn, ws, advisor_id)
    wanted = show if show in TASK_STATUSES else None
    listed = advisor_tasks.list_tasks(conn, ws, now=now, advisor_id=advisor.id, status=wanted)
    return engagement_page(
        request,
        session,
        conn,
        "engagement_advisor.html",
        advisor=advisor,
        load=advisor_load(conn, ws, now=now).get(advisor.id, {}),
        tasks=listed,
        names=_names(conn, ws, [t.profile_id for t in listed]),
        now=now,
        wanted=wanted or "",
        statuses=TASK_STATUSES,
        status_labels=TASK_STATUS_LABELS,
        outcomes=OUTCOMES,
        outcome_labels=OUTCOME_LABELS,
        **kwargs,
    )


@router.get("/engagement/advisors/{advisor_id}", response_class=HTMLResponse)
def advisor_page(
    request: Request, advisor_id: int, session: Reader, conn: Conn, status: str = "", done: str = ""
) -> HTMLResponse:
    return _advisor_page(request, session, conn, advisor_id, show=status, done=done)


@router.post("/engagement/advisors/tasks/{task_id}", response_class=HTMLResponse)
def update_task(
    request: Request,
    task_id: int,
    session: Editor,
    engine: EngineDep,
    conn: Conn,
    status: Annotated[str, Form()] = "",
    outcome: Annotated[str, Form()] = "",
    note: Annotated[str, Form()] = "",
) -> Response:
    """Start a task, finish it with an outcome (and a note), or cancel it."""
    task = advisor_tasks.get_task(conn, session.workspace_id, task_id)  # another workspace's task: 404
    try:
        if not status:
            raise InvalidInput("choose what happened to the task", field="status")
        with engine.begin() as tx:
            done = advisor_tasks.update_task(tx, session.workspace_id, task.id, status=status,
                                             outcome=outcome or None, note=note.strip() or None,
                                             now=utcnow())  # fmt: skip
            audit(tx, session, "advisor_task.update", f"task:{done.id}", status=done.status,
                  outcome=done.outcome)  # fmt: skip
    except LifeloopError as failure:
        if task.advisor_id is None:
            raise
        return _advisor_page(request, session, fresh(conn), task.advisor_id,
                             errors={f"task-{task.id}": failure.message}, status=failure.status,
                             values={"task": task.id, "note": note})  # fmt: skip
    target = f"/engagement/advisors/{task.advisor_id}" if task.advisor_id else "/engagement/advisors"
    return RedirectResponse(f"{target}?done=task", status_code=303)
