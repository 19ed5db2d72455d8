"""Identity resolution: anonymous → identified, alias, channel identities, merges that lose nothing."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from lifeloop.profiles.models import profiles
from lifeloop.profiles.resolver import resolve_pending
from tests.conftest import Brand
from tests.profiles.helpers import assert_consistent, event_profiles, merges, owner


def send(client: TestClient, brand: Brand, *messages: dict, one_batch: bool = True) -> None:
    if one_batch:
        response = client.post("/v1/batch", json={"batch": list(messages)}, auth=brand.auth)
        assert response.status_code == 200, response.text
    else:
        for message in messages:
            response = client.post("/v1/batch", json={"batch": [message]}, auth=brand.auth)
            assert response.status_code == 200, response.text
            resolve_pending(client.app.state.engine)
    resolve_pending(client.app.state.engine)


def track(mid: str, *, user: str | None = None, anon: str | None = None, **extra: object) -> dict:
    return {"type": "track", "event": "E", "messageId": mid, "userId": user, "anonymousId": anon, **extra}


def identify(mid: str, *, user: str | None = None, anon: str | None = None, **traits: object) -> dict:
    return {"type": "identify", "messageId": mid, "userId": user, "anonymousId": anon, "traits": traits}


@pytest.fixture(params=[True, False], ids=["one-batch", "separate-requests"])
def one_batch(request: pytest.FixtureRequest) -> bool:
    return request.param


def test_anonymous_history_joins_the_user_on_identify(
    client: TestClient, engine: sa.Engine, brand: Brand, one_batch: bool
) -> None:
    send(
        client,
        brand,
        track("p1", anon="a1"),
        track("p2", anon="a1"),
        identify("i1", user="u1", anon="a1", name="Ann"),
        track("t1", user="u1"),
        one_batch=one_batch,
    )
    by_message = event_profiles(engine, brand.workspace_id)
    assert len(set(by_message.values())) == 1
    pid = by_message["p1"]
    assert owner(engine, brand.workspace_id, "user_id", "u1") == pid
    assert owner(engine, brand.workspace_id, "anonymous_id", "a1") == pid
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(profiles).where(profiles.c.id == pid, profiles.c.workspace_id == brand.workspace_id)
        ).one()
    assert row.user_id == "u1"
    assert row.traits == {"name": "Ann"}
    assert merges(engine, brand.workspace_id) == []  # the anonymous profile was adopted, nothing to merge
    assert_consistent(engine, brand.workspace_id)


def test_two_existing_profiles_merge_and_every_event_moves(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    send(client, brand, track("anon-1", anon="a1"), track("anon-2", anon="a1"))
    send(client, brand, identify("id-1", user="u1", plan="gold"), track("user-1", user="u1"))
    before = event_profiles(engine, brand.workspace_id)
    anon_pid, user_pid = before["anon-1"], before["user-1"]
    assert anon_pid != user_pid

    send(client, brand, identify("link", user="u1", anon="a1"))

    after = event_profiles(engine, brand.workspace_id)
    assert set(after) == {"anon-1", "anon-2", "id-1", "user-1", "link"}  # nothing lost
    assert set(after.values()) == {user_pid}
    (merge,) = merges(engine, brand.workspace_id)
    assert (merge["winner_id"], merge["loser_id"], merge["reason"]) == (user_pid, anon_pid, "identify")
    assert merge["message_id"] == "link"
    assert merge["events_moved"] == 2
    with engine.connect() as conn:
        merged_into = conn.execute(
            sa.select(profiles.c.merged_into).where(
                profiles.c.id == anon_pid, profiles.c.workspace_id == brand.workspace_id
            )
        ).scalar()
    assert merged_into == user_pid
    assert_consistent(engine, brand.workspace_id)


def test_profiles_of_two_different_users_never_merge_implicitly(
    client: TestClient, engine: sa.Engine, brand: Brand, one_batch: bool
) -> None:
    # A shared device: the same anonymousId logs in as two people.
    send(
        client,
        brand,
        identify("i1", user="u1", anon="device"),
        identify("i2", user="u2", anon="device"),
        track("t2", user="u2"),
        one_batch=one_batch,
    )
    by_message = event_profiles(engine, brand.workspace_id)
    assert by_message["i1"] != by_message["i2"] == by_message["t2"]
    assert owner(engine, brand.workspace_id, "anonymous_id", "device") == by_message["i1"]
    assert merges(engine, brand.workspace_id) == []
    assert_consistent(engine, brand.workspace_id)


def test_alias_merges_even_two_identified_profiles(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    send(
        client,
        brand,
        identify("old", user="old-id", tier="silver"),
        identify("new", user="new-id", tier="gold"),
    )
    old_pid = event_profiles(engine, brand.workspace_id)["old"]
    new_pid = event_profiles(engine, brand.workspace_id)["new"]
    send(client, brand, {"type": "alias", "messageId": "al", "previousId": "old-id", "userId": "new-id"})
    assert set(event_profiles(engine, brand.workspace_id).values()) == {new_pid}
    assert owner(engine, brand.workspace_id, "user_id", "old-id") == new_pid
    (merge,) = merges(engine, brand.workspace_id)
    assert (merge["winner_id"], merge["loser_id"], merge["reason"]) == (new_pid, old_pid, "alias")
    with engine.connect() as conn:
        traits = conn.execute(
            sa.select(profiles.c.traits).where(
                profiles.c.id == new_pid, profiles.c.workspace_id == brand.workspace_id
            )
        ).scalar()
    assert traits == {"tier": "gold"}  # the survivor's own traits win over the merged profile's
    assert_consistent(engine, brand.workspace_id)


def test_alias_of_unknown_ids_links_both(client: TestClient, engine: sa.Engine, brand: Brand) -> None:
    send(client, brand, {"type": "alias", "messageId": "al", "previousId": "anon-9", "userId": "u9"})
    send(client, brand, track("later", anon="anon-9"))
    by_message = event_profiles(engine, brand.workspace_id)
    assert by_message["al"] == by_message["later"] == owner(engine, brand.workspace_id, "user_id", "u9")


@pytest.mark.parametrize(
    ("kind", "link"),
    [
        ("line_user_id", {"context": {"externalIds": [{"id": "U4af4980629", "type": "line_user_id"}]}}),
        (
            "wecom_external_userid",
            {"context": {"externalIds": [{"id": "wmXyz", "type": "wecom_external_userid"}]}},
        ),
        ("wechat_openid", {"context": {"externalIds": [{"id": "oABC", "type": "wechat_openid"}]}}),
        ("wechat_unionid", {"context": {"externalIds": [{"id": "uABC", "type": "wechat_unionid"}]}}),
    ],
)
def test_channel_identity_joins_the_customer(
    client: TestClient, engine: sa.Engine, brand: Brand, kind: str, link: dict
) -> None:
    # The channel webhook knows only the channel id; the shop later identifies the same person.
    send(
        client,
        brand,
        {"type": "track", "event": "Channel Followed", "messageId": "follow", "anonymousId": "ch-1", **link},
    )
    send(client, brand, track("order", user="u1"))
    send(client, brand, {"type": "identify", "messageId": "id", "userId": "u1", "traits": {}, **link})
    by_message = event_profiles(engine, brand.workspace_id)
    assert by_message["follow"] == by_message["order"] == by_message["id"]
    value = link["context"]["externalIds"][0]["id"]
    assert owner(engine, brand.workspace_id, kind, value) == by_message["order"]
    assert merges(engine, brand.workspace_id)[0]["reason"] == f"identity:{kind}"
    assert_consistent(engine, brand.workspace_id)


def test_email_and_phone_traits_link_identities_normalised(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    send(client, brand, identify("i1", user="u1", email=" Ann@Example.COM ", phone="+886 912-345-678"))
    send(client, brand, identify("i2", anon="newsletter-form", email="ann@example.com"))
    by_message = event_profiles(engine, brand.workspace_id)
    assert by_message["i1"] == by_message["i2"]
    assert owner(engine, brand.workspace_id, "email", "ann@example.com") == by_message["i1"]
    assert owner(engine, brand.workspace_id, "phone", "+886912345678") == by_message["i1"]


def test_same_email_on_two_users_does_not_merge_them(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    send(client, brand, identify("i1", user="u1", email="family@example.com"))
    send(client, brand, identify("i2", user="u2", email="family@example.com"))
    by_message = event_profiles(engine, brand.workspace_id)
    assert by_message["i1"] != by_message["i2"]
    assert owner(engine, brand.workspace_id, "email", "family@example.com") == by_message["i1"]
    assert merges(engine, brand.workspace_id) == []


def test_chain_of_merges_in_one_batch(client: TestClient, engine: sa.Engine, brand: Brand) -> None:
    send(client, brand, track("a", anon="a1"), track("b", anon="a2"), track("c", user="u1"))
    send(
        client,
        brand,
        identify("l1", anon="a1", email="x@example.com"),
        identify("l2", anon="a2", email="x@example.com"),
        identify("l3", user="u1", anon="a2"),
    )
    assert len(set(event_profiles(engine, brand.workspace_id).values())) == 1
    assert_consistent(engine, brand.workspace_id)


def test_identities_are_scoped_to_their_workspace(client: TestClient, engine: sa.Engine) -> None:
    from tests.conftest import make_brand

    one, two = make_brand(engine, "one"), make_brand(engine, "two")
    send(client, one, identify("x", user="u1", email="a@example.com"))
    send(client, two, identify("y", user="u1", email="a@example.com"))
    assert event_profiles(engine, one.workspace_id)["x"] != event_profiles(engine, two.workspace_id)["y"]
    assert merges(engine, one.workspace_id) == merges(engine, two.workspace_id) == []


def test_first_and_last_seen_follow_event_time_not_arrival(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    send(client, brand, track("late", user="u1", timestamp="2025-05-01T00:00:00Z"))
    send(client, brand, track("early", user="u1", timestamp="2025-01-01T00:00:00Z"))
    send(
        client, brand, {**identify("tz", user="u1"), "context": {"timezone": "Asia/Tokyo", "locale": "ja-JP"}}
    )
    with engine.connect() as conn:
        row = conn.execute(sa.select(profiles).where(profiles.c.workspace_id == brand.workspace_id)).one()
    assert row.first_seen.isoformat() == "2025-01-01T00:00:00+00:00"
    assert row.last_seen.year >= 2026
    assert (row.timezone, row.locale) == ("Asia/Tokyo", "ja-JP")
