"""The ``modelreg`` command: run the server, migrate its database, and drive the admin API over HTTP."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from modelreg.api.cli.connection import Token, Url, connect, fail, load_settings, progress_bar
from modelreg.api.cli.output import AsJson, emit, out, print_json, print_record, print_table
from modelreg.api.cli.releases import (
    GuardErrorRate,
    GuardMinRequests,
    GuardP99,
    GuardWindow,
    guard_limits,
    print_guard,
    shadow,
    traffic,
)
from modelreg.api.cli.tokens import tokens_app
from modelreg.api.settings import Settings
from modelreg.client import DEFAULT_URL

# Tracebacks with locals would print the admin token; a failure here is a message, not a dump.
app = typer.Typer(help="modelreg: a model registry and inference server.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)
db_app = typer.Typer(help="The registry database schema (Alembic revisions).", no_args_is_help=True)
models_app = typer.Typer(help="Create, list, show, update and delete models.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(models_app, name="models")
app.add_typer(tokens_app, name="tokens")
app.command()(traffic)
app.command()(shadow)

Name = Annotated[str, typer.Argument(help="The model's name.", show_default=False)]

MODEL_COLUMNS = [("name", "NAME"), ("runtime", "RUNTIME"), ("production", "PRODUCTION"),
                 ("latest_version", "LATEST"), ("generation", "GENERATION"), ("description", "DESCRIPTION")]
VERSION_COLUMNS = [("version", "VERSION"), ("status", "STATUS"), ("format", "FORMAT"), ("size_bytes", "BYTES"),
                   ("sha256", "SHA256"), ("aliases", "ALIASES"), ("created_at", "CREATED"), ("error", "ERROR")]
HISTORY_COLUMNS = [("at", "AT"), ("action", "ACTION"), ("alias", "ALIAS"), ("from_version", "FROM"),
                   ("to_version", "TO"), ("generation", "GENERATION"), ("actor", "ACTOR"), ("reason", "REASON")]
REPLICA_COLUMNS = [("id", "REPLICA"), ("host", "HOST"), ("started_at", "STARTED"), ("last_seen", "LAST SEEN"),
                   ("model", "MODEL"), ("serving", "SERVING"), ("loaded", "LOADED"), ("failed", "FAILED")]
PLUGIN_COLUMNS = [("name", "NAME"), ("status", "STATUS"), ("distribution", "DISTRIBUTION"), ("version", "VERSION"),
                  ("formats", "FORMATS"), ("devices", "DEVICES")]


# arguments ------------------------------------------------------------------------------------

def parse_tags(values: list[str] | None) -> dict[str, str] | None:
    """``--tag KEY=VALUE`` options as a dict (None when none was given)."""
    if not values:
        return None
    tags = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--tag")
        tags[key.strip()] = value
    return tags


def read_json_arg(raw: str, option: str) -> Any:
    """Parse a JSON option value; ``-`` reads stdin and ``@path`` reads a file."""
    if raw == "-":
        raw = sys.stdin.read()
    elif raw.startswith("@"):
        try:
            raw = Path(raw[1:]).read_text()
        except OSError as exc:
            raise typer.BadParameter(f"cannot read {raw[1:]}: {exc.strerror}", param_hint=option) from exc
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not valid JSON: {exc}", param_hint=option) from exc


# server and database --------------------------------------------------------------------------

@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(
        min=1, help="Worker processes on this machine, each a replica of its own; /metrics answers for all.")] = 1,
    reload: Annotated[bool, typer.Option("--reload/--no-reload", help="Restart on code changes (dev).")] = False,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Run the API server; every setting comes from MODELREG_* environment variables.

    SIGTERM stops it gracefully: no new connections, requests in flight finish (for up to
    MODELREG_SHUTDOWN_GRACE_SECONDS), models are unloaded, and the exit status is 0.
    """
    from modelreg.api import server

    settings = prepare_embedded()
    server.run(settings, host=host, port=port, workers=workers, reload=reload, log_level=log_level)


def prepare_embedded() -> Settings:
    """Migrate and make the admin token once, here, so several workers do not race to do it."""
    from modelreg.api.auth import resolve_admin_token
    from modelreg.registry import schema

    settings = load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.should_auto_migrate():
        schema.upgrade(settings.resolved_database_url())
    resolve_admin_token(settings)
    return settings


def database_url() -> str:
    """The registry URL the server would use; the embedded default's folder is created."""
    settings = load_settings()
    if settings.is_embedded_database():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    return str(settings.resolved_database_url())


def revisions(url: str) -> tuple[str | None, str | None]:
    """(current, head) revisions of the database at ``url``."""
    from modelreg.registry import open_registry, schema

    with open_registry(url, check_schema=False) as opened:
        return schema.current_revision(opened.engine), schema.head_revision(url)


def shown_url(url: str) -> str:
    """``url`` without its password."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def migrate(action: str, revision: str, as_json: bool) -> None:
    """Run an Alembic upgrade or downgrade and say what moved."""
    from modelreg.registry import schema

    url = database_url()
    try:
        before, _ = revisions(url)
        (schema.upgrade if action == "upgrade" else schema.downgrade)(url, revision)
        after, head = revisions(url)
    except Exception as exc:  # Alembic and drivers raise many kinds; the user needs the message
        fail(f"{action} of {shown_url(url)} failed: {exc}")
    if as_json:
        print_json({"database": shown_url(url), "from": before, "to": after, "head": head})
    elif before == after:
        out.print(Text(f"{shown_url(url)}: already at {after or 'base (empty)'}, nothing to do"))
    else:
        out.print(Text(f"{shown_url(url)}: {action}d from {before or 'base (empty)'} to {after or 'base (empty)'}"))


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
               as_json: AsJson = False) -> None:
    """Upgrade the registry schema (MODELREG_DATABASE_URL, default the embedded SQLite file)."""
    migrate("upgrade", revision, as_json)


@db_app.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument(help="Target revision, or 'base' for empty.")],
                 yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
                 as_json: AsJson = False) -> None:
    """Downgrade the registry schema; tables a revision added are dropped with their data."""
    if not yes:
        typer.confirm(f"Downgrade {shown_url(database_url())} to {revision}? Data may be lost", abort=True)
    migrate("downgrade", revision, as_json)


@db_app.command("current")
def db_current(as_json: AsJson = False) -> None:
    """Show the schema revision of the registry database and the one this code needs."""
    url = database_url()
    try:
        current, head = revisions(url)
    except Exception as exc:  # unreachable server, bad credentials: show the driver's words
        fail(f"cannot read the schema revision of {shown_url(url)}: {exc}")
    if as_json:
        print_json({"database": shown_url(url), "current": current, "head": head})
    elif current == head:
        out.print(Text(f"{current} (head)"))
    else:
        out.print(Text(f"{current or 'base (empty)'}; this modelreg needs {head}: run `modelreg db upgrade`"))


@app.command()
def plugins(url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False) -> None:
    """List the server's runtime plugins and whether each is available."""
    with connect(url, token) as client:
        emit(client.plugins(), as_json,
             lambda rows: print_table(rows, PLUGIN_COLUMNS, "no runtime plugins are installed"))


# models ---------------------------------------------------------------------------------------

@models_app.command("create")
def models_create(
    name: Name,
    runtime: Annotated[str, typer.Option("--runtime", "-r", help="Runtime plugin (see `modelreg plugins`).")],
    description: Annotated[str | None, typer.Option(help="Free text.")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="KEY=VALUE; repeat for several.")] = None,
    cache_ttl: Annotated[int | None, typer.Option("--cache-ttl", min=0, help="Cache seconds (0: never).")] = None,
    url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False,
) -> None:
    """Register a model served by a runtime plugin."""
    with connect(url, token) as client:
        emit(client.create_model(name, runtime, description=description, tags=parse_tags(tag),
                                 cache_ttl_seconds=cache_ttl), as_json, print_record)


@models_app.command("list")
def models_list(url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False) -> None:
    """List every model with its production version."""
    with connect(url, token) as client:
        emit(client.list_models(), as_json,
             lambda rows: print_table(rows, MODEL_COLUMNS, "no models yet: create one with `modelreg models create`"))


@models_app.command("show")
def models_show(name: Name, url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False) -> None:
    """Show one model: policy, aliases, generation."""
    with connect(url, token) as client:
        emit(client.get_model(name), as_json, print_record)


@models_app.command("update")
def models_update(
    name: Name,
    description: Annotated[str | None, typer.Option(help="Free text.")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="KEY=VALUE, repeatable; replaces all tags.")] = None,
    cache: Annotated[bool | None, typer.Option("--cache/--no-cache", help="Cache answers or not.")] = None,
    cache_ttl: Annotated[int | None, typer.Option("--cache-ttl", min=0, help="Cache seconds (0: never).")] = None,
    max_batch_size: Annotated[int | None, typer.Option(min=1, help="Largest micro-batch.")] = None,
    max_delay_ms: Annotated[int | None, typer.Option(min=0, help="Longest wait to fill a batch.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:N, or 'default' for the server's.")] = None,
    url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False,
) -> None:
    """Change a model's policy; only the options given are sent."""
    body: dict[str, Any] = {k: v for k, v in {
        "description": description, "tags": parse_tags(tag), "cache_enabled": cache, "cache_ttl_seconds": cache_ttl,
        "max_batch_size": max_batch_size, "max_delay_ms": max_delay_ms, "device": device,
    }.items() if v is not None}
    if body.get("device") == "default":
        body["device"] = None  # null puts the model back on the server's default device
    if not body:
        raise typer.BadParameter("nothing to change: give at least one option (see --help)")
    with connect(url, token) as client:
        emit(client.update_model(name, **body), as_json, print_record)


@models_app.command("delete")
def models_delete(name: Name, yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
                  url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False) -> None:
    """Delete a model with its versions and aliases (its history is kept)."""
    if not yes:
        typer.confirm(f"Delete model {name!r} with all its versions?", abort=True)
    with connect(url, token) as client:
        client.delete_model(name)
    emit({"deleted": name}, as_json, lambda _: out.print(Text(f"deleted model {name}")))


# versions and production ----------------------------------------------------------------------

def upload_metadata(metadata: str | None, metadata_file: Path | None, fmt: str | None) -> dict[str, Any]:
    """The ``metadata`` form field: --metadata or --metadata-file, with --format merged in."""
    if metadata is not None and metadata_file is not None:
        raise typer.BadParameter("give --metadata or --metadata-file, not both")
    value: Any = {}
    if metadata is not None:
        value = read_json_arg(metadata, "--metadata")
    elif metadata_file is not None:
        value = read_json_arg(f"@{metadata_file}", "--metadata-file")
    if not isinstance(value, dict):
        raise typer.BadParameter('metadata must be a JSON object, e.g. {"signature": {...}}')
    return {**value, "format": fmt} if fmt else value


@app.command()
def upload(
    name: Name,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="The artifact.")],
    metadata: Annotated[str | None, typer.Option(help="JSON object: signature and free keys ('-' = stdin).")] = None,
    metadata_file: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="Metadata file.")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="Artifact format when the name does not say it.")] = None,
    url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False,
) -> None:
    """Upload a new version; exits 1 when the server could not validate it."""
    meta = upload_metadata(metadata, metadata_file, fmt)
    with connect(url, token) as client, progress_bar(file.stat().st_size, f"uploading {file.name}") as report:
        record = client.upload(name, file, metadata=meta or None, progress=report)
    emit(record, as_json, lambda r: out.print(Text(
        f"{name} version {r['version']}: {r['status']} (format {r.get('format', '?')}, sha256 {r['sha256'][:12]})")))
    if record.get("status") != "ready":
        fail(f"version {record['version']} of {name} cannot serve: {record.get('error') or record.get('status')}")


@app.command()
def versions(name: Name, url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False) -> None:
    """List a model's versions with their status and aliases."""
    with connect(url, token) as client:
        rows = client.list_versions(name)
    short = [{**row, "sha256": str(row.get("sha256", ""))[:12]} for row in rows]
    emit(rows, as_json, lambda _: print_table(short, VERSION_COLUMNS, f"{name} has no versions yet: `modelreg upload`"))


def print_change(change: dict[str, Any]) -> None:
    """What promote or rollback did to production, in one line (and the guard watching it); with --wait, which
    replicas serve it."""
    model, previous, production = change.get("model"), change.get("previous"), change.get("production")
    if previous == production:
        out.print(Text(f"{model}: version {production} is already in production"))
    else:
        out.print(Text(f"{model}: production {previous or 'none'} -> {production} "
                       f"(cache generation {change.get('generation')})"))
    print_guard(change)
    replicas = change.get("replicas")
    if not isinstance(replicas, dict):
        return
    served, missing = replicas.get("served") or [], replicas.get("not_serving") or []
    out.print(Text(f"served by {len(served)} of {len(served) + len(missing)} live replicas"))
    for replica in missing:
        out.print(Text(f"  not serving on {replica.get('id')}: {replica.get('reason')}"))
    if missing:
        out.print(Text("the change is committed; `modelreg status` shows what each replica serves"))


Wait = Annotated[float | None, typer.Option(
    "--wait", min=0, max=300, help="Seconds to wait for every live replica to serve it (then report who does not).")]


def exit_if_incomplete(change: dict[str, Any]) -> None:
    """Exit 3 when --wait ended with replicas that do not serve the new version (the change stays)."""
    if change.get("complete") is False:
        raise typer.Exit(3)


@app.command()
def promote(name: Name, version: Annotated[int, typer.Argument(min=1, help="The version to serve.")],
            wait: Wait = None, guard_error_rate: GuardErrorRate = None, guard_p99_ms: GuardP99 = None,
            guard_window: GuardWindow = None, guard_min_requests: GuardMinRequests = None,
            url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False) -> None:
    """Make a version the production version (the server loads it first and refuses one that cannot load).

    With --guard-error-rate and/or --guard-p99-ms the replicas watch it for --guard-window seconds and
    roll back to the version it replaced when a limit breaks (history actor "guard").
    """
    guard = guard_limits(guard_error_rate, guard_p99_ms, guard_window, guard_min_requests)
    with connect(url, token) as client:
        change = client.promote(name, version, wait_seconds=wait, guard=guard)
    emit(change, as_json, print_change)
    exit_if_incomplete(change)


@app.command()
def rollback(
    name: Name,
    to: Annotated[int | None, typer.Option("--to", min=1, help="Version to return to (default: the previous).")] = None,
    wait: Wait = None, url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False,
) -> None:
    """Return production to the previous version (or to --to)."""
    with connect(url, token) as client:
        change = client.rollback(name, to, wait_seconds=wait)
    emit(change, as_json, print_change)
    exit_if_incomplete(change)


def replica_rows(replicas: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per replica and model it knows (a replica that knows none gets one row)."""
    rows = []
    for replica in replicas:
        base = {k: replica.get(k) for k in ("id", "host", "started_at", "last_seen")}
        if replica.get("this"):
            base["id"] = f"{base['id']} (this)"
        models = replica.get("models") or {}
        if not models:
            rows.append(base)
        for name, entry in sorted(models.items()):
            rows.append({**base, "model": name,
                         "serving": ", ".join(f"{a}=v{v}" for a, v in sorted((entry.get("serving") or {}).items())),
                         "loaded": ", ".join(f"v{m['version']}@{m['device']}" for m in entry.get("loaded") or []),
                         "failed": "; ".join(f"v{f['version']}: {f['reason']}" for f in entry.get("failed") or [])})
    return rows


@app.command()
def status(url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False) -> None:
    """Every live replica and, per model, what it serves, has loaded and could not load."""
    with connect(url, token) as client:
        replicas = client.replicas()
    emit(replicas, as_json, lambda rows: print_table(replica_rows(rows), REPLICA_COLUMNS, "no live replicas"))


@app.command()
def history(name: Name, url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False) -> None:
    """Every change to a model, oldest first."""
    with connect(url, token) as client:
        emit(client.history(name), as_json,
             lambda rows: print_table(rows, HISTORY_COLUMNS, "no history"))


@app.command()
def alias(name: Name, alias_name: Annotated[str, typer.Argument(metavar="ALIAS", help="e.g. staging.")],
          version: Annotated[int | None, typer.Argument(min=1, help="The version it points at.")] = None,
          delete: Annotated[bool, typer.Option("--delete", help="Remove the alias.")] = False,
          url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False) -> None:
    """Point an alias at a version, or remove it with --delete."""
    if delete == (version is not None):
        raise typer.BadParameter("give a VERSION to set the alias, or --delete to remove it")
    with connect(url, token) as client:
        if version is None:
            client.delete_alias(name, alias_name)
            result: dict[str, Any] = {"model": name, "alias": alias_name, "deleted": True}
        else:
            result = client.set_alias(name, alias_name, version)
    emit(result, as_json, lambda r: out.print(Text(
        f"{name}: alias {alias_name} removed" if delete else f"{name}: alias {alias_name} -> {r.get('version')}")))


@app.command()
def purge(name: Name, url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False) -> None:
    """Drop every cached answer of a model (a new cache generation)."""
    with connect(url, token) as client:
        change = client.purge(name)
    emit(change, as_json, lambda c: out.print(Text(f"{name}: cache purged (generation {c.get('generation')})")))


@app.command()
def predict(
    name: Name,
    payload: Annotated[str, typer.Option(
        "--json", help='Request body, e.g. \'{"inputs": [[1.0]]}\'; "-" reads stdin, @FILE a file.')],
    version: Annotated[int | None, typer.Option(min=1, help="A numbered version instead of production.")] = None,
    alias_name: Annotated[str | None, typer.Option("--alias", help="An alias instead of production.")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Compute afresh (Cache-Control: no-cache).")] = False,
    url: Url = DEFAULT_URL, token: Token = None,
) -> None:
    """Predict; prints the response body, and X-Model-Version / X-Cache on stderr.

    The token is sent when one is at hand: servers with MODELREG_PREDICT_AUTH=on need one (any role).
    """
    if version is not None and alias_name is not None:
        raise typer.BadParameter("give --version or --alias, not both")
    body = read_json_arg(payload, "--json")
    with connect(url, token) as client:
        answer = client.predict_body(name, body, version, alias_name, cache_control="no-cache" if no_cache else None)
    typer.echo(answer.body.decode())
    typer.echo(f"X-Model-Version: {answer.version}", err=True)
    typer.echo(f"X-Cache: {answer.cache or '-'}", err=True)
