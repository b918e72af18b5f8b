"""Bearer tokens for the admin API: who is calling, compared in constant time."""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from api.settings import Settings

log = logging.getLogger("modelreg.auth")
TOKEN_FILE = "admin-token"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller; ``name`` is what history records as the actor."""

    name: str
    role: str


class Unauthorized(Exception):
    """No usable credentials: 401."""


class Forbidden(Exception):
    """Valid credentials without the needed role: 403."""


class Authenticator:
    """Checks bearer tokens against the bootstrap admin token."""

    def __init__(self, admin_token: str) -> None:
        self._admin_token = admin_token.encode()

    def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthorized("this route needs an admin token: send 'Authorization: Bearer <token>'")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("malformed Authorization header: expected 'Bearer <token>'")
        if hmac.compare_digest(token.strip().encode(), self._admin_token):
            return Principal(name="admin", role="admin")
        raise Unauthorized("invalid or revoked token")


def resolve_admin_token(settings: Settings) -> str:
    """The configured token, or one generated into the data folder (embedded default only)."""
    if settings.admin_token is not None and settings.admin_token.get_secret_value():
        return settings.admin_token.get_secret_value()
    path = settings.data_dir / TOKEN_FILE
    if path.is_file():
        return path.read_text().strip()
    if not settings.is_embedded_database():
        raise RuntimeError(
            "MODELREG_ADMIN_TOKEN is not set: with a shared database every replica needs the same admin "
            "token, so set MODELREG_ADMIN_TOKEN to a long random string"
        )
    return _generate(path)


def _generate(path: Path) -> str:
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another worker of this server generated it a moment ago
        return path.read_text().strip()
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    # The token itself never reaches a log: only where to read it.
    log.warning("generated an admin token; read it with: cat %s", path.resolve())
    return token
