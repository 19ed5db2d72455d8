"""Users, memberships, console sessions and the audit log."""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import available_timezones

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, delete, func, insert, select, update

from lifeloop.accounts.models import (
    LOCALES,
    AuditEntry,
    ConsoleSession,
    Member,
    User,
    audit_log,
    console_sessions,
    memberships,
    users,
)
from lifeloop.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized
from lifeloop.store.schema import utcnow
from lifeloop.workspaces.models import ROLES

SESSION_LIFETIME = timedelta(days=7)
MIN_PASSWORD = 10
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
_WRONG = "wrong e-mail or password"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _user(row: Any) -> User:
    return User(
        id=row.id,
        email=row.email,
        name=row.name,
        locale=row.locale,
        timezone=row.timezone,
        created_at=row.created_at,
        disabled_at=row.disabled_at,
    )


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"a password needs at least {MIN_PASSWORD} characters", field="password")


def _check_locale(locale: str) -> None:
    if locale not in LOCALES:
        raise InvalidInput(f"locale must be one of {', '.join(LOCALES)}", field="locale")


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}", field="role")


def create_user(
    conn: Connection,
    *,
    email: str,
    password: str,
    name: str | None = None,
    locale: str = "zh-TW",
    timezone: str | None = None,
) -> User:
    """A console user (no workspace yet: ``add_member`` gives one a role)."""
    email = email.strip().lower()
    if not _EMAIL.match(email):
        raise InvalidInput(f"{email!r} is not an e-mail address", field="email")
    _check_password(password)
    _check_locale(locale)
    if timezone is not None and timezone not in available_timezones():
        raise InvalidInput(f"unknown time zone {timezone!r}", field="timezone")
    if conn.execute(select(users.c.id).where(users.c.email == email)).first():
        raise Conflict(f"a user with e-mail {email} exists", field="email")
    row = conn.execute(
        insert(users)
        .values(
            email=email,
            name=(name or email.split("@")[0]).strip(),
            password_hash=_hasher.hash(password),
            locale=locale,
            timezone=timezone,
            created_at=utcnow(),
        )
        .returning(*users.c)
    ).one()
    return _user(row)


def user_by_email(conn: Connection, email: str) -> User:
    row = conn.execute(select(users).where(users.c.email == email.strip().lower())).first()
    if row is None:
        raise NotFound(f"no user with e-mail {email}")
    return _user(row)


def authenticate(conn: Connection, *, email: str, password: str) -> User:
    """The user with this e-mail and password; the same error whether the e-mail or the password is wrong."""
    row = conn.execute(select(users).where(users.c.email == email.strip().lower())).first()
    if row is None:
        _hasher.hash(password)  # as slow as a real check, so timing does not tell which e-mails exist
        raise Unauthorized(_WRONG)
    try:
        _hasher.verify(row.password_hash, password)
    except (VerificationError, InvalidHashError):
        raise Unauthorized(_WRONG) from None
    if row.disabled_at is not None:
        raise Unauthorized("this account is disabled")
    if _hasher.check_needs_rehash(row.password_hash):
        conn.execute(update(users).where(users.c.id == row.id).values(password_hash=_hasher.hash(password)))
    return _user(row)


def set_password(conn: Connection, user_id: int, password: str) -> None:
    _check_password(password)
    conn.execute(update(users).where(users.c.id == user_id).values(password_hash=_hasher.hash(password)))
    # Signing in again everywhere: a changed password ends the other sessions.
    conn.execute(
        delete(console_sessions)
        .where(console_sessions.c.user_id == user_id)
        .execution_options(cross_workspace=True)  # the user's sessions in every workspace
    )


def set_preferences(
    conn: Connection, user_id: int, *, locale: str | None = None, timezone: str | None = None
) -> None:
    values: dict[str, Any] = {}
    if locale is not None:
        _check_locale(locale)
        values["locale"] = locale
    if timezone is not None:
        if timezone and timezone not in available_timezones():
            raise InvalidInput(f"unknown time zone {timezone!r}", field="timezone")
        values["timezone"] = timezone or None
    if values:
        conn.execute(update(users).where(users.c.id == user_id).values(**values))


# -- memberships ---------------------------------------------------------------------------------


def add_member(conn: Connection, workspace_id: int, *, user_id: int, role: str) -> Member:
    """Give a user ``role`` in the workspace (or change it)."""
    _check_role(role)
    row = conn.execute(select(users).where(users.c.id == user_id)).first()
    if row is None:
        raise NotFound(f"no user {user_id}")
    current = conn.execute(
        select(memberships.c.role).where(
            memberships.c.workspace_id == workspace_id, memberships.c.user_id == user_id
        )
    ).scalar()
    if current is None:
        conn.execute(
            insert(memberships).values(
                workspace_id=workspace_id, user_id=user_id, role=role, created_at=utcnow()
            )
        )
    elif current != role:
        if current == "admin":
            _keep_an_admin(conn, workspace_id, user_id)
        conn.execute(
            update(memberships)
            .where(memberships.c.workspace_id == workspace_id, memberships.c.user_id == user_id)
            .values(role=role)
        )
    return Member(_user(row), role)


def _keep_an_admin(conn: Connection, workspace_id: int, leaving_user_id: int) -> None:
    others = conn.execute(
        select(func.count()).where(
            memberships.c.workspace_id == workspace_id,
            memberships.c.role == "admin",
            memberships.c.user_id != leaving_user_id,
        )
    ).scalar_one()
    if not others:
        raise Conflict("a workspace keeps at least one admin; make someone else admin first")


def remove_member(conn: Connection, workspace_id: int, user_id: int) -> None:
    role = conn.execute(
        select(memberships.c.role).where(
            memberships.c.workspace_id == workspace_id, memberships.c.user_id == user_id
        )
    ).scalar()
    if role is None:
        raise NotFound(f"user {user_id} is not a member of this workspace")
    if role == "admin":
        _keep_an_admin(conn, workspace_id, user_id)
    conn.execute(
        delete(memberships).where(
            memberships.c.workspace_id == workspace_id, memberships.c.user_id == user_id
        )
    )
    conn.execute(
        delete(console_sessions).where(
            console_sessions.c.workspace_id == workspace_id, console_sessions.c.user_id == user_id
        )
    )


def list_members(conn: Connection, workspace_id: int) -> list[Member]:
    rows = conn.execute(
        select(users, memberships.c.role)
        .join(memberships, memberships.c.user_id == users.c.id)
        .where(memberships.c.workspace_id == workspace_id)
        .order_by(users.c.email)
    )
    return [Member(_user(r), r.role) for r in rows]


def workspaces_of(conn: Connection, user_id: int) -> list[tuple[int, str]]:
    """(workspace id, role) of every workspace the user belongs to, oldest membership first."""
    rows = conn.execute(
        select(memberships.c.workspace_id, memberships.c.role)
        .where(memberships.c.user_id == user_id)
        .order_by(memberships.c.created_at, memberships.c.workspace_id)
        .execution_options(cross_workspace=True)  # a user's own memberships, across workspaces
    )
    return [(r.workspace_id, r.role) for r in rows]


# -- sessions ------------------------------------------------------------------------------------


def open_session(
    conn: Connection, user: User, workspace_id: int | None = None, *, now: datetime | None = None
) -> tuple[ConsoleSession, str]:
    """A session in ``workspace_id`` (default: the user's first); returns it with the cookie's secret."""
    now = now or utcnow()
    roles = dict(workspaces_of(conn, user.id))
    if not roles:
        raise Forbidden("this account belongs to no workspace yet; ask an admin to add it")
    workspace_id = workspace_id if workspace_id is not None else next(iter(roles))
    if workspace_id not in roles:
        raise Forbidden("this account is not a member of that workspace")
    secret = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    expires = now + SESSION_LIFETIME
    session_id = conn.execute(
        insert(console_sessions)
        .values(
            token_hash=_digest(secret),
            user_id=user.id,
            workspace_id=workspace_id,
            csrf_token=csrf,
            created_at=now,
            expires_at=expires,
        )
        .returning(console_sessions.c.id)
    ).scalar_one()
    return ConsoleSession(session_id, user, workspace_id, roles[workspace_id], csrf, expires), secret


def session_for(conn: Connection, secret: str | None, *, now: datetime | None = None) -> ConsoleSession:
    """The live session behind a cookie, with the role its user holds now (a role change applies at once)."""
    if not secret:
        raise Unauthorized("not signed in")
    row = conn.execute(
        select(
            console_sessions.c.id.label("session_id"),
            console_sessions.c.workspace_id.label("session_workspace"),
            console_sessions.c.csrf_token,
            console_sessions.c.expires_at,
            memberships.c.role,
            *users.c,
        )
        .join(users, users.c.id == console_sessions.c.user_id)
        .join(
            memberships,
            (memberships.c.user_id == console_sessions.c.user_id)
            & (memberships.c.workspace_id == console_sessions.c.workspace_id),
        )
        .where(console_sessions.c.token_hash == _digest(secret))
        .execution_options(cross_workspace=True)  # the cookie is what tells us the workspace
    ).first()
    if row is None or row.expires_at <= (now or utcnow()) or row.disabled_at is not None:
        raise Unauthorized("the session has ended; sign in again")
    return ConsoleSession(
        row.session_id, _user(row), row.session_workspace, row.role, row.csrf_token, row.expires_at
    )


def close_session(conn: Connection, secret: str) -> None:
    conn.execute(
        delete(console_sessions)
        .where(console_sessions.c.token_hash == _digest(secret))
        .execution_options(cross_workspace=True)
    )


# -- audit log -----------------------------------------------------------------------------------


def record_action(
    conn: Connection,
    workspace_id: int,
    *,
    user_id: int | None,
    action: str,
    target: str,
    detail: dict[str, Any] | None = None,
) -> None:
    """Write down what an operator did (in the transaction that did it, so both happen or neither)."""
    conn.execute(
        insert(audit_log).values(
            workspace_id=workspace_id,
            user_id=user_id,
            action=action,
            target=target[:200],
            detail=detail or {},
            at=utcnow(),
        )
    )


def audit_entries(conn: Connection, workspace_id: int, *, limit: int = 100) -> list[AuditEntry]:
    rows = conn.execute(
        select(audit_log, users.c.email)
        .outerjoin(users, users.c.id == audit_log.c.user_id)
        .where(audit_log.c.workspace_id == workspace_id)
        .order_by(audit_log.c.at.desc(), audit_log.c.id.desc())
        .limit(limit)
    )
    return [AuditEntry(r.id, r.email, r.action, r.target, dict(r.detail or {}), r.at) for r in rows]
