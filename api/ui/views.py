"""What the console's pages show, built from the registry, the replica board and the rolling series.

Plain data for the templates: every figure is computed here, so the templates only lay it out.
The release settings (traffic split, shadow, guard) come from ``RegistryService.release_state``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from markupsafe import Markup

from modelreg.api.ui.charts import legend, line_chart
from modelreg.registry import ModelRecord, RegistryService
from modelreg.serving.series import BUCKET_SECONDS, HIT, REQUESTS, Totals, Window

RECENT_SECONDS = 300  # "the last minutes" of the models page
POINT_SECONDS = 60  # one chart point a minute over the hour


def release_of(registry: RegistryService, name: str) -> dict[str, Any]:
    """``{"traffic", "shadow", "guard"}`` as the admin API shows them (each None when not set)."""
    data: dict[str, Any] = registry.release_state(name).to_dict()
    return data


def traffic_text(traffic: dict[str, Any] | None) -> str:
    if not traffic or not traffic.get("weights"):
        return "all to production"
    return " / ".join(f"{alias} {weight}%" for alias, weight in traffic["weights"].items())


def shadow_text(shadow: dict[str, Any] | None) -> str:
    if not shadow or shadow.get("version") is None:
        return "none"
    return f"v{shadow['version']} on {shadow['percent']:g}% of requests"


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"≤ {value:g} ms"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.0f}%"


def _seconds(value: float) -> str:
    if value <= 0:
        return "0 s"
    if value < 1:
        return f"{value * 1000:.1f} ms"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min"


@dataclass(frozen=True)
class Figures:
    """A model's serving figures: the last minutes, and the inference seconds saved over the hour."""

    requests_per_second: str
    hit_ratio: str
    p50: str
    p99: str
    saved: str
    pooled: bool

    @classmethod
    def of(cls, window: Window, now: int) -> Figures:
        recent = window.totals(since=now - RECENT_SECONDS)
        span = min(RECENT_SECONDS, window.seconds)
        hour = window.totals()
        return cls(requests_per_second=f"{recent.requests / span:.2f}", hit_ratio=_ratio(recent.hit_ratio),
                   p50=_ms(recent.latency_ms(0.5)), p99=_ms(recent.latency_ms(0.99)),
                   saved=_seconds(hour.saved_seconds), pooled=window.pooled)


@dataclass(frozen=True)
class ModelRow:
    name: str
    runtime: str
    production: int | None
    aliases: dict[str, int]
    traffic: str
    shadow: str
    figures: Figures


def model_row(record: ModelRecord, release: dict[str, Any], window: Window, now: int) -> ModelRow:
    aliases = {a: v for a, v in sorted(record.aliases.items()) if a != "production"}
    return ModelRow(record.name, record.runtime, record.production, aliases, traffic_text(release["traffic"]),
                    shadow_text(release["shadow"]), Figures.of(window, now))


@dataclass
class Charts:
    """The model page's charts and the table behind them."""

    svgs: list[tuple[str, Markup]] = field(default_factory=list)  # (caption, chart)
    legend: list[tuple[str, str]] = field(default_factory=list)
    table: list[dict[str, str]] = field(default_factory=list)
    pooled: bool = False


def _label(version: str) -> str:
    return f"v{version}" if version else "no version"


def charts(window: Window) -> Charts:
    """Requests, hits and p99 latency a minute, per version, over the window."""
    per_point = POINT_SECONDS // BUCKET_SECONDS
    buckets = window.buckets()
    points = [buckets[i:i + per_point] for i in range(0, len(buckets), per_point)]
    versions = sorted(window.versions, key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0, v))
    requests: dict[str, list[float | None]] = {}
    hits: dict[str, list[float | None]] = {}
    p99: dict[str, list[float | None]] = {}
    table = []
    for version in versions:
        cells = window.versions[version]
        label = _label(version)
        requests[label], hits[label], p99[label] = [], [], []
        for point in points:
            totals = Totals()
            for bucket in point:
                if bucket in cells:
                    totals.add(cells[bucket])
            requests[label].append(totals.slots[REQUESTS])
            hits[label].append(totals.slots[HIT])
            p99[label].append(totals.latency_ms(0.99) if totals.requests else None)
        whole = window.totals(version)
        table.append({"version": label, "requests": str(whole.requests), "hits": str(whole.hits),
                      "hit_ratio": _ratio(whole.hit_ratio), "errors": str(whole.errors),
                      "p50": _ms(whole.latency_ms(0.5)), "p99": _ms(whole.latency_ms(0.99)),
                      "saved": _seconds(whole.saved_seconds)})
    x_labels = [datetime.fromtimestamp(p[0], UTC).strftime("%H:%M") for p in points]
    out = Charts(legend=legend(list(requests)), table=table, pooled=window.pooled)
    for chart_id, title, unit, lines in (("chart-requests", "Requests a minute", "requests/min", requests),
                                         ("chart-hits", "Cache hits a minute", "hits/min", hits),
                                         ("chart-latency", "p99 latency (ms, upper bound)", "ms", p99)):
        out.svgs.append((title, line_chart(chart_id, f"{title}, per version (UTC)", unit, lines, x_labels)))
    return out


def history_rows(records: list[Any]) -> list[dict[str, Any]]:
    """The history newest first, as the timeline shows it."""
    rows = []
    for record in reversed(records):
        data = record.to_dict()
        rows.append({"action": data["action"], "actor": data["actor"], "alias": data.get("alias"),
                     "from": data.get("from_version"), "to": data.get("to_version"),
                     "at": data["at"][:19].replace("T", " ") + " UTC",
                     "reason": data.get("reason"), "generation": data.get("generation")})
    return rows


def replica_rows(summary: list[dict[str, Any]], replicas: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per live replica: id, host, this one or not, last seen, what it serves, loaded and failed versions."""
    by_id = {r.get("id"): r for r in replicas}
    rows = []
    for entry in summary:
        replica = by_id.get(entry["id"], {})
        rows.append({"id": entry["id"], "host": replica.get("host", ""), "this": replica.get("this", False),
                     "last_seen": replica.get("last_seen", ""),
                     "serving": ", ".join(f"{a} → v{v}" for a, v in sorted(entry["serving"].items())) or "nothing",
                     "loaded": ", ".join(f"v{x['version']} ({x['device']})" for x in entry["loaded"]) or "none",
                     "failed": [f"v{x['version']}: {x['reason']}" for x in entry["failed"]]})
    return rows
