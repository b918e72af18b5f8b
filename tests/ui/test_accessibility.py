"""The console's palette is readable: every text colour against its background has a contrast of >= 4.5:1
(WCAG AA), computed from the shipped CSS itself, and the CSS uses no colour outside that palette."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import modelreg.api.ui as ui
from modelreg.api.ui.charts import PALETTE

CSS = (Path(ui.__file__).parent / "static" / "console.css").read_text()
ROOT_BLOCK = re.search(r":root\s*\{(.*?)\}", CSS, re.S)
assert ROOT_BLOCK is not None
COLOURS = dict(re.findall(r"--([\w-]+):\s*(#[0-9a-fA-F]{6})\s*;", ROOT_BLOCK.group(1)))


def luminance(hex_colour: str) -> float:
    def channel(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.03928 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def contrast(a: str, b: str) -> float:
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def pairs() -> list[tuple[str, str]]:
    """Each --X-fg on --X-bg where there is one, else on the page and on cards; header links on the header."""
    found = []
    for name in COLOURS:
        if not name.endswith("-fg"):
            continue
        base = name[:-3]
        if base + "-bg" in COLOURS:
            found.append((name, base + "-bg"))
        elif base.startswith("header"):
            found.append((name, "header-bg"))
        else:
            found += [(name, "page-bg"), (name, "card-bg")]
    return found


def test_the_palette_is_read_from_the_css() -> None:
    assert {"page-bg", "page-fg", "button-bg", "button-fg", "muted-fg", "link-fg"} <= set(COLOURS)
    assert len(pairs()) >= 10


@pytest.mark.parametrize(("fg", "bg"), pairs())
def test_text_has_a_contrast_of_at_least_4_5(fg: str, bg: str) -> None:
    ratio = contrast(COLOURS[fg], COLOURS[bg])
    assert ratio >= 4.5, f"--{fg} {COLOURS[fg]} on --{bg} {COLOURS[bg]}: {ratio:.2f}:1"


@pytest.mark.parametrize("colour", PALETTE)
def test_chart_lines_stand_out_from_the_page(colour: str) -> None:
    assert contrast(colour, COLOURS["page-bg"]) >= 4.5
    assert contrast(colour, COLOURS["card-bg"]) >= 4.5


def test_no_colour_is_written_outside_the_palette() -> None:
    outside = CSS[ROOT_BLOCK.end():]
    assert re.findall(r"#[0-9a-fA-F]{3,8}\b|rgba?\(|hsla?\(", outside) == []
