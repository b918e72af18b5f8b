"""What the CLI prints: JSON with --json, else tables and records that never read server text as markup."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

out = Console(highlight=False)

AsJson = Annotated[bool, typer.Option("--json", help="Print the server's JSON instead of a table.")]


def print_json(data: Any) -> None:
    """The server's JSON, indented, on stdout."""
    typer.echo(json.dumps(data, indent=2))


def _cell(value: Any) -> Text:
    # Text, not str: server strings may hold [brackets] that rich would read as markup.
    if value is None or value == "":
        return Text("-")
    if isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
        return Text(", ".join(str(v) for v in value) or "-")
    if isinstance(value, (dict, list)):
        return Text(json.dumps(value))
    return Text(str(value))


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]], empty: str) -> None:
    """Rows as a table with the known columns they have (every key when none is known)."""
    if not rows:
        out.print(Text(empty))
        return
    shown = [c for c in columns if any(c[0] in row for row in rows)] or [(k, k.upper()) for k in rows[0]]
    table = Table(*(title for _, title in shown))
    for row in rows:
        table.add_row(*(_cell(row.get(key)) for key, _ in shown))
    out.print(table)


def print_record(data: dict[str, Any]) -> None:
    """One object as FIELD / VALUE rows; nested objects become ``outer.inner``."""
    table = Table("FIELD", "VALUE")
    for key, value in data.items():
        if isinstance(value, dict) and value and key != "tags":
            for inner, item in value.items():
                table.add_row(Text(f"{key}.{inner}"), _cell(item))
        else:
            table.add_row(Text(key), _cell(value))
    out.print(table)


def emit(data: Any, as_json: bool, render: Callable[[Any], None]) -> None:
    """``data`` as JSON with --json, else through ``render``."""
    if as_json:
        print_json(data)
    else:
        render(data)
