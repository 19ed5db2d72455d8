"""Analytics pages: retention, funnels, paths, RFM value layers, customer value and churn risk, revenue and
channel ROI.

Every chart is a metric's own JSON (``metrics_json``, what ``/api/v1/analytics/{metric}`` answers) or the
same domain function the API and CLI call (``rfm.layer_counts``, ``service.customer_value``). Parameters
come from GET forms; they are validated by the metric itself first, so a bad date or step is shown inline
with status 400 rather than as an empty chart. Every role may read; exporting a customer list needs
``analyse``.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Mapping
from datetime import date, timedelta
from typing import Any

import duckdb
import pandas as pd
from babel.numbers import format_decimal
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import Connection

from lifeloop.accounts.models import ConsoleSession
from lifeloop.analytics import rfm
from lifeloop.analytics import service as analytics
from lifeloop.analytics.metrics import build_metric
from lifeloop.analytics.store import store
from lifeloop.errors import InvalidInput, LifeloopError, NotFound
from lifeloop.profiles.service import get_profile, list_profiles
from lifeloop.web.console.auth import Analyst, Reader
from lifeloop.web.console.i18n import N_, babel_locale, translations
from lifeloop.web.console.pages.data import metrics_json, today_in
from lifeloop.web.console.render import page
from lifeloop.web.deps import Conn, analytics_path
from lifeloop.workspaces.models import Workspace
from lifeloop.workspaces.service import get_workspace

router = APIRouter(include_in_schema=False)
log = logging.getLogger("lifeloop.console")

# The section tabs: path, label (a msgid).
TABS: list[tuple[str, str]] = [
    ("/analytics/retention", N_("Retention")),
    ("/analytics/funnels", N_("Funnels")),
    ("/analytics/paths", N_("Paths")),
    ("/analytics/rfm", N_("RFM layers")),
    ("/analytics/value", N_("Customer value")),
    ("/analytics/revenue", N_("Revenue and channels")),
]

LAYER_NAMES = {
    "high_value": N_("High value"),
    "new": N_("New buyers"),
    "potential": N_("Potential"),
    "lost": N_("Lost"),
    "sleeping": N_("Sleeping"),
    "regular": N_("Regular"),
}
LAYER_RULES = {
    "high_value": N_("Recent, frequent and high spending (R, F and M scores of 4 or more)"),
    "new": N_("Exactly one order, placed in the last 30 days"),
    "potential": N_("Recent (R of 3 or more) and frequent or high spending (F or M of 4 or more)"),
    "lost": N_("Never ordered and first seen over 30 days ago, or one order long ago"),
    "sleeping": N_("Has ordered, but not recently (R of 2 or less)"),
    "regular": N_("Everyone else"),
}
RISK_REASONS = {
    "low_p_alive": N_("Probably no longer active"),
    "overdue": N_("Overdue for the next order"),
}
FUNNEL_INPUTS = 5  # step fields shown at least (more when more steps were asked for)
RISK_ROWS = 25  # churn-risk customers listed on the page; the export has them all

Gettext = Callable[[str], str]


def _gettext(session: ConsoleSession) -> Gettext:
    return translations(session.user.locale).gettext


def _unavailable(error: Exception) -> None:
    log.info("analytics store unavailable: %s", error)


def _date_range(query: Mapping[str, str], workspace: Workspace, days: int = 90) -> dict[str, str]:
    """The form's ``start``/``end`` as typed (the metric validates them), by default the last ``days``
    days in the workspace's time zone."""
    end = query.get("end") or today_in(workspace.timezone).isoformat()
    start = query.get("start")
    if not start:
        try:
            start = (date.fromisoformat(end) - timedelta(days=days - 1)).isoformat()
        except ValueError:  # a bad end: the metric reports it, the start field just stays empty
            start = ""
    return {"start": start, "end": end}


def _validate(workspace_id: int, requests: Mapping[str, tuple[str, dict[str, Any]]]) -> None:
    """Each chart's metric parameters, checked by the metric (InvalidInput / NotFound otherwise) before
    anything runs: a typo is a message on the form, not an empty chart."""
    for metric, params in requests.values():
        build_metric(metric, {**params, "workspace_id": workspace_id})


def _charts(
    request: Request,
    workspace_id: int,
    requests: Mapping[str, tuple[str, dict[str, Any]]],
    known: list[str] | None,
) -> dict[str, dict[str, Any]]:
    """chart id → the metric's JSON, leaving out charts without data (the page says "no data yet"). With
    no event synced yet (``known`` empty) nothing runs: calendar metrics would draw rows of zeros."""
    charts: dict[str, dict[str, Any]] = {}
    if not known:
        return charts
    for key, result in metrics_json(request, workspace_id, dict(requests)).items():  # one store opening
        if result and (result["data"] or result["chart"].get("links")):
            charts[key] = result
    return charts


def _known_events(request: Request, workspace_id: int) -> list[str] | None:
    """The event names seen in the workspace (None when the analytics store cannot answer)."""
    try:
        return analytics.cached_event_names(analytics_path(request), workspace_id)
    except (LifeloopError, duckdb.Error, OSError) as error:
        _unavailable(error)
        return None


def _check_events(names: list[str], known: list[str] | None, gettext: Gettext) -> None:
    """Refuse an event name nobody has sent (once there are events to compare with)."""
    if not known:
        return
    for name in names:
        if name not in known:
            raise InvalidInput(
                gettext("No event named “%(name)s” has been recorded in this workspace.") % {"name": name},
                field="event",
            )


def _render(
    request: Request,
    session: ConsoleSession,
    workspace: Workspace,
    template: str,
    *,
    error: LifeloopError | None = None,
    **context: Any,
) -> HTMLResponse:
    """A section of the analytics pages; with ``error``, its message on the form and its status."""
    return page(
        request,
        session,
        template,
        status=error.status if error is not None else 200,
        workspace=workspace,
        tabs=TABS,
        error=error.message if error is not None else "",
        **context,
    )


# ------------------------------------------------------------------------------------------ retention


@router.get("/analytics", response_class=HTMLResponse)
@router.get("/analytics/retention", response_class=HTMLResponse)
def retention(request: Request, session: Reader, conn: Conn) -> HTMLResponse:
    """Day-N retention per daily cohort, the weekly / monthly cohort heatmap and the churn rate."""
    gettext = _gettext(session)
    workspace = get_workspace(conn, session.workspace_id)
    q = request.query_params
    form = {
        **_date_range(q, workspace),
        "days": q.get("days") or "1,7,30",
        "period": q.get("period") or "week",
        "periods": q.get("periods") or "8",
    }
    span = {"start": form["start"], "end": form["end"]}
    requests = {
        "retention": ("retention", {**span, "days": form["days"]}),
        "cohorts": ("cohort_retention", {**span, "period": form["period"], "periods": form["periods"]}),
        "churn": ("churn_rate", {**span, "period": form["period"]}),
    }
    try:
        _validate(session.workspace_id, requests)
    except LifeloopError as error:
        return _render(
            request,
            session,
            workspace,
            "analytics_retention.html",
            error=error,
            form=form,
            charts={},
            labels={},
        )
    charts = _charts(request, session.workspace_id, requests, _known_events(request, session.workspace_id))
    days = charts["retention"]["params"]["days"] if "retention" in charts else []
    labels = {f"d{d}": gettext("Day %(n)s") % {"n": d} for d in days}
    labels["churn_rate"] = gettext("Churn rate")
    return _render(
        request, session, workspace, "analytics_retention.html", form=form, charts=charts, labels=labels
    )


# ------------------------------------------------------------------------------------- funnels, paths


@router.get("/analytics/funnels", response_class=HTMLResponse)
def funnels(request: Request, session: Reader, conn: Conn) -> HTMLResponse:
    """A funnel over the steps (event names) the reader typed: users per step, bar chart and conversions."""
    gettext = _gettext(session)
    workspace = get_workspace(conn, session.workspace_id)
    q = request.query_params
    steps = [s.strip() for s in q.getlist("steps") if s.strip()]
    form = {**_date_range(q, workspace), "window_days": q.get("window_days") or "7"}
    known = _known_events(request, session.workspace_id)
    context: dict[str, Any] = {
        "form": form,
        "steps": steps + [""] * max(FUNNEL_INPUTS - len(steps), 1),
        "events": known or [],
        "labels": {"users": gettext("Users")},
    }
    if not steps:  # nothing asked yet: the form alone
        return _render(request, session, workspace, "analytics_funnels.html", charts={}, rows=[], **context)
    params = {**form, "steps": steps}
    try:
        _validate(session.workspace_id, {"funnel": ("funnel", params)})
        _check_events(steps, known, gettext)
    except LifeloopError as error:
        return _render(
            request, session, workspace, "analytics_funnels.html", error=error, charts={}, rows=[], **context
        )
    charts = _charts(request, session.workspace_id, {"funnel": ("funnel", params)}, known)
    rows: list[dict[str, Any]] = []
    if "funnel" in charts:
        result = charts["funnel"]
        rows = [dict(zip(result["columns"], row, strict=True)) for row in result["data"]]
        # console.js draws bars; the metric's own hint is a funnel shape
        result["chart"] = {"type": "bar", "x": "event", "series": ["users"]}
    return _render(request, session, workspace, "analytics_funnels.html", charts=charts, rows=rows, **context)


@router.get("/analytics/paths", response_class=HTMLResponse)
def paths(request: Request, session: Reader, conn: Conn) -> HTMLResponse:
    """What users did after (or before) their first time doing an event, as a Sankey diagram."""
    gettext = _gettext(session)
    workspace = get_workspace(conn, session.workspace_id)
    q = request.query_params
    form = {
        **_date_range(q, workspace),
        "event": (q.get("event") or "").strip(),
        "direction": q.get("direction") or "after",
        "depth": q.get("depth") or "3",
    }
    known = _known_events(request, session.workspace_id)
    context: dict[str, Any] = {"form": form, "events": known or [], "labels": {}}
    if not form["event"]:
        return _render(request, session, workspace, "analytics_paths.html", charts={}, rows=[], **context)
    requests = {"paths": ("paths", form)}
    try:
        _validate(session.workspace_id, requests)
        _check_events([form["event"]], known, gettext)
    except LifeloopError as error:
        return _render(
            request, session, workspace, "analytics_paths.html", error=error, charts={}, rows=[], **context
        )
    charts = _charts(request, session.workspace_id, requests, known)
    rows = []
    if "paths" in charts:
        result = charts["paths"]
        rows = [dict(zip(result["columns"], row, strict=True)) for row in result["data"]]
    return _render(request, session, workspace, "analytics_paths.html", charts=charts, rows=rows, **context)


# ----------------------------------------------------------------------------------------------- RFM


def _layer_counts(request: Request, workspace_id: int) -> dict[str, int] | None:
    """Users per value layer from the last RFM scoring, as ``GET /api/v1/analytics/rfm`` reads them."""
    try:
        with store(analytics_path(request)) as con:
            frame = rfm.layer_counts(con, workspace_id)
    except (LifeloopError, duckdb.Error, OSError) as error:
        _unavailable(error)
        return None
    return {str(layer): int(users) for layer, users in frame.itertuples(index=False, name=None)}


@router.get("/analytics/rfm", response_class=HTMLResponse)
def rfm_layers(request: Request, session: Reader, conn: Conn) -> HTMLResponse:
    """The value layers of the last RFM scoring (the worker re-scores after each sync): sizes and a pie."""
    gettext = _gettext(session)
    counts = _layer_counts(request, session.workspace_id) or {}
    total = sum(counts.values())
    layers = [
        {
            "key": key,
            "users": counts.get(key, 0),
            "share": counts.get(key, 0) / total if total else None,
        }
        for key in rfm.LAYERS
    ]
    charts = {}
    if total:
        charts["layers"] = {
            "metric": "rfm_layers",
            "columns": ["layer", "users"],
            "data": [[key, users] for key, users in counts.items()],
            "chart": {"type": "pie", "name": "layer", "value": "users"},
        }
    return _render(
        request,
        session,
        get_workspace(conn, session.workspace_id),
        "analytics_rfm.html",
        layers=layers,
        total=total,
        layer_names=LAYER_NAMES,
        layer_rules=LAYER_RULES,
        charts=charts,
        labels={key: gettext(name) for key, name in LAYER_NAMES.items()},
    )


# ------------------------------------------------------------------------------- customer value, risk


def _value_params(query: Mapping[str, str], workspace: Workspace, gettext: Gettext) -> tuple[date, int]:
    """``as_of`` (default today in the workspace) and ``months`` (1-120, default 12) from the form."""
    try:
        as_of = date.fromisoformat(query.get("as_of") or today_in(workspace.timezone).isoformat())
    except ValueError:
        raise InvalidInput(gettext("“As of” must be a date (YYYY-MM-DD)."), field="as_of") from None
    try:
        months = int(query.get("months") or 12)
    except ValueError:
        months = 0
    if not 1 <= months <= 120:
        raise InvalidInput(gettext("The horizon must be between 1 and 120 months."), field="months")
    return as_of, months


def _customer_value(request: Request, workspace_id: int, as_of: date, months: int) -> pd.DataFrame:
    """``service.customer_value``'s per-customer table (what ``lifeloop analytics clv`` prints)."""
    frame, _params = analytics.cached_customer_value(
        analytics_path(request), workspace_id, as_of=as_of, months=months
    )
    return frame


def _range_label(low: float, high: float, locale: str) -> str:
    loc = babel_locale(locale)
    return f"{format_decimal(round(low), locale=loc)}–{format_decimal(round(high), locale=loc)}"


def _user_ids(conn: Connection, workspace_id: int, profile_ids: list[int]) -> dict[int, str | None]:
    """The customers' own user ids (anonymous profiles have none) for the listed profiles: one look-up
    each for a page's rows, every profile a page at a time for an export."""
    found: dict[int, str | None] = {}
    if len(profile_ids) <= 100:
        for pid in profile_ids:
            try:
                found[pid] = get_profile(conn, workspace_id, pid).user_id
            except NotFound:  # removed from the database since the last sync
                found[pid] = None
        return found
    after: int | None = None
    while batch := list_profiles(conn, workspace_id, limit=10_000, after_id=after):
        found.update((row["id"], row["user_id"]) for row in batch)
        after = batch[-1]["id"]
    return {pid: found.get(pid) for pid in profile_ids}


@router.get("/analytics/value", response_class=HTMLResponse)
def customer_value(request: Request, session: Reader, conn: Conn) -> HTMLResponse:
    """Predicted customer value (BG/NBD + Gamma-Gamma) as a histogram, and the customers most at risk of
    churning, each linking to their profile."""
    gettext = _gettext(session)
    workspace = get_workspace(conn, session.workspace_id)
    q = request.query_params
    form = {
        "as_of": q.get("as_of") or today_in(workspace.timezone).isoformat(),
        "months": q.get("months") or "12",
    }
    context: dict[str, Any] = {"form": form, "charts": {}, "risky": [], "at_risk": 0, "customers": 0}
    context["labels"] = {"customers": gettext("Customers")}
    context["reasons"] = RISK_REASONS
    context["notice"] = ""
    try:
        as_of, months = _value_params(q, workspace, gettext)
    except LifeloopError as error:
        return _render(request, session, workspace, "analytics_value.html", error=error, **context)
    try:
        frame = _customer_value(request, session.workspace_id, as_of, months)
    except InvalidInput as error:  # too few orders to fit the models: a state of the data, not a bad form
        context["notice"] = error.message
        return _render(request, session, workspace, "analytics_value.html", **context)
    except (LifeloopError, duckdb.Error, OSError) as error:
        _unavailable(error)
        return _render(request, session, workspace, "analytics_value.html", **context)
    bins = analytics.value_distribution(frame["clv"])
    context["charts"]["clv"] = {
        "metric": "clv_distribution",
        "columns": ["range", "customers", "low", "high"],
        "data": [
            [_range_label(low, high, session.user.locale), int(n), float(low), float(high)]
            for low, high, n in bins[["low", "high", "customers"]].itertuples(index=False, name=None)
        ],
        "chart": {"type": "bar", "x": "range", "series": ["customers"]},
    }
    risky = analytics.at_risk_customers(frame)
    shown = risky.head(RISK_ROWS)
    ids = _user_ids(conn, session.workspace_id, [int(v) for v in shown["user_id"]])
    context["risky"] = [
        {**row, "profile_id": int(row["user_id"]), "user_id": ids[int(row["user_id"])]}
        for row in shown.to_dict("records")
    ]
    context["at_risk"] = len(risky)
    context["customers"] = len(frame)
    context["mean_clv"] = float(frame["clv"].mean())
    return _render(request, session, workspace, "analytics_value.html", **context)


@router.get("/analytics/value/churn-risk.csv")
def churn_risk_export(request: Request, session: Analyst, conn: Conn) -> Response:
    """Every customer flagged at risk, as CSV (for a win-back list elsewhere): needs ``analyse``."""
    gettext = _gettext(session)
    workspace = get_workspace(conn, session.workspace_id)
    as_of, months = _value_params(request.query_params, workspace, gettext)
    risky = analytics.at_risk_customers(_customer_value(request, session.workspace_id, as_of, months))
    ids = _user_ids(conn, session.workspace_id, [int(v) for v in risky["user_id"]])
    out = io.StringIO()
    writer = csv.writer(out)
    columns = ["orders", "p_alive", "expected_orders", "expected_order_value", "clv", "risk_reason"]
    writer.writerow(["profile_id", "user_id", *columns])
    for row in risky.to_dict("records"):
        pid = int(row["user_id"])
        writer.writerow([pid, ids[pid] or "", *(row[c] for c in columns)])
    name = f"churn-risk-{workspace.slug}-{as_of.isoformat()}.csv"
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


# -------------------------------------------------------------------------------- revenue and channels


@router.get("/analytics/revenue", response_class=HTMLResponse)
def revenue(request: Request, session: Reader, conn: Conn) -> HTMLResponse:
    """Revenue, ARPU and ARPPU per period, and acquisition channels' cost and ROI."""
    gettext = _gettext(session)
    workspace = get_workspace(conn, session.workspace_id)
    q = request.query_params
    form = {**_date_range(q, workspace), "interval": q.get("interval") or "week"}
    span = {"start": form["start"], "end": form["end"]}
    requests = {
        "arpu": ("revenue", {**span, "interval": form["interval"]}),
        "roi": ("channel_roi", span),
    }
    labels = {
        "revenue": gettext("Revenue"),
        "arpu": gettext("ARPU"),
        "arppu": gettext("ARPPU"),
        "cost_per_acquired": gettext("Cost per acquired user"),
        "cost_per_converted": gettext("Cost per paying user"),
    }
    try:
        _validate(session.workspace_id, requests)
    except LifeloopError as error:
        return _render(
            request, session, workspace, "analytics_revenue.html", error=error, form=form, charts={}, roi=[],
            labels=labels,
        )  # fmt: skip
    charts = _charts(request, session.workspace_id, requests, _known_events(request, session.workspace_id))
    if "arpu" in charts:  # the same rows drawn twice: revenue as bars, ARPU / ARPPU as lines
        charts["revenue"] = {**charts["arpu"], "chart": {"type": "bar", "x": "period", "series": ["revenue"]}}
    roi = []
    if "roi" in charts:
        result = charts["roi"]
        roi = [dict(zip(result["columns"], row, strict=True)) for row in result["data"]]
    return _render(
        request,
        session,
        workspace,
        "analytics_revenue.html",
        form=form,
        charts=charts,
        roi=roi,
        labels=labels,
    )
