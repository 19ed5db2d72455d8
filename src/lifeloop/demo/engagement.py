"""The demo brand's engagement programme (seeds 001, 003, 004), so every engagement page has something
to show: coupon templates (welcome gift, day-7 second purchase, member day), points rules, a tier
ladder with a monthly member day, a referral programme, and two advisors with seed 001's VIP follow-up
(a ``vip`` tag rule, and a task rule on the tag).

``install_engagement`` runs before the history is placed, so the history's orders earn points, raise
tiers and tag VIPs (whose advisors get tasks) as a real brand's would. ``issue_demo_coupons`` runs after
it: the welcome gift to customers who have not bought yet and the day-7 coupon to one-order customers
(the simulator's last days then redeem some of them by their codes). ``referral_messages`` are the
friends loyal customers invited, sent through the ingest API with the last days, so the referral
programme attributes, guards and rewards them as it would a real brand's; ``demo_checkins`` is the last
week of the app's daily check-in button. Every step is idempotent: a re-run of ``lifeloop demo`` creates
nothing twice.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine

from lifeloop.accounts.service import record_action
from lifeloop.audience import definitions
from lifeloop.audience import query as audience_query
from lifeloop.demo.simulator import LIBRARY
from lifeloop.engagement.advisors import service as advisors
from lifeloop.engagement.coupons import service as coupons
from lifeloop.engagement.coupons import templates as coupon_templates
from lifeloop.engagement.points import checkin
from lifeloop.engagement.points.settings import save_section
from lifeloop.engagement.referrals import service as referrals
from lifeloop.engagement.tiers import service as tiers
from lifeloop.errors import NotFound
from lifeloop.events.own import gathered
from lifeloop.store.engine import transaction

# The simulator's orders carry these codes (WELCOME-50 on a first order, MEMBERDAY-100 around the 8th):
# typed codes ignore dashes, so a customer holding the shared-code coupon redeems it with the order.
COUPON_TEMPLATES: dict[str, dict[str, Any]] = {
    "welcome": {"name": "新人禮 折50元", "kind": "fixed", "value": 50, "valid_days": 7, "per_user_limit": 1,
                "code_mode": "shared", "shared_code": "WELCOME50"},
    "day7": {"name": "第二件 滿500折100", "kind": "threshold", "value": 100, "threshold": 500,
             "valid_days": 7, "per_user_limit": 1},
    "member-day": {"name": "會員日 折100元", "kind": "fixed", "value": 100, "valid_days": 3,
                   "code_mode": "shared", "shared_code": "MEMBERDAY100"},
}  # fmt: skip
POINTS_RULES: dict[str, Any] = {
    "order": {"event": "Order Completed", "rate": 0.1},  # 1 point per NT$10
    "review": {"event": "Product Reviewed", "points": 20},
    "checkin": {"points": 5},
    "referral": {"points": 200},
    "validity": {"kind": "days", "days": 365},
}
TIER_PROGRAM: dict[str, Any] = {
    "window_days": 365,
    "match": "any",
    "review": {"every": "month", "day": 1},
    "downgrade": "one_step",
    "member_day": {"day": 8, "points_multiplier": 2},  # the simulator's member day is the 8th too
    "tiers": [
        {"key": "member", "name": "一般會員"},
        {"key": "silver", "name": "銀卡", "min_spend": 3000, "points_multiplier": 1.2,
         "benefits": ["生日禮"]},
        {"key": "gold", "name": "金卡", "min_spend": 6000, "points_multiplier": 1.5,
         "benefits": ["生日禮", "免運"], "member_day_coupons": ["member-day"]},
        {"key": "vip", "name": "VIP", "min_spend": 10000, "points_multiplier": 2,
         "benefits": ["生日禮", "免運", "專屬顧問"], "member_day_coupons": ["member-day"]},
    ],
}  # fmt: skip
REFERRAL_PROGRAM: dict[str, Any] = {
    "landing_url": "https://lumitea.example/welcome",
    "referrer_reward": {"points": 200},
    "referee_reward": {"coupon": "welcome", "on": "join"},
}
ADVISORS: tuple[dict[str, Any], ...] = (
    {"name": "林雅婷", "wecom_userid": "yating", "store": "taipei-xinyi", "channels": ["line", "store"]},
    {"name": "陳志明", "wecom_userid": "zhiming", "store": "taichung", "channels": ["line", "web"]},
)
VIP_CONDITION = 'sum("Order Completed", "revenue") >= 10000'
VIP_TASK: dict[str, Any] = {
    "event": "Tag Added",
    "where": {"tag": "vip"},
    "title": "VIP 1對1 關懷：{{ customer.name }}",
    "description": "累積消費滿 NT$10,000，請在 24 小時內私訊問候並介紹專屬權益。",
    "due_hours": 24,
}
DEMO_COUPONS = 100  # customers given each of the welcome and day-7 coupons after the history
REFERRERS = 12  # loyal customers who shared their invite code
REFERRED_FRIENDS = 40  # friends who joined with a code; every second one has ordered since
EXISTING_WITH_A_CODE = 2  # customers with orders who typed a friend's code anyway (refused)
CHECKIN_CUSTOMERS = 120  # repeat buyers who use the app's daily check-in
CHECKIN_DAYS = 7


def _audit(conn: Connection, workspace_id: int, action: str, target: str) -> None:
    record_action(conn, workspace_id, user_id=None, action=action, target=target,
                  detail={"by": "lifeloop demo"})  # fmt: skip


def install_engagement(conn: Connection, workspace_id: int, *, now: datetime) -> None:
    """The programme's settings (what already exists is left as an operator may have changed it)."""
    existing = {t.key for t in coupon_templates.list_templates(conn, workspace_id)}
    for key, spec in COUPON_TEMPLATES.items():
        if key not in existing:
            coupon_templates.create_template(conn, workspace_id, key, spec, now=now)
            _audit(conn, workspace_id, "coupon_template.create", key)
    if tiers.get_program(conn, workspace_id) is None:
        save_section(conn, workspace_id, "rules", POINTS_RULES, now=now)
        tiers.set_program(conn, workspace_id, TIER_PROGRAM, now=now)
        _audit(conn, workspace_id, "tiers.program", "tier-program")
    if referrals.get_program(conn, workspace_id) is None:
        referrals.set_program(conn, workspace_id, REFERRAL_PROGRAM, now=now)
        _audit(conn, workspace_id, "referrals.program", "referral-program")
    for advisor in ADVISORS:
        advisors.create_advisor(conn, workspace_id, **advisor, key=f"demo:{advisor['wecom_userid']}", now=now)
    if not advisors.list_assignment_rules(conn, workspace_id):
        advisors.put_assignment_rule(conn, workspace_id, "everyone", method="round_robin")
    try:
        definitions.get_tag_rule(conn, workspace_id, "vip")
    except NotFound:
        definitions.put_tag_rule(conn, workspace_id, "vip", VIP_CONDITION, description="累積消費滿 NT$10,000")
        advisors.put_task_rule(conn, workspace_id, "vip-follow-up", **VIP_TASK, now=now)
        _audit(conn, workspace_id, "advisor_task_rule.put", "vip-follow-up")


def issue_demo_coupons(engine: Engine, workspace_id: int, *, now: datetime) -> int:
    """The welcome gift to customers who have not ordered, the day-7 coupon to those who ordered once;
    how many coupons were issued (none the second time: each coupon's key names its customer)."""
    wanted = {"welcome": 'count("Order Completed") == 0', "day7": 'count("Order Completed") == 1'}

    def work(conn: Connection) -> int:
        issued = 0
        for template, condition in wanted.items():
            found = audience_query.preview(conn, workspace_id, condition, now=now, limit=DEMO_COUPONS)
            for row in found["profiles"]:
                pid = int(row["profile_id"])
                key = f"demo:{template}:{pid}"
                try:
                    coupon = coupons.issue_coupon(conn, workspace_id, pid, template, key=key, now=now,
                                                  source="demo")  # fmt: skip
                except coupons.CouponRefused:  # e.g. a referred friend given the welcome gift on joining
                    continue
                issued += coupon.issued_at == now
        return issued

    return transaction(engine, work)


def _referrers(conn: Connection, workspace_id: int, now: datetime) -> list[str]:
    """The invite codes of the loyal customers who share them (made on first asking, as the app would)."""
    found = audience_query.preview(
        conn, workspace_id, 'count("Order Completed") >= 3', now=now, limit=REFERRERS
    )
    return [referrals.code_for(conn, workspace_id, int(r["profile_id"]), now=now) for r in found["profiles"]]


def referral_messages(engine: Engine, workspace_id: int, *, now: datetime, seed: int) -> list[dict[str, Any]]:
    """What the brand's site reports of the invited friends: each joins (an ``identify`` carrying the
    landing link's code, from a device of their own) and every second one places a first order hours
    later; two existing customers type a code too, which the programme refuses. Message ids follow the
    seed, so a re-run sends only duplicates. Identifies come before the orders (the order they are sent)."""
    rnd = random.Random(seed)

    def work(conn: Connection) -> tuple[list[str], list[str]]:
        codes = _referrers(conn, workspace_id, now)
        one_order = audience_query.preview(  # never a referrer (they have three orders or more)
            conn, workspace_id, 'count("Order Completed") == 1', now=now, limit=EXISTING_WITH_A_CODE
        )["profiles"]
        return codes, [str(r["user_id"]) for r in one_order if r["user_id"]]

    codes, existing_users = transaction(engine, work)
    if not codes:
        return []
    context = {"library": LIBRARY, "timezone": "Asia/Taipei"}
    joins: list[dict[str, Any]] = []
    orders: list[dict[str, Any]] = []
    for i in range(REFERRED_FRIENDS):
        code = codes[min(int(rnd.expovariate(0.4)), len(codes) - 1)]  # a few referrers bring most friends
        user, joined = f"friend-{seed}-{i:03d}", now - timedelta(hours=rnd.uniform(6, 40))
        joins.append({
            "type": "identify", "userId": user, "messageId": f"demo-{seed}-referral-join-{i}",
            "timestamp": joined.isoformat(),
            "traits": {"name": f"好友 {i + 1:02d}", "email": f"{user}@example.net", "referral_code": code},
            "context": {**context, "device": {"id": f"demo-device-{seed}-{i}"}, "campaign": {"ref": code}},
        })  # fmt: skip
        if i % 2 == 0:
            revenue = rnd.choice((680, 890, 1280, 1560))
            orders.append({
                "type": "track", "userId": user, "event": "Order Completed",
                "messageId": f"demo-{seed}-referral-order-{i}",
                "timestamp": min(joined + timedelta(hours=rnd.uniform(1, 5)), now).isoformat(),
                "properties": {"order_id": f"R{seed}-{i:04d}", "revenue": revenue, "currency": "TWD"},
                "context": {**context, "device": {"id": f"demo-device-{seed}-{i}"}},
            })  # fmt: skip
    for i, user in enumerate(existing_users):
        joins.append({
            "type": "identify", "userId": user, "messageId": f"demo-{seed}-referral-existing-{i}",
            "timestamp": (now - timedelta(hours=3)).isoformat(), "traits": {"referral_code": codes[0]},
            "context": context,
        })  # fmt: skip
    return joins + orders


def demo_checkins(engine: Engine, workspace_id: int, *, now: datetime, seed: int) -> int:
    """The last week of daily check-ins by repeat buyers, day by day as the app's button records them
    (each day checked in at that day's moment, so streaks and their bonuses build as they would); how
    many check-ins were new. Some skip days, so streaks differ."""
    rnd = random.Random(seed)

    def work(conn: Connection) -> int:
        found = audience_query.preview(
            conn, workspace_id, 'count("Order Completed") >= 2', now=now, limit=CHECKIN_CUSTOMERS
        )
        habits = {int(r["profile_id"]): rnd.choice((0.95, 0.8, 0.6, 0.35)) for r in found["profiles"]}
        done = 0
        with gathered(conn, workspace_id):  # their Checked In and Points Earned events in one batch
            for days_ago in range(CHECKIN_DAYS - 1, -1, -1):
                moment = now - timedelta(days=days_ago, minutes=rnd.uniform(0, 30))
                for pid, habit in habits.items():
                    if rnd.random() < habit:
                        done += not checkin.check_in(conn, workspace_id, pid, now=moment).already
        return done

    return transaction(engine, work)
