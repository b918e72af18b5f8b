"""Line charts as inline SVG, drawn on the server: no JavaScript, no chart library, readable by a screen reader.

Each chart carries ``role="img"``, a title and a description; the page puts the same figures in a
table beside it (the charts are a picture of the table, not the only copy of it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 170
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 12, 28
# Line colours, one per version in turn; each is checked against the page background (>= 4.5:1) in tests/ui.
PALETTE = ("#1f5fbf", "#a3470a", "#2e7d32", "#7b3fa0", "#b0003a", "#00677f")


def _nice(value: float) -> float:
    """A round axis maximum at or above ``value``."""
    if value <= 0:
        return 1.0
    step = 1.0
    while step * 10 <= value:
        step *= 10
    while step > value * 10:
        step /= 10
    for factor in (1, 2, 5, 10):
        if step * factor >= value:
            return step * factor
    return step * 10


def _fmt(value: float) -> str:
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.2g}"


def line_chart(chart_id: str, title: str, unit: str, lines: Mapping[str, Sequence[float | None]],
               x_labels: Sequence[str]) -> Markup:
    """One chart: a line per entry of ``lines`` (label -> a value per x, None = no data there)."""
    points = max((len(v) for v in lines.values()), default=0)
    top = _nice(max((x for v in lines.values() for x in v if x is not None), default=0.0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def xy(i: int, value: float) -> str:
        x = LEFT + (plot_w * i / max(points - 1, 1))
        y = TOP + plot_h * (1 - value / top)
        return f"{x:.1f},{y:.1f}"

    summary = "; ".join(f"{label}: latest {_fmt(next((x for x in reversed(v) if x is not None), 0.0))} {unit}"
                        for label, v in lines.items()) or "no data yet"
    parts = [f'<svg class="chart" id="{escape(chart_id)}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             f'aria-labelledby="{escape(chart_id)}-title {escape(chart_id)}-desc" preserveAspectRatio="none">',
             f'<title id="{escape(chart_id)}-title">{escape(title)}</title>',
             f'<desc id="{escape(chart_id)}-desc">{escape(summary)}</desc>']
    for fraction in (0.0, 0.5, 1.0):
        y = TOP + plot_h * (1 - fraction)
        parts.append(f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}"/>')
        parts.append(f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
                     f'{escape(_fmt(top * fraction))}</text>')
    if x_labels:
        for i in (0, len(x_labels) // 2, len(x_labels) - 1):
            x = LEFT + plot_w * i / max(len(x_labels) - 1, 1)
            anchor = "start" if i == 0 else "end" if i == len(x_labels) - 1 else "middle"
            parts.append(f'<text class="axis" x="{x:.1f}" y="{HEIGHT - 8}" text-anchor="{anchor}">'
                         f'{escape(x_labels[i])}</text>')
    for n, (label, values) in enumerate(lines.items()):
        colour = PALETTE[n % len(PALETTE)]
        runs: list[list[str]] = [[]]
        for i, value in enumerate(values):
            if value is None:
                runs.append([])
            else:
                runs[-1].append(xy(i, value))
        for run in runs:
            if len(run) == 1:
                cx, cy = run[0].split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{colour}">'
                             f'<title>{escape(label)}</title></circle>')
            elif run:
                parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(run)}">'
                             f'<title>{escape(label)}</title></polyline>')
    parts.append("</svg>")
    return Markup("".join(parts))


def legend(labels: Sequence[str]) -> list[tuple[str, str]]:
    """(label, colour) in the charts' order."""
    return [(label, PALETTE[n % len(PALETTE)]) for n, label in enumerate(labels)]
