"""TokenService: API tokens kept as sha256 hashes of random secrets; create, list, revoke, verify."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from modelreg.names import is_token_name
from modelreg.registry.db import transaction
from modelreg.registry.entities import TokenRecord, aware
from modelreg.registry.errors import Conflict, Invalid, NotFound
from modelreg.registry.tables import ApiToken, utcnow

ROLES = ("admin", "reader")
# The token given by MODELREG_ADMIN_TOKEN (or data/admin-token) acts under this name; no stored token
# may take it, so "bootstrap" in history always means that one.
BOOTSTRAP = "bootstrap"
SECRET_PREFIX = "mrt_"  # lets secret scanners and people recognise a leaked modelreg token


def hash_secret(secret: str) -> str:
    """What the registry stores: the secret's sha256. The secret has 256 random bits, so no salt or
    slow hash is needed; nobody can guess a preimage."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def _record(row: ApiToken) -> TokenRecord:
    return TokenRecord(name=row.name, role=row.role, created_at=aware(row.created_at), created_by=row.created_by,
                       revoked_at=aware(row.revoked_at) if row.revoked_at else None, revoked_by=row.revoked_by)


def check_token_name(name: str) -> str:
    if not is_token_name(name):
        raise Invalid(f"invalid token name {name!r}: use 1-64 letters, digits, '-', '_' or '.'")
    if name == BOOTSTRAP:
        raise Invalid(f"the token name {BOOTSTRAP!r} is reserved for MODELREG_ADMIN_TOKEN; pick another name")
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise Invalid(f"invalid role {role!r}: a token is 'admin' (everything) or 'reader' (GET /admin only)")
    return role


class TokenService:
    """The registry's API tokens; one transaction per method, like RegistryService."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        # A database outage leaves here as Unavailable (see RegistryService._tx).
        with transaction(self._sessions) as session:
            yield session

    def create(self, name: str, role: str, *, created_by: str) -> tuple[TokenRecord, str]:
        """A new token and its secret; the secret is returned here once and stored nowhere."""
        check_token_name(name)
        check_role(role)
        secret = new_secret()
        try:
            with self._tx() as session:
                row = ApiToken(name=name, role=role, hash=hash_secret(secret), created_by=created_by)
                session.add(row)
                session.flush()
                return _record(row), secret
        except IntegrityError as exc:
            raise Conflict(f"a token named {name!r} already exists (revoked tokens keep their name, so history "
                           "stays unambiguous); pick another name") from exc

    def list(self) -> list[TokenRecord]:
        """Every token, revoked ones included, by name."""
        with self._tx() as session:
            return [_record(r) for r in session.scalars(select(ApiToken).order_by(ApiToken.name))]

    def revoke(self, name: str, *, actor: str) -> TokenRecord:
        """Stop a token from working; revoking it again changes nothing."""
        with self._tx() as session:
            row = session.scalars(select(ApiToken).where(ApiToken.name == name).with_for_update()).one_or_none()
            if row is None:
                raise NotFound("token", name)
            if row.revoked_at is None:
                row.revoked_at, row.revoked_by = utcnow(), actor
                session.flush()
            return _record(row)

    def verify(self, secret: str) -> TokenRecord | None:
        """The active token whose secret this is, else None."""
        digest = hash_secret(secret)
        with self._tx() as session:
            row = session.scalars(select(ApiToken).where(ApiToken.hash == digest)).one_or_none()
            # The lookup is by hash, so its timing tells nothing about the secret; the comparison is in
            # constant time anyway, as the one place that decides.
            if row is None or not hmac.compare_digest(row.hash, digest) or row.revoked_at is not None:
                return None
            return _record(row)
