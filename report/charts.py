"""Small SVG charts, embedded in the report as images (no plotting library, no JavaScript)."""

from __future__ import annotations

import base64
import datetime as dt
import html
import math
from collections.abc import Sequence

from .text import visible

__all__ = ["line_chart", "bar_chart", "heatmap", "as_img"]

PALETTE = (
    "#3366cc",
    "#dc3912",
    "#ff9900",
    "#109618",
    "#990099",
    "#0099c6",
    "#dd4477",
    "#66aa00",
    "#b82e2e",
    "#316395",
)
W, H = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 56


def _fmt(value: float, unit: str) -> str:
    if unit == "percent":
        return f"{value * 100:.1f}%"
    if unit == "seconds":
        if value >= 86400:
            return f"{value / 86400:.1f} d"
        if value >= 3600:
            return f"{value / 3600:.1f} h"
        if value >= 60:
            return f"{value / 60:.1f} min"
        if value >= 1:
            return f"{value:.1f} s"
        return f"{value * 1000:.0f} ms"
    if abs(value) >= 1e6:
        return f"{value / 1e6:.1f}M"
    if abs(value) >= 1e3:
        return f"{value / 1e3:.1f}k"
    return f"{value:.3g}"


def _text(value: str) -> str:
    """A label for SVG text: XML cannot hold control characters, so they are shown as escapes."""
    return html.escape(visible(value))


def _nice_max(value: float) -> float:
    if value <= 0 or not math.isfinite(value):
        return 1.0
    exp = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exp:
            return step * exp
    return 10 * exp


def as_img(svg: str, alt: str) -> str:
    data = base64.b64encode(svg.encode()).decode()
    return f'<img class="chart" alt="{html.escape(visible(alt))}" src="data:image/svg+xml;base64,{data}">'


def _frame(body: list[str], ymax: float, unit: str, xlabels: list[tuple[float, str]]) -> str:
    plot_h = H - TOP - BOTTOM
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">',
        f'<rect width="{W}" height="{H}" fill="#ffffff"/>',
    ]
    for i in range(5):
        y = TOP + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        parts.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#555">'
            f"{html.escape(_fmt(ymax * i / 4, unit))}</text>"
        )
    for k, (x, label) in enumerate(xlabels):
        anchor = "start" if k == 0 else "end" if k == len(xlabels) - 1 else "middle"
        parts.append(
            f'<text x="{x:.1f}" y="{H - BOTTOM + 16}" text-anchor="{anchor}" '
            f'fill="#555">{_text(label)}</text>'
        )
    parts += body
    parts.append("</svg>")
    return "".join(parts)


def line_chart(series: Sequence[tuple[str, Sequence[tuple[float, float]]]], unit: str = "") -> str:
    """One line per (name, [(unix time, value)]); the legend sits under the plot."""
    points = [p for _, values in series for p in values]
    if not points:
        return _frame(
            ['<text x="360" y="120" text-anchor="middle" fill="#999">no data</text>'], 1.0, unit, []
        )
    t0 = min(t for t, _ in points)
    t1 = max(t for t, _ in points)
    span = (t1 - t0) or 1.0
    ymax = _nice_max(max(v for _, v in points))
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    body = []
    for i, (name, values) in enumerate(series[: len(PALETTE)]):
        coords = " ".join(
            f"{LEFT + (t - t0) / span * plot_w:.1f},{TOP + plot_h - min(v, ymax) / ymax * plot_h:.1f}"
            for t, v in values
        )
        color = PALETTE[i]
        body.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{coords}"/>')
        lx = LEFT + (i % 4) * 165
        ly = H - 22 + (i // 4) * 14
        body.append(
            f'<rect x="{lx}" y="{ly - 8}" width="10" height="10" fill="{color}"/>'
            f'<text x="{lx + 14}" y="{ly + 1}" fill="#333">{_text(name[:26])}</text>'
        )
    fmt = "%H:%M:%S" if span <= 600 else "%H:%M" if span <= 2 * 86400 else "%b %d"
    xlabels = [
        (LEFT + plot_w * k / 4, dt.datetime.fromtimestamp(t0 + span * k / 4, dt.timezone.utc).strftime(fmt))
        for k in range(5)
    ]
    return _frame(body, ymax, unit, xlabels)


def bar_chart(bars: Sequence[tuple[str, float]], unit: str = "") -> str:
    """Horizontal bars, largest first, with their values."""
    bars = list(bars)[:12]
    height = max(80, 24 * len(bars) + 24)
    if not bars:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}">'
            f'<rect width="{W}" height="{height}" fill="#fff"/><text x="360" y="44" '
            'text-anchor="middle" fill="#999" font-family="sans-serif">no data</text></svg>'
        )
    vmax = max(v for _, v in bars) or 1.0
    label_w = 300
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" '
        f'viewBox="0 0 {W} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{W}" height="{height}" fill="#ffffff"/>',
    ]
    for i, (label, value) in enumerate(bars):
        y = 12 + i * 24
        width = (W - label_w - 90) * (value / vmax)
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 13}" text-anchor="end" fill="#333">{_text(label[:48])}</text>'
        )
        parts.append(
            f'<rect x="{label_w}" y="{y}" width="{max(width, 1):.1f}" height="18" fill="{PALETTE[0]}"/>'
        )
        parts.append(
            f'<text x="{label_w + width + 6:.1f}" y="{y + 13}" fill="#333">'
            f"{html.escape(_fmt(value, unit))}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _blend(ratio: float) -> str:
    """White (0) to the palette's blue (1)."""
    ratio = min(max(ratio, 0.0), 1.0)
    r, g, b = (int(255 + (c - 255) * ratio) for c in (0x33, 0x66, 0xCC))
    return f"#{r:02x}{g:02x}{b:02x}"


def heatmap(
    rows: Sequence[str],
    columns: Sequence[str],
    values: dict[tuple[str, str], float],
    row_title: str = "",
    column_title: str = "",
    unit: str = "percent",
) -> str:
    """A grid of cells shaded by value (0..1), with the value written in each; empty cells stay blank."""
    if not rows or not columns:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="80">'
            f'<rect width="{W}" height="80" fill="#fff"/><text x="360" y="44" '
            'text-anchor="middle" fill="#999" font-family="sans-serif">no data</text></svg>'
        )
    label_w, head_h = 110, 40
    cell_w = min(80.0, (W - label_w - RIGHT) / len(columns))
    cell_h = 24
    height = head_h + cell_h * len(rows) + 8
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" '
        f'viewBox="0 0 {W} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{W}" height="{height}" fill="#ffffff"/>',
        f'<text x="{label_w}" y="14" fill="#555">{_text(column_title)}</text>',
        f'<text x="4" y="{head_h - 6}" fill="#555">{_text(row_title)}</text>',
    ]
    for j, col in enumerate(columns):
        parts.append(
            f'<text x="{label_w + j * cell_w + cell_w / 2:.1f}" y="{head_h - 6}" '
            f'text-anchor="middle" fill="#333">{_text(col)}</text>'
        )
    for i, row in enumerate(rows):
        y = head_h + i * cell_h
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end" fill="#333">{_text(row)}</text>'
        )
        for j, col in enumerate(columns):
            value = values.get((row, col))
            if value is None or not math.isfinite(value):
                continue
            x = label_w + j * cell_w
            fill = _blend(value)
            ink = "#ffffff" if value > 0.55 else "#222222"
            parts.append(
                f'<rect x="{x + 1:.1f}" y="{y + 1}" width="{cell_w - 2:.1f}" '
                f'height="{cell_h - 2}" fill="{fill}"/>'
            )
            parts.append(
                f'<text x="{x + cell_w / 2:.1f}" y="{y + 16}" text-anchor="middle" '
                f'fill="{ink}">{html.escape(_fmt(value, unit))}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)
