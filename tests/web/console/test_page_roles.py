"""Every console route that changes something refuses viewers and analysts (403) and changes nothing. The
routes are read from the console's own routers, so a new page's forms are covered the day it is added."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from lifeloop.web.console.pages import PAGE_ROUTERS
from tests.conftest import snapshot
from tests.web.console.conftest import Console

# Computing an answer stores nothing: any role may preview a condition or a template, or estimate a broadcast.
READ_ONLY = {"/segments/preview", "/templates/_preview", "/broadcasts/estimate"}
# A member's own session and preferences, whatever the role.
OWN = {"/login", "/logout", "/preferences/locale", "/settings/profile"}


def _writes() -> list[tuple[str, str]]:
    return sorted(
        (method, route.path)
        for router in PAGE_ROUTERS
        for route in router.routes
        for method in getattr(route, "methods", set()) - {"GET", "HEAD"}
    )


@pytest.mark.parametrize("role", ["viewer", "analyst"])
def test_every_console_write_refuses_viewers_and_analysts(
    console_as: Callable[..., Console], engine: sa.Engine, role: str
) -> None:
    member = console_as(role)
    writes = [(m, p) for m, p in _writes() if p not in OWN]
    assert len(writes) > 30
    before = snapshot(engine)
    let_through = []
    for method, path in writes:
        url = re.sub(r"\{[^}]+\}", "1", path)
        answer = member.client.request(method, url, data={"csrf_token": member.csrf}, follow_redirects=False)
        if path in READ_ONLY:
            assert answer.status_code != 403, path
        elif answer.status_code != 403:
            let_through.append((method, path, answer.status_code))
    assert not let_through
    assert snapshot(engine) == before
