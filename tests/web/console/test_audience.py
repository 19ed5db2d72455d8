"""Console tags and segments: rules and segments written here are the API's, the builder's live count is
the API's preview, exports are the API's CSV, roles are enforced, other workspaces stay out of reach."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from markupsafe import escape

from lifeloop.accounts.service import audit_entries
from lifeloop.profiles.resolver import resolve_pending
from lifeloop.store.engine import connect
from tests.conftest import Brand, LiveServer, make_brand
from tests.web.console.browser import ARTIFACTS, launch_options
from tests.web.console.conftest import PASSWORD, Console, make_user

CITIES = {"u0": "Taipei", "u1": "Taipei", "u2": "Taichung", "u3": "Taipei"}
PEOPLE = [
    {"type": "identify", "userId": user, "traits": {"email": f"{user}@example.com", "city": city}}
    for user, city in CITIES.items()
] + [
    {"type": "track", "event": "Order Completed", "userId": f"u{i}", "properties": {"revenue": 1500 * i}}
    for i in range(4)
]
TAIPEI = 'trait.city == "Taipei"'
SPENDERS = 'sum("Order Completed", "revenue") >= 2000'


def ingest(client: httpx.Client, engine: sa.Engine, brand: Brand) -> dict[str, int]:
    """The people above through ``/v1/batch``, resolved; their profile ids by user id."""
    assert client.post("/v1/batch", json={"batch": PEOPLE}, auth=brand.auth).status_code == 200
    resolve_pending(engine)
    found = client.post(
        "/api/v1/segments/preview",
        json={"condition": "exists(trait.email)", "limit": 10},
        headers=brand.bearer,
    ).json()
    return {p["user_id"]: p["profile_id"] for p in found["profiles"]}


def html(text: str) -> str:
    """``text`` as the page shows it (quotes escaped)."""
    return str(escape(text))


def actions(engine: sa.Engine, brand: Brand) -> list[tuple[str, str]]:
    with connect(engine) as conn:
        return [(e.action, e.target) for e in audit_entries(conn, brand.workspace_id)]


def test_tag_rules_event_rules_and_presets_are_the_apis(
    console: Console, client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    ingest(client, engine, brand)
    made = console.post("/tags/rules", {"tag": "vip", "condition": SPENDERS, "description": "big spenders"})
    assert made.status_code == 200, made.text
    assert "Tag rule saved: 2 tagged, 0 untagged." in made.text  # u2 (3,000) and u3 (4,500)
    row = re.search(r"<code>vip</code>.*?</tr>", made.text, re.S)
    assert row and html(SPENDERS) in row[0] and '<td class="num">2</td>' in row[0]
    rules = client.get("/api/v1/tags/rules", headers=brand.bearer).json()
    assert [(r["tag"], r["condition"], r["description"]) for r in rules["tag_rules"]] == [
        ("vip", SPENDERS, "big spenders")
    ]
    held = {(t["tag"], t["profiles"]) for t in client.get("/api/v1/tags", headers=brand.bearer).json()}
    assert held == {("vip", 2)}
    build = "/segments/new?condition=has_tag%28%22vip%22%29"  # "Build a segment" from the tags held
    assert f'href="{build}"' in made.text
    assert 'id="live-count" data-count="2"' in console.get(build).text

    bad = console.post("/tags/rules", {"tag": "vip", "condition": 'sum("Order Completed" >= 2'})
    assert bad.status_code == 400 and 'id="rule-error"' in bad.text
    assert "expected" in bad.text and "^" in bad.text and "line 1, column" in bad.text
    kept = client.get("/api/v1/tags/rules", headers=brand.bearer).json()["tag_rules"]
    assert [r["condition"] for r in kept] == [SPENDERS]

    editing = console.get("/tags?edit=vip")
    assert editing.status_code == 200 and "Edit tag rule" in editing.text and "big spenders" in editing.text
    changed = console.post(
        "/tags/rules", {"tag": "vip", "condition": 'sum("Order Completed", "revenue") >= 4000'}
    )
    assert changed.status_code == 200 and "Tag rule saved: 0 tagged, 1 untagged." in changed.text
    rules = client.get("/api/v1/tags/rules", headers=brand.bearer).json()
    assert rules["tag_rules"][0]["condition"] == 'sum("Order Completed", "revenue") >= 4000'

    added = console.post(
        "/tags/event-rules",
        {"event": "Channel Followed", "property": "source", "prefix": "source", "ttl": "30d"},
    )
    assert added.status_code == 200 and "Event tag rule saved." in added.text
    refused = console.post(
        "/tags/event-rules", {"event": "Page Viewed", "property": "x", "prefix": "Bad Prefix"}
    )
    assert (
        refused.status_code == 400 and 'id="event-error"' in refused.text and "prefix must be" in refused.text
    )
    event_rules = client.get("/api/v1/tags/rules", headers=brand.bearer).json()["event_tag_rules"]
    assert [(r["event"], r["property"], r["prefix"], r["ttl"]) for r in event_rules] == [
        ("Channel Followed", "source", "source", "30d")
    ]
    gone = console.post(f"/tags/event-rules/{event_rules[0]['id']}/delete")
    assert gone.status_code == 200 and 'id="no-event-rules"' in gone.text
    assert client.get("/api/v1/tags/rules", headers=brand.bearer).json()["event_tag_rules"] == []

    preset = console.post("/tags/presets", {"preset": "line"})
    assert preset.status_code == 200 and "Preset installed: 8 event tag rules, 0 tag rules." in preset.text
    assert len(client.get("/api/v1/tags/rules", headers=brand.bearer).json()["event_tag_rules"]) == 8
    assert console.post("/tags/presets", {"preset": "nope"}).status_code == 400

    client.post("/api/v1/segments", json={"key": "vips", "condition": 'has_tag("vip")'}, headers=brand.bearer)
    read = console.post("/tags/rules/delete", {"tag": "vip"})
    assert read.status_code == 409 and 'id="list-error"' in read.text and "segment vips" in read.text
    client.delete("/api/v1/segments/vips", headers=brand.bearer)
    deleted = console.post("/tags/rules/delete", {"tag": "vip"})
    assert deleted.status_code == 200 and 'id="no-rules"' in deleted.text
    assert client.get("/api/v1/tags/rules", headers=brand.bearer).json()["tag_rules"] == []
    assert client.get("/api/v1/tags", headers=brand.bearer).json() == []

    done = actions(engine, brand)
    for expected in [
        ("tag_rule.create", "vip"),
        ("tag_rule.update", "vip"),
        ("tag_rule.delete", "vip"),
        ("event_tag_rule.add", "source:*"),
        ("event_tag_rule.delete", str(event_rules[0]["id"])),
        ("tag_preset.install", "line"),
    ]:
        assert expected in done
    assert done.count(("tag_rule.update", "vip")) == 1  # the refused edit wrote nothing


def test_segments_are_built_saved_and_deleted_through_the_console(
    console: Console, client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    ids = ingest(client, engine, brand)
    assert 'id="no-segments"' in console.get("/segments").text
    builder = console.get("/segments/new")
    assert (
        builder.status_code == 200
        and 'id="segment-form"' in builder.text
        and 'hx-post="/segments/preview"' in builder.text
    )

    made = console.post("/segments", {"key": "taipei", "name": "台北客戶", "condition": TAIPEI})
    assert made.status_code == 200, made.text
    assert "Segment saved: 3 entered." in made.text and 'id="members">3<' in made.text
    assert 'action="/segments/taipei/save"' in made.text
    for user in ("u0", "u1", "u3"):
        assert f'href="/customers/{ids[user]}"' in made.text
    assert f'href="/customers/{ids["u2"]}"' not in made.text
    api = client.get("/api/v1/segments/taipei", headers=brand.bearer).json()
    assert (api["name"], api["condition"], api["members"]) == ("台北客戶", TAIPEI, 3)

    listed = console.get("/segments")
    row = re.search(r'href="/segments/taipei">.*?</tr>', listed.text, re.S)
    assert row and "台北客戶" in row[0] and '<td class="num">3</td>' in row[0]
    sizes = re.search(r'<script type="application/json" id="data-segment-sizes">(.*?)</script>', listed.text)
    assert sizes and json.loads(sizes[1])["result"]["data"] == [["台北客戶", 3]]

    twice = console.post("/segments", {"key": "taipei", "condition": TAIPEI})
    assert twice.status_code == 409 and 'id="form-error"' in twice.text and "already exists" in twice.text
    bad = console.post("/segments", {"key": "broken", "condition": "trait.city = 1"})
    assert bad.status_code == 400 and html('use "==" to test equality') in bad.text
    assert 'value="broken"' in bad.text  # the form keeps what was typed
    assert client.get("/api/v1/segments/broken", headers=brand.bearer).status_code == 404

    condition = TAIPEI + ' and sum("Order Completed", "revenue") >= 1000'
    saved = console.post(
        "/segments/taipei/save", {"name": "台北客戶", "description": "buyers", "condition": condition}
    )
    assert saved.status_code == 200 and "Segment saved: 0 entered, 1 exited." in saved.text
    api = client.get("/api/v1/segments/taipei", headers=brand.bearer).json()
    assert (api["condition"], api["description"], api["members"]) == (condition, "buyers", 2)
    refused = console.post("/segments/taipei/save", {"condition": 'in_segment("nowhere")'})
    assert refused.status_code == 400 and html('there is no segment "nowhere"') in refused.text
    assert client.get("/api/v1/segments/taipei", headers=brand.bearer).json()["condition"] == condition

    client.post(
        "/api/v1/segments", json={"key": "inner", "condition": 'in_segment("taipei")'}, headers=brand.bearer
    )
    read = console.post("/segments/taipei/delete")
    assert read.status_code == 409 and "segment inner" in read.text
    client.delete("/api/v1/segments/inner", headers=brand.bearer)
    deleted = console.post("/segments/taipei/delete", follow_redirects=False)
    assert deleted.status_code == 303 and deleted.headers["location"] == "/segments"
    assert client.get("/api/v1/segments/taipei", headers=brand.bearer).status_code == 404

    done = actions(engine, brand)
    for expected in [
        ("segment.create", "taipei"),
        ("segment.update", "taipei"),
        ("segment.delete", "taipei"),
    ]:
        assert expected in done
    assert ("segment.create", "broken") not in done and done.count(("segment.update", "taipei")) == 1


def test_the_live_count_is_the_apis_preview_and_shows_condition_errors(
    console: Console, client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    ids = ingest(client, engine, brand)
    live = console.htmx("POST", "/segments/preview", data={"condition": TAIPEI})
    assert live.status_code == 200 and "<html" not in live.text
    assert 'id="live-count" data-count="3"' in live.text
    api = client.post("/api/v1/segments/preview", json={"condition": TAIPEI}, headers=brand.bearer).json()
    assert api["count"] == 3
    shown = [int(i) for i in re.findall(r'href="/customers/(\d+)"', live.text)]
    assert shown == [p["profile_id"] for p in api["profiles"]] == sorted([ids["u0"], ids["u1"], ids["u3"]])
    assert "u3@example.com" in live.text and "u2@example.com" not in live.text

    spenders = console.htmx("POST", "/segments/preview", data={"condition": SPENDERS})
    assert 'data-count="2"' in spenders.text
    nobody = console.htmx("POST", "/segments/preview", data={"condition": 'trait.city == "Kaohsiung"'})
    assert 'data-count="0"' in nobody.text and "No customer matches this condition yet." in nobody.text

    bad = console.htmx("POST", "/segments/preview", data={"condition": 'count("Order Completed" and'})
    assert bad.status_code == 400 and 'id="preview-error"' in bad.text and "<html" not in bad.text
    assert html('expected ",", found "and" at line 1, column 25') in bad.text
    blank = console.htmx("POST", "/segments/preview", data={"condition": "  "})
    assert blank.status_code == 200 and 'id="preview-empty"' in blank.text
    assert console.client.post("/segments/preview", data={"condition": TAIPEI}).status_code == 403  # no CSRF


def test_analysts_export_members_as_csv_but_cannot_change_segments(
    console_as: Callable[..., Console], client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    ingest(client, engine, brand)
    client.post("/api/v1/segments", json={"key": "taipei", "condition": TAIPEI}, headers=brand.bearer)
    analyst = console_as("analyst")
    shown = analyst.get("/segments/taipei")
    assert shown.status_code == 200 and 'id="export"' in shown.text
    assert 'id="segment-form"' not in shown.text and "/segments/taipei/delete" not in shown.text
    exported = analyst.get("/segments/taipei/export")
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    assert 'filename="taipei-' in exported.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(r["user_id"], r["email"]) for r in rows] == [
        ("u0", "u0@example.com"),
        ("u1", "u1@example.com"),
        ("u3", "u3@example.com"),
    ]
    assert exported.text == client.get("/api/v1/segments/taipei/export", headers=brand.bearer).text
    assert analyst.post("/segments", {"key": "mine", "condition": TAIPEI}).status_code == 403
    assert analyst.post("/segments/taipei/save", {"condition": "true"}).status_code == 403
    assert analyst.post("/tags/rules", {"tag": "vip", "condition": SPENDERS}).status_code == 403
    assert client.get("/api/v1/segments/mine", headers=brand.bearer).status_code == 404
    assert ("segment.export", "taipei") in actions(engine, brand)


def test_viewers_see_no_edit_forms_and_are_refused(
    console_as: Callable[..., Console], client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    ingest(client, engine, brand)
    h = brand.bearer
    client.post("/api/v1/segments", json={"key": "taipei", "name": "台北", "condition": TAIPEI}, headers=h)
    client.put("/api/v1/tags/rules/vip", json={"condition": SPENDERS}, headers=h)
    interest = {"event": "Page Viewed", "property": "category", "prefix": "interest"}
    event_rule = client.post("/api/v1/tags/event-rules", json=interest, headers=h).json()
    viewer = console_as("viewer", locale="zh-TW")
    tags = viewer.get("/tags")
    assert tags.status_code == 200 and "標籤規則" in tags.text and html(SPENDERS) in tags.text
    assert "<form" not in tags.text.split("</header>")[1]
    segments = viewer.get("/segments")
    assert (
        "分群" in segments.text
        and 'href="/segments/taipei"' in segments.text
        and "/export" not in segments.text
    )
    page = viewer.get("/segments/taipei")
    assert page.status_code == 200 and 'id="live-count" data-count="3"' in page.text
    assert "<form" not in page.text.split("</header>")[1] and 'id="export"' not in page.text

    for path, data in [
        ("/segments", {"key": "mine", "condition": TAIPEI}),
        ("/segments/taipei/save", {"condition": "true"}),
        ("/segments/taipei/delete", {}),
        ("/tags/rules", {"tag": "vip", "condition": "true"}),
        ("/tags/rules/delete", {"tag": "vip"}),
        ("/tags/event-rules", {"event": "Page Viewed", "property": "x", "prefix": "x"}),
        (f"/tags/event-rules/{event_rule['id']}/delete", {}),
        ("/tags/presets", {"preset": "line"}),
    ]:
        assert viewer.post(path, data).status_code == 403, path
    assert viewer.get("/segments/taipei/export").status_code == 403
    assert viewer.htmx("POST", "/segments/preview", data={"condition": TAIPEI}).status_code == 200
    assert client.get("/api/v1/segments/taipei", headers=h).json()["condition"] == TAIPEI
    rules = client.get("/api/v1/tags/rules", headers=h).json()
    assert [r["condition"] for r in rules["tag_rules"]] == [SPENDERS] and len(rules["event_tag_rules"]) == 1


def test_another_workspaces_segments_and_rules_are_not_found(
    console: Console, client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    other = make_brand(engine, "other")
    h = other.bearer
    assert (
        client.post("/api/v1/segments", json={"key": "theirs", "condition": "true"}, headers=h).status_code
        == 201
    )
    client.put("/api/v1/tags/rules/theirs", json={"condition": "true"}, headers=h)
    theirs = client.post(
        "/api/v1/tags/event-rules", json={"event": "Page Viewed", "property": "x", "prefix": "x"}, headers=h
    ).json()
    assert console.get("/segments/theirs").status_code == 404
    assert console.get("/segments/theirs/export").status_code == 404
    assert console.post("/segments/theirs/save", {"condition": "false"}).status_code == 404
    assert console.post("/segments/theirs/delete").status_code == 404
    assert console.get("/tags?edit=theirs").status_code == 404
    assert console.post("/tags/rules/delete", {"tag": "theirs"}).status_code == 404
    assert console.post(f"/tags/event-rules/{theirs['id']}/delete").status_code == 404
    assert "theirs" not in console.get("/segments").text and "theirs" not in console.get("/tags").text
    assert client.get("/api/v1/segments/theirs", headers=h).json()["condition"] == "true"
    rules = client.get("/api/v1/tags/rules", headers=h).json()
    assert len(rules["tag_rules"]) == 1 and len(rules["event_tag_rules"]) == 1


@pytest.mark.browser
@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_builder_counts_and_previews_as_the_operator_types(
    live_server: LiveServer, engine: sa.Engine, brand: Brand
) -> None:
    """In Chromium: htmx posts the condition as it is typed; the count, the members and a parse error
    replace each other in place, a helper button inserts a clause, and saving stores the segment."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    with httpx.Client(base_url=live_server.url) as client:
        ingest(client, engine, brand)
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(**launch_options())
        tab = chromium.new_page(base_url=live_server.url)
        errors: list[str] = []
        tab.on("pageerror", lambda e: errors.append(str(e)))
        tab.goto("/login")
        tab.fill("#email", make_user(engine, brand.workspace_id, "operator"))
        tab.fill("#password", PASSWORD)
        tab.click("button[type=submit]")
        tab.wait_for_url("**/")
        tab.goto("/segments/new")
        tab.fill("#condition", TAIPEI)
        tab.wait_for_selector('#live-count[data-count="3"]')
        assert tab.locator("#preview-members a[href^='/customers/']").count() == 3
        tab.fill("#condition", 'count("Order Completed" and')
        tab.wait_for_selector("#preview-error")
        assert "line 1, column 25" in tab.inner_text("#preview-error")
        tab.fill("#condition", TAIPEI)
        tab.wait_for_selector('#live-count[data-count="3"]')
        tab.click('button[data-clause^="sum("]')  # "Spent 2,000 or more in a year"
        tab.wait_for_selector('#live-count[data-count="1"]')  # u3: Taipei and 4,500
        assert (
            tab.input_value("#condition")
            == TAIPEI + '\nand sum("Order Completed", "revenue", within="365d") >= 2000'
        )
        tab.fill("#key", "taipei-spenders")
        tab.click("#segment-form button[type=submit]")
        tab.wait_for_selector('#members:text("1")')
        shots = ARTIFACTS / "screenshots"
        shots.mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=str(shots / "audience-segment-builder.png"), full_page=True)
        tab.goto("/tags")
        tab.fill("#r-condition", "has_tag(")
        tab.wait_for_selector("#rule-preview #preview-error")
        tab.screenshot(path=str(shots / "audience-tags.png"), full_page=True)
        chromium.close()
    assert not errors, errors
