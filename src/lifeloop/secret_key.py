"""The deployment's master secret, from which every encryption and signing key is derived.

Production sets ``LIFELOOP_SECRET_KEY``. The embedded store (an SQLite file) works without it: a key is
generated on first need and kept beside the database, readable by its owner only, so a first run can
connect a channel; a warning says to set the variable in production. On PostgreSQL there is no data
directory of ours to keep a key in, so the long-running commands refuse to start without one
(``require_for``) instead of failing on the first channel.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import tempfile
from pathlib import Path

from lifeloop.config import Settings, get_settings
from lifeloop.errors import LifeloopError

SECRET_KEY_ENV = "LIFELOOP_SECRET_KEY"
KEY_FILE = "secret_key"
MIN_LENGTH = 32
GENERATE = "python -c 'import secrets; print(secrets.token_urlsafe(48))'"

logger = logging.getLogger("lifeloop.secret_key")
_warned: set[Path] = set()


class MissingSecretKey(LifeloopError):
    code = "missing_secret_key"


def secret_key() -> bytes:
    """``LIFELOOP_SECRET_KEY``, or on the embedded store the key kept beside its database file."""
    value = os.environ.get(SECRET_KEY_ENV, "")
    if not value and (path := key_file()) is not None:
        return _embedded_key(path)
    if len(value) < MIN_LENGTH:
        raise MissingSecretKey(
            f"{SECRET_KEY_ENV} {_problem(value)}; it encrypts channel credentials and signs tracking links. "
            f"Generate one with: {GENERATE} "
            "and keep it stable (changing it makes stored credentials unreadable)."
        )
    return value.encode()


def key_file(settings: Settings | None = None) -> Path | None:
    """Where the embedded store keeps its generated key: the directory of the SQLite database file
    (``./var`` by default); None on PostgreSQL and in-memory SQLite."""
    database = (settings or get_settings()).sqlite_path()
    return database.parent / KEY_FILE if database is not None else None


def require_for(command: str, settings: Settings | None = None) -> None:
    """Refuse to run ``command`` on a store that cannot keep a generated key, when none is set."""
    settings = settings or get_settings()
    value = os.environ.get(SECRET_KEY_ENV, "")
    if settings.is_sqlite or len(value) >= MIN_LENGTH:
        return
    raise MissingSecretKey(
        f"{SECRET_KEY_ENV} {_problem(value)}: {command} on PostgreSQL needs a stable secret of at least "
        f"{MIN_LENGTH} characters to encrypt channel credentials and sign tracking links "
        f"(generate one with {GENERATE})."
    )


def _problem(value: str) -> str:
    return "is not set" if not value else f"is shorter than {MIN_LENGTH} characters"


def _embedded_key(path: Path) -> bytes:
    try:
        value = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        value = _create(path)
    if len(value) < MIN_LENGTH:
        raise MissingSecretKey(
            f"{path} holds no usable key (under {MIN_LENGTH} characters); "
            f"restore it from a backup or set {SECRET_KEY_ENV}"
        )
    if path not in _warned:
        _warned.add(path)
        logger.warning(
            "%s is not set: channel credentials are encrypted with the key generated for this embedded "
            "database in %s; set %s in production (and keep it stable)",
            SECRET_KEY_ENV,
            path,
            SECRET_KEY_ENV,
        )
    return value.encode()


def _create(path: Path) -> str:
    """Write a new key readable by its owner only; when another process wins the race, keep theirs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, draft = tempfile.mkstemp(dir=path.parent, prefix=f".{KEY_FILE}.")  # mode 0600
    try:
        with os.fdopen(handle, "w", encoding="ascii") as out:
            out.write(secrets.token_urlsafe(48) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.chmod(draft, 0o600)
        with contextlib.suppress(FileExistsError):  # another process's key, already in place, wins
            os.link(draft, path)  # atomic, and never replaces an existing file
    finally:
        os.unlink(draft)
    return path.read_text(encoding="ascii").strip()
