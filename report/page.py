"""What the report's pages are made of: sections of charts, tables and notes, and how numbers read."""

from __future__ import annotations

import html
from dataclasses import dataclass, field

from .charts import as_img
from .text import visible

__all__ = ["Section", "count", "duration_text", "milliseconds"]


@dataclass
class Section:
    title: str
    question: str
    blocks: list[str] = field(default_factory=list)

    def chart(self, caption: str, svg: str) -> None:
        self.blocks.append(
            f"<figure>{as_img(svg, caption)}<figcaption>{html.escape(visible(caption))}</figcaption></figure>"
        )

    def table(self, headers: list[str], rows: list[list[str]], empty: str) -> None:
        """A table; a cell that is an http(s) URL becomes a link."""
        if not rows:
            self.blocks.append(f'<p class="empty">{html.escape(empty)}</p>')
            return
        head = "".join(f"<th>{html.escape(visible(h))}</th>" for h in headers)
        body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in rows)
        self.blocks.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def note(self, text: str) -> None:
        self.blocks.append(f'<p class="note">{html.escape(visible(text))}</p>')

    def heading(self, text: str) -> None:
        """A sub-heading: one part of the section (a release, an experiment)."""
        self.blocks.append(f"<h3>{html.escape(visible(text))}</h3>")


def _cell(text: str) -> str:
    text = visible(text)
    if text.startswith(("http://", "https://")) and " " not in text:
        url = html.escape(text, quote=True)
        return f'<a href="{url}">{html.escape(text)}</a>'
    return html.escape(text)


def count(value: float) -> str:
    """Consumers and requests are whole; increase() extrapolates, so round what it says."""
    return f"{round(value):,}"


def milliseconds(seconds: float | None) -> str:
    return "-" if seconds is None or seconds != seconds else f"{seconds * 1000:.0f} ms"


def duration_text(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0 or seconds >= 2 * size:
            # Tenths at most: a release seen for 161 s is "2.7 minutes", not "2.68333 minutes".
            n = round(seconds / size, 1)
            return f"{n:g} {unit}" + ("" if n == 1 else "s")
    return f"{round(seconds):g} seconds"
