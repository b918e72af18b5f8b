"""API tokens in the registry: a secret is returned once, kept as its sha256, and revocation is final."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from modelreg.registry import Conflict, Invalid, NotFound, TokenService, schema
from modelreg.registry.db import make_engine, make_sessions
from modelreg.registry.tokens import hash_secret


@pytest.fixture
def tokens(database_url: str) -> Iterator[TokenService]:
    schema.upgrade(database_url)
    engine = make_engine(database_url)
    yield TokenService(make_sessions(engine))
    engine.dispose()


def test_a_created_token_verifies_until_it_is_revoked(tokens: TokenService) -> None:
    record, secret = tokens.create("ci-bot", "admin", created_by="alice")
    assert (record.name, record.role, record.created_by, record.active) == ("ci-bot", "admin", "alice", True)
    assert tokens.verify(secret) == record
    assert tokens.verify(secret + "x") is None and tokens.verify("") is None
    revoked = tokens.revoke("ci-bot", actor="bob")
    assert (revoked.active, revoked.revoked_by) == (False, "bob")
    assert tokens.verify(secret) is None
    assert tokens.revoke("ci-bot", actor="carol") == revoked  # again: nothing changes, the first revoker stays


def test_every_secret_is_new_and_only_its_hash_is_kept(tokens: TokenService) -> None:
    (_, first), (_, second) = tokens.create("a", "reader", created_by="t"), tokens.create("b", "reader", created_by="t")
    assert first != second and hash_secret(first) != hash_secret(second)
    assert all(first not in str(value) for record in tokens.list() for value in record.to_dict().values())


def test_names_are_unique_for_good(tokens: TokenService) -> None:
    tokens.create("ci-bot", "reader", created_by="t")
    tokens.revoke("ci-bot", actor="t")
    with pytest.raises(Conflict, match="a token named 'ci-bot' already exists"):
        tokens.create("ci-bot", "admin", created_by="t")
    assert [(t.name, t.role, t.active) for t in tokens.list()] == [("ci-bot", "reader", False)]


@pytest.mark.parametrize(("name", "role", "message"), [
    ("bootstrap", "admin", "reserved for MODELREG_ADMIN_TOKEN"),
    ("", "admin", "invalid token name"),
    ("has:colon", "admin", "invalid token name"),
    ("ok", "owner", "invalid role 'owner'"),
])
def test_bad_names_and_roles_are_refused(tokens: TokenService, name: str, role: str, message: str) -> None:
    with pytest.raises(Invalid, match=message):
        tokens.create(name, role, created_by="t")
    assert tokens.list() == []


def test_revoking_an_unknown_token_is_not_found(tokens: TokenService) -> None:
    with pytest.raises(NotFound, match="token 'ghost' does not exist"):
        tokens.revoke("ghost", actor="t")
