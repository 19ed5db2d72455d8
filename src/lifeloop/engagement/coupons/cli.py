"""``lifeloop coupons …``: templates (create, list, archive), issue, redeem and a customer's coupons."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from lifeloop.cli_support import console, explains_errors, open_engine, print_json
from lifeloop.workspaces.service import workspace_id_of

coupons_app = typer.Typer(
    help="Coupons (优惠券): templates, issuing to customers, redeeming by code.", no_args_is_help=True
)
template_app = typer.Typer(
    help="Coupon templates: what a coupon gives and for how long.", no_args_is_help=True
)
coupons_app.add_typer(template_app, name="template")

WorkspaceOption = Annotated[str, typer.Option("--workspace", "-w", help="Workspace slug or id.")]
ProfileOption = Annotated[int | None, typer.Option("--profile-id", help="The customer's profile id.")]
UserOption = Annotated[str | None, typer.Option("--user-id", help="Or the customer's user id.")]
KeyOption = Annotated[
    str, typer.Option("--key", help="Idempotency key: the same command again with it changes nothing.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a sentence or table.")]


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "—"


@template_app.command("create")
@explains_errors
def template_create(
    key: Annotated[str, typer.Argument(help="The template's key.")],
    workspace: WorkspaceOption,
    kind: Annotated[str, typer.Option(help="fixed, percent, threshold, free_shipping or gift.")],
    name: Annotated[
        str | None, typer.Option(help="Shown to operators and customers (default: the key).")
    ] = None,
    value: Annotated[
        float | None, typer.Option(help="Amount off (fixed, threshold) or percentage off.")
    ] = None,
    max_discount: Annotated[float | None, typer.Option(help="percent: the most it takes off.")] = None,
    threshold: Annotated[float | None, typer.Option(help="The order total it needs.")] = None,
    gift: Annotated[str | None, typer.Option(help="gift: the gift item's name.")] = None,
    valid_days: Annotated[
        int | None, typer.Option(help="Valid N days from issue (workspace's zone).")
    ] = None,
    starts_after_days: Annotated[int | None, typer.Option(help="First valid day M days after issue.")] = None,
    valid_from: Annotated[
        str | None, typer.Option(help="Absolute validity: from (ISO time with offset).")
    ] = None,
    valid_until: Annotated[
        str | None, typer.Option(help="Absolute validity: until (ISO time with offset).")
    ] = None,
    per_user_limit: Annotated[int | None, typer.Option(help="Coupons one customer can be issued.")] = None,
    total_limit: Annotated[int | None, typer.Option(help="Coupons that can be issued in all.")] = None,
    shared_code: Annotated[
        str | None, typer.Option(help="One code for everyone (default: a code each).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Make a coupon template."""
    from lifeloop.engagement.coupons.templates import create_template
    from lifeloop.store.schema import utcnow

    spec: dict[str, Any] = {
        "name": name or key,
        "kind": kind,
        "value": value,
        "max_discount": max_discount,
        "threshold": threshold,
        "gift": gift,
        "valid_days": valid_days,
        "starts_after_days": starts_after_days,
        "valid_from": valid_from,
        "valid_until": valid_until,
        "per_user_limit": per_user_limit,
        "total_limit": total_limit,
        "code_mode": "shared" if shared_code is not None else "unique",
        "shared_code": shared_code,
    }
    spec = {k: v for k, v in spec.items() if v is not None}
    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with engine.begin() as conn:
        template = create_template(conn, ws, key, spec, now=utcnow())
    if as_json:
        print_json(template.as_dict())
    else:
        console.print(f"coupon template [bold]{template.key}[/] ({template.kind}) made")


@template_app.command("list")
@explains_errors
def template_list(workspace: WorkspaceOption, as_json: JsonOption = False) -> None:
    """The workspace's coupon templates."""
    from lifeloop.engagement.coupons.templates import list_templates
    from lifeloop.store.engine import connect

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with connect(engine) as conn:
        rows = list_templates(conn, ws)
    if as_json:
        print_json([t.as_dict() for t in rows])
        return
    table = Table("key", "name", "kind", "value", "threshold", "validity", "issued", "code", "status")
    for t in rows:
        if t.valid_days is not None:
            validity = f"{t.valid_days} days" + (
                f" after {t.starts_after_days}" if t.starts_after_days else ""
            )
        else:
            validity = f"{_when(t.valid_from)} – {_when(t.valid_until)}"
        issued = f"{t.issued_count}" + (f"/{t.total_limit}" if t.total_limit else "")
        table.add_row(
            t.key,
            t.name,
            t.kind,
            "—" if t.value is None else f"{t.value:g}",
            "—" if t.threshold is None else f"{t.threshold:g}",
            validity,
            issued,
            t.shared_code or "unique",
            t.status,
        )
    console.print(table)


@template_app.command("archive")
@explains_errors
def template_archive(
    key: Annotated[str, typer.Argument(help="The template's key.")], workspace: WorkspaceOption
) -> None:
    """Stop issuing and redeeming a template's coupons."""
    from lifeloop.engagement.coupons.templates import archive_template
    from lifeloop.store.schema import utcnow

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with engine.begin() as conn:
        archive_template(conn, ws, key, now=utcnow())
    console.print(f"coupon template [bold]{key}[/] archived")


@coupons_app.command("issue")
@explains_errors
def issue_command(
    template: Annotated[str, typer.Argument(help="The template's key.")],
    workspace: WorkspaceOption,
    key: KeyOption,
    profile_id: ProfileOption = None,
    user_id: UserOption = None,
    as_json: JsonOption = False,
) -> None:
    """Issue a coupon to a customer."""
    from lifeloop.engagement.coupons import service
    from lifeloop.store.engine import transaction
    from lifeloop.store.schema import utcnow

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)

    def work(conn: Any) -> service.IssuedCoupon:
        pid = service.customer(conn, ws, profile_id=profile_id, user_id=user_id)
        return service.issue_coupon(conn, ws, pid, template, key=key, now=utcnow(), source="cli")

    coupon = transaction(engine, work)
    if as_json:
        print_json(coupon.as_dict())
    else:
        console.print(
            f"coupon [bold]{coupon.code}[/] ({coupon.template}) issued to profile {coupon.profile_id}, "
            f"valid {_when(coupon.starts_at)} – {_when(coupon.expires_at)} UTC"
        )


@coupons_app.command("redeem")
@explains_errors
def redeem_command(
    code: Annotated[str, typer.Argument(help="The coupon's code, as the customer typed it.")],
    workspace: WorkspaceOption,
    key: KeyOption,
    profile_id: ProfileOption = None,
    user_id: UserOption = None,
    order_id: Annotated[str | None, typer.Option(help="The order it is used on.")] = None,
    order_total: Annotated[float | None, typer.Option(help="The order's total before the discount.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Redeem a customer's coupon (once; a refusal says why)."""
    from lifeloop.engagement.coupons import service
    from lifeloop.store.engine import transaction
    from lifeloop.store.schema import utcnow

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)

    def work(conn: Any) -> service.Redemption:
        pid = service.customer(conn, ws, profile_id=profile_id, user_id=user_id)
        return service.redeem_coupon(
            conn, ws, code, profile_id=pid, key=key, now=utcnow(), order_id=order_id, order_total=order_total
        )

    redemption = transaction(engine, work)
    if as_json:
        print_json(redemption.as_dict())
    else:
        off = "" if redemption.discount is None else f", {redemption.discount:g} off"
        console.print(f"coupon [bold]{redemption.coupon.code}[/] redeemed{off}")


@coupons_app.command("list")
@explains_errors
def list_command(
    workspace: WorkspaceOption,
    profile_id: ProfileOption = None,
    user_id: UserOption = None,
    as_json: JsonOption = False,
) -> None:
    """A customer's coupons, newest first."""
    from lifeloop.engagement.coupons import service
    from lifeloop.store.engine import connect
    from lifeloop.store.schema import utcnow

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with connect(engine) as conn:
        pid = service.customer(conn, ws, profile_id=profile_id, user_id=user_id)
        rows = service.coupons_of(conn, ws, pid, now=utcnow())
    if as_json:
        print_json([c.as_dict() for c in rows])
        return
    table = Table("code", "template", "kind", "status", "issued", "valid from", "expires")
    for c in rows:
        table.add_row(
            c.code, c.template, c.kind, c.status, _when(c.issued_at), _when(c.starts_at), _when(c.expires_at)
        )
    console.print(table)
