"""Every rejected request gets a clear 4xx reason and leaves the store exactly as it was."""

from __future__ import annotations

import gzip
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.conftest import Brand, snapshot

GOOD = {"type": "track", "userId": "u1", "event": "Clicked"}


def post(client: TestClient, path: str, body: Any, brand: Brand | None, **kwargs: Any) -> Any:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
    return client.post(path, content=content, headers=headers, auth=brand.auth if brand else None, **kwargs)


CASES: list[tuple[str, str, Any, dict[str, Any], int, str, str | None]] = [
    # (id, path, body, extra, status, code, field)
    ("invalid-json", "/v1/track", b"{not json", {}, 400, "invalid_input", None),
    ("empty-body", "/v1/track", b"", {}, 400, "invalid_input", None),
    ("body-not-object", "/v1/track", [1, 2], {}, 400, "invalid_input", None),
    ("track-without-event", "/v1/track", {"userId": "u1"}, {}, 400, "invalid_input", "event"),
    ("track-empty-event", "/v1/track", {"userId": "u1", "event": "  "}, {}, 400, "invalid_input", "event"),
    ("no-user-or-anonymous-id", "/v1/track", {"event": "E"}, {}, 400, "invalid_input", "userId"),
    ("user-id-object", "/v1/identify", {"userId": {"a": 1}}, {}, 400, "invalid_input", "userId"),
    ("user-id-too-long", "/v1/identify", {"userId": "x" * 256}, {}, 400, "invalid_input", "userId"),
    (
        "properties-not-object",
        "/v1/track",
        {"userId": "u", "event": "E", "properties": [1]},
        {},
        400,
        "invalid_input",
        "properties",
    ),
    (
        "traits-not-object",
        "/v1/identify",
        {"userId": "u", "traits": "vip"},
        {},
        400,
        "invalid_input",
        "traits",
    ),
    (
        "context-not-object",
        "/v1/track",
        {"userId": "u", "event": "E", "context": 3},
        {},
        400,
        "invalid_input",
        "context",
    ),
    (
        "bad-timestamp",
        "/v1/track",
        {"userId": "u", "event": "E", "timestamp": "yesterday"},
        {},
        400,
        "invalid_input",
        "timestamp",
    ),
    (
        "numeric-timestamp",
        "/v1/track",
        {"userId": "u", "event": "E", "timestamp": 1700000000},
        {},
        400,
        "invalid_input",
        "timestamp",
    ),
    (
        "bad-sent-at",
        "/v1/track",
        {"userId": "u", "event": "E", "sentAt": "2024-13-45"},
        {},
        400,
        "invalid_input",
        "sentAt",
    ),
    ("alias-without-previous-id", "/v1/alias", {"userId": "u"}, {}, 400, "invalid_input", "previousId"),
    ("alias-without-user-id", "/v1/alias", {"previousId": "a"}, {}, 400, "invalid_input", "userId"),
    ("group-without-group-id", "/v1/group", {"userId": "u"}, {}, 400, "invalid_input", "groupId"),
    (
        "external-ids-not-list",
        "/v1/track",
        {"userId": "u", "event": "E", "context": {"externalIds": {}}},
        {},
        400,
        "invalid_input",
        "context.externalIds",
    ),
    ("batch-missing", "/v1/batch", {"messages": []}, {}, 400, "invalid_input", "batch"),
    ("batch-empty", "/v1/batch", {"batch": []}, {}, 400, "invalid_input", "batch"),
    (
        "batch-unknown-type",
        "/v1/batch",
        {"batch": [{**GOOD, "type": "click"}]},
        {},
        400,
        "invalid_batch",
        "batch[0].type",
    ),
    (
        "unsupported-encoding",
        "/v1/track",
        GOOD,
        {"headers": {"Content-Encoding": "br"}},
        400,
        "invalid_input",
        None,
    ),
    (
        "broken-gzip",
        "/v1/batch",
        b"\x1f\x8b not really gzip",
        {"headers": {"Content-Encoding": "gzip"}},
        400,
        "invalid_input",
        None,
    ),
]


@pytest.mark.parametrize(
    ("path", "body", "extra", "status", "code", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_invalid_request_is_rejected_and_changes_nothing(
    client: TestClient,
    engine: sa.Engine,
    brand: Brand,
    path: str,
    body: Any,
    extra: dict,
    status: int,
    code: str,
    field: str | None,
) -> None:
    before = snapshot(engine)
    response = post(client, path, body, brand, **extra)
    assert response.status_code == status, response.text
    problem = response.json()
    assert problem["success"] is False
    assert problem["code"] == code
    assert problem["message"]
    assert problem.get("field") == field
    assert snapshot(engine) == before


def test_batch_with_some_invalid_items_lists_each_and_stores_none(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    batch = [
        GOOD,
        {"type": "track", "userId": "u"},
        GOOD,
        {"type": "identify"},
        {"type": "alias", "userId": "x"},
    ]
    before = snapshot(engine)
    response = post(client, "/v1/batch", {"batch": batch}, brand)
    assert response.status_code == 400
    problem = response.json()
    assert problem["message"].startswith("3 of 5 messages are invalid; nothing was stored.")
    assert [(e["index"], e["field"]) for e in problem["errors"]] == [
        (1, "batch[1].event"),
        (3, "batch[3].userId"),
        (4, "batch[4].previousId"),
    ]
    assert snapshot(engine) == before


@pytest.mark.parametrize(
    ("auth", "body_key", "message"),
    [
        (None, None, "missing write key"),
        (("wk_not-a-real-key", ""), None, "invalid write key"),
        (None, "wk_wrong", "invalid write key"),
    ],
    ids=["missing", "wrong-basic", "wrong-in-body"],
)
def test_bad_write_key_is_401(
    client: TestClient, engine: sa.Engine, brand: Brand, auth: Any, body_key: str | None, message: str
) -> None:
    body = {**GOOD, **({"writeKey": body_key} if body_key else {})}
    before = snapshot(engine)
    response = client.post("/v1/track", json=body, auth=auth)
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"
    assert response.json()["message"].startswith(message)
    assert response.headers["www-authenticate"].startswith("Basic")
    assert snapshot(engine) == before


def test_malformed_basic_auth_header_is_401(client: TestClient, engine: sa.Engine, brand: Brand) -> None:
    response = client.post("/v1/track", json=GOOD, headers={"Authorization": "Basic %%%"})
    assert response.status_code == 401


def test_disabled_source_key_is_401(client: TestClient, engine: sa.Engine, brand: Brand) -> None:
    from lifeloop.workspaces.service import disable_source

    with engine.begin() as conn:
        disable_source(conn, brand.workspace_id, brand.source_id)
    assert client.post("/v1/track", json=GOOD, auth=brand.auth).status_code == 401


def test_event_over_32kb_is_413(client: TestClient, engine: sa.Engine, brand: Brand) -> None:
    big = {**GOOD, "properties": {"blob": "x" * (32 * 1024)}}
    before = snapshot(engine)
    response = post(client, "/v1/track", big, brand)
    assert response.status_code == 413
    assert "32 KB" in response.json()["message"]
    assert snapshot(engine) == before


def test_event_just_under_32kb_is_accepted(client: TestClient, engine: sa.Engine, brand: Brand) -> None:
    body = {**GOOD, "properties": {"blob": ""}}
    body["properties"]["blob"] = "x" * (32 * 1024 - len(orjson.dumps(body)))
    assert len(orjson.dumps(body)) == 32 * 1024
    assert post(client, "/v1/track", body, brand).status_code == 200


def test_batch_item_over_32kb_is_413_naming_the_item(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    batch = [GOOD, {**GOOD, "properties": {"blob": "x" * (33 * 1024)}}]
    before = snapshot(engine)
    response = post(client, "/v1/batch", {"batch": batch}, brand)
    assert response.status_code == 413
    assert response.json()["field"] == "batch[1]"
    assert response.json()["errors"][0]["index"] == 1
    assert snapshot(engine) == before


def test_batch_over_500kb_is_413(client: TestClient, engine: sa.Engine, brand: Brand) -> None:
    item = {**GOOD, "properties": {"blob": "x" * (20 * 1024)}}
    body = {"batch": [item] * 26}  # each item is under 32 KB, the whole is over 500 KB
    assert len(orjson.dumps(body)) > 500 * 1024
    before = snapshot(engine)
    response = post(client, "/v1/batch", body, brand)
    assert response.status_code == 413
    assert "500 KB" in response.json()["message"]
    assert snapshot(engine) == before


def test_gzip_that_inflates_over_500kb_is_413(client: TestClient, engine: sa.Engine, brand: Brand) -> None:
    body = {"batch": [{**GOOD, "properties": {"blob": "a" * (30 * 1024)}}] * 40}
    compressed = gzip.compress(orjson.dumps(body))
    assert len(compressed) < 50 * 1024
    before = snapshot(engine)
    response = post(client, "/v1/batch", compressed, brand, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert snapshot(engine) == before


def test_other_workspace_cannot_be_written_with_its_own_key(client: TestClient, engine: sa.Engine) -> None:
    from tests.conftest import make_brand

    first, second = make_brand(engine, "first"), make_brand(engine, "second")
    post(client, "/v1/track", {**GOOD, "messageId": "m1"}, first)
    # The same messageId in another workspace is a different event, not a duplicate.
    response = post(client, "/v1/track", {**GOOD, "messageId": "m1"}, second)
    assert response.json()["accepted"] == 1
