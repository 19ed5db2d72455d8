"""Journeys: the list with entries, each journey drawn as a flow of its steps with how many runs are at
each, its statistics and A/B verdict, and a YAML/JSON editor (or a playbook) to create and change one."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Connection

from lifeloop.accounts.models import ConsoleSession
from lifeloop.accounts.service import record_action
from lifeloop.errors import Conflict, InvalidInput, LifeloopError
from lifeloop.journeys import definition as d
from lifeloop.journeys import service
from lifeloop.journeys.playbooks import install_playbook, list_playbooks
from lifeloop.journeys.stats import entry_counts, journey_stats
from lifeloop.web.console.auth import Editor, Reader
from lifeloop.web.console.i18n import N_
from lifeloop.web.console.pages.data import fresh
from lifeloop.web.console.pages.lifecycle import localized
from lifeloop.web.console.render import page
from lifeloop.web.deps import Conn, EngineDep
from lifeloop.workspaces.service import get_workspace

router = APIRouter(include_in_schema=False)

STATUSES = {N_("draft"): "", N_("active"): "ok", N_("paused"): "warn", N_("archived"): "bad"}
# What each move is called in the audit log, and the status it leads to.
MOVES = {"pause": "paused", "resume": "active", "archive": "archived"}

EXAMPLE = """\
key: vip_thanks
name: {zh-CN: 感谢贵宾, en: Thank a VIP}
trigger: {kind: tag_added, tag: vip}
reentry: {mode: once}
goal: {event: Order Completed, within: 7d}
steps:
  - {key: wait_a_day, type: wait, duration: 1d}
  - {key: mark, type: add_tag, tag: thanked, expires: 30d}
  - {key: done, type: exit, reason: thanked}
"""


# --- the flow, laid out ----------------------------------------------------------------------------

NODE_W, NODE_H, GAP_X, GAP_Y, MARGIN = 200, 78, 28, 54, 16


@dataclass
class Node:
    key: str
    type: str
    detail: str
    row: int = 0
    col: int = 0
    x: int = 0
    y: int = 0
    completed: int = 0
    waiting: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    leaves: list[str] = field(default_factory=list)  # labels of ways out of the journey from here
    leave_ways: list[str] = field(default_factory=list)  # their names, where the editor can add a step


@dataclass
class Edge:
    path: str
    label: str
    label_x: int
    label_y: int
    plus_x: int  # where the editor offers to put a step on this way
    plus_y: int
    source: str = ""
    way: str | None = None


def _detail(step: Any) -> str:
    """One line on what a step does, as written in the definition."""
    if isinstance(step, d.SendStep):
        return f"{step.channel}: {step.template or ', '.join(step.templates.values())}"
    if isinstance(step, d.WaitStep):
        return step.duration or (f"→ {step.until_time}" if step.until_time else f"→ {step.until_trait}")
    if isinstance(step, d.WaitForStep):
        return f"{step.event} ≤ {step.timeout}"
    if isinstance(step, d.BranchStep):
        return step.condition
    if isinstance(step, d.SplitStep):
        arms = ", ".join(f"{a.name} {a.weight:g}" for a in step.arms)
        return f"{arms}; holdout {step.holdout:g}%" if step.holdout else arms
    if isinstance(step, d.TagStep):
        return step.tag
    if isinstance(step, d.SetTraitStep):
        return f"{step.trait} = {step.value!r}"
    if isinstance(step, d.WebhookStep):
        return step.url
    if isinstance(step, d.RichMenuStep):
        return step.rich_menu_id
    if isinstance(step, d.IssueCouponStep):
        return step.template
    if isinstance(step, d.AwardPointsStep):
        return f"+{step.points} ({step.reason})"
    if isinstance(step, d.AdvisorTaskStep):
        return step.title
    if isinstance(step, d.ExitStep):
        return step.reason
    return ""


def _exits(defn: d.Definition, step: Any) -> list[tuple[str, str | None, str | None]]:
    """Where a run goes from ``step``: (label, the way's name for the editor, next step key or None for
    leaving the journey). The holdout of a split has no way to edit: its runs always leave."""
    after = defn.next_of(step)
    if isinstance(step, d.ExitStep):
        return []
    if isinstance(step, d.WaitForStep):
        return [
            ("event", "on_event", step.on_event or after),
            ("timeout", "on_timeout", step.on_timeout or after),
        ]
    if isinstance(step, d.BranchStep):
        return [("yes", "then", step.then or after), ("no", "else", step.otherwise)]
    if isinstance(step, d.SplitStep):
        found: list[tuple[str, str | None, str | None]] = [
            (a.name, f"arm:{a.name}", a.next) for a in step.arms
        ]
        return found + ([("holdout", None, None)] if step.holdout else [])
    return [("", "next", after)]


def flow(defn: d.Definition, steps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The steps as an SVG drawing: rows by distance from the first step, arrows for every way on, and
    each step's count of runs that completed it and that wait in it now (from the journey's stats)."""
    depth: dict[str, int] = {defn.steps[0].key: 0}
    queue = deque([defn.steps[0].key])
    while queue:
        key = queue.popleft()
        for _label, _way, target in _exits(defn, defn.by_key[key]):
            if target is not None and target not in depth:
                depth[target] = depth[key] + 1
                queue.append(target)
    last = max(depth.values()) + 1
    rows: dict[int, list[str]] = {}
    for step in defn.steps:  # steps no way reaches still get drawn, below the rest
        rows.setdefault(depth.get(step.key, last), []).append(step.key)
    widest = max(len(keys) for keys in rows.values())
    width = MARGIN * 2 + widest * NODE_W + (widest - 1) * GAP_X
    nodes: dict[str, Node] = {}
    for row, keys in sorted(rows.items()):
        offset = (width - (len(keys) * NODE_W + (len(keys) - 1) * GAP_X)) // 2
        for i, key in enumerate(keys):
            step = defn.by_key[key]
            counts = steps.get(key, {})
            nodes[key] = Node(
                key,
                step.type,
                _detail(step),
                row=row,
                col=i,
                x=offset + i * (NODE_W + GAP_X),
                y=MARGIN + GAP_Y // 2 + row * (NODE_H + GAP_Y),  # a free band above and below each row
                completed=int(counts.get("completed", 0)),
                waiting=int(counts.get("waiting", 0)),
                outcomes=dict(counts.get("outcomes", {})),
            )
    routed = [
        (step, label, target)
        for step in defn.steps
        for label, _way, target in _exits(defn, step)
        if target is not None and not _direct(nodes[step.key], nodes[target])
    ]
    gutter = width
    width += GAP_X + 8 * len(routed)
    edges: list[Edge] = []
    lane = 0
    for step in defn.steps:
        source = nodes[step.key]
        for label, way, target in _exits(defn, step):
            if target is None:
                source.leaves.append(label)
                if way is not None:
                    source.leave_ways.append(way)
                continue
            if _direct(source, nodes[target]):
                edge = _edge(source, nodes[target], label)
            else:
                lane += 1
                edge = _around(source, nodes[target], label, gutter + 8 * lane, lane)
            edge.source, edge.way = step.key, way
            edges.append(edge)
    height = max(n.y for n in nodes.values()) + NODE_H + GAP_Y // 2 + MARGIN
    return {"nodes": list(nodes.values()), "edges": edges, "width": width, "height": height,
            "node_w": NODE_W, "node_h": NODE_H}  # fmt: skip


def _direct(a: Node, b: Node) -> bool:
    """Whether an arrow from ``a`` to ``b`` can be drawn straight: to the next row down, or to a
    neighbour on the same row (nothing stands between)."""
    return b.row == a.row + 1 or (b.row == a.row and abs(b.col - a.col) == 1)


def _edge(a: Node, b: Node, label: str) -> Edge:
    if b.row > a.row:  # the next row: bottom centre to top centre
        x1, y1, x2, y2 = a.x + NODE_W // 2, a.y + NODE_H, b.x + NODE_W // 2, b.y
        bend = (y2 - y1) // 2
        path = f"M{x1},{y1} C{x1},{y1 + bend} {x2},{y2 - bend} {x2},{y2}"
        return Edge(path, label, (x1 + x2) // 2 + 4, (y1 + y2) // 2, (x1 + x2) // 2 - 12, (y1 + y2) // 2)
    y = a.y + NODE_H // 2  # a neighbour: between the facing sides
    x1, x2 = (a.x + NODE_W, b.x) if b.x > a.x else (a.x, b.x + NODE_W)
    return Edge(f"M{x1},{y} L{x2},{y}", label, min(x1, x2) + 4, y - 6, (x1 + x2) // 2, y + 10)


def _around(a: Node, b: Node, label: str, x: int, lane: int) -> Edge:
    """Any other arrow (back up a loop, down past rows, along a row): out of the bottom of ``a`` into
    the free band below its row, along it to a lane in the right-hand gutter, up or down the lane to
    the band above ``b``, and into ``b`` from the top, so it never crosses a step."""
    shift = (lane % 3 - 1) * 5
    x1, y1 = a.x + NODE_W // 2 + shift, a.y + NODE_H
    x2, y2 = b.x + NODE_W // 2 + shift, b.y
    below, above = y1 + GAP_Y // 2 + shift, y2 - GAP_Y // 2 + shift
    path = f"M{x1},{y1} L{x1},{below} L{x},{below} L{x},{above} L{x2},{above} L{x2},{y2}"
    label_x = x1 + 8 + 30 * (lane % 3)  # neighbours' labels side by side
    return Edge(path, label, label_x, below - 4, x, (below + above) // 2)


# --- pages -----------------------------------------------------------------------------------------


@router.get("/journeys", response_class=HTMLResponse)
def journeys(request: Request, session: Reader, conn: Conn) -> HTMLResponse:
    ws, locale = session.workspace_id, session.user.locale
    counts = entry_counts(conn, ws)
    none = {"entered": 0, "inside": 0}
    rows = [
        {"journey": j, "name": localized(j.name, locale, j.key), **counts.get(j.key, none)}
        for j in service.list_journeys(conn, ws)
    ]
    return page(
        request, session, "journeys.html", workspace=get_workspace(conn, ws), rows=rows, statuses=STATUSES
    )


def _new_page(
    request: Request,
    session: ConsoleSession,
    conn: Connection,
    source: str,
    *,
    error: LifeloopError | None = None,
    status: int = 200,
) -> HTMLResponse:
    locale = session.user.locale
    playbooks = [
        {**p, "title": localized(p["name"], locale, p["key"]), "about": localized(p["description"], locale)}
        for p in list_playbooks()
    ]
    return page(
        request,
        session,
        "journey_new.html",
        status=status,
        workspace=get_workspace(conn, session.workspace_id),
        source=source,
        errors=_errors(error),
        defn=None,
        graph=None,
        playbooks=playbooks,
    )


def _errors(error: LifeloopError | None) -> list[dict[str, str]]:
    """Every problem a definition has (the first names the field), to show beside the editor."""
    if error is None:
        return []
    return [{"field": str(e.get("field", "")), "message": str(e["message"])} for e in error.errors] or [
        {"field": error.field or "", "message": error.message}
    ]


@router.get("/journeys/new", response_class=HTMLResponse)
def new(request: Request, session: Editor, conn: Conn) -> HTMLResponse:
    return _new_page(request, session, conn, EXAMPLE)


def _checked(conn: Connection, session: ConsoleSession, source: str) -> d.Definition:
    """The definition, valid on its own and in this workspace (its templates and segments exist)."""
    defn = d.load_definition(source)
    service.check_references(conn, session.workspace_id, defn)
    return defn


@router.post("/journeys/validate", response_class=HTMLResponse)
def validate(
    request: Request, session: Editor, conn: Conn, source: Annotated[str, Form(alias="definition")] = ""
) -> HTMLResponse:
    """The editor's check (htmx): every error with its field, or what the definition holds."""
    workspace = get_workspace(conn, session.workspace_id)
    try:
        defn = _checked(conn, session, source)
    except LifeloopError as error:
        return page(request, session, "journey_check.html", status=error.status, workspace=workspace,
                    errors=_errors(error), defn=None, graph=None)  # fmt: skip
    return page(request, session, "journey_check.html", workspace=workspace, errors=[], defn=defn,
                graph=flow(defn, {}))  # fmt: skip


@router.post("/journeys", response_class=HTMLResponse)
def create(
    request: Request,
    session: Editor,
    engine: EngineDep,
    conn: Conn,
    source: Annotated[str, Form(alias="definition")] = "",
) -> Response:
    """Save the definition as a draft (a new journey, or the draft of the journey with that key)."""
    try:
        with engine.begin() as tx:
            journey = service.save_draft(tx, session.workspace_id, source)
            record_action(tx, session.workspace_id, user_id=session.user.id, action="journey.save",
                          target=journey.key)  # fmt: skip
    except LifeloopError as error:
        return _new_page(request, session, fresh(conn), source, error=error, status=error.status)
    return RedirectResponse(f"/journeys/{journey.key}", status_code=303)


@router.post("/journeys/playbooks/{playbook}", response_class=HTMLResponse)
def playbook(
    request: Request,
    playbook: str,
    session: Editor,
    engine: EngineDep,
    conn: Conn,
    publish: Annotated[bool, Form()] = False,
) -> Response:
    """Install a playbook: its templates, segments and journey (a draft, or published at once)."""
    try:
        with engine.begin() as tx:
            journey = install_playbook(tx, session.workspace_id, playbook, publish=publish)
            record_action(tx, session.workspace_id, user_id=session.user.id, action="journey.playbook",
                          target=journey.key, detail={"playbook": playbook, "publish": publish})  # fmt: skip
    except LifeloopError as error:
        return _new_page(request, session, fresh(conn), EXAMPLE, error=error, status=error.status)
    return RedirectResponse(f"/journeys/{journey.key}", status_code=303)


def _journey_page(
    request: Request,
    session: ConsoleSession,
    conn: Connection,
    key: str,
    *,
    version: int | None = None,
    draft_source: str | None = None,
    error: LifeloopError | None = None,
    flash: str = "",
    status: int = 200,
) -> HTMLResponse:
    ws, locale = session.workspace_id, session.user.locale
    journey = service.get_journey(conn, ws, key)
    stats = journey_stats(conn, ws, key, version=version)
    shown = version or journey.version
    definition = service.version_definition(conn, ws, key, shown) if shown else journey.draft
    defn = d.load_definition(definition)
    published = service.version_definition(conn, ws, key, journey.version) if journey.version else None
    return page(
        request,
        session,
        "journey.html",
        status=status,
        workspace=get_workspace(conn, ws),
        journey=journey,
        name=localized(journey.name, locale, journey.key),
        description=localized(defn.description, locale),
        defn=defn,
        shown=shown,
        selected=version,
        graph=flow(defn, stats["steps"]),
        stats=stats,
        versions=[
            {**v, "published_at": datetime.fromisoformat(v["published_at"])}
            for v in service.versions(conn, ws, key)
        ],
        draft_changed=published != journey.draft,
        draft_source=draft_source
        if draft_source is not None
        else yaml.safe_dump(journey.draft, allow_unicode=True, sort_keys=False),
        errors=_errors(error),
        statuses=STATUSES,
        flash=flash,
        flash_kind="error" if flash else "",
    )


@router.get("/journeys/{key}", response_class=HTMLResponse)
def journey(
    request: Request, key: str, session: Reader, conn: Conn, version: int | None = None
) -> HTMLResponse:
    return _journey_page(request, session, conn, key, version=version)


@router.post("/journeys/{key}/draft", response_class=HTMLResponse)
def save(
    request: Request,
    key: str,
    session: Editor,
    engine: EngineDep,
    conn: Conn,
    source: Annotated[str, Form(alias="definition")] = "",
) -> Response:
    """Replace the draft (its key must stay the journey's); versions already published are untouched."""
    try:
        service.get_journey(conn, session.workspace_id, key)
        if d.load_definition(source).key != key:
            raise InvalidInput(f"the definition's key must be {key!r}", field="key")
        with engine.begin() as tx:
            service.save_draft(tx, session.workspace_id, source)
            record_action(tx, session.workspace_id, user_id=session.user.id, action="journey.save",
                          target=key)  # fmt: skip
    except (InvalidInput, Conflict) as error:
        return _journey_page(request, session, fresh(conn), key, draft_source=source, error=error,
                             status=error.status)  # fmt: skip
    return RedirectResponse(f"/journeys/{key}", status_code=303)


@router.post("/journeys/{key}/publish", response_class=HTMLResponse)
def publish(request: Request, key: str, session: Editor, engine: EngineDep, conn: Conn) -> Response:
    """The draft becomes a new version and the journey is active; runs inside keep their version."""
    try:
        with engine.begin() as tx:
            published = service.publish(tx, session.workspace_id, key, by=f"user:{session.user.email}")
            record_action(tx, session.workspace_id, user_id=session.user.id, action="journey.publish",
                          target=key, detail={"version": published.version})  # fmt: skip
    except (InvalidInput, Conflict) as error:
        return _journey_page(request, session, fresh(conn), key, flash=error.message, status=error.status)
    return RedirectResponse(f"/journeys/{key}", status_code=303)


@router.post("/journeys/{key}/{move}", response_class=HTMLResponse)
def move(request: Request, key: str, move: str, session: Editor, engine: EngineDep, conn: Conn) -> Response:
    """Pause (no new entries), resume, or archive (every run inside leaves)."""
    if move not in MOVES:
        raise InvalidInput(f"a journey can be paused, resumed or archived, not {move!r}", field="move")
    try:
        with engine.begin() as tx:
            service.set_status(tx, session.workspace_id, key, MOVES[move])
            record_action(tx, session.workspace_id, user_id=session.user.id, action=f"journey.{move}",
                          target=key)  # fmt: skip
    except Conflict as error:
        return _journey_page(request, session, fresh(conn), key, flash=error.message, status=error.status)
    return RedirectResponse(f"/journeys/{key}", status_code=303)
