"""What the demo workspace needs besides its history: a console login, a LINE channel and journeys.

Every step is idempotent, so a second ``lifeloop demo`` on the same database reuses what the first made.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import Connection

from lifeloop.accounts.service import add_member, create_user, record_action, set_password, user_by_email
from lifeloop.errors import NotFound
from lifeloop.journeys.playbooks import install_playbook
from lifeloop.journeys.service import Journey, list_journeys
from lifeloop.messaging.channels.config import save_config
from lifeloop.messaging.service import update_policy

CONSOLE_EMAIL = "demo@lumitea.example"
# Fixed and printed in the guide: the demo serves on 127.0.0.1 only, and a re-run must not lock the
# newcomer out. Anyone who keeps the data beyond the demo changes it in the console's settings.
CONSOLE_PASSWORD = "lumitea-demo"
CONSOLE_NAME = "Lumi Tea demo"
CONSOLE_LOCALE = "zh-TW"

# The playbooks of a LINE shop (the `line` lifecycle preset): everything that sends on LINE. Left out:
# welcome_wecom and dormant_wakeup (the wecom preset's), churned_big_sales (an SMS campaign; the demo
# has no SMS channel, so its messages could only fail).
LINE_PLAYBOOKS = (
    "welcome_line",
    "new_user_touches",
    "first_purchase_day7",
    "browse_no_buy",
    "cart_abandonment",
    "post_purchase_cross_sell",
    "post_review_thanks",
    "dormant_wakeup_line",
    "birthday",
)


@dataclass(frozen=True, slots=True)
class ConsoleLogin:
    email: str
    password: str
    created: bool  # False: an earlier run made the user; its password was set back to the demo's


def ensure_console_user(conn: Connection, workspace_id: int) -> ConsoleLogin:
    """The demo's console user, admin of the workspace; created once, its password reset on every run
    so the login the guide prints always works."""
    try:
        user = user_by_email(conn, CONSOLE_EMAIL)
    except NotFound:
        user = create_user(
            conn, email=CONSOLE_EMAIL, password=CONSOLE_PASSWORD, name=CONSOLE_NAME, locale=CONSOLE_LOCALE
        )
        created = True
    else:
        set_password(conn, user.id, CONSOLE_PASSWORD)
        created = False
    add_member(conn, workspace_id, user_id=user.id, role="admin")
    if created:
        record_action(
            conn,
            workspace_id,
            user_id=None,
            action="member.set",
            target=user.email,
            detail={"role": "admin", "by": "lifeloop demo"},
        )
    return ConsoleLogin(CONSOLE_EMAIL, CONSOLE_PASSWORD, created)


@dataclass(frozen=True, slots=True)
class LineCredentials:
    """A channel access token and secret made up for this run: only the LINE imitation knows them."""

    channel_access_token: str
    channel_secret: str

    @classmethod
    def generate(cls) -> LineCredentials:
        return cls(secrets.token_urlsafe(32), secrets.token_hex(16))


def connect_line(conn: Connection, workspace_id: int, base_url: str, credentials: LineCredentials) -> None:
    """Point the workspace's LINE channel at ``base_url`` (the demo's LINE imitation), as an admin would
    connect the real one in the console, with the same service call and an audit-log line."""
    save_config(
        conn,
        workspace_id,
        channel="line",
        credentials={
            "channel_access_token": credentials.channel_access_token,
            "channel_secret": credentials.channel_secret,
        },
        settings={"base_url": base_url},
    )
    record_action(
        conn,
        workspace_id,
        user_id=None,
        action="channel.save",
        target="line/default",
        detail={
            "credentials_changed": ["channel_access_token", "channel_secret"],
            "settings": ["base_url"],
            "enabled": True,
            "by": "lifeloop demo",
        },
    )


def line_only_policy(conn: Connection, workspace_id: int) -> None:
    """The contact policy of a brand that only has LINE: no fallback channel (seed 004's default falls back
    to SMS, which the demo has not connected, so a reviewer without a LINE address would get a message
    that can only fail and be retried). Set when the demo creates the workspace; an operator's later
    change in the console is kept on re-runs."""
    update_policy(conn, workspace_id, {"fallback": {}})
    record_action(
        conn,
        workspace_id,
        user_id=None,
        action="policy.update",
        target="contact-policy",
        detail={"changed": {"fallback": {}}, "by": "lifeloop demo"},
    )


def install_playbooks(conn: Connection, workspace_id: int) -> list[Journey]:
    """Install and publish the LINE shop's playbooks (the service call of ``POST
    /api/v1/journeys/playbooks/{key}``); installing again changes nothing."""
    installed = {j.key for j in list_journeys(conn, workspace_id)}
    journeys = []
    for key in LINE_PLAYBOOKS:
        journey = install_playbook(conn, workspace_id, key, publish=True)
        if journey.key not in installed:
            record_action(
                conn,
                workspace_id,
                user_id=None,
                action="journey.playbook",
                target=journey.key,
                detail={"playbook": key, "publish": True, "by": "lifeloop demo"},
            )
        journeys.append(journey)
    return journeys
