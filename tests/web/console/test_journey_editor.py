"""The journey flow editor: steps added on a way, changed and deleted in the console are the API's draft,
with the flow's per-step counts, errors beside the form, and nothing for a role that may not edit."""

from __future__ import annotations

import re
from collections.abc import Callable

import sqlalchemy as sa
from fastapi.testclient import TestClient

from lifeloop.lifecycle.service import live_profiles
from lifeloop.store.engine import connect
from tests.conftest import Brand
from tests.web.console.conftest import Console
from tests.web.console.test_programs import WELCOME, actions, line_friends


def draft(client: TestClient, brand: Brand) -> list[dict[str, object]]:
    return client.get("/api/v1/journeys/welcome", headers=brand.bearer).json()["draft"]["steps"]


def test_a_step_added_on_a_way_is_in_the_apis_draft_and_the_published_version_keeps_running(
    console: Console, client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    line_friends(client, brand, 6)
    console.post("/journeys", {"definition": WELCOME})
    console.post("/journeys/welcome/publish")
    with connect(engine) as conn:
        ids = live_profiles(conn, brand.workspace_id)
    client.post("/api/v1/journeys/welcome/entries", json={"profile_ids": ids}, headers=brand.bearer)
    waiting = client.get("/api/v1/journeys/welcome/stats", headers=brand.bearer).json()["steps"]["pause"][
        "waiting"
    ]

    page = console.get("/journeys/welcome/edit")
    assert page.status_code == 200 and '<svg class="journey-flow"' in page.text
    # every way between steps offers a ＋, and each step shows its runs
    assert (
        'data-after="mark" data-way="next"' in page.text
        and 'data-after="split" data-way="arm:a"' in page.text
    )
    assert re.search(rf'data-step="pause">.*?waiting {waiting}<', page.text, re.S)

    form = console.get("/journeys/welcome/edit?insert=mark:next&type=branch")
    assert form.status_code == 200 and 'name="condition"' in form.text
    added = console.post(
        "/journeys/welcome/edit/steps",
        {"after": "mark", "way": "next", "type": "branch", "key": "is_vip", "condition": 'has_tag("vip")'},
        follow_redirects=False,
    )
    assert added.status_code == 303 and "step=is_vip" in added.headers["location"]
    steps = draft(client, brand)
    assert [s["key"] for s in steps] == ["split", "mark", "is_vip", "pause", "done"]
    assert steps[2] == {"key": "is_vip", "type": "branch", "condition": 'has_tag("vip")', "else": "pause"}
    assert ("journey.step.add", "welcome") in actions(engine, brand)
    # the published version is untouched: the runs inside still wait in it
    published = client.get("/api/v1/journeys/welcome/versions/1", headers=brand.bearer).json()
    assert [s["key"] for s in published["steps"]] == ["split", "mark", "pause", "done"]
    assert "/journeys/welcome/publish" in console.get("/journeys/welcome").text  # the draft differs now


def test_changing_and_deleting_a_step_re_routes_only_what_it_should(
    console: Console, client: TestClient, brand: Brand
) -> None:
    console.post("/journeys", {"definition": WELCOME})
    panel = console.get("/journeys/welcome/edit?step=pause")
    assert 'name="duration" value="1d"' in panel.text and 'name="way_next"' in panel.text
    changed = console.post(
        "/journeys/welcome/edit/steps/pause", {"duration": "3d", "way_next": "done"}, follow_redirects=False
    )
    assert changed.status_code == 303
    assert draft(client, brand)[2] == {"key": "pause", "type": "wait", "duration": "3d"}
    arms = console.post(
        "/journeys/welcome/edit/steps/split",
        {"holdout": "20", "arm_name_0": "a", "arm_weight_0": "1", "arm_next_0": "mark",
         "arm_name_1": "b", "arm_weight_1": "1", "arm_next_1": "pause", "arm_name_2": ""},
        follow_redirects=False,
    )  # fmt: skip
    assert arms.status_code == 303
    split = draft(client, brand)[0]
    assert split["holdout"] == 20 and [(a["name"], a["next"]) for a in split["arms"]] == [
        ("a", "mark"), ("b", "pause")]  # fmt: skip
    deleted = console.post("/journeys/welcome/edit/steps/mark/delete", follow_redirects=False)
    assert deleted.status_code == 303
    steps = draft(client, brand)
    assert [s["key"] for s in steps] == ["split", "pause", "done"]
    assert [a["next"] for a in steps[0]["arms"]] == ["pause", "pause"]  # arm a went to "mark", which led on


def test_a_bad_step_is_refused_beside_the_form_and_changes_nothing(
    console: Console, client: TestClient, brand: Brand
) -> None:
    console.post("/journeys", {"definition": WELCOME})
    before = draft(client, brand)
    bad = console.post("/journeys/welcome/edit/steps/pause", {"duration": "soon"})
    assert bad.status_code == 400 and 'id="step-errors"' in bad.text and 'value="soon"' in bad.text
    leaving = console.post("/journeys/welcome/edit/steps/pause", {"duration": "1d", "way_next": ""})
    assert leaving.status_code == 400 and "exit step" in leaving.text
    unknown = console.post(
        "/journeys/welcome/edit/steps", {"after": "mark", "way": "next", "type": "teleport"}
    )
    assert unknown.status_code == 400 and "no step type" in unknown.text
    wait = {"type": "wait", "duration": "1h"}
    nowhere = console.post("/journeys/welcome/edit/steps", {"after": "mark", "way": "sideways", **wait})
    assert nowhere.status_code == 400 and "sideways" in nowhere.text
    taken = console.post(
        "/journeys/welcome/edit/steps", {"after": "mark", "way": "next", "key": "pause", **wait}
    )
    assert taken.status_code == 400 and "used already" in taken.text
    assert console.get("/journeys/welcome/edit?step=nope").status_code == 404
    assert draft(client, brand) == before


def test_only_editors_open_the_editor(
    console_as: Callable[..., Console], client: TestClient, brand: Brand
) -> None:
    client.post("/api/v1/journeys", json={"yaml": WELCOME}, headers=brand.bearer)
    for role in ("viewer", "analyst"):
        reader = console_as(role)
        assert reader.get("/journeys/welcome/edit").status_code == 403
        assert reader.post("/journeys/welcome/edit/steps/pause/delete").status_code == 403
        assert "/journeys/welcome/edit" not in reader.get("/journeys/welcome").text
    assert len(draft(client, brand)) == 4
    operator = console_as("operator", locale="zh-TW")
    page = operator.get("/journeys/welcome/edit?insert=pause:next&type=send")
    assert page.status_code == 200 and "傳送訊息" in page.text and 'name="channel"' in page.text


def test_the_engagement_steps_are_built_in_the_editor(
    console: Console, client: TestClient, brand: Brand
) -> None:
    console.post("/journeys", {"definition": WELCOME})
    day7 = {"key": "day7", "kind": "fixed", "value": 50, "valid_days": 7}
    client.post("/api/v1/coupons/templates", json=day7, headers=brand.bearer)
    form = console.get("/journeys/welcome/edit?insert=pause:next&type=issue_coupon")
    assert '<option value="day7"' in form.text
    add = "/journeys/welcome/edit/steps"
    console.post(add, {"after": "pause", "way": "next", "type": "issue_coupon", "template": "day7"})
    points = {"type": "award_points", "points": "50", "reason": "second_order"}
    console.post(add, {"after": "issue_coupon", "way": "next", **points})
    bad = console.post(add, {"after": "pause", "way": "next", **points, "points": "many"})
    assert bad.status_code == 400 and "points must be a number" in bad.text
    steps = draft(client, brand)
    assert steps[3:5] == [
        {"key": "issue_coupon", "type": "issue_coupon", "template": "day7"},
        {"key": "award_points", "type": "award_points", "points": 50, "reason": "second_order"},
    ]
