"""`lifeloop demo` leaves every console page alive: a login that works, journeys that ran, messages that
reached (an imitation of) LINE, and an analytics store with data."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from rich.console import Console

from lifeloop.accounts.service import authenticate, list_members, set_password, user_by_email
from lifeloop.analytics.service import run_metric
from lifeloop.config import Settings, get_settings
from lifeloop.demo.line_imitation import LineImitation
from lifeloop.demo.runner import DemoSummary, run_demo
from lifeloop.demo.setup import CONSOLE_EMAIL, CONSOLE_PASSWORD, LINE_PLAYBOOKS, ensure_console_user
from lifeloop.errors import Unauthorized
from lifeloop.journeys.service import list_journeys
from lifeloop.messaging.channels.config import load_config
from lifeloop.messaging.channels.line import retry_key
from lifeloop.messaging.service import list_deliveries
from lifeloop.store.engine import create_store_engine
from lifeloop.store.migrate import upgrade
from lifeloop.web.app import create_app
from lifeloop.workspaces.service import create_workspace, workspace_id_of
from tests.conftest import free_port

# A fixed end makes the last 72 hours the same on every run: 4 customers follow the brand on LINE then.
END = datetime(2025, 11, 30, 12, tzinfo=UTC)


@dataclass(frozen=True)
class Demo:
    summary: DemoSummary
    output: str  # what the terminal showed
    settings: Settings
    analytics: Path  # the analytics store the demo refreshed


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """One small demo run (serve=False) for the tests of this module, in a database of its own."""
    folder = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LIFELOOP_DATABASE_URL", f"sqlite:///{folder / 'demo.db'}")
        patch.setenv("LIFELOOP_ANALYTICS_PATH", str(folder / "analytics.duckdb"))
        get_settings.cache_clear()
        try:
            output = io.StringIO()
            summary = run_demo(
                customers=100,
                days=60,
                serve=False,
                port=free_port(),
                console=Console(file=output, width=200),
                end=END,
            )
            yield Demo(summary, output.getvalue(), get_settings(), folder / "analytics.duckdb")
        finally:
            get_settings.cache_clear()


@pytest.fixture
def engine(demo: Demo) -> Iterator[sa.Engine]:
    engine = create_store_engine(demo.settings)
    yield engine
    engine.dispose()


def sign_in(client: TestClient, email: str, password: str) -> httpx.Response:
    form = client.get("/login")
    token = re.search(r'name="login_token" value="([^"]+)"', form.text)
    assert token, form.text
    return client.post("/login", data={"email": email, "password": password, "login_token": token[1]})


def test_the_guide_opens_with_the_console_login_that_signs_in(demo: Demo, engine: sa.Engine) -> None:
    login = f"Console: {demo.summary.base_url}/  login {CONSOLE_EMAIL} / {CONSOLE_PASSWORD}"
    assert login in demo.output
    # The panel's first line, above the numbers.
    assert demo.output.index(login) < demo.output.index("customers") < demo.output.index("API token")
    workspace_id = workspace_id_of(engine, "demo")
    with engine.connect() as conn:
        assert user_by_email(conn, CONSOLE_EMAIL).locale == "zh-TW"
        members = [(m.user.email, m.role) for m in list_members(conn, workspace_id)]
        assert members == [(CONSOLE_EMAIL, "admin")]
    with TestClient(create_app(demo.settings, engine)) as client:
        assert sign_in(client, CONSOLE_EMAIL, "not-the-password").status_code == 401
        signed_in = sign_in(client, CONSOLE_EMAIL, CONSOLE_PASSWORD)
        assert signed_in.status_code == 200 and 'name="csrf-token"' in signed_in.text
        for page in ("/", "/journeys", "/analytics", "/channels", "/customers"):
            answer = client.get(page)
            assert answer.status_code == 200 and "/login" not in str(answer.url), page
        assert "welcome_line" in client.get("/journeys").text


def test_journeys_ran_and_their_messages_reached_the_line_imitation(demo: Demo, engine: sa.Engine) -> None:
    summary = demo.summary
    assert summary.line_messages > 0 and summary.line_requests.get("push", 0) > 0
    assert f"{summary.line_messages:,} messages delivered to the local LINE imitation" in demo.output
    workspace_id = workspace_id_of(engine, "demo")
    with engine.connect() as conn:
        journeys = {j.key: j for j in list_journeys(conn, workspace_id)}
        assert set(journeys) == set(LINE_PLAYBOOKS)
        assert all(j.status == "active" and j.playbook == j.key for j in journeys.values())
        assert summary.journeys["welcome_line"]["entered"] == 4  # the new LINE friends of the last 72 h
        delivered, _ = list_deliveries(conn, workspace_id, status="delivered", limit=500)
        assert len([d for d in delivered if d.template == "welcome_line.welcome"]) == 4
        assert all(d.channel == "line" and (d.recipient or "").startswith("U") for d in delivered)
        assert all(d.provider_message_id for d in delivered)
        assert summary.line_messages >= len(delivered)
        # The demo brand has LINE only: nothing falls back to an SMS channel it lacks.
        assert list_deliveries(conn, workspace_id, status="failed")[0] == []
        config, credentials = load_config(conn, workspace_id, "line")
        assert config.settings["base_url"].startswith("http://127.0.0.1:")
        assert set(credentials) == {"channel_access_token", "channel_secret"}


def test_the_analytics_store_has_the_history(demo: Demo, engine: sa.Engine) -> None:
    assert demo.summary.analytics_events >= demo.summary.events
    workspace_id = workspace_id_of(engine, "demo")
    weeks = {"start": "2025-10-01", "end": "2025-11-30", "interval": "week"}
    revenue = run_metric(demo.analytics, workspace_id, "revenue", weeks).to_json()
    column = revenue["columns"].index("revenue")
    assert revenue["data"] and sum(row[column] or 0 for row in revenue["data"]) > 0
    active = run_metric(
        demo.analytics, workspace_id, "active_users", {"start": "2025-11-01", "end": "2025-11-30"}
    )
    assert active.to_json()["data"]
    assert "first analytics refresh" in demo.summary.phases and "Ready in" in demo.output


def test_a_rerun_sets_the_printed_password_back(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'rerun.db'}")
    engine = create_store_engine(settings)
    try:
        upgrade(engine)
        with engine.begin() as conn:
            workspace = create_workspace(conn, slug="demo", name="Lumi Tea", timezone="Asia/Taipei")
            first = ensure_console_user(conn, workspace.id)
            set_password(conn, user_by_email(conn, CONSOLE_EMAIL).id, "changed-by-someone")
        with engine.begin() as conn:
            again = ensure_console_user(conn, workspace.id)
            assert (first.created, again.created) == (True, False)
            assert authenticate(conn, email=CONSOLE_EMAIL, password=CONSOLE_PASSWORD).email == CONSOLE_EMAIL
            with pytest.raises(Unauthorized):
                authenticate(conn, email=CONSOLE_EMAIL, password="changed-by-someone")
            assert len(list_members(conn, workspace.id)) == 1
    finally:
        engine.dispose()


def test_the_line_imitation_answers_as_line_does() -> None:
    with LineImitation("token") as line, httpx.Client(base_url=line.url) as client:
        bearer = {"Authorization": "Bearer token"}
        push = {"to": "U" + "0" * 32, "messages": [{"type": "text", "text": "hi"}]}
        assert client.post("/v2/bot/message/push", json=push).status_code == 401
        key = {"X-Line-Retry-Key": retry_key("one")}
        answer = client.post("/v2/bot/message/push", json=push, headers=bearer | key)
        assert answer.status_code == 200 and answer.json()["sentMessages"][0]["quoteToken"]
        again = client.post("/v2/bot/message/push", json=push, headers=bearer | key)
        assert again.status_code == 409
        assert again.headers["x-line-accepted-request-id"] == answer.headers["x-line-request-id"]
        many = {"to": ["U1", "U2", "U3"], "messages": [{"type": "text", "text": "sale"}]}
        assert (
            client.post("/v2/bot/message/multicast", content=orjson.dumps(many), headers=bearer).json() == {}
        )
        assert (
            client.post(
                "/v2/bot/message/multicast", json={"to": [], "messages": []}, headers=bearer
            ).status_code
            == 400
        )
        assert client.post("/v2/bot/user/U1/richmenu/richmenu-1", headers=bearer).json() == {}
    assert (line.delivered, dict(line.requests)) == (4, {"push": 1, "multicast": 1, "rich_menu": 1})
