"""The REST API (/api/v1/tags, /api/v1/segments) and the CLI (lifeloop tags …, lifeloop segments …)."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from fastapi.testclient import TestClient

from lifeloop.config import Settings
from lifeloop.profiles.resolver import resolve_pending
from lifeloop.store.schema import utcnow
from tests.cli_helpers import run_cli
from tests.conftest import Brand, snapshot

PEOPLE = (
    [
        {"type": "identify", "userId": f"u{i}", "traits": {"email": f"u{i}@example.com", "city": "台北"}}
        for i in range(3)
    ]
    + [
        {"type": "track", "event": "Order Completed", "userId": f"u{i}", "properties": {"revenue": 1500 * i}}
        for i in range(3)
    ]
    + [{"type": "track", "event": "Channel Followed", "userId": "u0", "properties": {"source": "qr_offline"}}]
)


def test_api_segments_tags_preview_and_csv_export(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    h = brand.bearer
    assert client.post("/api/v1/tags/presets", json={"preset": "line"}, headers=h).json() == {
        "event_tag_rules": 8,
        "tag_rules": 0,
    }
    rule = client.put(
        "/api/v1/tags/rules/vip", json={"condition": 'sum("Order Completed", "revenue") >= 2000'}, headers=h
    )
    assert rule.status_code == 200 and rule.json()["tag"] == "vip"
    assert client.post("/v1/batch", json={"batch": PEOPLE}, auth=brand.auth).status_code == 200
    resolve_pending(engine)

    created = client.post(
        "/api/v1/segments",
        json={
            "key": "spenders",
            "name": "大客户",
            "condition": 'has_tag("vip") or has_tag("source:qr_offline")',
        },
        headers=h,
    )
    assert created.status_code == 201, created.text
    assert created.json()["members"] == 2
    assert client.get("/api/v1/segments/spenders/count", headers=h).json() == {
        "key": "spenders",
        "members": 2,
    }
    listed = client.get("/api/v1/segments", headers=h).json()
    assert [(s["key"], s["members"]) for s in listed] == [("spenders", 2)]
    assert {(t["tag"], t["kind"], t["profiles"]) for t in client.get("/api/v1/tags", headers=h).json()} == {
        ("vip", "rule", 1),
        ("source:qr_offline", "event", 1),
    }

    preview = client.get("/api/v1/segments/spenders/preview?limit=1", headers=h).json()
    assert preview["count"] == 2 and [p["user_id"] for p in preview["profiles"]] == ["u0"]
    adhoc = client.post(
        "/api/v1/segments/preview", json={"condition": 'trait.city == "台北"'}, headers=h
    ).json()
    assert adhoc["count"] == 3 and adhoc["profiles"][0]["email"] == "u0@example.com"

    exported = client.get("/api/v1/segments/spenders/export", headers=h)
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(r["user_id"], r["email"]) for r in rows] == [("u0", "u0@example.com"), ("u2", "u2@example.com")]
    assert json.loads(rows[0]["traits"]) == {"city": "台北", "email": "u0@example.com"}

    # a manual tag moves u1 into the segment; removing it moves them out
    u1 = client.get("/api/v1/profiles/lookup?identity=user_id:u1", headers=h).json()["id"]
    expires = (utcnow() + timedelta(days=3)).isoformat()
    added = client.post(f"/api/v1/tags/profiles/{u1}", json={"tag": "vip", "expires_at": expires}, headers=h)
    assert added.status_code == 201 and added.json()["changes"] == {"added": 1, "entered": 1}
    assert [t["kind"] for t in client.get(f"/api/v1/tags/profiles/{u1}", headers=h).json()] == ["manual"]
    removed = client.delete(f"/api/v1/tags/profiles/{u1}/vip", headers=h)
    assert removed.json()["changes"] == {"removed": 1, "exited": 1}

    # editing the condition re-computes the members
    patched = client.patch("/api/v1/segments/spenders", json={"condition": 'has_tag("vip")'}, headers=h)
    assert patched.status_code == 200 and patched.json()["members"] == 1
    assert client.delete("/api/v1/segments/spenders", headers=h).status_code == 204
    assert client.get("/api/v1/segments/spenders", headers=h).status_code == 404


BAD_REQUESTS = [
    ("post", "/api/v1/segments", {"key": "s", "condition": 'count("X") >= '}, 400, "condition"),
    ("post", "/api/v1/segments", {"key": "s", "condition": 'in_segment("s")'}, 400, "condition"),
    ("post", "/api/v1/segments", {"key": "S S", "condition": "true"}, 400, "key"),
    ("post", "/api/v1/segments/preview", {"condition": "trait.x >"}, 400, "condition"),
    ("put", "/api/v1/tags/rules/vip", {"condition": 'count("X") >= "many"'}, 400, "condition"),
    ("put", "/api/v1/tags/rules/vip", {"condition": 'has_tag("vip")'}, 400, "condition"),
    (
        "post",
        "/api/v1/tags/event-rules",
        {"event": "E", "property": "p", "prefix": "x", "ttl": "soon"},
        400,
        "ttl",
    ),
    ("post", "/api/v1/tags/event-rules", {"event": "E", "property": "p", "prefix": "X Y"}, 400, "prefix"),
    ("post", "/api/v1/tags/presets", {"preset": "nope"}, 400, "preset"),
    ("post", "/api/v1/tags/profiles/999999", {"tag": "x"}, 404, None),
    ("delete", "/api/v1/tags/rules/missing", None, 404, None),
    ("get", "/api/v1/segments/missing/export", None, 404, None),
]


def test_api_refuses_bad_input_with_the_position_and_changes_nothing(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    before = snapshot(engine)
    for method, path, body, status, field in BAD_REQUESTS:
        response = client.request(method, path, json=body, headers=brand.bearer)
        assert response.status_code == status, (path, body, response.text)
        if field:
            assert response.json()["field"] == field, (path, body)
    first = client.post(
        "/api/v1/segments", json={"key": "s", "condition": 'count("X") >= '}, headers=brand.bearer
    )
    assert "line 1, column 15" in first.json()["message"]
    assert snapshot(engine) == before


def test_cli_tags_and_segments(
    settings: Settings, client: TestClient, engine: sa.Engine, brand: Brand, tmp_path: Path
) -> None:
    url = settings.database_url
    assert client.post("/v1/batch", json={"batch": PEOPLE}, auth=brand.auth).status_code == 200
    resolve_pending(engine)

    rules = run_cli(["tags", "rules", "-w", "acme", "--preset", "wecom"], url)
    assert rules.exit_code == 0, rules.output
    assert "vip" in rules.stdout and "interaction" in rules.stdout
    added = run_cli(
        ["tags", "add", "watch", "-w", "acme", "--user", "u1", "--expires", "2099-01-01T00:00:00"], url
    )
    assert added.exit_code == 0, added.output
    listed = run_cli(["tags", "list", "-w", "acme", "--user", "u1"], url)
    assert "watch" in listed.stdout and "manual" in listed.stdout and "2099-01-01" in listed.stdout

    created = run_cli(["segments", "create", "vips", 'has_tag("vip") or has_tag("watch")', "-w", "acme"], url)
    assert created.exit_code == 0, created.output
    assert "segment vips created with 2 members" in created.stdout
    assert run_cli(["segments", "count", "vips", "-w", "acme"], url).stdout.strip() == "2"
    assert "vips" in run_cli(["segments", "list", "-w", "acme"], url).stdout
    preview = run_cli(["segments", "preview", 'trait.city == "台北"', "--condition", "-w", "acme"], url)
    assert "3 profiles match" in preview.stdout
    out = tmp_path / "vips.csv"
    exported = run_cli(["segments", "export", "vips", "-w", "acme", "-o", str(out)], url)
    assert exported.exit_code == 0 and "2 members written" in exported.output
    assert [r["user_id"] for r in csv.DictReader(io.StringIO(out.read_text(encoding="utf-8")))] == [
        "u1",
        "u2",
    ]

    removed = run_cli(["tags", "remove", "watch", "-w", "acme", "--user", "u1"], url)
    assert removed.exit_code == 0, removed.output
    assert run_cli(["segments", "count", "vips", "-w", "acme"], url).stdout.strip() == "1"
    bad = run_cli(["segments", "create", "x", "count(", "-w", "acme"], url)
    assert bad.exit_code == 1 and "line 1" in bad.output
    refused = run_cli(["tags", "remove", "vip", "-w", "acme", "--user", "u2"], url)
    assert refused.exit_code == 1 and "held by its tag rule" in refused.output

    # the worker sweeps tags and segments too; recompute rebuilds them and finds nothing to change
    worker = run_cli(["worker", "--once"], url)
    assert worker.exit_code == 0 and "0 profiles re-evaluated by time" in worker.output, worker.output
    assert run_cli(["lifecycle", "install", "wecom", "-w", "acme"], url).exit_code == 0
    recomputed = run_cli(["recompute", "-w", "acme"], url)
    assert recomputed.exit_code == 0, recomputed.output
    assert "0 tag and segment changes recorded" in recomputed.output
    by_sql = run_cli(["recompute", "-w", "acme", "--engine", "sql", "--no-from-log"], url)
    assert by_sql.exit_code == 0, by_sql.output
    assert "0 stage changes recorded" in by_sql.output and "0 tag and segment changes" in by_sql.output
    wrong = run_cli(["recompute", "-w", "acme", "--engine", "spark"], url)
    assert wrong.exit_code == 1 and "--engine must be columnar or sql" in wrong.output
