"""Customers: search by any identity, trait, tag or stage, and one customer's page (traits, identities,
tags, stage history, events, messages, consent, journeys) with the operator's edits of tags and consent.

The search is the condition language, counted and paged by ``query.preview`` (the function behind
``POST /api/v1/segments/preview``), plus exact identity look-ups by ``find_by_identity`` (behind
``GET /api/v1/profiles/lookup``). The customer page reads what the REST routes of each domain read, and
its writes call ``add_manual_tag`` / ``remove_manual_tag`` / ``set_consent`` as the API does, audit-logged.
"""

from __future__ import annotations

import json
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Connection

from lifeloop.accounts.models import ConsoleSession
from lifeloop.accounts.service import record_action
from lifeloop.audience import query as audience_query
from lifeloop.audience import service as audience
from lifeloop.audience.state import load_tags
from lifeloop.conditions import StoredProfile, evaluate, parse
from lifeloop.errors import InvalidInput, LifeloopError, NotFound
from lifeloop.journeys.service import profile_runs
from lifeloop.lifecycle import service as lifecycle
from lifeloop.lifecycle.definition import LifecycleModel
from lifeloop.messaging import service as messaging
from lifeloop.messaging.models import CONSENT_STATUSES
from lifeloop.messaging.policy import CHANNELS
from lifeloop.profiles import service as profiles
from lifeloop.profiles.models import IDENTITY_KINDS
from lifeloop.store.schema import utcnow
from lifeloop.web.console.auth import Editor, Reader
from lifeloop.web.console.i18n import N_
from lifeloop.web.console.pages.data import fresh
from lifeloop.web.console.pages.engagement_customer import engagement_panel
from lifeloop.web.console.pages.overview import stage_labels
from lifeloop.web.console.render import page
from lifeloop.web.deps import Conn, EngineDep
from lifeloop.workspaces.service import get_workspace

router = APIRouter(include_in_schema=False)

PAGE_ROWS = 25
EVENT_ROWS = 25
MESSAGE_ROWS = 20
# Traits the search box also matches by substring (a name typed in part, an e-mail's domain).
TEXT_TRAITS = ("name", "first_name", "last_name", "email", "phone")
MAX_NUMBER = 1e15  # the condition language's largest number literal
# Why a stage changed, as stage history records it (``lifecycle`` writes the key); others show as stored.
STAGE_REASONS = {
    "event": N_("an event"),
    "time": N_("time passed"),
    "recompute": N_("a recompute"),
    "journey": N_("a journey step"),
    "manual": N_("an operator's change"),
    "engagement": N_("the engagement programme"),
}


def _quoted(text: str) -> str:
    """A string literal of the condition language (JSON escapes, double quotes)."""
    return json.dumps(text, ensure_ascii=False)


def _trait_ref(key: str) -> str:
    """``a.b`` → ``trait["a"]["b"]``: any key, quoted, so a trait name never breaks the condition."""
    parts = key.strip().split(".")
    if not all(part.strip() for part in parts):
        raise InvalidInput("a trait filter looks like key=value, e.g. city=Taipei", field="trait")
    return "trait" + "".join(f"[{_quoted(part.strip())}]" for part in parts)


def trait_condition(text: str) -> str:
    """``key=value`` (the trait equals the value, as text or as the number / boolean it spells) or a bare
    ``key`` (the profile has the trait)."""
    key, sep, value = text.partition("=")
    ref = _trait_ref(key)
    if not sep:
        return f"exists({ref})"
    value = value.strip()
    options = [f"{ref} == {_quoted(value)}"]
    try:
        literal = json.loads(value)
    except ValueError:
        literal = None
    if isinstance(literal, bool):
        options.append(f"{ref} == {'true' if literal else 'false'}")
    elif isinstance(literal, int | float) and abs(literal) <= MAX_NUMBER:
        options.append(f"{ref} == {value}")
    return "(" + " or ".join(options) + ")"


@dataclass
class Search:
    """What the search form asks for, as typed."""

    q: str = ""
    trait: str = ""
    tag: str = ""
    stage: str = ""

    def filters(self, model: LifecycleModel | None) -> str:
        """The trait, tag and stage filters as one condition (``true`` when there are none)."""
        clauses = []
        if self.trait.strip():
            clauses.append(trait_condition(self.trait))
        if self.tag.strip():
            clauses.append(f"has_tag({_quoted(self.tag.strip())})")
        if self.stage.strip():
            stage = self.stage.strip()
            clauses.append(
                f"in_stage({_quoted(model.key)}, {_quoted(stage)})"
                if model
                else f"in_stage({_quoted(stage)})"
            )
        return " and ".join(clauses) or "true"

    def text(self) -> str | None:
        """The search box as a condition: any of the name / e-mail / phone traits contains it, as typed,
        in lower case or capitalised (the language compares exactly; "wang" still finds "Wang Wei")."""
        words = self.q.strip()
        if not words:
            return None
        variants = dict.fromkeys((words, words.lower(), words[:1].upper() + words[1:]))
        tests = [f"{_trait_ref(t)} contains {_quoted(v)}" for t in TEXT_TRAITS for v in variants]
        return "(" + " or ".join(tests) + ")"

    def query_string(self, **extra: object) -> str:
        fields = {"q": self.q, "trait": self.trait, "tag": self.tag, "stage": self.stage, **extra}
        return urlencode({k: v for k, v in fields.items() if v not in ("", None)})


def identity_matches(conn: Connection, workspace_id: int, q: str) -> set[int]:
    """Profiles the search box names exactly: ``kind:value`` for one kind, or the text as every kind of
    identity (user id, e-mail, phone, LINE user id, WeCom external_userid, openid…) and as a profile id."""
    text = q.strip()
    if not text:
        return set()
    kind, sep, value = text.partition(":")
    tries = [(kind, value.strip())] if sep and kind in IDENTITY_KINDS else [(k, text) for k in IDENTITY_KINDS]
    found: set[int] = set()
    for kind, value in tries:
        try:
            found.add(profiles.find_by_identity(conn, workspace_id, kind, value))
        except (NotFound, InvalidInput):
            continue
    if text.isdigit() and len(text) <= 18:
        with suppress(NotFound):
            found.add(profiles.resolve_profile_id(conn, workspace_id, int(text)))
    return found


def search(
    conn: Connection, workspace_id: int, wanted: Search, *, after: int | None, now: datetime
) -> tuple[list[int], int, int | None]:
    """One page of matching profile ids (by id), how many match in all, and where the next page starts.

    When the search text names identities exactly (an e-mail, a phone, a LINE id…), those customers that
    pass the filters are the answer, checked one by one with the evaluator (which agrees with SQL): no
    scan of every profile's traits, which takes seconds at a million customers. Otherwise the matches
    are those of the filters whose name / e-mail / phone contains the text (by SQL, paged)."""
    model = lifecycle.active_model(conn, workspace_id)
    filters = wanted.filters(model)
    text = wanted.text()
    exact = identity_matches(conn, workspace_id, wanted.q) if text else set()
    if exact:
        parsed_filters = parse(filters)
        passing = sorted(
            pid for pid in exact if evaluate(parsed_filters, StoredProfile(conn, workspace_id, pid, now=now))
        )
        page = [pid for pid in passing if after is None or pid > after][: PAGE_ROWS + 1]
        return page[:PAGE_ROWS], len(passing), page[PAGE_ROWS - 1] if len(page) > PAGE_ROWS else None
    condition = f"({filters}) and {text}" if text else filters
    found = audience_query.preview(
        conn, workspace_id, condition, now=now, limit=PAGE_ROWS + 1, after_id=after
    )
    ids = {p["profile_id"] for p in found["profiles"]}
    total = int(found["count"])
    listed = sorted(ids)[: PAGE_ROWS + 1]
    more = len(listed) > PAGE_ROWS
    listed = listed[:PAGE_ROWS]
    return listed, total, listed[-1] if more else None


def display_name(traits: dict[str, Any], user_id: str | None, profile_id: int) -> str:
    """How a person is called in lists: their name, else their user id, else the profile number."""
    name = traits.get("name")
    if not isinstance(name, str) or not name.strip():
        parts = [traits.get("first_name"), traits.get("last_name")]
        name = " ".join(p for p in parts if isinstance(p, str) and p.strip())
    return name or user_id or f"#{profile_id}"


def customer_rows(conn: Connection, workspace_id: int, ids: list[int], locale: str) -> list[dict[str, Any]]:
    """What the result table shows of each profile, read in bulk (a few queries for the whole page)."""
    now = utcnow()
    found = profiles.read_profiles(conn, workspace_id, ids)
    linked = profiles.identities_of(conn, workspace_id, ids)
    model = lifecycle.active_model(conn, workspace_id)
    stages = lifecycle.current_stages(conn, workspace_id, model.key, ids) if model else {}
    labels = stage_labels(model, locale)
    tags = load_tags(conn, workspace_id, ids)
    rows = []
    for pid in ids:
        if pid not in found:
            continue
        profile = found[pid]
        email = profile.traits.get("email")
        stage = stages.get(pid)
        rows.append(
            {
                "id": pid,
                "name": display_name(profile.traits, profile.user_id, pid),
                "email": email if isinstance(email, str) else None,
                "identities": [i for i in linked.get(pid, []) if i["kind"] != "anonymous_id"],
                "stage": labels.get(stage, stage) if stage else None,
                "tags": sorted(tag for tag, state in tags.get(pid, {}).items() if state.holds(now)),
                "last_seen": profile.last_seen,
            }
        )
    return rows


def _search_context(
    conn: Connection, session: ConsoleSession, wanted: Search, after: int | None
) -> dict[str, Any]:
    ws = session.workspace_id
    error = ""
    rows: list[dict[str, Any]] = []
    total, next_after = 0, None
    try:
        ids, total, next_after = search(conn, ws, wanted, after=after, now=utcnow())
        rows = customer_rows(conn, ws, ids, session.user.locale)
    except InvalidInput as failure:
        error = failure.message
    model = lifecycle.active_model(conn, ws)
    return {
        "wanted": wanted,
        "rows": rows,
        "total": total,
        "after": after,
        "next_query": wanted.query_string(after=next_after) if next_after is not None else None,
        "search_error": error,
        "searched": bool(wanted.query_string()),
        "stage_options": list(stage_labels(model, session.user.locale).items()),
        "tag_options": sorted({t["tag"] for t in audience_query.tag_counts(conn, ws, utcnow())}),
    }


@router.get("/customers", response_class=HTMLResponse)
def customers(
    request: Request,
    session: Reader,
    conn: Conn,
    q: str = "",
    trait: str = "",
    tag: str = "",
    stage: str = "",
    after: int | None = None,
) -> HTMLResponse:
    context = _search_context(conn, session, Search(q, trait, tag, stage), after)
    status = 400 if context["search_error"] else 200
    return page(
        request,
        session,
        "customers.html",
        status=status,
        workspace=get_workspace(conn, session.workspace_id),
        **context,
    )


@router.get("/customers/results", response_class=HTMLResponse)
def customer_results(
    request: Request,
    session: Reader,
    conn: Conn,
    q: str = "",
    trait: str = "",
    tag: str = "",
    stage: str = "",
    after: int | None = None,
) -> HTMLResponse:
    """The result table alone, for htmx as the search is typed; the address bar follows the search."""
    wanted = Search(q, trait, tag, stage)
    context = _search_context(conn, session, wanted, after)
    response = page(
        request,
        session,
        "customers_results.html",
        status=400 if context["search_error"] else 200,
        workspace=get_workspace(conn, session.workspace_id),
        **context,
    )
    query_string = wanted.query_string(after=after)
    response.headers["HX-Push-Url"] = "/customers" + (f"?{query_string}" if query_string else "")
    return response


# --- one customer --------------------------------------------------------------------------------
def _journeys(conn: Connection, workspace_id: int, pid: int) -> list[dict[str, Any]]:
    """The customer's journey runs, with their ISO times read back as times for ``when()``."""
    runs = profile_runs(conn, workspace_id, pid)
    for run in runs:
        for key in ("entered_at", "exited_at", "converted_at", "due_at"):
            run[key] = datetime.fromisoformat(run[key]) if run[key] else None
    return runs


def _customer_page(
    request: Request,
    session: ConsoleSession,
    conn: Connection,
    profile: profiles.Profile,
    *,
    cursor: str | None = None,
    status: int = 200,
    error: str = "",
) -> HTMLResponse:
    ws, pid, locale = session.workspace_id, profile.id, session.user.locale
    model = lifecycle.active_model(conn, ws)
    labels = stage_labels(model, locale)
    stage = lifecycle.current_stages(conn, ws, model.key, [pid]).get(pid) if model else None
    events, next_cursor = profiles.profile_timeline(conn, ws, pid, limit=EVENT_ROWS, cursor=cursor)
    deliveries, more_deliveries = messaging.list_deliveries(conn, ws, limit=MESSAGE_ROWS, profile_id=pid)
    email = profile.traits.get("email")
    return page(
        request,
        session,
        "customers_profile.html",
        status=status,
        workspace=get_workspace(conn, ws),
        profile=profile,
        name=display_name(profile.traits, profile.user_id, pid),
        email=email if isinstance(email, str) else None,
        traits=sorted(profile.traits.items()),
        tags=audience_query.profile_tag_list(conn, ws, pid, utcnow()),
        model=model,
        stage=stage,
        stage_labels=labels,
        history=list(reversed(lifecycle.history(conn, ws, pid))),
        stage_reasons=STAGE_REASONS,
        events=events,
        next_cursor=next_cursor,
        paged=cursor is not None,
        deliveries=deliveries,
        more_deliveries=more_deliveries is not None,
        consents={c.channel: c for c in messaging.list_consents(conn, ws, pid)},
        channels=CHANNELS,
        consent_statuses=CONSENT_STATUSES,
        journeys=_journeys(conn, ws, pid),
        engagement=engagement_panel(conn, ws, pid, now=utcnow()),
        shown=_shown,
        error=error,
        flash=error,
        flash_kind="error" if error else "",
    )


def _shown(value: Any) -> str:
    """A trait or property value as text: strings as they are, everything else as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str, separators=(", ", ": "))


def _survivor(conn: Connection, workspace_id: int, profile_id: int) -> int:
    """The profile to show: a merged profile's survivor (404 for another workspace's id)."""
    return profiles.resolve_profile_id(conn, workspace_id, profile_id)


@router.get("/customers/{profile_id}", response_class=HTMLResponse)
def customer(
    request: Request, profile_id: int, session: Reader, conn: Conn, cursor: str | None = None
) -> Response:
    pid = _survivor(conn, session.workspace_id, profile_id)
    if pid != profile_id:  # merged: the customer lives on in the surviving profile
        return RedirectResponse(f"/customers/{pid}", status_code=303)
    profile = profiles.get_profile(conn, session.workspace_id, pid)
    return _customer_page(request, session, conn, profile, cursor=cursor)


@router.get("/customers/{profile_id}/events", response_class=HTMLResponse)
def customer_events(
    request: Request, profile_id: int, session: Reader, conn: Conn, cursor: str | None = None
) -> HTMLResponse:
    """The next page of the timeline, for htmx's "more" (list items that replace the "more" link)."""
    pid = _survivor(conn, session.workspace_id, profile_id)
    events, next_cursor = profiles.profile_timeline(
        conn, session.workspace_id, pid, limit=EVENT_ROWS, cursor=cursor
    )
    return page(
        request,
        session,
        "customers_events.html",
        workspace=get_workspace(conn, session.workspace_id),
        profile_id=pid,
        events=events,
        next_cursor=next_cursor,
        shown=_shown,
    )


def _after_write(
    request: Request, session: ConsoleSession, conn: Connection, pid: int, failure: LifeloopError | None
) -> Response:
    """Back to the customer page: a redirect when the write was made, the page with the error when not."""
    if failure is None:
        return RedirectResponse(f"/customers/{pid}", status_code=303)
    profile = profiles.get_profile(fresh(conn), session.workspace_id, pid)
    return _customer_page(request, session, conn, profile, status=failure.status, error=failure.message)


@router.post("/customers/{profile_id}/tags", response_class=HTMLResponse)
def add_tag(
    request: Request,
    profile_id: int,
    session: Editor,
    engine: EngineDep,
    conn: Conn,
    tag: Annotated[str, Form()] = "",
) -> Response:
    pid = _survivor(conn, session.workspace_id, profile_id)
    tag = tag.strip()
    try:
        with engine.begin() as tx:
            audience.add_manual_tag(tx, session.workspace_id, pid, tag)
            record_action(tx, session.workspace_id, user_id=session.user.id, action="tag.add",
                          target=f"profile:{pid} {tag}", detail={"profile_id": pid, "tag": tag})  # fmt: skip
    except LifeloopError as failure:
        return _after_write(request, session, conn, pid, failure)
    return _after_write(request, session, conn, pid, None)


@router.post("/customers/{profile_id}/tags/remove", response_class=HTMLResponse)
def remove_tag(
    request: Request,
    profile_id: int,
    session: Editor,
    engine: EngineDep,
    conn: Conn,
    tag: Annotated[str, Form()] = "",
) -> Response:
    pid = _survivor(conn, session.workspace_id, profile_id)
    try:
        with engine.begin() as tx:
            audience.remove_manual_tag(tx, session.workspace_id, pid, tag)
            record_action(tx, session.workspace_id, user_id=session.user.id, action="tag.remove",
                          target=f"profile:{pid} {tag}", detail={"profile_id": pid, "tag": tag})  # fmt: skip
    except LifeloopError as failure:
        return _after_write(request, session, conn, pid, failure)
    return _after_write(request, session, conn, pid, None)


@router.post("/customers/{profile_id}/consent", response_class=HTMLResponse)
def change_consent(
    request: Request,
    profile_id: int,
    session: Editor,
    engine: EngineDep,
    conn: Conn,
    channel: Annotated[str, Form()] = "",
    status: Annotated[str, Form()] = "",
) -> Response:
    pid = _survivor(conn, session.workspace_id, profile_id)
    try:
        with engine.begin() as tx:
            messaging.set_consent(tx, session.workspace_id, pid, channel, status=status, source="console")
            record_action(tx, session.workspace_id, user_id=session.user.id, action="consent.set",
                          target=f"profile:{pid} {channel}",
                          detail={"profile_id": pid, "channel": channel, "status": status})  # fmt: skip
    except LifeloopError as failure:
        return _after_write(request, session, conn, pid, failure)
    return _after_write(request, session, conn, pid, None)
