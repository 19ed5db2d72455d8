"""Points and check-in over REST and the CLI: rules, award and spend retried with the same key, a
customer's balance and history, check-in and make-up, new-user tasks; bad input answers 4xx with a
reason and changes nothing; the CLI exits non-zero with a sentence."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from lifeloop.engagement.points.checkin import local_day
from lifeloop.store.schema import utcnow
from lifeloop.workspaces.service import create_api_token
from tests.cli_helpers import run_cli
from tests.conftest import Brand, snapshot

from .points_helpers import assert_ledger_balances, customers, identify, ingest


def _refused(
    client: TestClient, engine: sa.Engine, calls: list[tuple[str, str, Any, dict[str, str]]]
) -> list[Any]:
    """Each call's status and reason; the store must be as it was."""
    before = snapshot(engine)
    answers = []
    for method, url, body, headers in calls:
        answer = client.request(method, url, json=body, headers=headers)
        answers.append((answer.status_code, answer.json()["message"]))
    assert snapshot(engine) == before
    return answers


def test_award_and_spend_over_rest_are_idempotent_and_refusals_change_nothing(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    now = utcnow()
    (ann,) = customers(client, brand, "ann", now=now)
    h = brand.bearer
    award = {"user_id": "ann", "points": 120, "reason": "launch gift"}
    first = client.post("/api/v1/points/award", json=award, headers={**h, "Idempotency-Key": "gift-1"})
    assert first.status_code == 200, first.text
    assert first.json()["balance_after"] == 120 and first.json()["profile_id"] == ann
    before = snapshot(engine)
    retried = client.post("/api/v1/points/award", json=award, headers={**h, "Idempotency-Key": "gift-1"})
    assert retried.json() == first.json() and snapshot(engine) == before
    spend = {"profile_id": ann, "points": 50, "reason": "points mall: tea"}
    spent = client.post("/api/v1/points/spend", json=spend, headers={**h, "Idempotency-Key": "mall-1"})
    assert spent.status_code == 200 and spent.json()["change"] == -50
    again = client.post("/api/v1/points/spend", json=spend, headers={**h, "Idempotency-Key": "mall-1"})
    assert again.json() == spent.json()

    answers = _refused(
        client,
        engine,
        [
            ("POST", "/api/v1/points/spend", {**spend, "points": 71}, {**h, "Idempotency-Key": "mall-2"}),
            ("POST", "/api/v1/points/spend", spend, h),  # no Idempotency-Key
            ("POST", "/api/v1/points/award", {**award, "points": 0}, {**h, "Idempotency-Key": "g2"}),
            ("POST", "/api/v1/points/award", {**award, "profile_id": ann}, {**h, "Idempotency-Key": "g3"}),
            ("POST", "/api/v1/points/award", {**award, "user_id": "nobody"}, {**h, "Idempotency-Key": "g4"}),
            ("POST", "/api/v1/points/award", {**award, "points": 5}, {**h, "Idempotency-Key": "gift-1"}),
            (
                "POST",
                "/api/v1/points/award",
                {**award, "expires_at": "2099-01-01T00:00:00"},
                {**h, "Idempotency-Key": "g5"},
            ),
            ("PUT", "/api/v1/points/rules", {"order": {"rate": "lots"}}, h),
            ("PUT", "/api/v1/points/rules", {"review": {"event": "Points Earned"}}, h),
            ("PUT", "/api/v1/points/rules", {"bonus": 1}, h),
            ("PUT", "/api/v1/checkins/config", {"streak_rewards": {"0": 5}}, h),
            ("PUT", "/api/v1/points/tasks", {"rewards": {"dance": 5}}, h),
        ],
    )
    statuses = [status for status, _ in answers]
    assert statuses == [409, 400, 400, 400, 404, 409, 400, 400, 400, 400, 400, 400]
    assert "the balance is 70 points, 1 short of the 71 to spend" in answers[0][1]
    assert "Idempotency-Key" in answers[1][1] and "profile_id or user_id" in answers[3][1]
    assert "time zone" in answers[6][1] and "Points Earned" in answers[8][1] and "dance" in answers[11][1]

    with engine.begin() as conn:
        _token, viewer = create_api_token(conn, brand.workspace_id, name="v", role="viewer")
    refused = client.post(
        "/api/v1/points/award",
        json=award,
        headers={"Authorization": f"Bearer {viewer}", "Idempotency-Key": "v"},
    )
    assert refused.status_code == 403

    account = client.get(f"/api/v1/points/profiles/{ann}", headers=h).json()
    assert account == {"profile_id": ann, "balance": 70, "earned": 120, "spent": 50, "expired": 0}
    assert client.get("/api/v1/points/lookup?identity=user_id:ann", headers=h).json() == account
    assert client.get("/api/v1/points?user_id=ann", headers=h).json() == account
    assert client.get(f"/api/v1/points?profile_id={ann}", headers=h).json() == account
    assert client.get("/api/v1/points", headers=h).status_code == 400
    by_user = client.get("/api/v1/points/history?user_id=ann", headers=h).json()
    assert [e["change"] for e in by_user["items"]] == [-50, 120]
    page = client.get(f"/api/v1/points/profiles/{ann}/history?limit=1", headers=h).json()
    assert [e["change"] for e in page["items"]] == [-50] and page["next_before"] is not None
    rest = client.get(f"/api/v1/points/profiles/{ann}/history?before={page['next_before']}", headers=h).json()
    assert [e["reason"] for e in rest["items"]] == ["launch gift"] and rest["next_before"] is None
    assert client.get("/api/v1/points/profiles/999999", headers=h).status_code == 404
    assert assert_ledger_balances(engine, brand.workspace_id, ann)["balance"] == 70


def test_rules_check_in_make_up_and_tasks_over_rest(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    now = utcnow()
    (ann,) = customers(client, brand, "ann", now=now)
    h = brand.bearer
    rules = client.put(
        "/api/v1/points/rules", json={"order": {"rate": 0.5}, "validity": {"kind": "never"}}, headers=h
    )
    assert rules.status_code == 200 and rules.json()["order"] == {"event": "Order Completed", "rate": 0.5}
    assert client.get("/api/v1/points/rules", headers=h).json()["review"] == {
        "event": "Product Reviewed",
        "points": 10,
    }
    config = client.put(
        "/api/v1/checkins/config", json={"makeup_cost": 30, "makeup_days": 2}, headers=h
    ).json()
    assert config["makeup_cost"] == 30 and config["streak_rewards"] == {"3": 10, "7": 30}

    checked = client.post("/api/v1/checkins", json={"user_id": "ann"}, headers=h)
    assert checked.status_code == 200 and checked.json()["streak"] == 1 and not checked.json()["already"]
    assert client.post("/api/v1/checkins", json={"profile_id": ann}, headers=h).json()["already"] is True
    with engine.connect() as conn:
        today = local_day(conn, brand.workspace_id, now)
    yesterday = (today - timedelta(days=1)).isoformat()
    make_up = {"user_id": "ann", "day": yesterday}
    short = client.post("/api/v1/checkins/makeup", json=make_up, headers={**h, "Idempotency-Key": "mu-1"})
    assert short.status_code == 409 and "5 points, 25 short" in short.json()["message"]
    client.post(
        "/api/v1/points/award",
        json={"profile_id": ann, "points": 40, "reason": "gift"},
        headers={**h, "Idempotency-Key": "g"},
    )
    made = client.post("/api/v1/checkins/makeup", json=make_up, headers={**h, "Idempotency-Key": "mu-1"})
    assert made.status_code == 200 and made.json()["cost"] == 30, made.text
    retried = client.post("/api/v1/checkins/makeup", json=make_up, headers={**h, "Idempotency-Key": "mu-1"})
    assert retried.json()["already"] is True and retried.json()["day"] == yesterday
    summary = client.get(f"/api/v1/checkins/{ann}", headers=h).json()
    assert summary["streak"] == 2 and summary["checked_in_today"] is True
    assert summary["next_bonus"] == {"streak": 3, "points": 10}
    assert client.get(f"/api/v1/points/profiles/{ann}", headers=h).json()["balance"] == 5 + 40 - 30
    old = (today - timedelta(days=3)).isoformat()
    answers = _refused(
        client,
        engine,
        [
            ("POST", "/api/v1/checkins/makeup", {**make_up, "day": old}, {**h, "Idempotency-Key": "mu-2"}),
            ("POST", "/api/v1/checkins/makeup", make_up, h),
            (
                "POST",
                "/api/v1/checkins/makeup",
                {**make_up, "day": "yesterday"},
                {**h, "Idempotency-Key": "mu-3"},
            ),
            ("POST", "/api/v1/checkins", {}, h),
        ],
    )
    assert [s for s, _ in answers] == [400, 400, 400, 400] and "last 2 days" in answers[0][1]
    assert "YYYY-MM-DD" in answers[2][1]

    ingest(client, brand, [identify("ann", "i-2", now, name="Ann", phone="+886900000000")], now=now)
    tasks = client.get(f"/api/v1/points/tasks/{ann}", headers=h).json()
    assert {t["task"]: t["done"] for t in tasks["tasks"]}["complete_profile"] is True and tasks[
        "open"
    ] is True
    assert client.get("/api/v1/points/tasks", headers=h).json()["window_days"] == 7


def test_the_cli_awards_spends_checks_in_and_explains_refusals(
    client: TestClient, engine: sa.Engine, brand: Brand, settings: object
) -> None:
    customers(client, brand, "ann", now=utcnow())
    url = settings.database_url  # type: ignore[attr-defined]
    ws = str(brand.workspace_id)
    award = ["points", "award", "user_id:ann", "100", "-w", ws, "--key", "k1", "--reason", "gift"]
    assert run_cli(award, url).exit_code == 0
    again = run_cli(award, url)
    assert again.exit_code == 0 and "balance 100" in again.output  # the retry changed nothing
    spend = run_cli(["points", "spend", "user_id:ann", "30", "-w", ws, "--key", "s1"], url)
    assert spend.exit_code == 0 and "balance 70" in spend.output
    balance = run_cli(["points", "balance", "user_id:ann", "-w", ws], url)
    assert "balance 70 (earned 100, spent 30, expired 0)" in balance.output
    assert "gift" in run_cli(["points", "history", "user_id:ann", "-w", ws], url).output
    checked = run_cli(["checkin", "in", "user_id:ann", "-w", ws], url)
    assert checked.exit_code == 0 and "streak 1" in checked.output
    assert "already checked in" in run_cli(["checkin", "in", "user_id:ann", "-w", ws], url).output
    before = snapshot(engine)
    refusals = [
        (["points", "spend", "user_id:ann", "500", "-w", ws, "--key", "s2"], "the balance is 75 points"),
        (["points", "award", "user_id:nobody", "5", "-w", ws, "--key", "k2"], "no profile"),
        (["points", "award", "ann", "5", "-w", ws, "--key", "k3"], "neither a profile id"),
        (["checkin", "makeup", "user_id:ann", "yesterday", "-w", ws, "--key", "m1"], "YYYY-MM-DD"),
        (["checkin", "makeup", "user_id:ann", "2000-01-01", "-w", ws, "--key", "m2"], "can be made up"),
    ]
    for args, sentence in refusals:
        done = run_cli(args, url)
        assert done.exit_code != 0 and sentence in done.output, (args, done.output)
    assert snapshot(engine) == before
    streak = run_cli(["checkin", "streak", "user_id:ann", "-w", ws], url)
    assert streak.exit_code == 0 and '"streak": 1' in streak.stdout
