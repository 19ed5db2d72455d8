"""Console fixtures: a signed-in browser-like client per role, through the real login form."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from lifeloop.accounts.service import add_member, create_user
from lifeloop.workspaces.models import ROLES
from tests.conftest import Brand

PASSWORD = "correct-horse-battery"


@dataclass
class Console:
    """A TestClient signed in to the console, with the session's CSRF token for forms."""

    client: TestClient
    csrf: str
    role: str

    def get(self, path: str, **kwargs: object):  # type: ignore[no-untyped-def]
        return self.client.get(path, **kwargs)  # type: ignore[arg-type]

    def post(self, path: str, data: dict[str, object] | None = None, **kwargs: object):  # type: ignore[no-untyped-def]
        """A form post carrying the CSRF token, as the console's own forms do."""
        return self.client.post(path, data={"csrf_token": self.csrf, **(data or {})}, **kwargs)  # type: ignore[arg-type]

    def htmx(self, method: str, path: str, **kwargs: object):  # type: ignore[no-untyped-def]
        """An htmx request: the token in the X-CSRF-Token header, as console.js sends it."""
        headers = {"HX-Request": "true", "X-CSRF-Token": self.csrf}
        return self.client.request(method, path, headers=headers, **kwargs)  # type: ignore[arg-type]


def make_user(engine: sa.Engine, workspace_id: int, role: str, locale: str = "en") -> str:
    email = f"{role}-{workspace_id}@example.com"
    with engine.begin() as conn:
        user = create_user(conn, email=email, password=PASSWORD, name=role.title(), locale=locale)
        add_member(conn, workspace_id, user_id=user.id, role=role)
    return email


def sign_in(client: TestClient, email: str, password: str = PASSWORD) -> str:
    """Sign in through the login form; returns the session's CSRF token."""
    form = client.get("/login")
    token = re.search(r'name="login_token" value="([^"]+)"', form.text)
    assert token, form.text
    answer = client.post("/login", data={"email": email, "password": password, "login_token": token[1]})
    assert answer.status_code == 200, answer.text
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', answer.text)
    assert csrf, answer.text
    return csrf[1]


@pytest.fixture
def console_as(client: TestClient, engine: sa.Engine, brand: Brand) -> Iterator[Callable[..., Console]]:
    """``console_as("operator", locale="zh-TW")``: a member with that role in ``brand``, signed in."""
    made: dict[str, str] = {}

    def make(role: str = "admin", locale: str = "en") -> Console:
        assert role in ROLES
        if role not in made:
            made[role] = make_user(engine, brand.workspace_id, role, locale)
        client.cookies.clear()
        return Console(client, sign_in(client, made[role]), role)

    yield make


@pytest.fixture
def console(console_as: Callable[..., Console]) -> Console:
    """Signed in as an admin of ``brand``, in English."""
    return console_as("admin")
