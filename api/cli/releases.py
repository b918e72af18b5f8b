"""``modelreg traffic`` and ``modelreg shadow``, and the guard options of ``modelreg promote``: releasing safely."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.text import Text

from modelreg.api.cli.connection import Token, Url, connect
from modelreg.api.cli.output import AsJson, emit, out
from modelreg.client import DEFAULT_URL
from modelreg.client_types import GuardLimits

Name = Annotated[str, typer.Argument(help="The model's name.", show_default=False)]


def parse_arms(values: list[str]) -> dict[str, int]:
    """``ALIAS=WEIGHT`` arguments as the split's weights."""
    weights: dict[str, int] = {}
    for item in values:
        alias, sep, raw = item.partition("=")
        try:
            weight = int(raw)
        except ValueError:
            weight = -1
        if not sep or not alias.strip() or weight < 0:
            raise typer.BadParameter(f"{item!r} is not ALIAS=WEIGHT with a whole-number weight, e.g. canary=10",
                                     param_hint="ARMS")
        if alias.strip() in weights:
            raise typer.BadParameter(f"alias {alias.strip()!r} is given twice", param_hint="ARMS")
        weights[alias.strip()] = weight
    return weights


def describe_split(data: dict[str, Any]) -> str:
    weights = data.get("weights")
    if not weights:
        return f"{data.get('model')}: no traffic split, every request goes to production"
    return f"{data.get('model')}: traffic " + " ".join(f"{alias}={weight}" for alias, weight in weights.items())


def traffic(
    name: Name,
    arms: Annotated[list[str] | None, typer.Argument(
        metavar="[ALIAS=WEIGHT]...", help="The split, e.g. production=90 canary=10 (summing to 100).",
        show_default=False)] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Send every request to production again.")] = False,
    url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False,
) -> None:
    """Show, set or --clear the weighted split of a model's production route among its aliases."""
    if clear and arms:
        raise typer.BadParameter("give the split's arms or --clear, not both")
    weights = parse_arms(arms) if arms else None
    with connect(url, token) as client:
        if clear:
            client.clear_traffic(name)
            result: dict[str, Any] = {"model": name, "weights": None}
        elif weights is not None:
            result = client.set_traffic(name, weights)
        else:
            result = client.traffic(name)
    emit(result, as_json, lambda data: out.print(Text(describe_split(data))))


def describe_shadow(data: dict[str, Any]) -> str:
    if data.get("version") is None:
        return f"{data.get('model')}: no shadow"
    diff = data.get("max_abs_diff")
    return (f"{data.get('model')}: shadow v{data['version']} on {data.get('percent'):g}% of production requests; "
            f"compared {data.get('compared', 0)}, agreed {data.get('agreed', 0)}, dropped {data.get('dropped', 0)}, "
            f"max abs diff {'-' if diff is None else f'{diff:g}'}")


def shadow(
    name: Name,
    version: Annotated[int | None, typer.Argument(min=1, help="The version to shadow.", show_default=False)] = None,
    percent: Annotated[float | None, typer.Option(
        "--percent", min=0, max=100, help="Share of production requests it also runs (above 0, at most 100).")] = None,
    stop: Annotated[bool, typer.Option("--stop", help="Stop shadowing.")] = False,
    url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False,
) -> None:
    """Show the shadow and what it compared, run VERSION on --percent of production requests, or --stop."""
    if stop and (version is not None or percent is not None):
        raise typer.BadParameter("--stop takes no VERSION or --percent")
    if (version is None) != (percent is None):
        raise typer.BadParameter("give a VERSION and --percent together, e.g. `modelreg shadow iris 3 --percent 20`")
    with connect(url, token) as client:
        if stop:
            client.clear_shadow(name)
            result: dict[str, Any] = {"model": name, "version": None, "percent": None}
            emit(result, as_json, lambda _: out.print(Text(f"{name}: shadow stopped")))
        elif version is not None and percent is not None:
            result = client.set_shadow(name, version, percent)
            emit(result, as_json, lambda r: out.print(Text(
                f"{name}: shadow v{r.get('version')} on {r.get('percent'):g}% of production requests")))
        else:
            emit(client.shadow(name), as_json, lambda data: out.print(Text(describe_shadow(data))))


# promote --guard-* ------------------------------------------------------------------------------

GuardErrorRate = Annotated[float | None, typer.Option(
    "--guard-error-rate", min=0, max=1, help="Roll back when more than this share of requests fail (0.01 = 1 %).")]
GuardP99 = Annotated[float | None, typer.Option(
    "--guard-p99-ms", min=0, help="Roll back when the 99th percentile latency exceeds this many ms.")]
GuardWindow = Annotated[int | None, typer.Option(
    "--guard-window", min=1, max=86_400, help="Seconds the guard watches the new version (default 300).")]
GuardMinRequests = Annotated[int | None, typer.Option(
    "--guard-min-requests", min=1, help="Judge only after this many requests to the new version.")]


def guard_limits(error_rate: float | None, p99_ms: float | None, window: int | None,
                 min_requests: int | None) -> GuardLimits | None:
    """The guard of ``promote`` from its options; None when none was given."""
    limits: GuardLimits = {}
    if window is not None:
        limits["window_seconds"] = window
    if min_requests is not None:
        limits["min_requests"] = min_requests
    if error_rate is not None:
        limits["max_error_rate"] = error_rate
    if p99_ms is not None:
        limits["max_p99_ms"] = p99_ms
    return limits or None


def print_guard(change: dict[str, Any]) -> None:
    """One line saying what the guard watches, after print_change."""
    guard = change.get("guard")
    if not isinstance(guard, dict):
        return
    spec = guard.get("spec") or {}
    limits = []
    if spec.get("max_error_rate") is not None:
        limits.append(f"error rate > {spec['max_error_rate']:g}")
    if spec.get("max_p99_ms") is not None:
        limits.append(f"p99 > {spec['max_p99_ms']:g} ms")
    after = f" (after {spec['min_requests']} requests)" if spec.get("min_requests") else ""
    out.print(Text(f"guarded for {spec.get('window_seconds')}s until {guard.get('ends_at')}: rolls back to "
                   f"v{guard.get('replaced')} on {' or '.join(limits)}{after}"))
