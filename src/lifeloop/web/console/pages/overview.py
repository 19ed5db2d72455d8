"""The overview dashboard: customers, activity, stages and their flows, retention, revenue, messages."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from lifeloop.errors import NotFound
from lifeloop.lifecycle.service import active_model, stage_distribution
from lifeloop.web.console.auth import Reader
from lifeloop.web.console.pages.data import (
    chart_labels,
    column_sum,
    days_back,
    last_row,
    metrics_json,
    today_in,
)
from lifeloop.web.console.render import page
from lifeloop.web.deps import Conn
from lifeloop.workspaces.service import get_workspace

router = APIRouter(include_in_schema=False)


def stage_labels(model: Any, locale: str) -> dict[str, str]:
    """Each stage's name in the reader's language (Traditional Chinese falls back to Simplified)."""
    if model is None:
        return {}
    order = [locale, "zh-CN" if locale == "zh-TW" else locale, "en"]
    return {s.key: next((s.names[k] for k in order if s.names.get(k)), s.key) for s in model.stages}


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, session: Reader, conn: Conn) -> HTMLResponse:
    workspace = get_workspace(conn, session.workspace_id)
    ws = session.workspace_id
    today = today_in(workspace.timezone)
    model = active_model(conn, ws)
    try:
        stages = stage_distribution(conn, ws) if model else {}
    except NotFound:
        stages = {}
    labels = chart_labels(session.user.locale, stage_labels(model, session.user.locale))
    found = metrics_json(
        request,
        ws,
        {
            "activity": ("active_users", days_back(today, 30)),
            "new": ("new_users", days_back(today, 30)),
            "revenue": ("revenue", {"interval": "week", **days_back(today, 84)}),
            "month": ("revenue", {"interval": "day", **days_back(today, 30)}),
            "flows": ("stage_flows", days_back(today, 90)),
            "retention": ("cohort_retention", {"period": "week", "periods": 8, **days_back(today, 84)}),
            "messages": ("messages", days_back(today, 30)),
        },
    )
    activity, revenue = found["activity"], found["revenue"]
    if revenue:
        revenue["chart"] = {"type": "bar", "x": "period", "series": ["revenue"]}
    month_revenue = column_sum(found["month"], "revenue")
    active = last_row(activity)
    charts: dict[str, dict[str, Any] | None] = {
        "stages": {
            "columns": ["stage", "users"],
            "data": [[key, count] for key, count in stages.items()],
            "chart": {"type": "pie", "name": "stage", "value": "users"},
        }
        if stages
        else None,
        "flows": found["flows"],
        "retention": found["retention"],
        "activity": activity,
        "revenue": revenue,
        "messages": found["messages"],
    }
    return page(
        request,
        session,
        "overview.html",
        workspace=workspace,
        model=model,
        customers=sum(stages.values()) if stages else None,
        new_customers=column_sum(found["new"], "new_users"),
        active=active,
        month_revenue=month_revenue,
        arpu=(month_revenue / active["mau"]) if month_revenue is not None and active.get("mau") else None,
        charts={k: v for k, v in charts.items() if v and (v["data"] or v["chart"].get("links"))},
        labels=labels,
    )
