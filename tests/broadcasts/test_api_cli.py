"""The broadcasts REST API and CLI: draft, estimate, schedule, send, statistics; roles and bad input."""

from __future__ import annotations

import json

import sqlalchemy as sa
from fastapi.testclient import TestClient

from lifeloop.broadcasts.sender import send_all
from lifeloop.messaging.service import update_policy
from lifeloop.store.schema import utcnow
from lifeloop.workspaces.service import create_api_token
from tests.cli_helpers import run_cli
from tests.conftest import TEST_SECRET_KEY, Brand
from tests.fakes.line import FakeLine
from tests.messaging.outbox.test_multicast import connect_line, deliver, friends
from tests.messaging.outbox.test_multicast import line_api as line_api
from tests.messaging.outbox.test_multicast import secret_key as secret_key

from .test_broadcasts import sale_template

DEFINITION = {
    "audience": {"condition": 'trait.line_user_id != ""'},
    "channels": [{"channel": "line", "template": "sale"}],
}


def test_a_broadcast_through_the_api(
    client: TestClient, engine: sa.Engine, brand: Brand, line_api: FakeLine
) -> None:
    connect_line(engine, brand, line_api)
    friends(engine, brand, 30)
    sale_template(engine, brand)
    with engine.begin() as conn:  # sent at the real time of day: no quiet hours in the way
        update_policy(conn, brand.workspace_id, {"quiet_hours_start": "00:00", "quiet_hours_end": "00:00"})
    h = brand.bearer
    created = client.post(
        "/api/v1/broadcasts", json={"key": "sale", "name": "Sale", "definition": DEFINITION}, headers=h
    )
    assert created.status_code == 201 and created.json()["status"] == "draft"
    estimate = client.get("/api/v1/broadcasts/sale/estimate", headers=h).json()
    assert estimate["members"] == 30 and estimate["reachable"] == {"line": 30}
    renamed = client.patch("/api/v1/broadcasts/sale", json={"name": "Year-end sale"}, headers=h)
    assert renamed.status_code == 200 and renamed.json()["name"] == "Year-end sale"

    scheduled = client.post("/api/v1/broadcasts/sale/schedule", headers=h)
    assert scheduled.status_code == 200 and scheduled.json()["status"] == "scheduled"
    assert client.patch("/api/v1/broadcasts/sale", json={"name": "late"}, headers=h).status_code == 409
    send_all(engine)
    deliver(engine, at=utcnow())
    send_all(engine)
    stats = client.get("/api/v1/broadcasts/sale/stats", headers=h).json()
    assert stats["status"] == "sent" and stats["audience"] == 30 and stats["sent"] == 30
    assert [b["key"] for b in client.get("/api/v1/broadcasts", headers=h).json()] == ["sale"]
    assert client.post("/api/v1/broadcasts/sale/cancel", headers=h).status_code == 409


def test_roles_unknown_keys_and_bad_definitions_are_refused(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    sale_template(engine, brand)
    h = brand.bearer
    bad = client.post(
        "/api/v1/broadcasts", json={"key": "x", "name": "X", "definition": {"audience": {}}}, headers=h
    )
    assert bad.status_code == 400 and bad.json()["message"]
    assert client.get("/api/v1/broadcasts/nope", headers=h).status_code == 404
    with engine.begin() as conn:
        _token, analyst = create_api_token(conn, brand.workspace_id, name="a", role="analyst")
    as_analyst = {"Authorization": f"Bearer {analyst}"}
    body = {"key": "sale", "name": "Sale", "definition": DEFINITION}
    assert client.post("/api/v1/broadcasts", json=body, headers=as_analyst).status_code == 403
    created = client.post("/api/v1/broadcasts", json=body, headers=h)
    assert created.status_code == 201, created.text
    assert client.post("/api/v1/broadcasts/sale/schedule", headers=as_analyst).status_code == 403
    assert client.get("/api/v1/broadcasts/sale", headers=as_analyst).status_code == 200


def test_the_cli_creates_estimates_schedules_and_reports(
    engine: sa.Engine, brand: Brand, settings: object, line_api: FakeLine, tmp_path: object
) -> None:
    from pathlib import Path

    connect_line(engine, brand, line_api)
    friends(engine, brand, 12)
    sale_template(engine, brand)
    folder = Path(str(tmp_path))
    (folder / "sale.yaml").write_text(
        "audience: {}\nchannels:\n  - {channel: line, template: sale}\n", encoding="utf-8"
    )
    (folder / "ids.csv").write_text(
        "user_id\n" + "\n".join(f"f{i}" for i in range(5)) + "\n", encoding="utf-8"
    )
    url = settings.database_url  # type: ignore[attr-defined]
    env = {"LIFELOOP_SECRET_KEY": TEST_SECRET_KEY}
    ws = str(brand.workspace_id)
    created = run_cli(
        [
            "broadcasts",
            "create",
            "sale",
            str(folder / "sale.yaml"),
            "-w",
            ws,
            "--ids-file",
            str(folder / "ids.csv"),
        ],
        url,
        **env,
    )
    assert created.exit_code == 0, created.output
    estimate = run_cli(["broadcasts", "estimate", "sale", "-w", ws], url, **env)
    assert estimate.exit_code == 0 and "5" in estimate.output
    assert run_cli(["broadcasts", "schedule", "sale", "-w", ws], url, **env).exit_code == 0
    worker = run_cli(["worker", "--once", "--analytics-seconds", "0"], url, **env)
    assert worker.exit_code == 0 and "5 broadcast recipients queued" in worker.output, worker.output
    stats = run_cli(["broadcasts", "stats", "sale", "-w", ws, "--json"], url, **env)
    assert stats.exit_code == 0 and json.loads(stats.stdout)["audience"] == 5
    missing = run_cli(["broadcasts", "create", "other", str(folder / "nothing.yaml"), "-w", ws], url, **env)
    assert missing.exit_code != 0 and "cannot read" in missing.output
    again = run_cli(["broadcasts", "schedule", "sale", "-w", ws], url, **env)
    assert again.exit_code != 0 and again.output.strip()
