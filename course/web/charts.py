"""Small SVG charts drawn on the server: no scripts, fonts or CDNs.

Each chart scales with its container (``viewBox`` and ``width: 100%``), so it stays
readable in a narrow window; the numbers are also in a table next to it for screen readers.
"""

from __future__ import annotations

from html import escape

from markupsafe import Markup

COLOURS = ("#1d5b6e", "#8aa8a1", "#b5542f")
# A phone-sized canvas: on a narrow screen the chart is drawn at about 1:1, so its 12-13px
# text stays readable; on a wide screen CSS caps its width.
WIDTH = 360
ROW = 26
LABEL = 118


def bar_chart(items: list[tuple[str, int]], title: str) -> Markup:
    """Horizontal bars, one per (label, value)."""
    top = max((v for _, v in items), default=0) or 1
    height = ROW * len(items) + 8
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg" '
        'font-family="Helvetica, Arial, sans-serif">',
        f"<title>{escape(title)}</title>",
    ]
    for i, (label, value) in enumerate(items):
        y = i * ROW + 4
        bar = (WIDTH - LABEL - 40) * value / top
        parts.append(
            f'<text x="{LABEL - 8}" y="{y + 17}" text-anchor="end" font-size="12" '
            f'fill="#1f2a30">{escape(label)}</text>'
            f'<rect x="{LABEL}" y="{y + 3}" width="{bar:.1f}" height="{ROW - 8}" rx="3" '
            f'fill="{COLOURS[0]}"/>'
            f'<text x="{LABEL + bar + 6:.1f}" y="{y + 17}" font-size="12" '
            f'fill="#1f2a30">{value}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def stacked_bars(rows: list[tuple[str, list[int]]], series: list[str], title: str) -> Markup:
    """One horizontal bar per row, split into shares of each series (100% wide)."""
    height = ROW * len(rows) + 34
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg" '
        'font-family="Helvetica, Arial, sans-serif">',
        f"<title>{escape(title)}</title>",
    ]
    for i, (label, values) in enumerate(rows):
        y = i * ROW + 4
        total = sum(values)
        parts.append(
            f'<text x="{LABEL - 8}" y="{y + 17}" text-anchor="end" font-size="12" '
            f'fill="#1f2a30">{escape(label)}</text>'
        )
        x = float(LABEL)
        span = WIDTH - LABEL - 10
        if total == 0:
            parts.append(
                f'<text x="{LABEL}" y="{y + 17}" font-size="12" fill="#4a5a62">no check-ins</text>'
            )
            continue
        for j, value in enumerate(values):
            width = span * value / total
            if width <= 0:
                continue
            parts.append(
                f'<rect x="{x:.1f}" y="{y + 3}" width="{width:.1f}" height="{ROW - 8}" '
                f'fill="{COLOURS[j % len(COLOURS)]}"><title>{escape(series[j])}: {value}</title>'
                f"</rect>"
            )
            x += width
    legend_y = len(rows) * ROW + 20
    x = 8
    for j, name in enumerate(series):
        parts.append(
            f'<rect x="{x}" y="{legend_y - 10}" width="12" height="12" '
            f'fill="{COLOURS[j % len(COLOURS)]}"/>'
            f'<text x="{x + 16}" y="{legend_y}" font-size="12" fill="#1f2a30">'
            f"{escape(name)}</text>"
        )
        x += 16 + 6 * len(name) + 10
    parts.append("</svg>")
    return Markup("".join(parts))
