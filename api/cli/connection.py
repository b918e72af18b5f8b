"""The CLI's plumbing: settings, which server and token, HTTP calls, streamed uploads, failing in one line."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any, BinaryIO, NoReturn
from urllib.parse import quote

import httpx
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from modelreg.api.auth import TOKEN_FILE
from modelreg.api.settings import Settings

DEFAULT_URL = "http://127.0.0.1:8000"
TIMEOUT = httpx.Timeout(60.0, connect=5.0)
# Upload validation loads the model and runs it once: a large model may take minutes to answer.
UPLOAD_TIMEOUT = httpx.Timeout(None, connect=5.0)

Url = Annotated[str, typer.Option("--url", envvar="MODELREG_URL", help="The modelreg server.")]
Token = Annotated[str | None, typer.Option(
    "--token", envvar=["MODELREG_TOKEN", "MODELREG_ADMIN_TOKEN"], show_default=False,
    help="Bearer token (MODELREG_TOKEN, else MODELREG_ADMIN_TOKEN); default: the file admin-token in "
         "MODELREG_DATA_DIR (./data).")]


class ApiError(Exception):
    """A request that did not succeed, with the message the user should read."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


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


def error_message(response: httpx.Response) -> str:
    """The server's ``detail`` (or V2 ``error``), else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("detail", "error"):
            if key in body:
                value = body[key]
                return value if isinstance(value, str) else json.dumps(value)
    text = response.text.strip()[:500]
    return text or response.reason_phrase or "no details"


class Client:
    """A small admin/predict client for one modelreg server."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        self._has_token = token is not None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=TIMEOUT)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send one request; raise ApiError on a transport failure or a 4xx/5xx answer."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise ApiError(
                f"cannot reach the modelreg server at {self.url}: start one with `modelreg serve`, "
                "or set MODELREG_URL (or --url) to a running server"
            ) from exc
        except httpx.TimeoutException as exc:
            raise ApiError(f"the modelreg server at {self.url} did not answer in time ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise ApiError(f"the request to {self.url} failed: {exc or type(exc).__name__}") from exc
        if response.is_error:
            raise ApiError(self._describe(response), response.status_code)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """``request`` and decode the JSON answer (None for 204)."""
        response = self.request(method, path, **kwargs)
        return None if response.status_code == 204 or not response.content else response.json()

    def _describe(self, response: httpx.Response) -> str:
        message = f"HTTP {response.status_code}: {error_message(response)}"
        if response.status_code == 401:
            hint = ("check --token, MODELREG_TOKEN or MODELREG_ADMIN_TOKEN" if self._has_token else
                    f"pass --token, set MODELREG_TOKEN, or run where {token_file()} exists")
            message += f" ({hint})"
        return message


class ProgressReader:
    """A binary file that reports how far it has been read, so an upload streams with a progress bar."""

    def __init__(self, file: BinaryIO, report: Callable[[int], None]) -> None:
        self._file = file
        self._report = report

    def read(self, size: int = -1) -> bytes:
        chunk = self._file.read(size)
        self._report(self._file.tell())
        return chunk

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        position = self._file.seek(offset, whence)
        self._report(position)
        return position

    def tell(self) -> int:
        return self._file.tell()

    def fileno(self) -> int:
        return self._file.fileno()


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
    """A client for ``url``; an ApiError inside the block becomes ``error: ...`` and exit 1."""
    try:
        with Client(url, resolve_token(token)) as client:
            yield client
    except ApiError as exc:
        fail(str(exc))


def model_path(name: str, *rest: str) -> str:
    """``/admin/models/NAME/...`` with every part escaped, so a name cannot reach another route."""
    return "/admin/models/" + "/".join(quote(part, safe="") for part in (name, *rest))


@contextmanager
def progress_bar(total: int, label: str) -> Iterator[Callable[[int], None]]:
    """A transfer bar on stderr; yields a function taking the number of bytes sent so far."""
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task(label, total=total)
        yield lambda position: progress.update(task, completed=position)
