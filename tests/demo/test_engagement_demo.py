"""`lifeloop demo` sets up the brand's engagement programme, so the engagement pages have data: three
coupon templates with coupons issued, points earned by the history's orders, every customer on the
tier ladder, a referral programme with invited friends (rewarded, and refused where the guards say so),
a week of daily check-ins, and two advisors with seed 001's VIP follow-up tasks."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from fastapi.testclient import TestClient

from lifeloop.audience.query import preview
from lifeloop.demo.engagement import (
    ADVISORS,
    COUPON_TEMPLATES,
    EXISTING_WITH_A_CODE,
    REFERRED_FRIENDS,
)
from lifeloop.demo.setup import CONSOLE_EMAIL, CONSOLE_PASSWORD
from lifeloop.engagement.advisors import service as advisors
from lifeloop.engagement.coupons.templates import list_templates
from lifeloop.engagement.points.ledger import balances
from lifeloop.engagement.points.models import checkins
from lifeloop.engagement.referrals.models import referrals
from lifeloop.engagement.referrals.service import get_program as referral_program
from lifeloop.engagement.referrals.service import leaderboard
from lifeloop.engagement.summary import coupon_counts, tier_counts
from lifeloop.engagement.tiers.service import get_program as tier_program
from lifeloop.store.schema import utcnow
from lifeloop.web.app import create_app
from lifeloop.workspaces.service import workspace_id_of
from tests.demo.test_console_demo import Demo, demo, engine, sign_in  # noqa: F401 (fixtures)


def test_the_demo_brand_runs_the_engagement_programme(demo: Demo, engine: sa.Engine) -> None:  # noqa: F811
    workspace_id = workspace_id_of(engine, "demo")
    with engine.connect() as conn:
        templates = {t.key: t for t in list_templates(conn, workspace_id)}
        assert set(templates) == set(COUPON_TEMPLATES)
        assert templates["welcome"].issued_count > 0 and templates["day7"].issued_count > 0
        counts = coupon_counts(conn, workspace_id, now=utcnow())
        assert sum(c["issued"] for c in counts.values()) == sum(t.issued_count for t in templates.values())
        program = tier_program(conn, workspace_id)
        assert program is not None and [t.key for t in program.tiers] == ["member", "silver", "gold", "vip"]
        assert sum(tier_counts(conn, workspace_id, program).values()) >= demo.summary.customers
        buyers = preview(conn, workspace_id, 'count("Order Completed") >= 1', now=utcnow(), limit=20)
        ids = [int(p["profile_id"]) for p in buyers["profiles"]]
        assert ids and all(balances(conn, workspace_id, ids, now=utcnow()).values())  # orders earned points
        assert referral_program(conn, workspace_id) is not None
        r = referrals.c
        by_status = dict(
            conn.execute(
                sa.select(r.status, sa.func.count()).where(r.workspace_id == workspace_id).group_by(r.status)
            ).all()
        )
        # Every second friend has ordered (the referral completes, both sides rewarded); the rest have
        # joined; the customers who already had orders are refused.
        assert by_status == {
            "completed": REFERRED_FRIENDS // 2,
            "joined": REFERRED_FRIENDS // 2,
            "rejected": EXISTING_WITH_A_CODE,
        }
        reasons = conn.execute(
            sa.select(r.reason).where(r.workspace_id == workspace_id, r.status == "rejected")
        )
        assert set(reasons.scalars()) == {"existing_customer"}
        board = leaderboard(conn, workspace_id, since=utcnow() - timedelta(days=30), until=utcnow())
        assert sum(row["completed"] for row in board) == REFERRED_FRIENDS // 2 and len(board) > 1
        streaks = conn.execute(
            sa.select(sa.func.count(), sa.func.max(checkins.c.streak)).where(
                checkins.c.workspace_id == workspace_id
            )
        ).one()
        assert streaks[0] > 20 and streaks[1] >= 3  # a week of check-ins, with streaks
        team = advisors.list_advisors(conn, workspace_id)
        assert sorted(a.wecom_userid for a in team) == sorted(a["wecom_userid"] for a in ADVISORS)
        assert [r["key"] for r in advisors.list_task_rules(conn, workspace_id)] == ["vip-follow-up"]
    # The welcome gifts the invited friends got on joining come after the demo's own issuing.
    issued = sum(t.issued_count for t in templates.values() if t.key != "member-day") - REFERRED_FRIENDS
    assert f"{issued} welcome and day-7 coupons issued" in demo.output
    assert f"{REFERRED_FRIENDS + EXISTING_WITH_A_CODE} sign-ups with an invite code" in demo.output

    with TestClient(create_app(demo.settings, engine)) as client:
        assert sign_in(client, CONSOLE_EMAIL, CONSOLE_PASSWORD).status_code == 200
        tabs = ("", "/points", "/checkin", "/tiers", "/referrals", "/advisors", f"/advisors/{team[0].id}")
        pages = [f"/engagement{tab}" for tab in tabs]
        for page in pages:
            answer = client.get(page)
            assert answer.status_code == 200 and "/login" not in str(answer.url), page
        assert "新人禮 折50元" in client.get("/engagement").text
