"""Every REST route that changes something refuses the roles that may not, and no route hands one
workspace another workspace's data. The routes are read from the app's own OpenAPI schema, so a new route
is covered the day it is added."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from lifeloop.profiles.resolver import resolve_pending
from lifeloop.workspaces.service import create_api_token
from tests.conftest import Brand, make_brand, snapshot

# POSTs that compute an answer and store nothing: any role may ask (each is checked to write nothing).
READ_ONLY = {
    ("post", "/api/v1/broadcasts/estimate"),
    ("post", "/api/v1/segments/preview"),
    ("post", "/api/v1/journeys/{key}/dry-run"),
    ("post", "/api/v1/templates/{key}/preview"),
}


def _fill(schema: dict[str, Any], defs: dict[str, Any]) -> Any:
    """The smallest body the schema accepts: required fields with a value of their type."""
    if "$ref" in schema:
        return _fill(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "anyOf" in schema:
        return _fill(schema["anyOf"][0], defs)
    if "default" in schema:
        return schema["default"]
    if "enum" in schema:
        return schema["enum"][0]
    if schema.get("type") == "object":
        required = schema.get("required", [])
        return {k: _fill(v, defs) for k, v in schema.get("properties", {}).items() if k in required}
    return {"string": "x", "integer": 1, "number": 1, "boolean": False, "array": []}.get(
        schema.get("type", "")
    )


def _operations(client: TestClient) -> list[tuple[str, str, str, Any]]:
    """(method, path template, concrete url, body) of every REST operation."""
    spec = client.app.openapi()  # type: ignore[attr-defined]
    defs = spec.get("components", {}).get("schemas", {})
    found = []
    for path, item in spec["paths"].items():
        if not path.startswith("/api/v1"):
            continue
        for method, operation in item.items():
            url = path
            for param in operation.get("parameters", []):
                if param["in"] == "path":
                    value = "1" if param["schema"].get("type") == "integer" else "x"
                    url = url.replace("{" + param["name"] + "}", value)
            content = operation.get("requestBody", {}).get("content", {}).get("application/json")
            found.append((method, path, url, _fill(content["schema"], defs) if content else None))
    return found


@pytest.mark.parametrize("role", ["viewer", "analyst"])
def test_every_write_route_refuses_viewers_and_analysts(
    client: TestClient, engine: sa.Engine, brand: Brand, role: str
) -> None:
    with engine.begin() as conn:
        _token, secret = create_api_token(conn, brand.workspace_id, name=role, role=role)
    headers = {"Authorization": f"Bearer {secret}"}
    writes = [(m, p, u, b) for m, p, u, b in _operations(client) if m != "get"]
    assert len(writes) > 30
    before = snapshot(engine)
    let_through = []
    for method, path, url, body in writes:
        answer = client.request(method.upper(), url, json=body, headers=headers)
        if (method, path) in READ_ONLY:
            assert answer.status_code != 403, (method, path)
        elif answer.status_code != 403:
            let_through.append((method, path, answer.status_code, answer.text[:200]))
    assert not let_through
    assert snapshot(engine) == before  # nothing a refused or read-only request did was stored


def test_no_route_answers_with_another_workspaces_profile(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    other = make_brand(engine, "other")
    sent = client.post(
        "/v1/identify", json={"userId": "theirs", "traits": {"email": "t@example.com"}}, auth=other.auth
    )
    assert sent.status_code == 200
    resolve_pending(engine)
    theirs = client.get("/api/v1/profiles/lookup?identity=user_id:theirs", headers=other.bearer).json()["id"]
    probed = 0
    for method, path, _url, _body in _operations(client):
        if method != "get" or "{profile_id}" not in path or path.count("{") != 1:
            continue
        answer = client.get(path.replace("{profile_id}", str(theirs)), headers=brand.bearer)
        assert answer.status_code == 404, (path, answer.status_code, answer.text[:200])
        assert client.get(path.replace("{profile_id}", str(theirs)), headers=other.bearer).status_code == 200
        probed += 1
    assert probed >= 5


@pytest.mark.parametrize(
    ("create", "body", "read"),
    [
        ("/api/v1/segments", {"key": "vip", "name": "VIP", "condition": 'count("Order Completed") >= 1'},
         "/api/v1/segments/vip"),
        ("/api/v1/templates", {"key": "hello", "channel": "line", "default_locale": "en",
                               "variants": {"en": {"text": "hi"}}}, "/api/v1/templates/hello"),
    ],
)  # fmt: skip
def test_keys_belong_to_one_workspace(
    client: TestClient, engine: sa.Engine, brand: Brand, create: str, body: dict[str, Any], read: str
) -> None:
    other = make_brand(engine, "other")
    made = client.post(create, json=body, headers=other.bearer)
    assert made.status_code in (200, 201), made.text
    assert client.get(read, headers=other.bearer).status_code == 200
    assert client.get(read, headers=brand.bearer).status_code == 404
