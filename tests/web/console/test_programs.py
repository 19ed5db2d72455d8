"""Console pages for programs: lifecycle models, journeys, broadcasts — each write visible through the API."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from lifeloop.accounts.service import audit_entries
from lifeloop.profiles.resolver import resolve_pending
from lifeloop.store.engine import connect
from tests.conftest import Brand, make_brand
from tests.web.console.conftest import Console


def ingest(client: TestClient, brand: Brand, events: list[dict[str, object]]) -> None:
    answer = client.post("/v1/batch", json={"batch": events}, auth=brand.auth)
    assert answer.status_code == 200, answer.text
    resolve_pending(client.app.state.engine)  # type: ignore[attr-defined]


def line_friends(client: TestClient, brand: Brand, count: int, buyers: int = 0) -> None:
    """``count`` LINE friends, the first ``buyers`` of whom have ordered."""
    events: list[dict[str, object]] = []
    for i in range(count):
        events.append({"type": "identify", "userId": f"u{i}", "messageId": f"i{i}",
                       "traits": {"line_user_id": f"U{i:032x}"}})  # fmt: skip
        events.append({"type": "track", "userId": f"u{i}", "event": "Channel Followed", "messageId": f"f{i}",
                       "properties": {"channel": "line"}})  # fmt: skip
        if i < buyers:
            events.append({"type": "track", "userId": f"u{i}", "event": "Order Completed",
                           "messageId": f"o{i}", "properties": {"revenue": 100}})  # fmt: skip
    ingest(client, brand, events)


def actions(engine: sa.Engine, brand: Brand) -> list[tuple[str, str]]:
    with connect(engine) as conn:
        return [(e.action, e.target) for e in audit_entries(conn, brand.workspace_id)]


# --- lifecycle -------------------------------------------------------------------------------------


def test_a_preset_installed_in_the_console_is_the_apis_active_model(
    console: Console, client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    empty = console.get("/lifecycle")
    assert empty.status_code == 200 and "No lifecycle model yet" in empty.text
    installed = console.post("/lifecycle/presets", {"preset": "line"}, follow_redirects=False)
    assert installed.status_code == 303
    active = client.get("/api/v1/lifecycle/models/active", headers=brand.bearer).json()
    assert active["key"] == "line" and [s["key"] for s in active["stages"]][:2] == ["silent", "loyal"]
    shown = console.get("/lifecycle")
    assert "LINE friend lifecycle" in shown.text and "Loyal repeat buyer" in shown.text
    assert ("lifecycle.preset", "line v1") in actions(engine, brand)
    unknown = console.post("/lifecycle/presets", {"preset": "nope"})
    assert unknown.status_code == 400 and "no preset" in unknown.text


def test_stage_names_follow_the_readers_language(
    console_as: Callable[..., Console], client: TestClient, brand: Brand
) -> None:
    client.post("/api/v1/lifecycle/models", json={"preset": "line"}, headers=brand.bearer)
    page = console_as("viewer", locale="zh-TW").get("/lifecycle")
    assert page.status_code == 200 and "<td>忠實回購<br>" in page.text and "<td>忠实复购<br>" not in page.text
    assert 'action="/lifecycle/presets"' not in page.text and "/lifecycle/edit" not in page.text
    custom = (
        "key: shop\nname: {zh-CN: 商店, en: Shop}\n"
        "stages:\n  - {key: buyer, name: {zh-CN: 买家, en: Buyer}, when: 'true'}"
    )
    assert (
        client.post("/api/v1/lifecycle/models", json={"yaml": custom}, headers=brand.bearer).status_code
        == 201
    )
    fallback = console_as("viewer", locale="zh-TW").get("/lifecycle")
    assert "<td>买家<br>" in fallback.text  # no zh-TW name: the zh-CN one
    assert "Buyer" in console_as("analyst").get("/lifecycle").text


def test_the_editor_validates_inline_and_previews_each_stages_count(
    console: Console, client: TestClient, brand: Brand
) -> None:
    line_friends(client, brand, 5, buyers=2)
    editor = console.get("/lifecycle/edit?preset=line")
    assert editor.status_code == 200 and "key: line" in editor.text
    broken = console.post("/lifecycle/validate", {"yaml": "key: line\nname: {en: x}\nstages: []"})
    assert broken.status_code == 400
    assert re.search(r'id="model-error">[^<]*stages must be a non-empty list', broken.text)
    bad_condition = console.htmx(
        "POST", "/lifecycle/validate", data={"yaml": "key: m\nname: {zh-CN: m, en: m}\nstages:\n"
                                             "  - {key: a, name: {zh-CN: a, en: a}, when: 'count(('}"},
    )  # fmt: skip
    assert bad_condition.status_code == 400 and "stages[0].when (a)" in bad_condition.text
    assert "<html" not in bad_condition.text  # htmx gets the fragment only
    source = console.get("/lifecycle/edit?preset=line").text
    yaml_text = re.search(r'<textarea id="model-yaml" name="yaml"[^>]*>(.*?)</textarea>', source, re.S)
    assert yaml_text
    import html

    preview = console.htmx("POST", "/lifecycle/validate", data={"yaml": html.unescape(yaml_text[1])})
    assert preview.status_code == 200 and 'id="model-valid"' in preview.text
    counts = dict(re.findall(r'data-stage="(\w+)">.*?<td class="num">(\d+)</td>', preview.text, re.S))
    assert counts["loyal"] == "2" and counts["new"] == "3" and counts["silent"] == "0"
    assert client.get("/api/v1/lifecycle/models", headers=brand.bearer).json() == []  # nothing written
    rejected = console.post("/lifecycle/models", {"yaml": "key: Bad"})
    assert rejected.status_code == 400 and 'id="model-error"' in rejected.text
    assert client.get("/api/v1/lifecycle/models", headers=brand.bearer).json() == []
    activated = console.post(
        "/lifecycle/models", {"yaml": html.unescape(yaml_text[1])}, follow_redirects=False
    )
    assert activated.status_code == 303
    models = client.get("/api/v1/lifecycle/models", headers=brand.bearer).json()
    assert [(m["key"], m["version"], m["active"]) for m in models] == [("line", 1, True)]


def test_versions_are_kept_and_an_old_one_can_come_back(
    console: Console, client: TestClient, brand: Brand
) -> None:
    h = brand.bearer
    client.post("/api/v1/lifecycle/models", json={"preset": "line"}, headers=h)
    client.post("/api/v1/lifecycle/models", json={"preset": "aarrr"}, headers=h)
    page = console.get("/lifecycle")
    assert "/lifecycle/models/line/1" in page.text and "/lifecycle/models/aarrr/1" in page.text
    old = console.get("/lifecycle/models/line/1")
    assert old.status_code == 200 and "Activate this version again" in old.text
    back = console.post("/lifecycle/models/line/1/activate", follow_redirects=False)
    assert back.status_code == 303
    assert client.get("/api/v1/lifecycle/models/active", headers=h).json()["key"] == "line"
    assert console.get("/lifecycle/models/line/9").status_code == 404


def test_viewers_cannot_change_the_model(console_as: Callable[..., Console]) -> None:
    viewer = console_as("viewer")
    assert viewer.post("/lifecycle/presets", {"preset": "line"}).status_code == 403
    assert viewer.post("/lifecycle/models", {"yaml": "key: x"}).status_code == 403
    assert viewer.get("/lifecycle/edit").status_code == 403


# --- journeys --------------------------------------------------------------------------------------

WELCOME = """\
key: welcome
name: {zh-CN: 欢迎, en: Welcome}
trigger: {kind: manual}
steps:
  - {key: split, type: split, holdout: 50, arms: [{name: a, weight: 1, next: mark}]}
  - {key: mark, type: add_tag, tag: welcomed}
  - {key: pause, type: wait, duration: 1d}
  - {key: done, type: exit, reason: waited}
"""


def test_a_journey_written_in_the_console_is_a_draft_in_the_api(
    console: Console, client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    form = console.get("/journeys/new")
    assert form.status_code == 200 and "welcome_line" in form.text  # the playbooks are offered
    made = console.post("/journeys", {"definition": WELCOME}, follow_redirects=False)
    assert made.status_code == 303 and made.headers["location"] == "/journeys/welcome"
    api = client.get("/api/v1/journeys/welcome", headers=brand.bearer).json()
    assert api["status"] == "draft" and api["draft"]["steps"][0]["key"] == "split"
    assert ("journey.save", "welcome") in actions(engine, brand)
    one = {"key": "json_one", "name": {"zh-CN": "一", "en": "One"}, "trigger": {"kind": "manual"},
           "steps": [{"key": "bye", "type": "exit"}]}  # fmt: skip
    as_json = json.dumps(one)
    assert console.post("/journeys", {"definition": as_json}, follow_redirects=False).status_code == 303
    assert client.get("/api/v1/journeys/json_one", headers=brand.bearer).json()["status"] == "draft"
    listed = console.get("/journeys")
    assert re.search(r'data-journey="welcome">.*?Welcome.*?draft', listed.text, re.S)


def test_a_broken_definition_shows_every_error_inline_and_saves_nothing(
    console: Console, client: TestClient, brand: Brand
) -> None:
    broken = WELCOME.replace("next: mark", "next: nowhere").replace("duration: 1d", "duration: soon")
    answer = console.post("/journeys", {"definition": broken})
    assert answer.status_code == 400 and 'id="definition-errors"' in answer.text
    assert "steps[2] (pause)" in answer.text and "soon" in answer.text
    assert client.get("/api/v1/journeys", headers=brand.bearer).json() == []
    checked = console.htmx("POST", "/journeys/validate", data={"definition": "key: [unclosed"})
    assert checked.status_code == 400 and "not valid YAML" in checked.text and "<html" not in checked.text
    sends = WELCOME.replace("{key: mark, type: add_tag, tag: welcomed}",
                            "{key: mark, type: send, channel: line, template: missing}")  # fmt: skip
    missing = console.htmx("POST", "/journeys/validate", data={"definition": sends})
    assert missing.status_code == 400 and "no template &#39;missing&#39;" in missing.text
    fine = console.htmx("POST", "/journeys/validate", data={"definition": WELCOME})
    assert (
        fine.status_code == 200 and 'id="definition-valid"' in fine.text and 'data-step="pause"' in fine.text
    )


def test_the_journey_page_draws_each_step_with_its_counts_and_the_ab_verdict(
    console: Console, client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    from lifeloop.lifecycle.service import live_profiles

    line_friends(client, brand, 12)
    console.post("/journeys", {"definition": WELCOME})
    published = console.post("/journeys/welcome/publish", follow_redirects=False)
    assert published.status_code == 303
    h = brand.bearer
    assert client.get("/api/v1/journeys/welcome", headers=h).json()["status"] == "active"
    with connect(engine) as conn:
        ids = live_profiles(conn, brand.workspace_id)
    entered = client.post("/api/v1/journeys/welcome/entries", json={"profile_ids": ids}, headers=h)
    assert entered.status_code == 202 and entered.json()["entered"] == 12
    stats = client.get("/api/v1/journeys/welcome/stats", headers=h).json()
    treated = stats["experiment"]["arms"]["a"]["users"]
    assert stats["steps"]["pause"]["waiting"] == treated and 0 < treated < 12

    page = console.get("/journeys/welcome")
    assert page.status_code == 200 and '<svg class="journey-flow"' in page.text
    row = re.search(r'<tr data-step="pause">(.*?)</tr>', page.text, re.S)
    assert row and re.findall(r'<td class="num">(\d+)</td>', row[1]) == ["0", str(treated)]
    mark = re.search(r'<tr data-step="mark">(.*?)</tr>', page.text, re.S)
    assert mark and re.findall(r'<td class="num">(\d+)</td>', mark[1])[0] == str(treated)
    verdict = stats["experiment"]["arms"]["a"]["vs_holdout"]["verdict"]
    assert verdict in page.text and 'data-arm="holdout"' in page.text
    assert re.search(
        r'data-journey="welcome">.*?<td class="num">12</td>', console.get("/journeys").text, re.S
    )

    paused = console.post("/journeys/welcome/pause", follow_redirects=False)
    assert paused.status_code == 303
    assert client.get("/api/v1/journeys/welcome", headers=h).json()["status"] == "paused"
    console.post("/journeys/welcome/resume")
    assert client.get("/api/v1/journeys/welcome", headers=h).json()["status"] == "active"
    assert ("journey.pause", "welcome") in actions(engine, brand)


def test_a_playbook_installs_from_the_console(console: Console, client: TestClient, brand: Brand) -> None:
    installed = console.post("/journeys/playbooks/welcome_line", follow_redirects=False)
    assert installed.status_code == 303
    api = client.get("/api/v1/journeys/welcome_line", headers=brand.bearer).json()
    assert api["playbook"] == "welcome_line" and api["status"] == "draft"
    page = console.get("/journeys/welcome_line")
    assert 'data-step="wait_reply"' in page.text and "LINE new-friend welcome" in page.text
    assert console.post("/journeys/playbooks/nope").status_code == 404


def test_viewers_read_journeys_but_change_nothing(
    console_as: Callable[..., Console], client: TestClient, brand: Brand
) -> None:
    client.post("/api/v1/journeys", json={"yaml": WELCOME}, headers=brand.bearer)
    viewer = console_as("viewer")
    page = viewer.get("/journeys/welcome")
    assert page.status_code == 200 and "/journeys/welcome/publish" not in page.text
    assert 'name="definition"' not in page.text
    assert viewer.post("/journeys", {"definition": WELCOME}).status_code == 403
    assert viewer.post("/journeys/welcome/publish").status_code == 403
    assert viewer.get("/journeys/new").status_code == 403
    assert client.get("/api/v1/journeys/welcome", headers=brand.bearer).json()["status"] == "draft"


# --- broadcasts ------------------------------------------------------------------------------------


def sale_template(engine: sa.Engine, brand: Brand) -> None:
    from lifeloop.messaging.templates.service import create_template

    with engine.begin() as conn:
        variants = {"zh-TW": {"text": "年終特賣"}, "en": {"text": "Sale"}}
        create_template(conn, brand.workspace_id, key="sale", channel="line", variants=variants,
                        default_locale="zh-TW")  # fmt: skip


DRAFT = {"key": "sale", "name": "Year-end sale", "condition": 'trait.line_user_id != ""', "channel": "line",
         "template": "sale", "holdout": "10", "schedule": "now"}  # fmt: skip


def test_a_broadcast_drafted_in_the_console_is_estimated_and_in_the_api(
    console: Console, client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    line_friends(client, brand, 20)
    sale_template(engine, brand)
    form = console.get("/broadcasts/new")
    assert form.status_code == 200 and '<option value="sale"' in form.text
    estimate = console.htmx("POST", "/broadcasts/estimate", data=DRAFT)
    assert estimate.status_code == 200 and "<html" not in estimate.text
    members = re.search(r'id="estimate-members">(\d+)<', estimate.text)
    assert members and members[1] == "20"
    assert client.get("/api/v1/broadcasts", headers=brand.bearer).json() == []  # estimating saves nothing
    bad = console.htmx("POST", "/broadcasts/estimate", data={**DRAFT, "condition": "", "channel": "line"})
    assert bad.status_code == 400 and "name who receives it" in bad.text

    made = console.post("/broadcasts", DRAFT, follow_redirects=False)
    assert made.status_code == 303 and made.headers["location"] == "/broadcasts/sale"
    api = client.get("/api/v1/broadcasts/sale", headers=brand.bearer).json()
    assert api["status"] == "draft" and api["definition"]["holdout"] == 10
    assert api["definition"]["channels"] == [{"channel": "line", "template": "sale"}]
    expected = client.get("/api/v1/broadcasts/sale/estimate", headers=brand.bearer).json()
    page = console.get("/broadcasts/sale")
    assert re.search(rf'id="estimate-members">{expected["members"]}<', page.text)
    assert re.search(rf'id="estimate-sent">{expected["expected"]["sent"]}<', page.text)
    assert "No results yet" in page.text
    assert ("broadcast.create", "sale") in actions(engine, brand)
    again = console.post("/broadcasts", DRAFT)
    assert again.status_code == 409 and "already exists" in again.text


def test_a_yaml_definition_with_variants_is_taken_as_written(
    console: Console, client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    sale_template(engine, brand)
    definition = (
        "audience: {tags: [vip]}\nvariants:\n"
        "  - {key: a, channels: [{channel: line, template: sale}]}\n"
        "  - {key: b, channels: [{channel: line, template: sale}]}\nholdout: 20\n"
    )
    made = console.post(
        "/broadcasts", {"key": "ab", "name": "AB", "definition": definition}, follow_redirects=False
    )
    assert made.status_code == 303
    api = client.get("/api/v1/broadcasts/ab", headers=brand.bearer).json()
    assert [v["key"] for v in api["definition"]["variants"]] == ["a", "b"]
    assert api["definition"]["audience"]["tags"] == ["vip"]
    fields = {**DRAFT, "key": "vip", "condition": "", "tags": "vip, gold", "tags_match": "all",
              "stages": ["line:loyal", "line:new"], "schedule": "at", "at": "2030-01-02T09:00"}  # fmt: skip
    assert console.post("/broadcasts", fields, follow_redirects=False).status_code == 303
    vip = client.get("/api/v1/broadcasts/vip", headers=brand.bearer).json()["definition"]
    stages = ["line:loyal", "line:new"]
    assert vip["audience"] == {"tags": ["vip", "gold"], "tags_match": "all", "stages": stages}
    assert vip["schedule"]["mode"] == "at" and vip["schedule"]["at"].startswith("2030-01-02T09:00")
    wrong = console.post("/broadcasts/ab/definition", {"definition": "audience: {}\nchannels: []"})
    assert wrong.status_code == 400 and 'id="broadcast-error"' in wrong.text


def test_only_senders_schedule_and_cancel(
    console_as: Callable[..., Console],
    client: TestClient,
    engine: sa.Engine,
    brand: Brand,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lifeloop.messaging.channels.config import save_config
    from tests.conftest import TEST_SECRET_KEY

    line_friends(client, brand, 5)
    sale_template(engine, brand)
    console_as("admin").post("/broadcasts", DRAFT)
    analyst = console_as("analyst")
    page = analyst.get("/broadcasts/sale")
    assert page.status_code == 200 and "/broadcasts/sale/schedule" not in page.text
    assert analyst.post("/broadcasts/sale/schedule").status_code == 403
    assert analyst.post("/broadcasts/sale/cancel").status_code == 403
    assert analyst.htmx("POST", "/broadcasts/estimate", data=DRAFT).status_code == 200  # reading is fine
    viewer = console_as("viewer")
    assert viewer.post("/broadcasts", {**DRAFT, "key": "other"}).status_code == 403
    assert viewer.get("/broadcasts/new").status_code == 403

    operator = console_as("operator")
    refused = operator.post("/broadcasts/sale/schedule")
    assert refused.status_code == 400 and "no credentials" in refused.text
    monkeypatch.setenv("LIFELOOP_SECRET_KEY", TEST_SECRET_KEY)
    with engine.begin() as conn:
        save_config(conn, brand.workspace_id, channel="line",
                    credentials={"channel_access_token": "tok", "channel_secret": "s" * 32})  # fmt: skip
    scheduled = operator.post("/broadcasts/sale/schedule", follow_redirects=False)
    assert scheduled.status_code == 303
    assert client.get("/api/v1/broadcasts/sale", headers=brand.bearer).json()["status"] == "scheduled"
    cancelled = operator.post("/broadcasts/sale/cancel", follow_redirects=False)
    assert cancelled.status_code == 303
    assert client.get("/api/v1/broadcasts/sale", headers=brand.bearer).json()["status"] == "cancelled"
    assert {"broadcast.schedule", "broadcast.cancel"} <= {a for a, _ in actions(engine, brand)}
    shown = operator.get("/broadcasts")
    assert re.search(r'data-broadcast="sale">.*?cancelled', shown.text, re.S)


def test_another_workspaces_journeys_and_broadcasts_are_not_found(
    console: Console, client: TestClient, engine: sa.Engine
) -> None:
    other = make_brand(engine, "other")
    sale_template(engine, other)
    oh = other.bearer
    assert client.post("/api/v1/journeys", json={"yaml": WELCOME}, headers=oh).status_code == 201
    body = {"key": "sale", "name": "Sale", "definition": {"audience": {"tags": ["vip"]},
            "channels": [{"channel": "line", "template": "sale"}]}}  # fmt: skip
    assert client.post("/api/v1/broadcasts", json=body, headers=oh).status_code == 201
    assert console.get("/journeys/welcome").status_code == 404
    assert console.post("/journeys/welcome/publish").status_code == 404
    assert console.post("/journeys/welcome/draft", {"definition": WELCOME}).status_code == 404
    assert console.get("/broadcasts/sale").status_code == 404
    assert console.post("/broadcasts/sale/schedule").status_code == 404
    assert console.post("/broadcasts/sale/cancel").status_code == 404
    assert client.get("/api/v1/journeys/welcome", headers=oh).json()["status"] == "draft"
    assert client.get("/api/v1/broadcasts/sale", headers=oh).json()["status"] == "draft"
