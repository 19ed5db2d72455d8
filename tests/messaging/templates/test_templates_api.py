"""/api/v1/templates: create, update with a version check, preview on a real profile."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi.testclient import TestClient

from lifeloop.profiles.resolver import resolve_pending
from lifeloop.profiles.service import find_by_identity
from tests.conftest import Brand, snapshot

TEMPLATE = {
    "key": "welcome",
    "channel": "line",
    "default_locale": "zh-TW",
    "variants": {
        "zh-TW": {"text": "{{ traits.name }} 您好！{{ event.source | default: '' }}"},
        "en": {"text": "Hi {{ traits.name }}"},
    },
}


def test_create_update_and_preview(client: TestClient, engine: sa.Engine, brand: Brand) -> None:
    assert (
        client.post(
            "/v1/identify", json={"userId": "u-1", "traits": {"name": "林志明"}}, auth=brand.auth
        ).status_code
        == 200
    )
    resolve_pending(engine)
    with engine.connect() as conn:
        pid = find_by_identity(conn, brand.workspace_id, "user_id", "u-1")

    created = client.post("/api/v1/templates", json=TEMPLATE, headers=brand.bearer)
    assert created.status_code == 201 and created.json()["version"] == 1
    preview = client.post(
        "/api/v1/templates/welcome/preview",
        json={"profile_id": pid, "event": {"source": "門市"}},
        headers=brand.bearer,
    )
    assert preview.json() == {
        "key": "welcome",
        "version": 1,
        "locale": "zh-TW",
        "content": {"text": "林志明 您好！門市"},
    }

    updated = client.put(
        "/api/v1/templates/welcome",
        json={"variants": {"zh-TW": {"text": "{{ traits.nickname }}"}}, "version": 1},
        headers=brand.bearer,
    )
    assert updated.status_code == 200 and updated.json()["version"] == 2
    stale = client.put(
        "/api/v1/templates/welcome", json={"default_locale": "zh-TW", "version": 1}, headers=brand.bearer
    )
    assert stale.status_code == 409

    failed = client.post("/api/v1/templates/welcome/preview", json={"profile_id": pid}, headers=brand.bearer)
    assert failed.status_code == 400 and "traits.nickname is undefined" in failed.json()["message"]


def test_a_template_with_a_syntax_error_is_refused(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    before = snapshot(engine)
    bad = {**TEMPLATE, "variants": {"zh-TW": {"text": "{% if traits.vip %}VIP"}}}
    response = client.post("/api/v1/templates", json=bad, headers=brand.bearer)
    assert response.status_code == 400 and response.json()["field"] == "variants.zh-TW.text"
    assert snapshot(engine) == before
