"""What pages share to read analytics: a metric's chart-ready JSON, or nothing while there is no data."""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
from fastapi import Request
from sqlalchemy import Connection

from lifeloop.analytics import service as analytics
from lifeloop.errors import LifeloopError
from lifeloop.web.console.i18n import N_, translations
from lifeloop.web.deps import analytics_path

log = logging.getLogger("lifeloop.console")


def fresh(conn: Connection) -> Connection:
    """The request's read connection, past any snapshot it took before this request's own write (SQLite
    and PostgreSQL keep a transaction's snapshot): a page re-read after a write shows the write."""
    if conn.in_transaction():
        conn.rollback()
    return conn


def today_in(timezone: str) -> date:
    return datetime.now(ZoneInfo(timezone)).date()


def metrics_json(
    request: Request, workspace_id: int, wanted: dict[str, tuple[str, dict[str, Any]]]
) -> dict[str, dict[str, Any] | None]:
    """A page's metrics on one opening of the analytics store (an opening costs 55-75 ms): each one's JSON
    as the API answers it, or None where the store cannot answer yet (no sync has run, or it is being
    rebuilt) — the page then says "no data yet" instead of failing."""
    names = list(wanted)
    try:
        answers = analytics.run_metrics(analytics_path(request), workspace_id, [wanted[n] for n in names])
    except (LifeloopError, duckdb.Error, OSError) as error:
        log.info("metrics %s unavailable: %s", ", ".join(names), error)
        return dict.fromkeys(names)
    found: dict[str, dict[str, Any] | None] = {}
    for name, answer in zip(names, answers, strict=True):
        if isinstance(answer, LifeloopError | duckdb.Error):
            log.info("metric %s unavailable: %s", wanted[name][0], answer)
            found[name] = None
        else:
            found[name] = answer.to_json()
    return found


def days_back(end: date, days: int) -> dict[str, str]:
    """``start``/``end`` parameters for the ``days`` days ending at ``end``."""
    return {"start": (end - timedelta(days=days - 1)).isoformat(), "end": end.isoformat()}


def last_row(result: dict[str, Any] | None) -> dict[str, Any]:
    if not result or not result["data"]:
        return {}
    return dict(zip(result["columns"], result["data"][-1], strict=True))


def column_sum(result: dict[str, Any] | None, column: str) -> float | None:
    if not result:
        return None
    i = result["columns"].index(column)
    return float(sum(row[i] or 0 for row in result["data"]))


# Metric columns and values that charts show as series or slice names, in the reader's language.
_SERIES = {
    "dau": N_("DAU"),
    "wau": N_("WAU"),
    "mau": N_("MAU"),
    "new_users": N_("New customers"),
    "revenue": N_("Revenue"),
    "arpu": N_("ARPU"),
    "arppu": N_("ARPPU"),
    "orders": N_("Orders"),
    "churn_rate": N_("Churn rate"),
    "(entry)": N_("(first stage)"),
    "line": "LINE",
    "wecom": N_("WeCom"),
    "wechat": N_("WeChat"),
    "email": N_("E-mail"),
    "sms": "SMS",
    "webhook": "Webhook",
    "unknown": N_("Unknown"),
}


def chart_labels(locale: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Names for a chart's series (``extra``: e.g. stage keys → stage names, already translated)."""
    gettext = translations(locale).gettext
    return {key: gettext(text) for key, text in _SERIES.items()} | (extra or {})
