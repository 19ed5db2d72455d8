"""The REST API (/api/v1/advisors) and the CLI (lifeloop advisors …): writes with keys, lists, and bad
input refused with a reason, changing nothing."""

from __future__ import annotations

import json

import sqlalchemy as sa
from fastapi.testclient import TestClient

from lifeloop.config import Settings
from lifeloop.profiles.resolver import resolve_pending
from tests.cli_helpers import run_cli
from tests.conftest import Brand, snapshot


def _customers(client: TestClient, engine: sa.Engine, brand: Brand, *users: str) -> list[int]:
    batch = [{"type": "identify", "userId": u, "traits": {"name": u.upper(), "store": "s1"}} for u in users]
    assert client.post("/v1/batch", json={"batch": batch}, auth=brand.auth).status_code == 200
    resolve_pending(engine)
    return [
        client.get(f"/api/v1/profiles/lookup?identity=user_id:{u}", headers=brand.bearer).json()["id"]
        for u in users
    ]


def test_api_advisors_rules_assignments_and_tasks(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    h = brand.bearer
    body = {"name": "李四", "wecom_userid": "lisi", "store": "s1", "channels": ["wecom"]}
    made = client.post("/api/v1/advisors", json=body, headers={**h, "Idempotency-Key": "adv-1"})
    assert made.status_code == 201, made.text
    again = client.post("/api/v1/advisors", json=body, headers={**h, "Idempotency-Key": "adv-1"})
    assert again.status_code == 201 and again.json()["id"] == made.json()["id"]
    other = client.post(
        "/api/v1/advisors", json={**body, "name": "别人"}, headers={**h, "Idempotency-Key": "adv-1"}
    )
    assert other.status_code == 409 and "already used" in other.json()["message"]
    second = client.post(
        "/api/v1/advisors", json={"name": "王五", "wecom_userid": "wangwu"}, headers=h
    ).json()
    assert [a["wecom_userid"] for a in client.get("/api/v1/advisors", headers=h).json()] == ["lisi", "wangwu"]

    rule = client.put("/api/v1/advisors/assignment-rules/store", json={"method": "store"}, headers=h)
    assert rule.status_code == 200 and rule.json()["config"] == {"trait": "store"}
    u1, u2 = _customers(client, engine, brand, "u1", "u2")
    by_rules = client.post("/api/v1/advisors/assignments", json={"profile_id": u1}, headers=h)
    assert by_rules.status_code == 200 and by_rules.json()["advisor_id"] == made.json()["id"]
    manual = client.post(
        "/api/v1/advisors/assignments",
        json={"profile_id": u2, "advisor_id": second["id"], "reason": "老客户指定"},
        headers={**h, "Idempotency-Key": "assign-u2"},
    )
    assert manual.status_code == 200 and manual.json()["method"] == "manual"

    task = client.post(
        "/api/v1/advisors/tasks",
        json={"profile_id": u2, "title": "生日礼遇", "due_at": "2026-01-01T10:00:00+08:00"},
        headers={**h, "Idempotency-Key": "t1"},
    )
    assert task.status_code == 201, task.text
    same = client.post(
        "/api/v1/advisors/tasks",
        json={"profile_id": u2, "title": "生日礼遇"},
        headers={**h, "Idempotency-Key": "t1"},
    )
    assert same.json()["id"] == task.json()["id"]
    assert task.json()["advisor_id"] == second["id"] and task.json()["overdue"] is True
    listed = client.get(f"/api/v1/advisors/{second['id']}/tasks?overdue=true", headers=h).json()
    assert [t["id"] for t in listed] == [task.json()["id"]]
    page = client.get(f"/api/v1/advisors/customers/{u2}", headers=h).json()
    assert page["advisor"]["wecom_userid"] == "wangwu" and [t["title"] for t in page["tasks"]] == ["生日礼遇"]
    customers = client.get(f"/api/v1/advisors/{second['id']}/customers", headers=h).json()
    assert [c["profile_id"] for c in customers] == [u2]

    started = client.patch(
        f"/api/v1/advisors/tasks/{task.json()['id']}", json={"status": "in_progress"}, headers=h
    )
    assert started.status_code == 200 and started.json()["status"] == "in_progress"
    done = client.patch(
        f"/api/v1/advisors/tasks/{task.json()['id']}",
        json={"status": "done", "outcome": "reached", "note": "已约到店"},
        headers=h,
    )
    assert done.json()["status"] == "done" and done.json()["outcome_note"] == "已约到店"

    # Deactivating through PATCH hands the customers over.
    off = client.patch(f"/api/v1/advisors/{second['id']}", json={"active": False}, headers=h)
    assert off.status_code == 200 and off.json()["handed_over"] == {"reassigned": 1, "unassigned": 0}
    assert (
        client.get(f"/api/v1/advisors/customers/{u2}", headers=h).json()["advisor"]["wecom_userid"] == "lisi"
    )


def test_api_bad_input_is_refused_with_a_reason_and_changes_nothing(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    h = brand.bearer
    advisor = client.post("/api/v1/advisors", json={"name": "李四", "wecom_userid": "lisi"}, headers=h).json()
    (pid,) = _customers(client, engine, brand, "u1")
    task = client.post("/api/v1/advisors/tasks", json={"profile_id": pid, "title": "跟进"}, headers=h).json()
    before = snapshot(engine)
    a, t = "/api/v1/advisors", f"/api/v1/advisors/tasks/{task['id']}"
    ar, tr = f"{a}/assignment-rules/r", f"{a}/task-rules/t"
    cases = [
        ("post", a, {"name": "X", "wecom_userid": "有 空格"}, 400, "wecom_userid"),
        ("post", a, {"name": "X", "wecom_userid": "x", "channels": ["fax"]}, 400, "unknown channel"),
        ("post", a, {"name": "X", "wecom_userid": "x", "capacity": 0}, 400, "capacity"),
        ("post", a, {"name": "X", "wecom_userid": "x", "user_id": 42}, 400, "not a member"),
        ("post", a, {"name": "重复", "wecom_userid": "lisi"}, 409, "already exists"),
        ("patch", f"{a}/{advisor['id']}", {"name": ""}, 400, "name"),
        ("patch", f"{a}/999", {"name": "X"}, 404, "no advisor"),
        ("put", ar, {"method": "lottery"}, 400, "method must be"),
        ("put", ar, {"method": "store", "config": {"x": 1}}, 400, "config"),
        ("put", ar, {"method": "round_robin", "config": {"advisors": [99]}}, 404, "no advisor"),
        ("put", tr, {"event": "Tag Added", "title": "{% if %}"}, 400, "Liquid"),
        ("put", tr, {"event": "Advisor Task Created", "title": "x"}, 400, "own events"),
        ("put", tr, {"event": "Tag Added", "title": "x", "due_hours": -1}, 400, "due"),
        ("put", f"{a}/task-rules/Bad Key", {"event": "Tag Added", "title": "x"}, 400, "key"),
        ("post", f"{a}/assignments", {"profile_id": pid, "advisor_id": advisor["id"]}, 400, "reason"),
        ("post", f"{a}/assignments", {"profile_id": 99999}, 404, "no profile"),
        ("post", f"{a}/tasks", {"profile_id": pid, "title": ""}, 400, "title"),
        ("post", f"{a}/tasks", {"profile_id": pid, "title": "x", "kind": "Big!"}, 400, "kind"),
        ("patch", t, {"status": "done"}, 400, "outcome"),
        ("patch", t, {"status": "closed"}, 400, "status must be"),
        ("patch", t, {"status": "open", "outcome": "reached"}, 400, "outcome"),
        ("patch", t, {"status": "done", "outcome": "maybe"}, 400, "outcome"),
        ("patch", f"{a}/tasks/999", {"status": "in_progress"}, 404, "no task"),
    ]
    for method, url, body, status, reason in cases:
        answer = client.request(method.upper(), url, json=body, headers=h)
        assert answer.status_code == status, (url, body, answer.text)
        assert reason in answer.json()["message"], (url, body, answer.json())
    assert snapshot(engine) == before
    listed = client.get("/api/v1/advisors/tasks?status=closed", headers=h)
    assert listed.status_code == 400 and "status must be" in listed.json()["message"]

    done = client.patch(
        f"/api/v1/advisors/tasks/{task['id']}", json={"status": "cancelled", "note": "客户已退订"}, headers=h
    )
    assert done.status_code == 200
    final = client.patch(f"/api/v1/advisors/tasks/{task['id']}", json={"status": "in_progress"}, headers=h)
    assert final.status_code == 409 and "already cancelled" in final.json()["message"]


def test_cli_advisors_rules_assign_and_tasks(
    client: TestClient, engine: sa.Engine, brand: Brand, settings: Settings
) -> None:
    url = settings.database_url
    add = ["advisors", "add", "李四", "--wecom-userid", "lisi", "--store", "s1", "-w", "acme", "--key", "k1"]
    first = run_cli(add, url)
    assert first.exit_code == 0, first.output
    assert run_cli(add, url).exit_code == 0  # the same key: nothing new
    listed = run_cli(["advisors", "list", "-w", "acme"], url)
    assert listed.output.count("lisi") == 1
    assert run_cli(["advisors", "add", "王五", "--wecom-userid", "wangwu", "-w", "acme"], url).exit_code == 0
    rule = run_cli(["advisors", "rules", "set", "by-store", "--method", "store", "-w", "acme"], url)
    assert rule.exit_code == 0, rule.output
    task_rule = run_cli(
        ["advisors", "task-rules", "set", "vip", "--event", "Tag Added", "--where", '{"tag": "vip"}',
         "--title", "VIP {{ customer.name }}", "--due-hours", "24", "-w", "acme"], url,
    )  # fmt: skip
    assert task_rule.exit_code == 0, task_rule.output
    _customers(client, engine, brand, "u1")
    assigned = run_cli(["advisors", "assign", "user_id:u1", "-w", "acme"], url)
    assert assigned.exit_code == 0 and "李四 (lisi)" in assigned.output, assigned.output
    moved = run_cli(["advisors", "assign", "u1", "--to", "wangwu", "--reason", "客户要求", "-w", "acme"], url)
    assert moved.exit_code == 0 and "王五 (wangwu)" in moved.output and "manual" in moved.output, moved.output
    create = [
        "advisors",
        "tasks",
        "create",
        "u1",
        "--title",
        "回访",
        "--key",
        "t1",
        "--due-hours",
        "2",
        "-w",
        "acme",
    ]
    assert run_cli(create, url).exit_code == 0
    assert run_cli(create, url).exit_code == 0
    shown = run_cli(["advisors", "tasks", "list", "--advisor", "wangwu", "--json", "-w", "acme"], url)
    (task,) = json.loads(shown.stdout)
    assert task["title"] == "回访" and task["source"] == "cli"
    update = ["advisors", "tasks", "update", str(task["id"]), "--status", "done", "--outcome", "reached"]
    done = run_cli([*update, "-w", "acme"], url)
    assert done.exit_code == 0 and "done (reached)" in done.output
    off = run_cli(["advisors", "deactivate", "wangwu", "-w", "acme"], url)
    assert off.exit_code == 0 and "1 customers reassigned" in off.output, off.output


def test_cli_bad_input_exits_with_a_sentence_and_changes_nothing(
    engine: sa.Engine, brand: Brand, settings: Settings
) -> None:
    url = settings.database_url
    assert run_cli(["advisors", "add", "李四", "--wecom-userid", "lisi", "-w", "acme"], url).exit_code == 0
    before = snapshot(engine)
    cases = [
        (["advisors", "add", "X", "--wecom-userid", "a b", "-w", "acme"], "wecom_userid"),
        (["advisors", "add", "X", "--wecom-userid", "lisi", "-w", "acme"], "already exists"),
        (["advisors", "rules", "set", "r", "--method", "lottery", "-w", "acme"], "method must be"),
        (
            ["advisors", "rules", "set", "r", "--method", "store", "--config", "{nope", "-w", "acme"],
            "not JSON",
        ),
        (["advisors", "assign", "user_id:nobody", "-w", "acme"], "no profile"),
        (["advisors", "deactivate", "ghost", "-w", "acme"], "no advisor"),
        (["advisors", "tasks", "update", "999", "--status", "done", "-w", "acme"], "no task"),
        (["advisors", "tasks", "list", "--status", "closed", "-w", "acme"], "status must be"),
    ]
    for args, reason in cases:
        result = run_cli(args, url)
        assert result.exit_code != 0, args
        assert "error:" in result.output and reason in result.output, (args, result.output)
        assert "Traceback" not in result.output
    assert snapshot(engine) == before
