"""REST: /api/v1/advisors — advisors, assignment rules, assigning customers, task rules and tasks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Header
from pydantic import BaseModel, Field

from lifeloop.store.schema import utcnow
from lifeloop.web.deps import Conn, CurrentGrant, EngineDep, require_role

from . import assignment, service, tasks

router = APIRouter(prefix="/api/v1/advisors", tags=["advisors"])

WRITERS = ("admin", "operator")
IdempotencyKey = Header(
    None, alias="Idempotency-Key", description="The same key again returns the first result."
)


class AdvisorCreate(BaseModel):
    name: str
    wecom_userid: str = Field(
        description="The member's userid in the brand's WeCom (notifications go there)."
    )
    user_id: int | None = Field(None, description="A console user of this workspace, if the advisor has one.")
    store: str | None = None
    channels: list[str] = Field(default_factory=list, description="Channels of arrival they serve.")
    capacity: int | None = Field(None, description="Most customers at once; none: no limit.")


class AdvisorUpdate(BaseModel):
    name: str | None = None
    wecom_userid: str | None = None
    user_id: int | None = None
    store: str | None = None
    channels: list[str] | None = None
    capacity: int | None = None
    active: bool | None = Field(None, description="false hands their customers and open tasks to others.")


class AssignmentRuleBody(BaseModel):
    method: str = Field(description="wecom_contact, store, channel or round_robin")
    position: int | None = None
    config: dict[str, Any] | None = None
    enabled: bool = True


class AssignBody(BaseModel):
    profile_id: int
    advisor_id: int | None = Field(None, description="Manual: this advisor (a reason is required).")
    reason: str | None = None


class TaskRuleBody(BaseModel):
    event: str = Field(description="e.g. Tag Added, Lifecycle Stage Entered, Order Completed")
    where: dict[str, Any] | None = Field(None, description='Properties the event must carry: {"tag": "vip"}')
    title: str = Field(description="Liquid: {{ customer.name }}, {{ event.tag }} …")
    description: str | None = None
    due_hours: int | None = None
    kind: str = "follow_up"
    enabled: bool = True


class TaskCreate(BaseModel):
    profile_id: int
    title: str
    kind: str = "follow_up"
    due_at: datetime | None = None
    note: str | None = None


class TaskUpdate(BaseModel):
    status: str | None = Field(None, description="open, in_progress, done or cancelled")
    outcome: str | None = Field(None, description="With done: reached, no_answer, purchased or declined")
    note: str | None = None


def _task_out(task: tasks.AdvisorTask) -> dict[str, Any]:
    return task.as_dict(utcnow())


# --- advisors ---------------------------------------------------------------------------------------


@router.get("")
def list_advisors(conn: Conn, grant: CurrentGrant, active: bool | None = None) -> list[dict[str, Any]]:
    return [a.as_dict() for a in service.list_advisors(conn, grant.workspace_id, active=active)]


@router.post("", status_code=201)
def create_advisor(
    body: AdvisorCreate, engine: EngineDep, grant: CurrentGrant, idempotency_key: str | None = IdempotencyKey
) -> dict[str, Any]:
    require_role(grant, *WRITERS)
    with engine.begin() as conn:
        advisor = service.create_advisor(
            conn,
            grant.workspace_id,
            name=body.name,
            wecom_userid=body.wecom_userid,
            user_id=body.user_id,
            store=body.store,
            channels=body.channels,
            capacity=body.capacity,
            key=idempotency_key,
        )
    return advisor.as_dict()


# --- assignment rules (static paths before /{advisor_id}) -------------------------------------------


@router.get("/assignment-rules")
def list_assignment_rules(conn: Conn, grant: CurrentGrant) -> list[dict[str, Any]]:
    """In the order they are tried."""
    return service.list_assignment_rules(conn, grant.workspace_id)


@router.put("/assignment-rules/{key}")
def put_assignment_rule(
    key: str, body: AssignmentRuleBody, engine: EngineDep, grant: CurrentGrant
) -> dict[str, Any]:
    require_role(grant, *WRITERS)
    with engine.begin() as conn:
        return service.put_assignment_rule(
            conn,
            grant.workspace_id,
            key,
            method=body.method,
            position=body.position,
            config=body.config,
            enabled=body.enabled,
        )


@router.delete("/assignment-rules/{key}", status_code=204)
def delete_assignment_rule(key: str, engine: EngineDep, grant: CurrentGrant) -> None:
    require_role(grant, *WRITERS)
    with engine.begin() as conn:
        service.delete_assignment_rule(conn, grant.workspace_id, key)


@router.post("/assignments")
def assign(
    body: AssignBody, engine: EngineDep, grant: CurrentGrant, idempotency_key: str | None = IdempotencyKey
) -> dict[str, Any]:
    """Assign a customer: to ``advisor_id`` with a reason (manual), or by the rules now."""
    require_role(grant, *WRITERS)
    with engine.begin() as conn:
        result = assignment.assign(
            conn,
            grant.workspace_id,
            body.profile_id,
            advisor_id=body.advisor_id,
            reason=body.reason,
            key=idempotency_key,
            now=utcnow(),
        )
    return result.as_dict()


@router.get("/customers/{profile_id}")
def customer(profile_id: int, conn: Conn, grant: CurrentGrant) -> dict[str, Any]:
    """A customer's advisor (null when none) and their tasks."""
    from lifeloop.profiles.service import resolve_profile_id

    pid = resolve_profile_id(conn, grant.workspace_id, profile_id)
    current = assignment.current_assignment(conn, grant.workspace_id, pid)
    advisor = (
        service.get_advisor(conn, grant.workspace_id, current.advisor_id).as_dict()
        if current is not None and current.advisor_id is not None
        else None
    )
    found = tasks.list_tasks(conn, grant.workspace_id, now=utcnow(), profile_id=pid)
    return {
        "profile_id": pid,
        "advisor": advisor,
        "assignment": current.as_dict() if current is not None else None,
        "tasks": [_task_out(t) for t in found],
    }


# --- task rules ------------------------------------------------------------------------------------


@router.get("/task-rules")
def list_task_rules(conn: Conn, grant: CurrentGrant) -> list[dict[str, Any]]:
    return service.list_task_rules(conn, grant.workspace_id)


@router.put("/task-rules/{key}")
def put_task_rule(key: str, body: TaskRuleBody, engine: EngineDep, grant: CurrentGrant) -> dict[str, Any]:
    require_role(grant, *WRITERS)
    with engine.begin() as conn:
        return service.put_task_rule(
            conn,
            grant.workspace_id,
            key,
            event=body.event,
            where=body.where,
            title=body.title,
            description=body.description,
            due_hours=body.due_hours,
            kind=body.kind,
            enabled=body.enabled,
        )


@router.delete("/task-rules/{key}", status_code=204)
def delete_task_rule(key: str, engine: EngineDep, grant: CurrentGrant) -> None:
    require_role(grant, *WRITERS)
    with engine.begin() as conn:
        service.delete_task_rule(conn, grant.workspace_id, key)


# --- tasks -----------------------------------------------------------------------------------------


@router.get("/tasks")
def list_tasks(
    conn: Conn,
    grant: CurrentGrant,
    status: str | None = None,
    overdue: bool = False,
    advisor_id: int | None = None,
    profile_id: int | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    """Tasks, soonest due first; filter by status, overdue, advisor or customer."""
    found = tasks.list_tasks(
        conn,
        grant.workspace_id,
        now=utcnow(),
        advisor_id=advisor_id,
        profile_id=profile_id,
        status=status,
        overdue=overdue,
        limit=limit,
    )
    return [_task_out(t) for t in found]


@router.post("/tasks", status_code=201)
def create_task(
    body: TaskCreate, engine: EngineDep, grant: CurrentGrant, idempotency_key: str | None = IdempotencyKey
) -> dict[str, Any]:
    """A task made by hand for the customer's advisor; the Idempotency-Key is the task's key (without
    one, every request makes a task)."""
    import uuid

    require_role(grant, *WRITERS)
    now = utcnow()
    key = f"api:{idempotency_key}" if idempotency_key else f"api:{uuid.uuid4().hex}"
    with engine.begin() as conn:
        task = tasks.create_task(
            conn,
            grant.workspace_id,
            body.profile_id,
            key=key,
            title=body.title,
            kind=body.kind,
            due_at=body.due_at,
            source="api",
            now=now,
            note=body.note,
        )
    return _task_out(task)


@router.get("/tasks/{task_id}")
def get_task(task_id: int, conn: Conn, grant: CurrentGrant) -> dict[str, Any]:
    from .notify import notifications_of

    task = tasks.get_task(conn, grant.workspace_id, task_id)
    return {**_task_out(task), "notifications": notifications_of(conn, grant.workspace_id, task.id)}


@router.patch("/tasks/{task_id}")
def update_task(task_id: int, body: TaskUpdate, engine: EngineDep, grant: CurrentGrant) -> dict[str, Any]:
    """Start, finish (with an outcome) or cancel a task."""
    require_role(grant, *WRITERS)
    with engine.begin() as conn:
        task = tasks.update_task(
            conn,
            grant.workspace_id,
            task_id,
            status=body.status,
            outcome=body.outcome,
            note=body.note,
            now=utcnow(),
        )
    return _task_out(task)


# --- one advisor -----------------------------------------------------------------------------------


@router.get("/{advisor_id}")
def get_advisor(advisor_id: int, conn: Conn, grant: CurrentGrant) -> dict[str, Any]:
    return service.get_advisor(conn, grant.workspace_id, advisor_id).as_dict()


@router.patch("/{advisor_id}")
def update_advisor(
    advisor_id: int, body: AdvisorUpdate, engine: EngineDep, grant: CurrentGrant
) -> dict[str, Any]:
    """Change details; ``active: false`` deactivates (customers and open tasks are handed over)."""
    require_role(grant, *WRITERS)
    changes = {k: v for k, v in body.model_dump(exclude_unset=True).items() if k != "active"}
    now = utcnow()
    with engine.begin() as conn:
        advisor = service.update_advisor(conn, grant.workspace_id, advisor_id, now=now, **changes)
        moved = None
        if body.active is not None and body.active != advisor.active:
            moved = assignment.set_active(conn, grant.workspace_id, advisor_id, active=body.active, now=now)
        advisor = service.get_advisor(conn, grant.workspace_id, advisor_id)
    return {**advisor.as_dict(), "handed_over": moved}


@router.get("/{advisor_id}/tasks")
def advisor_tasks(
    advisor_id: int, conn: Conn, grant: CurrentGrant, status: str | None = None, overdue: bool = False
) -> list[dict[str, Any]]:
    """The advisor's task list, soonest due first."""
    found = tasks.list_tasks(
        conn, grant.workspace_id, now=utcnow(), advisor_id=advisor_id, status=status, overdue=overdue
    )
    return [_task_out(t) for t in found]


@router.get("/{advisor_id}/customers")
def advisor_customers(advisor_id: int, conn: Conn, grant: CurrentGrant) -> list[dict[str, Any]]:
    return [a.as_dict() for a in assignment.customers_of(conn, grant.workspace_id, advisor_id)]
