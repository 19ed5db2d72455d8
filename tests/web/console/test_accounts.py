"""Accounts and sessions: argon2 passwords, sign-in and out, CSRF on every write, roles, the audit log."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from lifeloop.accounts.models import console_sessions, users
from lifeloop.accounts.service import audit_entries, authenticate, create_user
from lifeloop.cli import app as cli
from lifeloop.config import Settings
from lifeloop.errors import Conflict, InvalidInput, Unauthorized
from lifeloop.store.engine import connect
from tests.conftest import Brand, make_brand
from tests.web.console.conftest import PASSWORD, Console, make_user, sign_in


def test_passwords_are_stored_as_argon2id_and_checked(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        create_user(conn, email="Mei@Example.com", password=PASSWORD)
    with connect(engine) as conn:
        stored = conn.execute(sa.select(users.c.email, users.c.password_hash)).one()
        assert stored.email == "mei@example.com" and stored.password_hash.startswith("$argon2id$")
        assert PASSWORD not in stored.password_hash
        assert authenticate(conn, email="MEI@example.com", password=PASSWORD).email == "mei@example.com"
        for email, password in (("mei@example.com", "wrong-password"), ("nobody@example.com", PASSWORD)):
            with pytest.raises(Unauthorized, match="wrong e-mail or password"):
                authenticate(conn, email=email, password=password)


@pytest.mark.parametrize(
    ("email", "password", "field"),
    [("not-an-email", PASSWORD, "email"), ("a@example.com", "short", "password")],
)
def test_bad_accounts_are_refused(engine: sa.Engine, email: str, password: str, field: str) -> None:
    with engine.begin() as conn, pytest.raises(InvalidInput) as error:
        create_user(conn, email=email, password=password)
    assert error.value.field == field
    with engine.begin() as conn:
        create_user(conn, email="a@example.com", password=PASSWORD)
        with pytest.raises(Conflict):
            create_user(conn, email="A@example.com", password=PASSWORD)


def test_pages_send_strangers_to_the_login_and_back(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    first = client.get("/settings?x=1", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/login?next=%2Fsettings%3Fx%3D1"
    email = make_user(engine, brand.workspace_id, "viewer")
    form = client.get(first.headers["location"])
    token = re.search(r'name="login_token" value="([^"]+)"', form.text)[1]  # type: ignore[index]
    signed = client.post(
        "/login", data={"email": email, "password": PASSWORD, "login_token": token, "next": "/settings"},
        follow_redirects=False,
    )  # fmt: skip
    assert signed.status_code == 303 and signed.headers["location"] == "/settings"
    page = client.get("/settings")
    assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
    cookie = signed.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("samesite", "SameSite")
    client.cookies.clear()
    token = re.search(r'name="login_token" value="([^"]+)"', client.get("/login").text)[1]  # type: ignore[index]
    form = {"email": email, "password": PASSWORD, "login_token": token, "next": "//evil.example/"}
    stray = client.post("/login", data=form, follow_redirects=False)
    assert stray.headers["location"] == "/"
    assert client.get("/", headers={"HX-Request": "true"}).status_code == 200


def test_a_wrong_password_or_a_forged_login_form_opens_no_session(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    email = make_user(engine, brand.workspace_id, "admin")
    form = client.get("/login")
    token = re.search(r'name="login_token" value="([^"]+)"', form.text)[1]  # type: ignore[index]
    wrong = client.post("/login", data={"email": email, "password": "nope-nope-nope", "login_token": token})
    forged = client.post("/login", data={"email": email, "password": PASSWORD, "login_token": "forged"})
    assert wrong.status_code == 401 and "電子郵件或密碼錯誤" in wrong.text  # the default language: zh-TW
    assert forged.status_code == 400
    with connect(engine) as conn:
        count = (
            sa.select(sa.func.count()).select_from(console_sessions).execution_options(cross_workspace=True)
        )
        assert conn.execute(count).scalar_one() == 0


def test_writes_need_the_csrf_token_and_sign_out_ends_the_session(console: Console) -> None:
    refused = console.client.post("/settings/tokens", data={"name": "ci", "role": "viewer"})
    assert refused.status_code == 403 and "CSRF" in refused.text
    made = console.post("/settings/tokens", {"name": "ci", "role": "viewer"})
    assert made.status_code == 200 and re.search(r"llt_[\w-]+", made.text)
    out = console.post("/logout", follow_redirects=False)
    assert out.status_code == 303
    assert console.get("/", follow_redirects=False).status_code == 303


def test_members_are_managed_by_admins_only_and_every_change_is_audited(
    console_as: Callable[..., Console], engine: sa.Engine, brand: Brand
) -> None:
    operator = console_as("operator")
    assert (
        operator.post("/settings/members", {"email": "new@example.com", "role": "viewer"}).status_code == 403
    )
    admin = console_as("admin")
    added = admin.post(
        "/settings/members",
        {"email": "new@example.com", "name": "New", "password": PASSWORD, "role": "analyst"},
    )
    assert added.status_code == 200 and "new@example.com" in added.text
    with connect(engine) as conn:
        actions = [(e.action, e.target, e.user_email) for e in audit_entries(conn, brand.workspace_id)]
    assert ("member.set", "new@example.com", "admin-1@example.com") in actions


def test_the_last_admin_cannot_be_removed(console: Console, engine: sa.Engine, brand: Brand) -> None:
    with connect(engine) as conn:
        me = conn.execute(sa.select(users.c.id).where(users.c.email == "admin-1@example.com")).scalar_one()
    other = make_user(engine, brand.workspace_id, "viewer")
    assert other
    answer = console.post("/settings/members", {"email": "admin-1@example.com", "role": "viewer"})
    assert answer.status_code == 409 and "at least one admin" in answer.text
    assert me


def test_cli_creates_the_first_admin(
    settings: Settings,
    engine: sa.Engine,
    brand: Brand,
    client: TestClient,
    process_database: Callable[[str], Settings],
) -> None:
    process_database(settings.database_url)
    runner = CliRunner()
    made = runner.invoke(cli, ["user", "create", "boss@example.com", "-w", "acme", "--password", PASSWORD])
    assert made.exit_code == 0, made.output
    assert "boss@example.com" in made.output and "admin" in made.output
    short = runner.invoke(cli, ["user", "create", "x@example.com", "-w", "acme", "--password", "short"])
    assert short.exit_code == 1 and "at least 10 characters" in short.output
    unknown = runner.invoke(cli, ["user", "create", "y@example.com", "-w", "nope", "--password", PASSWORD])
    assert unknown.exit_code == 1
    sign_in(client, "boss@example.com")
    assert client.get("/settings").status_code == 200


def test_members_tokens_and_the_audit_log_through_the_api(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    put = client.put(
        "/api/v1/workspace/members",
        json={"email": "mei@example.com", "role": "operator", "password": PASSWORD},
        headers=brand.bearer,
    )
    assert put.status_code == 200 and put.json()["role"] == "operator"
    assert (
        client.put(
            "/api/v1/workspace/members",
            json={"email": "new@example.com", "role": "viewer"},
            headers=brand.bearer,
        ).status_code
        == 400
    )  # a new account needs a password
    members = client.get("/api/v1/workspace/members", headers=brand.bearer).json()
    assert [m["email"] for m in members] == ["mei@example.com"]
    made = client.post(
        "/api/v1/workspace/tokens", json={"name": "bi", "role": "viewer"}, headers=brand.bearer
    )
    assert made.status_code == 201
    viewer = {"Authorization": f"Bearer {made.json()['token']}"}
    assert client.get("/api/v1/workspace/members", headers=viewer).status_code == 403
    assert client.get("/api/v1/workspace", headers=viewer).status_code == 200
    listed = client.get("/api/v1/workspace/tokens", headers=brand.bearer).json()
    assert {t["name"] for t in listed} == {"tests", "bi"} and all("token" not in t for t in listed)
    assert (
        client.delete(f"/api/v1/workspace/tokens/{made.json()['id']}", headers=brand.bearer).status_code
        == 204
    )
    assert client.get("/api/v1/workspace", headers=viewer).status_code == 401
    user_id = put.json()["user_id"]
    assert client.delete(f"/api/v1/workspace/members/{user_id}", headers=brand.bearer).status_code == 204
    audit = client.get("/api/v1/workspace/audit", headers=brand.bearer).json()
    assert [a["action"] for a in audit] == ["member.remove", "member.set"]
    other = make_brand(engine, "other")
    assert (
        client.delete(f"/api/v1/workspace/tokens/{made.json()['id']}", headers=other.bearer).status_code
        == 404
    )
