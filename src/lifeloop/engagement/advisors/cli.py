"""``lifeloop advisors …``: advisors, assignment and task rules, assigning customers, task lists."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from lifeloop.cli_support import console, explains_errors, fail, open_engine, print_json
from lifeloop.workspaces.service import workspace_id_of

advisors_app = typer.Typer(
    help="Advisors (顾问 / 导购): customers assigned to them, follow-up tasks, WeCom notifications.",
    no_args_is_help=True,
)
rules_app = typer.Typer(help="Assignment rules, tried in order.", no_args_is_help=True)
task_rules_app = typer.Typer(help="Task rules: events that create follow-up tasks.", no_args_is_help=True)
tasks_app = typer.Typer(help="Follow-up tasks.", no_args_is_help=True)
advisors_app.add_typer(rules_app, name="rules")
advisors_app.add_typer(task_rules_app, name="task-rules")
advisors_app.add_typer(tasks_app, name="tasks")

WorkspaceOption = Annotated[str, typer.Option("--workspace", "-w", help="Workspace slug or id.")]
KeyOption = Annotated[
    str | None, typer.Option("--key", help="Idempotency key: the same key again changes nothing.")
]
AdvisorArgument = Annotated[str, typer.Argument(help="The advisor's id or WeCom userid.")]


def _json_option(value: str | None, name: str) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError:
        fail(f"--{name} is not JSON: {value!r}")


def _customer(conn: Any, workspace_id: int, ref: str) -> int:
    """A customer by profile id or ``kind:value`` identity (user_id:u1, phone:+8613…)."""
    from lifeloop.profiles.service import find_by_identity, resolve_profile_id

    if ref.isdigit():
        return resolve_profile_id(conn, workspace_id, int(ref))
    kind, sep, value = ref.partition(":")
    if not sep:
        kind, value = "user_id", ref
    return find_by_identity(conn, workspace_id, kind, value)


@advisors_app.command("list")
@explains_errors
def list_command(
    workspace: WorkspaceOption,
    active: Annotated[bool | None, typer.Option("--active/--inactive", help="Only these.")] = None,
) -> None:
    """The workspace's advisors."""
    from lifeloop.store.engine import connect

    from . import service

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with connect(engine) as conn:
        rows = service.list_advisors(conn, ws, active=active)
    table = Table("id", "name", "WeCom userid", "store", "channels", "capacity", "active")
    for a in rows:
        table.add_row(str(a.id), a.name, a.wecom_userid, a.store or "", ",".join(a.channels),
                      "" if a.capacity is None else str(a.capacity), "yes" if a.active else "no")  # fmt: skip
    console.print(table)


@advisors_app.command("add")
@explains_errors
def add_command(
    name: Annotated[str, typer.Argument(help="Shown to operators and in tasks.")],
    wecom_userid: Annotated[str, typer.Option("--wecom-userid", help="The member's WeCom userid.")],
    workspace: WorkspaceOption,
    store: Annotated[str | None, typer.Option(help="The store they work in.")] = None,
    channel: Annotated[
        list[str] | None, typer.Option(help="A channel of arrival they serve (repeat).")
    ] = None,
    capacity: Annotated[int | None, typer.Option(help="Most customers at once.")] = None,
    user_email: Annotated[str | None, typer.Option(help="Their console login, if they have one.")] = None,
    key: KeyOption = None,
) -> None:
    """Add an advisor."""
    from lifeloop.accounts.service import user_by_email

    from . import service

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with engine.begin() as conn:
        user_id = user_by_email(conn, user_email).id if user_email else None
        advisor = service.create_advisor(
            conn, ws, name=name, wecom_userid=wecom_userid, user_id=user_id, store=store,
            channels=channel or [], capacity=capacity, key=key,
        )  # fmt: skip
    console.print(f"advisor [bold]{advisor.name}[/] (id {advisor.id}, WeCom {advisor.wecom_userid})")


@advisors_app.command("update")
@explains_errors
def update_command(
    advisor: AdvisorArgument,
    workspace: WorkspaceOption,
    name: Annotated[str | None, typer.Option()] = None,
    store: Annotated[str | None, typer.Option(help="'' clears it.")] = None,
    channel: Annotated[list[str] | None, typer.Option(help="Replaces the channels (repeat).")] = None,
    capacity: Annotated[int | None, typer.Option(help="0 removes the limit.")] = None,
) -> None:
    """Change an advisor's name, store, channels or capacity."""
    from . import service

    changes: dict[str, Any] = {}
    if name is not None:
        changes["name"] = name
    if store is not None:
        changes["store"] = store or None
    if channel is not None:
        changes["channels"] = channel
    if capacity is not None:
        changes["capacity"] = capacity or None
    if not changes:
        fail("nothing to change: give --name, --store, --channel or --capacity")
    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with engine.begin() as conn:
        found = service.find_advisor(conn, ws, advisor)
        updated = service.update_advisor(conn, ws, found.id, **changes)
    console.print(f"advisor [bold]{updated.name}[/] updated")


@advisors_app.command("deactivate")
@explains_errors
def deactivate_command(advisor: AdvisorArgument, workspace: WorkspaceOption) -> None:
    """Turn an advisor off: their customers and open tasks go to other advisors by the rules."""
    from lifeloop.store.schema import utcnow

    from . import assignment, service

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with engine.begin() as conn:
        found = service.find_advisor(conn, ws, advisor)
        if not found.active:
            fail(f"advisor {found.name} is already inactive")
        moved = assignment.set_active(conn, ws, found.id, active=False, now=utcnow())
    console.print(
        f"advisor [bold]{found.name}[/] deactivated; {moved['reassigned']} customers reassigned, "
        f"{moved['unassigned']} left without an advisor"
    )


@advisors_app.command("activate")
@explains_errors
def activate_command(advisor: AdvisorArgument, workspace: WorkspaceOption) -> None:
    """Turn an advisor back on (customers are assigned to them again as rules choose)."""
    from lifeloop.store.schema import utcnow

    from . import assignment, service

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with engine.begin() as conn:
        found = service.find_advisor(conn, ws, advisor)
        assignment.set_active(conn, ws, found.id, active=True, now=utcnow())
    console.print(f"advisor [bold]{found.name}[/] active")


@advisors_app.command("assign")
@explains_errors
def assign_command(
    customer: Annotated[str, typer.Argument(help="Profile id, or an identity such as user_id:u1.")],
    workspace: WorkspaceOption,
    to: Annotated[str | None, typer.Option("--to", help="Manual: this advisor (id or WeCom userid).")] = None,
    reason: Annotated[str | None, typer.Option(help="Why (required with --to).")] = None,
    key: KeyOption = None,
) -> None:
    """Assign a customer to an advisor (--to, with --reason), or by the assignment rules now."""
    from lifeloop.store.schema import utcnow

    from . import assignment, service

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with engine.begin() as conn:
        pid = _customer(conn, ws, customer)
        advisor_id = service.find_advisor(conn, ws, to).id if to else None
        result = assignment.assign(conn, ws, pid, advisor_id=advisor_id, reason=reason, key=key, now=utcnow())
        chosen = service.get_advisor(conn, ws, result.advisor_id) if result.advisor_id else None
    who = f"{chosen.name} ({chosen.wecom_userid})" if chosen else "nobody"
    console.print(f"customer {pid} → [bold]{who}[/] ({result.method})")


@advisors_app.command("customers")
@explains_errors
def customers_command(advisor: AdvisorArgument, workspace: WorkspaceOption) -> None:
    """The customers assigned to an advisor."""
    from lifeloop.store.engine import connect

    from . import assignment, service

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with connect(engine) as conn:
        found = service.find_advisor(conn, ws, advisor)
        rows = assignment.customers_of(conn, ws, found.id)
    table = Table("profile", "method", "rule", "reason", "since")
    for a in rows:
        table.add_row(str(a.profile_id), a.method, a.rule_key or "", a.reason or "",
                      a.assigned_at.strftime("%Y-%m-%d %H:%M"))  # fmt: skip
    console.print(table)


# --- rules -----------------------------------------------------------------------------------------


@rules_app.command("set")
@explains_errors
def rule_set_command(
    key: Annotated[str, typer.Argument(help="The rule's key.")],
    method: Annotated[str, typer.Option(help="wecom_contact, store, channel or round_robin.")],
    workspace: WorkspaceOption,
    position: Annotated[int | None, typer.Option(help="Where in the order (default: last).")] = None,
    config: Annotated[str | None, typer.Option(help='JSON, e.g. {"trait": "store"}.')] = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Keep it, but do not use it.")] = False,
) -> None:
    """Create or replace an assignment rule."""
    from . import service

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with engine.begin() as conn:
        rule = service.put_assignment_rule(
            conn, ws, key, method=method, position=position, config=_json_option(config, "config"),
            enabled=not disabled,
        )  # fmt: skip
    console.print(f"assignment rule [bold]{rule['key']}[/] ({rule['method']}) at position {rule['position']}")


@rules_app.command("list")
@explains_errors
def rule_list_command(workspace: WorkspaceOption) -> None:
    """Assignment rules in the order they are tried."""
    from lifeloop.store.engine import connect

    from . import service

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with connect(engine) as conn:
        rows = service.list_assignment_rules(conn, ws)
    table = Table("position", "key", "method", "config", "enabled")
    for r in rows:
        table.add_row(str(r["position"]), r["key"], r["method"], json.dumps(r["config"], ensure_ascii=False),
                      "yes" if r["enabled"] else "no")  # fmt: skip
    console.print(table)


@rules_app.command("delete")
@explains_errors
def rule_delete_command(key: Annotated[str, typer.Argument()], workspace: WorkspaceOption) -> None:
    """Remove an assignment rule."""
    from . import service

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with engine.begin() as conn:
        service.delete_assignment_rule(conn, ws, key)
    console.print(f"assignment rule [bold]{key}[/] removed")


@task_rules_app.command("set")
@explains_errors
def task_rule_set_command(
    key: Annotated[str, typer.Argument(help="The rule's key.")],
    event: Annotated[str, typer.Option(help="e.g. 'Tag Added'.")],
    title: Annotated[str, typer.Option(help="Liquid, e.g. 'VIP 跟进：{{ customer.name }}'.")],
    workspace: WorkspaceOption,
    where: Annotated[str | None, typer.Option(help='JSON of properties, e.g. {"tag": "vip"}.')] = None,
    description: Annotated[str | None, typer.Option(help="Liquid.")] = None,
    due_hours: Annotated[int | None, typer.Option(help="Due this many hours after the event.")] = None,
    kind: Annotated[str, typer.Option()] = "follow_up",
    disabled: Annotated[bool, typer.Option("--disabled")] = False,
) -> None:
    """Create or replace a task rule."""
    from . import service

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with engine.begin() as conn:
        rule = service.put_task_rule(
            conn, ws, key, event=event, title=title, where=_json_option(where, "where"),
            description=description, due_hours=due_hours, kind=kind, enabled=not disabled,
        )  # fmt: skip
    console.print(f"task rule [bold]{rule['key']}[/] on {rule['event']}")


@task_rules_app.command("list")
@explains_errors
def task_rule_list_command(workspace: WorkspaceOption) -> None:
    """Task rules."""
    from lifeloop.store.engine import connect

    from . import service

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with connect(engine) as conn:
        rows = service.list_task_rules(conn, ws)
    table = Table("key", "event", "where", "title", "due (h)", "enabled")
    for r in rows:
        due = "" if r["due_hours"] is None else str(r["due_hours"])
        where = json.dumps(r["where"], ensure_ascii=False)
        table.add_row(r["key"], r["event"], where, r["title"], due, "yes" if r["enabled"] else "no")
    console.print(table)


@task_rules_app.command("delete")
@explains_errors
def task_rule_delete_command(key: Annotated[str, typer.Argument()], workspace: WorkspaceOption) -> None:
    """Remove a task rule (its tasks stay)."""
    from . import service

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with engine.begin() as conn:
        service.delete_task_rule(conn, ws, key)
    console.print(f"task rule [bold]{key}[/] removed")


# --- tasks -----------------------------------------------------------------------------------------


@tasks_app.command("list")
@explains_errors
def tasks_list_command(
    workspace: WorkspaceOption,
    advisor: Annotated[str | None, typer.Option(help="An advisor's list (id or WeCom userid).")] = None,
    customer: Annotated[str | None, typer.Option(help="A customer's tasks (profile id or identity).")] = None,
    status: Annotated[str | None, typer.Option(help="open, in_progress, done or cancelled.")] = None,
    overdue: Annotated[bool, typer.Option("--overdue", help="Only open tasks past their due time.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Tasks, soonest due first."""
    from lifeloop.store.engine import connect
    from lifeloop.store.schema import utcnow

    from . import service, tasks

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    now = utcnow()
    with connect(engine) as conn:
        advisor_id = service.find_advisor(conn, ws, advisor).id if advisor else None
        pid = _customer(conn, ws, customer) if customer else None
        rows = tasks.list_tasks(conn, ws, now=now, advisor_id=advisor_id, profile_id=pid, status=status,
                                overdue=overdue)  # fmt: skip
    if as_json:
        print_json([t.as_dict(now) for t in rows])
        return
    table = Table("id", "customer", "advisor", "title", "status", "due", "outcome")
    for t in rows:
        due = t.due_at.strftime("%Y-%m-%d %H:%M") if t.due_at else ""
        if t.overdue(now):
            due += " (overdue)"
        who = "" if t.advisor_id is None else str(t.advisor_id)
        table.add_row(str(t.id), str(t.profile_id), who, t.title, t.status, due, t.outcome or "")
    console.print(table)


@tasks_app.command("create")
@explains_errors
def tasks_create_command(
    customer: Annotated[str, typer.Argument(help="Profile id, or an identity such as user_id:u1.")],
    title: Annotated[str, typer.Option()],
    workspace: WorkspaceOption,
    key: Annotated[str, typer.Option("--key", help="The task's key: the same key makes nothing twice.")],
    due_hours: Annotated[int | None, typer.Option(help="Due in this many hours.")] = None,
    note: Annotated[str | None, typer.Option()] = None,
    kind: Annotated[str, typer.Option()] = "follow_up",
) -> None:
    """Make a follow-up task for the customer's advisor."""
    from datetime import timedelta

    from lifeloop.store.schema import utcnow

    from . import tasks

    now = utcnow()
    if due_hours is not None and due_hours < 0:
        fail("--due-hours is 0 or more")
    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with engine.begin() as conn:
        pid = _customer(conn, ws, customer)
        due = now + timedelta(hours=due_hours) if due_hours is not None else None
        task = tasks.create_task(conn, ws, pid, key=f"cli:{key}", title=title, kind=kind, due_at=due,
                                 source="cli", now=now, note=note)  # fmt: skip
    console.print(f"task {task.id} for customer {task.profile_id} (advisor {task.advisor_id or 'none'})")


@tasks_app.command("update")
@explains_errors
def tasks_update_command(
    task_id: Annotated[int, typer.Argument()],
    workspace: WorkspaceOption,
    status: Annotated[str | None, typer.Option(help="open, in_progress, done or cancelled.")] = None,
    outcome: Annotated[str | None, typer.Option(help="reached, no_answer, purchased or declined.")] = None,
    note: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Start, finish (with --outcome) or cancel a task."""
    from lifeloop.store.schema import utcnow

    from . import tasks

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with engine.begin() as conn:
        task = tasks.update_task(conn, ws, task_id, status=status, outcome=outcome, note=note, now=utcnow())
    console.print(f"task {task.id} is {task.status}" + (f" ({task.outcome})" if task.outcome else ""))
