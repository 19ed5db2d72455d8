"""GET /api/v1/profiles…: traits, identities, merges, paginated timeline, auth and workspace scoping."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi.testclient import TestClient

from lifeloop.profiles.resolver import resolve_pending
from lifeloop.store.migrate import head_revision
from tests.conftest import Brand, make_brand


def ingest(client: TestClient, brand: Brand, batch: list[dict]) -> None:
    assert client.post("/v1/batch", json={"batch": batch}, auth=brand.auth).status_code == 200
    resolve_pending(client.app.state.engine)


def history(n: int) -> list[dict]:
    return [
        {
            "type": "track",
            "userId": "u1",
            "event": f"E{i}",
            "messageId": f"m{i:03}",
            "timestamp": f"2025-06-01T00:{i // 60:02}:{i % 60:02}Z",
        }
        for i in range(n)
    ]


def test_profile_with_traits_identities_and_timeline(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    ingest(
        client,
        brand,
        [
            {
                "type": "page",
                "anonymousId": "a1",
                "name": "Home",
                "messageId": "p1",
                "timestamp": "2025-05-01T00:00:00Z",
            },
            {
                "type": "identify",
                "userId": "u1",
                "anonymousId": "a1",
                "messageId": "i1",
                "traits": {"name": "陳小美", "email": "may@example.com", "city": "Taipei"},
                "context": {"timezone": "Asia/Taipei", "locale": "zh-TW"},
                "timestamp": "2025-05-02T00:00:00Z",
            },
        ],
    )
    found = client.get(
        "/api/v1/profiles/lookup", params={"identity": "email:MAY@example.com"}, headers=brand.bearer
    )
    assert found.status_code == 200, found.text
    profile = found.json()
    assert profile["user_id"] == "u1"
    assert profile["traits"] == {"name": "陳小美", "email": "may@example.com", "city": "Taipei"}
    assert (profile["timezone"], profile["locale"]) == ("Asia/Taipei", "zh-TW")
    assert profile["first_seen"].startswith("2025-05-01T00:00:00")
    assert {(i["kind"], i["value"]) for i in profile["identities"]} == {
        ("anonymous_id", "a1"),
        ("user_id", "u1"),
        ("email", "may@example.com"),
    }
    assert profile["event_count"] == 2

    same = client.get(f"/api/v1/profiles/{profile['id']}", headers=brand.bearer).json()
    assert same == profile
    events = client.get(f"/api/v1/profiles/{profile['id']}/events", headers=brand.bearer).json()
    assert [e["message_id"] for e in events["items"]] == ["i1", "p1"]  # newest first
    assert events["next_cursor"] is None


def test_timeline_pages_cover_every_event_once(client: TestClient, engine: sa.Engine, brand: Brand) -> None:
    ingest(client, brand, history(95))
    pid = client.get(
        "/api/v1/profiles/lookup", params={"identity": "user_id:u1"}, headers=brand.bearer
    ).json()["id"]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 20, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"/api/v1/profiles/{pid}/events", params=params, headers=brand.bearer).json()
        seen += [e["message_id"] for e in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 5
    assert seen == [f"m{i:03}" for i in reversed(range(95))]


def test_timeline_filters_by_event_name(client: TestClient, engine: sa.Engine, brand: Brand) -> None:
    ingest(client, brand, history(5))
    pid = client.get(
        "/api/v1/profiles/lookup", params={"identity": "user_id:u1"}, headers=brand.bearer
    ).json()["id"]
    page = client.get(f"/api/v1/profiles/{pid}/events", params={"event": "E3"}, headers=brand.bearer).json()
    assert [e["event"] for e in page["items"]] == ["E3"]


def test_merged_profile_id_returns_the_survivor(client: TestClient, engine: sa.Engine, brand: Brand) -> None:
    ingest(client, brand, [{"type": "track", "anonymousId": "a1", "event": "Viewed", "messageId": "v"}])
    old = client.get(
        "/api/v1/profiles/lookup", params={"identity": "anonymous_id:a1"}, headers=brand.bearer
    ).json()
    ingest(client, brand, [{"type": "identify", "userId": "u1", "messageId": "i", "traits": {}}])
    ingest(
        client,
        brand,
        [{"type": "identify", "userId": "u1", "anonymousId": "a1", "messageId": "link", "traits": {}}],
    )
    survivor = client.get(f"/api/v1/profiles/{old['id']}", headers=brand.bearer).json()
    assert survivor["id"] != old["id"]
    assert survivor["merged_from"][0]["profile_id"] == old["id"]
    assert survivor["merged_from"][0]["events_moved"] == 1
    events = client.get(f"/api/v1/profiles/{old['id']}/events", headers=brand.bearer).json()
    assert {e["message_id"] for e in events["items"]} == {"v", "i", "link"}


def test_list_profiles_paginates(client: TestClient, engine: sa.Engine, brand: Brand) -> None:
    ingest(
        client,
        brand,
        [{"type": "identify", "userId": f"u{i}", "messageId": f"i{i}", "traits": {}} for i in range(7)],
    )
    first = client.get("/api/v1/profiles", params={"limit": 5}, headers=brand.bearer).json()
    second = client.get(
        "/api/v1/profiles", params={"limit": 5, "after": first["next_after"]}, headers=brand.bearer
    ).json()
    assert len(first["items"]) == 5 and len(second["items"]) == 2 and second["next_after"] is None
    exact = client.get("/api/v1/profiles", params={"limit": 7}, headers=brand.bearer).json()
    assert len(exact["items"]) == 7 and exact["next_after"] is None  # no empty last page


def test_errors(client: TestClient, engine: sa.Engine, brand: Brand) -> None:
    unauthenticated = client.get("/api/v1/profiles/1")
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["www-authenticate"].startswith("Bearer")
    assert client.get("/api/v1/profiles/1", headers={"Authorization": "Bearer llt_nope"}).status_code == 401
    missing = client.get("/api/v1/profiles/999", headers=brand.bearer)
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    bad = client.get("/api/v1/profiles/lookup", params={"identity": "nonsense"}, headers=brand.bearer)
    assert bad.status_code == 400 and bad.json()["field"] == "identity"
    kind = client.get("/api/v1/profiles/lookup", params={"identity": "shoe_size:42"}, headers=brand.bearer)
    assert kind.status_code == 400
    ingest(client, brand, history(1))
    pid = client.get(
        "/api/v1/profiles/lookup", params={"identity": "user_id:u1"}, headers=brand.bearer
    ).json()["id"]
    cursor = client.get(f"/api/v1/profiles/{pid}/events", params={"cursor": "!!"}, headers=brand.bearer)
    assert cursor.status_code == 400 and cursor.json()["field"] == "cursor"
    limit = client.get("/api/v1/profiles", params={"limit": 0}, headers=brand.bearer)
    assert limit.status_code == 400 and limit.json()["field"] == "limit"


def test_a_token_reads_only_its_own_workspace(client: TestClient, engine: sa.Engine) -> None:
    mine, theirs = make_brand(engine, "mine"), make_brand(engine, "theirs")
    ingest(client, theirs, [{"type": "identify", "userId": "u1", "messageId": "x", "traits": {"secret": 1}}])
    their_pid = client.get(
        "/api/v1/profiles/lookup", params={"identity": "user_id:u1"}, headers=theirs.bearer
    ).json()["id"]
    assert client.get(f"/api/v1/profiles/{their_pid}", headers=mine.bearer).status_code == 404
    assert client.get(f"/api/v1/profiles/{their_pid}/events", headers=mine.bearer).status_code == 404
    assert (
        client.get(
            "/api/v1/profiles/lookup", params={"identity": "user_id:u1"}, headers=mine.bearer
        ).status_code
        == 404
    )
    assert client.get("/api/v1/profiles", headers=mine.bearer).json()["items"] == []


def test_openapi_schema_and_health(client: TestClient, engine: sa.Engine) -> None:
    schema = client.get("/openapi.json").json()
    for path in (
        "/v1/track",
        "/v1/identify",
        "/v1/page",
        "/v1/screen",
        "/v1/group",
        "/v1/alias",
        "/v1/batch",
        "/v1/import",
        "/api/v1/profiles/{profile_id}",
        "/api/v1/profiles/{profile_id}/events",
        "/health",
    ):
        assert path in schema["paths"], path
    track_body = schema["paths"]["/v1/track"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert track_body["required"] == ["event"]
    assert client.get("/health").json()["status"] == "ok"
    ready = client.get("/health/ready").json()
    assert ready["status"] == "ok" and ready["schema"] == head_revision()


def test_sources_api(client: TestClient, engine: sa.Engine, brand: Brand) -> None:
    created = client.post("/api/v1/workspace/sources", json={"name": "app"}, headers=brand.bearer)
    assert created.status_code == 201
    key = created.json()["write_key"]
    assert client.post("/v1/track", json={"userId": "u", "event": "E"}, auth=(key, "")).status_code == 200
    names = [s["name"] for s in client.get("/api/v1/workspace/sources", headers=brand.bearer).json()]
    assert names == ["web", "app"]
    again = client.post("/api/v1/workspace/sources", json={"name": "app"}, headers=brand.bearer)
    assert again.status_code == 409
    assert client.get("/api/v1/workspace", headers=brand.bearer).json()["slug"] == "acme"
