"""CLI plumbing around ``modelreg.Client``: settings, which server and token, failing in one line, progress bars."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from modelreg.api.auth import TOKEN_FILE
from modelreg.api.settings import Settings
from modelreg.client import Client
from modelreg.client_errors import ConnectionFailed, ModelregError, Unauthorized

Url = Annotated[str, typer.Option("--url", envvar="MODELREG_URL", help="The modelreg server.")]
Token = Annotated[str | None, typer.Option(
    "--token", envvar=["MODELREG_TOKEN", "MODELREG_ADMIN_TOKEN"], show_default=False,
    help="Bearer token (MODELREG_TOKEN, else MODELREG_ADMIN_TOKEN); default: the file admin-token in "
         "MODELREG_DATA_DIR (./data).")]


def token_file() -> Path:
    """Where the embedded server writes the admin token it generates."""
    return Path(os.environ.get("MODELREG_DATA_DIR") or "data") / TOKEN_FILE


def resolve_token(explicit: str | None) -> str | None:
    """``--token`` / ``MODELREG_ADMIN_TOKEN``, else the embedded server's token file, else None."""
    if explicit and explicit.strip():
        return explicit.strip()
    path = token_file()
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def describe(error: ModelregError, has_token: bool) -> str:
    """The Client's error as one line for a person at a shell, with the flag or variable to change."""
    if isinstance(error, ConnectionFailed) and error.reason == "unreachable":
        return (f"cannot reach the modelreg server at {error.url}: start one with `modelreg serve`, "
                "or set MODELREG_URL (or --url) to a running server")
    message = str(error)
    if isinstance(error, Unauthorized):
        hint = ("check --token, MODELREG_TOKEN or MODELREG_ADMIN_TOKEN" if has_token else
                f"pass --token, set MODELREG_TOKEN, or run where {token_file()} exists")
        message += f" ({hint})"
    return message


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: message`` on stderr and exit."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def load_settings() -> Settings:
    """Settings from the environment, or a one-line message naming the bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(f"MODELREG_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        fail(f"invalid settings: {problems}")


@contextmanager
def connect(url: str, token: str | None) -> Iterator[Client]:
    """A Client for ``url``; a ModelregError inside the block becomes ``error: ...`` and exit 1."""
    resolved = resolve_token(token)
    try:
        with Client(url, resolved) as client:
            yield client
    except ModelregError as exc:
        fail(describe(exc, has_token=resolved is not None))


@contextmanager
def progress_bar(total: int, label: str) -> Iterator[Callable[[int, int | None], None]]:
    """A transfer bar on stderr; yields a Client ``progress`` callback (bytes sent, total)."""
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task(label, total=total)
        yield lambda sent, size: progress.update(task, completed=sent, total=size if size is not None else total)
