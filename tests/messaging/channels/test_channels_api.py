"""/api/v1/channels: credentials go in, never come out; only admins connect channels."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi.testclient import TestClient

from lifeloop.workspaces.service import create_api_token
from tests.conftest import Brand, snapshot

BODY = {
    "credentials": {"channel_access_token": "tok-SECRET", "channel_secret": "sec-SECRET"},
    "settings": {"base_url": "https://api.line.me"},
}


def test_connect_list_and_disable_a_channel(client: TestClient, brand: Brand) -> None:
    saved = client.put("/api/v1/channels/line/default", json=BODY, headers=brand.bearer)
    assert saved.status_code == 200, saved.text
    assert saved.json()["credential_fields"] == ["channel_access_token", "channel_secret"]
    listed = client.get("/api/v1/channels", headers=brand.bearer)
    assert [c["channel"] for c in listed.json()] == ["line"] and "SECRET" not in listed.text
    disabled = client.patch("/api/v1/channels/line/default", json={"enabled": False}, headers=brand.bearer)
    assert disabled.json()["enabled"] is False
    assert client.get("/api/v1/channels/line/default", headers=brand.bearer).json()["enabled"] is False


def test_only_admins_connect_channels_and_bad_input_changes_nothing(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    with engine.begin() as conn:
        _, operator = create_api_token(conn, brand.workspace_id, name="ops", role="operator")
    before = snapshot(engine)
    denied = client.put(
        "/api/v1/channels/line/default", json=BODY, headers={"Authorization": f"Bearer {operator}"}
    )
    assert denied.status_code == 403
    unknown = client.put("/api/v1/channels/fax/default", json=BODY, headers=brand.bearer)
    assert unknown.status_code == 400 and unknown.json()["field"] == "channel"
    assert client.put("/api/v1/channels/line/default", json=BODY).status_code == 401
    assert client.get("/api/v1/channels/line/default", headers=brand.bearer).status_code == 404
    assert snapshot(engine) == before
