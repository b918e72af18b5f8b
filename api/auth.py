"""Bearer tokens: who is calling and with which role; secrets are compared in constant time."""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread

from modelreg.api.settings import Settings
from modelreg.registry.errors import Unavailable
from modelreg.registry.tokens import BOOTSTRAP, TokenService, hash_secret

log = logging.getLogger("modelreg.auth")
TOKEN_FILE = "admin-token"
ADMIN_HINT = "this route needs a token: send 'Authorization: Bearer <token>'"
PREDICT_HINT = "predictions need a token here (MODELREG_PREDICT_AUTH=on): send 'Authorization: Bearer <token>'"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller; ``name`` is what history records as the actor."""

    name: str
    role: str

    def require(self, role: str) -> Principal:
        """Forbidden unless this caller has ``role`` (an admin has every role)."""
        if self.role != role and self.role != "admin":
            raise Forbidden(f"this needs a token with role {role!r}; token {self.name!r} has role {self.role!r}")
        return self


class Unauthorized(Exception):
    """No usable credentials: 401."""


class Forbidden(Exception):
    """Valid credentials without the needed role: 403."""


def bearer_secret(authorization: str | None, hint: str) -> str:
    """The secret of an ``Authorization: Bearer`` header; Unauthorized (with ``hint``) otherwise."""
    if not authorization:
        raise Unauthorized(hint)
    scheme, _, secret = authorization.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized("malformed Authorization header: expected 'Bearer <token>'")
    return secret.strip()


class RecentVerdicts:
    """What the predict path learnt about token hashes lately (bounded, least recently used out)."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._items: OrderedDict[str, tuple[float, Principal | None]] = OrderedDict()

    def get(self, digest: str) -> tuple[float, Principal | None] | None:
        item = self._items.get(digest)
        if item is not None:
            self._items.move_to_end(digest)
        return item

    def put(self, digest: str, principal: Principal | None, at: float) -> None:
        self._items[digest] = (at, principal)
        self._items.move_to_end(digest)
        while len(self._items) > self._size:
            self._items.popitem(last=False)


class Authenticator:
    """Checks bearer tokens: the bootstrap token first, then the registry's tokens."""

    def __init__(self, bootstrap: str | None, tokens: TokenService, *, predict_auth: bool = False,
                 cache_seconds: float = 5.0) -> None:
        self._bootstrap = bootstrap.encode() if bootstrap else None
        self._tokens = tokens
        self.predict_auth = predict_auth
        self._cache_seconds = cache_seconds
        self._recent = RecentVerdicts()

    def _is_bootstrap(self, secret: str) -> bool:
        return self._bootstrap is not None and hmac.compare_digest(secret.encode(), self._bootstrap)

    def authenticate(self, authorization: str | None) -> Principal:
        """The caller of an admin route; asks the registry every time, so a revocation holds at once."""
        secret = bearer_secret(authorization, ADMIN_HINT)
        if self._is_bootstrap(secret):
            return Principal(BOOTSTRAP, "admin")
        record = self._tokens.verify(secret)
        if record is None:
            raise Unauthorized("invalid or revoked token")
        return Principal(record.name, record.role)

    async def check_predict(self, authorization: str | None) -> Principal | None:
        """None while predict routes are open; else the caller (any role), or Unauthorized.

        The hot path: a verdict is remembered for ``cache_seconds``, so most requests never reach SQL;
        while the database is down, tokens that worked lately keep working (degrade, don't fail).
        """
        if not self.predict_auth:
            return None
        secret = bearer_secret(authorization, PREDICT_HINT)
        if self._is_bootstrap(secret):
            return Principal(BOOTSTRAP, "admin")
        digest, now = hash_secret(secret), time.monotonic()
        recent = self._recent
        known = recent.get(digest)
        if known is not None and now - known[0] < self._cache_seconds:
            return _admit(known[1])
        try:
            record = await anyio.to_thread.run_sync(self._tokens.verify, secret)
        except Unavailable:
            if known is not None and known[1] is not None:
                log.warning("registry unavailable; trusting token %r as it was %.0f s ago", known[1].name,
                            now - known[0])
                return known[1]
            raise
        principal = Principal(record.name, record.role) if record else None
        if self._cache_seconds > 0:
            recent.put(digest, principal, now)
        return _admit(principal)

    def forget(self) -> None:
        """Drop every remembered verdict (after a revocation, so it holds at once on this replica)."""
        self._recent = RecentVerdicts()


def _admit(principal: Principal | None) -> Principal:
    if principal is None:
        raise Unauthorized("invalid or revoked token")
    return principal


def resolve_admin_token(settings: Settings) -> str | None:
    """The bootstrap token: configured, or generated into the data folder (embedded default only).

    With a shared database and no MODELREG_ADMIN_TOKEN there is none: admin tokens then live in the
    registry only (``modelreg tokens create NAME --role admin --local`` makes the first one).
    """
    if settings.admin_token is not None and settings.admin_token.get_secret_value():
        return settings.admin_token.get_secret_value()
    path = settings.data_dir / TOKEN_FILE
    if path.is_file():
        return path.read_text().strip()
    if not settings.is_embedded_database():
        return None
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
