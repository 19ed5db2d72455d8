"""The contact policy as a form: frequency caps per value tier, quiet hours, send windows, fallback order,
low-cost channels, rate limits and retries.

The form is turned into the same JSON document ``PUT /api/v1/contact-policy`` takes and saved with
``update_policy``, which validates it whole (an invalid change stores nothing). Like the REST route, a
change needs an admin: the policy is the workspace's promise to its customers.
"""

from __future__ import annotations

from datetime import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import Connection

from lifeloop.accounts.service import record_action
from lifeloop.errors import InvalidInput, LifeloopError
from lifeloop.messaging.policy import CHANNELS, ContactPolicy
from lifeloop.messaging.service import load_policy, update_policy
from lifeloop.web.console.auth import Admin, Reader
from lifeloop.web.console.i18n import translations
from lifeloop.web.console.pages.data import fresh
from lifeloop.web.console.render import page
from lifeloop.web.deps import Conn, EngineDep
from lifeloop.workspaces.service import get_workspace

router = APIRouter(include_in_schema=False)

SIMPLE = ("over_cap", "quiet_hours_jitter_minutes", "min_events_for_best_hour", "max_attempts",
          "retry_base_seconds", "retry_max_seconds")  # fmt: skip


def _clock(value: Any) -> str:
    """``23:00:00`` → ``23:00`` for a time input."""
    text = value.isoformat() if isinstance(value, time) else str(value)
    return text[:5] if len(text) >= 5 and text[2] == ":" else text


def _windows_text(windows: list[dict[str, Any]]) -> str:
    return ", ".join(f"{_clock(w['start'])}-{_clock(w['end'])}" for w in windows)


def view_of(policy: ContactPolicy) -> dict[str, Any]:
    """The form's values (strings, as inputs hold them) of a stored policy."""
    data = policy.model_dump(mode="json")
    return {
        "caps": [(tier, str(c["limit"]), str(c["days"])) for tier, c in data["caps"].items()],
        "quiet_hours_start": _clock(data["quiet_hours_start"]),
        "quiet_hours_end": _clock(data["quiet_hours_end"]),
        "send_time_optimization": data["send_time_optimization"],
        "best_windows_weekday": _windows_text(data["best_windows_weekday"]),
        "best_windows_weekend": _windows_text(data["best_windows_weekend"]),
        "fallback": {ch: ", ".join(data["fallback"].get(ch, [])) for ch in CHANNELS},
        "low_cost": [(tier, ", ".join(chs)) for tier, chs in data["low_cost_channels"].items()],
        "rates": {
            ch: (str(r["per_second"]), str(r["burst"])) if (r := data["rate_limits"].get(ch)) else ("", "")
            for ch in CHANNELS
        },
        **{name: str(data[name]) for name in SIMPLE},
    }


def view_of_form(form: Any) -> dict[str, Any]:
    """The form's values as submitted, to show them again beside an error."""
    text = lambda name: str(form.get(name) or "").strip()  # noqa: E731
    return {
        "caps": [
            (t.strip(), str(n).strip(), str(d).strip())
            for t, n, d in zip(
                form.getlist("cap_tier"), form.getlist("cap_limit"), form.getlist("cap_days"), strict=False
            )
            if str(t).strip()
        ],
        "quiet_hours_start": text("quiet_hours_start"),
        "quiet_hours_end": text("quiet_hours_end"),
        "send_time_optimization": form.get("send_time_optimization") == "on",
        "best_windows_weekday": text("best_windows_weekday"),
        "best_windows_weekend": text("best_windows_weekend"),
        "fallback": {ch: text(f"fallback:{ch}") for ch in CHANNELS},
        "low_cost": [
            (str(t).strip(), str(c).strip())
            for t, c in zip(form.getlist("low_tier"), form.getlist("low_channels"), strict=False)
            if str(t).strip()
        ],
        "rates": {ch: (text(f"rate:{ch}:per_second"), text(f"rate:{ch}:burst")) for ch in CHANNELS},
        **{name: text(name) for name in SIMPLE},
    }


def _list(value: str) -> list[str]:
    return [part.strip() for part in value.replace("，", ",").split(",") if part.strip()]


def _windows(value: str, field: str) -> list[dict[str, str]]:
    windows = []
    for part in _list(value):
        start, sep, end = part.partition("-")
        if not sep or not start.strip() or not end.strip():
            raise InvalidInput(f"{field}: {part!r} is not a window such as 12:00-13:30", field=field)
        windows.append({"start": start.strip(), "end": end.strip()})
    return windows


def changes_of(view: dict[str, Any]) -> dict[str, Any]:
    """The policy document of the form's values; ``update_policy`` checks every value."""
    return {
        "caps": {tier: {"limit": limit, "days": days} for tier, limit, days in view["caps"]},
        "quiet_hours_start": view["quiet_hours_start"],
        "quiet_hours_end": view["quiet_hours_end"],
        "send_time_optimization": view["send_time_optimization"],
        "best_windows_weekday": _windows(view["best_windows_weekday"], "best_windows_weekday"),
        "best_windows_weekend": _windows(view["best_windows_weekend"], "best_windows_weekend"),
        "fallback": {ch: _list(v) for ch, v in view["fallback"].items() if _list(v)},
        "low_cost_channels": {tier: _list(chs) for tier, chs in view["low_cost"]},
        "rate_limits": {
            ch: {"per_second": rate, "burst": burst}
            for ch, (rate, burst) in view["rates"].items()
            if rate or burst
        },
        **{name: view[name] for name in SIMPLE},
    }


def _policy_page(
    request: Request,
    session: Reader,
    conn: Connection,
    *,
    view: dict[str, Any] | None = None,
    flash: str = "",
    error: LifeloopError | None = None,
    status: int = 200,
) -> HTMLResponse:
    fresh(conn)
    return page(
        request,
        session,
        "msg_policy.html",
        status=status,
        workspace=get_workspace(conn, session.workspace_id),
        p=view if view is not None else view_of(load_policy(conn, session.workspace_id)),
        channels=CHANNELS,
        error_message=error.message if error else "",
        error_section=(error.field or "").split(".")[0] if error else "",
        flash=flash,
        flash_kind="error" if error else "",
    )


@router.get("/policy", response_class=HTMLResponse)
def policy(request: Request, session: Reader, conn: Conn) -> HTMLResponse:
    return _policy_page(request, session, conn)


@router.post("/policy", response_class=HTMLResponse)
async def save_policy(request: Request, session: Admin, engine: EngineDep, conn: Conn) -> Response:
    form = await request.form()
    view = view_of_form(form)
    try:
        changes = changes_of(view)
        with engine.begin() as tx:
            saved = update_policy(tx, session.workspace_id, changes)
            detail = {"changed": saved.model_dump(mode="json", exclude_defaults=True)}
            record_action(tx, session.workspace_id, user_id=session.user.id, action="policy.update",
                          target="contact-policy", detail=detail)  # fmt: skip
    except LifeloopError as failure:
        return _policy_page(request, session, conn, view=view, error=failure, status=failure.status)
    gettext = translations(session.user.locale).gettext
    return _policy_page(request, session, conn, flash=gettext("Contact policy saved."))
