"""The Authenticator on its own: roles, the bootstrap token, and what the predict path remembers."""

from __future__ import annotations

import asyncio

import pytest

from modelreg.api.auth import Authenticator, Forbidden, Principal, Unauthorized
from modelreg.registry import TokenRecord, Unavailable
from modelreg.registry.tables import utcnow
from modelreg.registry.tokens import hash_secret


class Tokens:
    """A TokenService stand-in: one known secret, a call counter, and a switch that takes the database down."""

    def __init__(self) -> None:
        self.calls = 0
        self.down = False
        self.known = {hash_secret("mrt_app"): TokenRecord("app", "reader", utcnow(), "bootstrap")}

    def verify(self, secret: str) -> TokenRecord | None:
        self.calls += 1
        if self.down:
            raise Unavailable("OperationalError: connection refused")  # what TokenService raises
        return self.known.get(hash_secret(secret))


def check(auth: Authenticator, secret: str | None) -> Principal | None:
    return asyncio.run(auth.check_predict(f"Bearer {secret}" if secret else None))


def test_the_bootstrap_token_is_an_admin_named_bootstrap() -> None:
    auth = Authenticator("s3cret", Tokens())  # type: ignore[arg-type]
    assert auth.authenticate("Bearer s3cret") == Principal("bootstrap", "admin")
    assert auth.authenticate("bearer  mrt_app ") == Principal("app", "reader")
    with pytest.raises(Unauthorized, match="invalid or revoked token"):
        auth.authenticate("Bearer s3cret-not")


def test_without_a_bootstrap_token_only_registry_tokens_work() -> None:
    auth = Authenticator(None, Tokens())  # type: ignore[arg-type]
    with pytest.raises(Unauthorized):
        auth.authenticate("Bearer ")
    assert auth.authenticate("Bearer mrt_app").name == "app"


def test_an_admin_has_every_role_and_a_reader_only_its_own() -> None:
    assert Principal("ops", "admin").require("reader").name == "ops"
    with pytest.raises(Forbidden, match="role 'admin'; token 'app' has role 'reader'"):
        Principal("app", "reader").require("admin")


def test_predict_checks_are_off_unless_asked_for() -> None:
    tokens = Tokens()
    assert check(Authenticator("s3cret", tokens), None) is None  # type: ignore[arg-type]
    assert tokens.calls == 0


def test_a_predict_verdict_is_remembered_then_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("modelreg.api.auth.time.monotonic", lambda: now[0])
    tokens = Tokens()
    auth = Authenticator("s3cret", tokens, predict_auth=True, cache_seconds=5)  # type: ignore[arg-type]
    assert [check(auth, "mrt_app"), check(auth, "mrt_app")] == [Principal("app", "reader")] * 2
    for _ in range(2):
        with pytest.raises(Unauthorized):
            check(auth, "mrt_wrong")
    assert tokens.calls == 2  # one question per secret, not per request
    now[0] += 5
    check(auth, "mrt_app")
    assert tokens.calls == 3
    auth.forget()
    check(auth, "mrt_app")
    assert tokens.calls == 4


def test_while_the_database_is_down_a_token_that_worked_lately_keeps_predicting(
        monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("modelreg.api.auth.time.monotonic", lambda: now[0])
    tokens = Tokens()
    auth = Authenticator(None, tokens, predict_auth=True, cache_seconds=5)  # type: ignore[arg-type]
    assert check(auth, "mrt_app") == Principal("app", "reader")
    tokens.down, now[0] = True, now[0] + 60
    assert check(auth, "mrt_app") == Principal("app", "reader")
    assert tokens.calls == 2  # it did ask first
    with pytest.raises(Unavailable):  # an unknown secret cannot be checked: 503, not a guess
        check(auth, "mrt_other")
