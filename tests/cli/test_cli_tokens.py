"""``modelreg tokens``: create, list and revoke over the admin API, or --local in the registry database."""

from __future__ import annotations

import hashlib

from sqlalchemy import create_engine, text

from modelreg.api.cli import app
from tests.cli.conftest import Server, as_json, cli, ok, runner


def test_a_reader_token_from_creation_to_revocation(server: Server) -> None:
    created = ok(cli(server, "tokens", "create", "dashboard", "--role", "reader"))
    secret = created.stdout.strip()  # alone on stdout, so TOKEN=$(modelreg tokens create ...) works
    assert secret.startswith("mrt_") and "shown only this once" in created.stderr
    table = ok(cli(server, "tokens", "list")).stdout
    assert "dashboard" in table and "reader" in table and secret not in table
    listed = {t["name"]: t for t in as_json(cli(server, "tokens", "list", "--json"))}
    assert listed["dashboard"]["created_by"] == "bootstrap" and listed["dashboard"]["active"] is True
    assert "token" not in listed["dashboard"] and "hash" not in listed["dashboard"]

    assert ok(cli(server, "models", "list", "--json", MODELREG_TOKEN=secret)).stdout.strip().startswith("[")
    refused = cli(server, "models", "create", "nope", "--runtime", "echo", MODELREG_TOKEN=secret)
    assert refused.exit_code == 1 and "HTTP 403" in refused.stderr and "role 'admin'" in refused.stderr
    assert secret not in refused.output

    assert "revoked token dashboard" in ok(cli(server, "tokens", "revoke", "dashboard")).stdout
    gone = cli(server, "models", "list", MODELREG_TOKEN=secret)
    assert gone.exit_code == 1 and "HTTP 401" in gone.stderr and "invalid or revoked token" in gone.stderr
    assert as_json(cli(server, "tokens", "list", "--json"))[0]["active"] is False


def test_create_json_carries_the_secret_and_errors_exit_1(server: Server) -> None:
    data = as_json(cli(server, "tokens", "create", "deployer", "--role", "admin", "--json"))
    assert (data["name"], data["role"], data["token"][:4]) == ("deployer", "admin", "mrt_")
    again = cli(server, "tokens", "create", "deployer")
    assert again.exit_code == 1 and "HTTP 409" in again.stderr
    assert cli(server, "tokens", "create", "x", "--role", "owner").exit_code == 2
    unknown = cli(server, "tokens", "revoke", "ghost")
    assert unknown.exit_code == 1 and "token 'ghost' does not exist" in unknown.stderr


def test_history_shows_the_token_that_acted(server: Server) -> None:
    secret = as_json(cli(server, "tokens", "create", "release-bot", "--role", "admin", "--json"))["token"]
    ok(cli(server, "models", "create", "by-bot", "--runtime", "echo", MODELREG_TOKEN=secret))
    assert [e["actor"] for e in as_json(cli(server, "history", "by-bot", "--json"))] == ["release-bot"]


def test_local_makes_the_first_admin_token_where_the_server_reads_it(server: Server) -> None:
    # A deployment with no admin token at hand: write to the server's database directly.
    local = {"MODELREG_DATA_DIR": str(server.data_dir), "MODELREG_ADMIN_TOKEN": None}
    created = ok(cli(server, "tokens", "create", "first-admin", "--role", "admin", "--local", **local))
    secret = created.stdout.strip()
    ok(cli(server, "models", "create", "by-first", "--runtime", "echo", MODELREG_TOKEN=secret))
    assert [e["actor"] for e in as_json(cli(server, "history", "by-first", "--json"))] == ["first-admin"]
    listed = {t["name"]: t for t in as_json(cli(server, "tokens", "list", "--local", "--json", **local))}
    assert listed["first-admin"]["created_by"].startswith("local")
    ok(cli(server, "tokens", "revoke", "first-admin", "--local", **local))
    assert cli(server, "models", "list", MODELREG_TOKEN=secret).exit_code == 1


def test_local_on_a_shared_database_needs_its_schema_and_keeps_only_the_hash(database_url: str) -> None:
    env = {"MODELREG_DATABASE_URL": database_url, "MODELREG_TOKEN": None, "MODELREG_ADMIN_TOKEN": None}
    early = runner.invoke(app, ["tokens", "create", "ops", "--role", "admin", "--local"], env=env)
    assert early.exit_code == 1 and "run `modelreg db upgrade`" in early.stderr
    ok(runner.invoke(app, ["db", "upgrade"], env=env))
    secret = ok(runner.invoke(app, ["tokens", "create", "ops", "--role", "admin", "--local"], env=env)).stdout.strip()
    engine = create_engine(database_url)
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(text("SELECT name, role, hash FROM api_tokens"))]
    engine.dispose()
    assert rows == [("ops", "admin", hashlib.sha256(secret.encode()).hexdigest())]
