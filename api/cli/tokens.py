"""``modelreg tokens``: create, list and revoke API tokens through the admin API, or ``--local`` in the
registry database itself (how the first admin token of a deployment without one is made)."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.text import Text

from modelreg.api.cli.connection import Token, Url, connect, fail, load_settings
from modelreg.api.cli.output import AsJson, emit, out, print_table
from modelreg.client import DEFAULT_URL
from modelreg.registry import RegistryError, TokenService, Unavailable, open_registry

tokens_app = typer.Typer(help="Create, list and revoke API tokens (role admin or reader).", no_args_is_help=True)

TOKEN_COLUMNS = [("name", "NAME"), ("role", "ROLE"), ("active", "ACTIVE"), ("created_at", "CREATED"),
                 ("created_by", "CREATED BY"), ("revoked_at", "REVOKED"), ("revoked_by", "REVOKED BY")]

TokenName = Annotated[str, typer.Argument(help="The token's name; history shows it as the actor.",
                                          show_default=False)]
Local = Annotated[bool, typer.Option(
    "--local", help="Use the registry database (MODELREG_DATABASE_URL) directly instead of the server: for the "
                    "first admin token, or when no admin token is at hand. Needs the database's credentials.")]


class Role(StrEnum):
    admin = "admin"
    reader = "reader"


def local_actor() -> str:
    """``created_by`` of a token made with --local: not a token name (those have no ':')."""
    try:
        return f"local:{getpass.getuser()}"
    except Exception:  # no login name in some containers; the record still says it was local
        return "local"


@contextmanager
def local_tokens() -> Iterator[TokenService]:
    """The TokenService on the database a server with these settings would use; its errors exit 1."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    settings = load_settings()
    url = settings.resolved_database_url()
    if settings.is_embedded_database():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        with open_registry(url, migrate=settings.should_auto_migrate()) as opened:
            yield opened.tokens
    except Unavailable as exc:  # the CLI user is not a client of a server: name the database and the cause
        fail(f"cannot use the registry database {make_url(url).render_as_string(hide_password=True)}: {exc.cause}")
    except RegistryError as exc:
        fail(str(exc))
    except SQLAlchemyError as exc:  # opening it (a bad URL, a missing driver), before any transaction
        shown = make_url(url).render_as_string(hide_password=True)
        fail(f"cannot use the registry database {shown}: {str(exc).splitlines()[0]}")


def print_secret(data: dict[str, Any]) -> None:
    """The secret alone on stdout (so ``TOKEN=$(modelreg tokens create …)`` works), the rest on stderr."""
    typer.echo(f"created {data['role']} token {data['name']}; its secret, shown only this once:", err=True)
    typer.echo(data["token"])


@tokens_app.command("create")
def tokens_create(
    name: TokenName,
    role: Annotated[Role, typer.Option(help="admin: everything; reader: GET /admin routes only.")] = Role.reader,
    local: Local = False, url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False,
) -> None:
    """Create a token and print its secret once; the registry keeps only its sha256."""
    if local:
        with local_tokens() as tokens:
            record, secret = tokens.create(name, role.value, created_by=local_actor())
        data = {**record.to_dict(), "token": secret}
    else:
        with connect(url, token) as client:
            data = client.create_token(name, role.value)
    emit(data, as_json, print_secret)


@tokens_app.command("list")
def tokens_list(local: Local = False, url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False) -> None:
    """List every token with its role and whether it is revoked (never a secret)."""
    if local:
        with local_tokens() as tokens:
            rows = [t.to_dict() for t in tokens.list()]
    else:
        with connect(url, token) as client:
            rows = client.list_tokens()
    emit(rows, as_json, lambda r: print_table(r, TOKEN_COLUMNS, "no tokens yet: `modelreg tokens create NAME`"))


@tokens_app.command("revoke")
def tokens_revoke(name: TokenName, local: Local = False, url: Url = DEFAULT_URL, token: Token = None,
                  as_json: AsJson = False) -> None:
    """Revoke a token: it stops working at once; its name stays taken, so history stays unambiguous."""
    if local:
        with local_tokens() as tokens:
            data = tokens.revoke(name, actor=local_actor()).to_dict()
    else:
        with connect(url, token) as client:
            data = client.revoke_token(name)
    emit(data, as_json, lambda d: out.print(Text(f"revoked token {d['name']} (at {d['revoked_at']})")))
