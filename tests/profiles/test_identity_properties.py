"""Property: resolving a history in one batch or message by message groups events identically."""

from __future__ import annotations

import itertools
import threading

import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lifeloop.profiles.resolver import resolve_pending
from tests.conftest import make_brand
from tests.profiles.helpers import assert_consistent, partition

USERS = ["u1", "u2", "u3"]
ANONS = ["a1", "a2", "a3", "a4"]
EMAILS = ["x@example.com", "y@example.com"]


@st.composite
def messages(draw: st.DrawFn) -> list[dict]:
    out = []
    for i in range(draw(st.integers(1, 14))):
        kind = draw(st.sampled_from(["track", "identify", "alias"]))
        user = draw(st.none() | st.sampled_from(USERS))
        anon = draw(st.none() | st.sampled_from(ANONS))
        if kind == "alias":
            out.append(
                {
                    "type": "alias",
                    "messageId": f"m{i}",
                    "userId": draw(st.sampled_from(USERS)),
                    "previousId": draw(st.sampled_from(USERS + ANONS)),
                }
            )
            continue
        if user is None and anon is None:
            anon = ANONS[0]
        message = {"type": kind, "messageId": f"m{i}", "userId": user, "anonymousId": anon}
        if kind == "track":
            message["event"] = "E"
        else:
            message["traits"] = {"email": e} if (e := draw(st.none() | st.sampled_from(EMAILS))) else {}
        out.append(message)
    return out


_slugs = itertools.count()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=messages())
def test_batching_does_not_change_who_is_who(
    client: TestClient, engine: sa.Engine, history: list[dict]
) -> None:
    batched, stepwise = make_brand(engine, f"b{next(_slugs)}"), make_brand(engine, f"s{next(_slugs)}")
    assert client.post("/v1/batch", json={"batch": history}, auth=batched.auth).status_code == 200
    resolve_pending(engine, batched.workspace_id)  # the whole history in one resolver batch
    for message in history:
        assert client.post("/v1/batch", json={"batch": [message]}, auth=stepwise.auth).status_code == 200
        resolve_pending(engine, stepwise.workspace_id)  # one event at a time
    assert partition(engine, batched.workspace_id) == partition(engine, stepwise.workspace_id)
    assert_consistent(engine, batched.workspace_id)
    assert_consistent(engine, stepwise.workspace_id)


def test_concurrent_writers_merging_the_same_people_lose_nothing(
    client: TestClient, engine: sa.Engine, backend: str
) -> None:
    """Several threads ingest overlapping anonymous/identified histories and resolve them at once."""
    brand = make_brand(engine, "race")
    errors: list[str] = []

    def writer(worker: int) -> None:
        for round_ in range(8):
            batch = []
            for person in range(5):
                anon = f"anon-{person}-{worker % 2}"
                batch.append(
                    {
                        "type": "track",
                        "event": "E",
                        "anonymousId": anon,
                        "messageId": f"w{worker}-r{round_}-p{person}-t",
                    }
                )
                batch.append(
                    {
                        "type": "identify",
                        "userId": f"user-{person}",
                        "anonymousId": anon,
                        "messageId": f"w{worker}-r{round_}-p{person}-i",
                        "traits": {"email": f"p{person}@x.io"},
                    }
                )
            response = client.post("/v1/batch", json={"batch": batch}, auth=brand.auth)
            if response.status_code != 200:
                errors.append(response.text)
            resolve_pending(engine, brand.workspace_id, batch_size=7)  # resolvers racing each other

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    resolve_pending(engine)
    groups = partition(engine, brand.workspace_id)
    assert sum(len(g) for g in groups) == 4 * 8 * 10  # every accepted event stored once
    assert len(groups) == 5  # one profile per person
    assert_consistent(engine, brand.workspace_id)
