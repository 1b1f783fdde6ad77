"""Checks shared by the report tests: the HTML's sections and charts, and headless Chromium rendering.

Chromium is Debian's `chromium` package (scripts/system-deps.sh installs it for `make test`).
"""

from __future__ import annotations

import base64
import html.parser
import re
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.components import missing

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SECTION_IDS = [
    "traffic",
    "reliability",
    "adoption",
    "onboarding",
    "deprecations",
    "design",
    "releases",
    "experiments",
    "firing-alerts",
]
# Charts each section must carry (Firing alerts is a table).
CHARTS = {
    "traffic": 2,
    "reliability": 3,
    "adoption": 4,
    "onboarding": 1,
    "deprecations": 1,
    "design": 3,
    "releases": 1,
    "experiments": 1,
    "firing-alerts": 0,
}
_IMAGE_CHECK = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const broken = images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt);
  document.body.setAttribute("data-images", String(images.length));
  document.body.setAttribute("data-broken", JSON.stringify(broken));
});
</script>"""


@dataclass
class Page:
    sections: dict[str, list[str]] = field(default_factory=dict)  # id -> chart SVG sources
    tables: dict[str, list[list[str]]] = field(default_factory=dict)  # id -> rows of all tables
    scripts: int = 0
    external: list[str] = field(default_factory=list)  # src/href that would fetch something


class _Parser(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.page = Page()
        self.section: str | None = None
        self.row: list[str] | None = None
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section":
            self.section = a.get("id") or ""
            self.page.sections[self.section] = []
            self.page.tables[self.section] = []
        elif tag == "script":
            self.page.scripts += 1
        elif tag == "img":
            src = a.get("src") or ""
            prefix = "data:image/svg+xml;base64,"
            if not src.startswith(prefix):
                self.page.external.append(src)
            elif self.section is not None:
                self.page.sections[self.section].append(base64.b64decode(src[len(prefix) :]).decode())
        elif tag in ("link", "iframe", "object", "embed"):
            self.page.external.append(a.get("href") or a.get("src") or tag)
        elif tag == "tr":
            self.row = []
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self.section = None
        elif tag in ("td", "th") and self.row is not None and self.cell is not None:
            self.row.append("".join(self.cell).strip())
            self.cell = None
        elif tag == "tr" and self.row is not None:
            if self.section is not None:
                self.page.tables[self.section].append(self.row)
            self.row = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def parse_report(text: str) -> Page:
    parser = _Parser()
    parser.feed(text)
    return parser.page


def check_structure(text: str) -> Page:
    """Every section, with its charts as well-formed SVG; nothing fetched from elsewhere; no script."""
    page = parse_report(text)
    assert list(page.sections) == SECTION_IDS, list(page.sections)
    assert page.scripts == 0
    assert page.external == []
    for section, svgs in page.sections.items():
        assert len(svgs) >= CHARTS[section], (section, len(svgs))
        for svg in svgs:
            root = ET.fromstring(svg)
            assert root.tag == "{http://www.w3.org/2000/svg}svg", root.tag
            assert int(root.get("width", "0")) > 0 and int(root.get("height", "0")) > 0
    return page


def has_data(svg: str) -> bool:
    """A chart that draws something (a line, bars or cells), not the 'no data' placeholder."""
    return "no data" not in svg and bool(re.search(r"<polyline|<rect x=", svg))


def chromium() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if path is None:
        missing("Chromium (Debian package chromium: run make test)")
    return path


def _run(args: list[str], tmp: Path, timeout: float = 90) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp)
    return subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@dataclass
class Rendered:
    screenshot: Path
    dom: str
    console: list[str]
    images: int
    broken: list[str]


def render(report: Path, tmp: Path) -> Rendered:
    """Open the report in headless Chromium three ways: screenshot, DOM, console log."""
    url = report.resolve().as_uri()
    png = tmp / f"{report.stem}.png"
    shot = _run(["--window-size=1000,6000", "--hide-scrollbars", f"--screenshot={png}", url], tmp)
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dom = _run(["--virtual-time-budget=5000", "--enable-logging=stderr", "--v=0", "--dump-dom", url], tmp)
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    # A copy that reports, after load, how many images decoded: charts are images.
    probe = tmp / f"{report.stem}-probe.html"
    probe.write_text(
        report.read_text(encoding="utf-8").replace("</body>", _IMAGE_CHECK + "</body>"), encoding="utf-8"
    )
    checked = _run(["--virtual-time-budget=5000", "--dump-dom", probe.resolve().as_uri()], tmp)
    assert checked.returncode == 0, checked.stderr[-2000:]
    images = re.search(r'data-images="(\d+)"', checked.stdout)
    broken = re.search(r'data-broken="([^"]*)"', checked.stdout)
    assert images and broken, checked.stdout[:2000]
    return Rendered(
        png,
        dom.stdout,
        console,
        int(images.group(1)),
        [b for b in re.findall(r"&quot;(.*?)&quot;", broken.group(1))],
    )


def check_renders(report: Path, tmp: Path) -> Rendered:
    """Chromium renders the report: every section in the DOM, every chart decoded, no console error."""
    rendered = render(report, tmp)
    assert rendered.console == [], rendered.console
    for section in SECTION_IDS:
        assert f'<section id="{section}">' in rendered.dom, section
    expected = report.read_text(encoding="utf-8").count('<img class="chart"')
    assert rendered.images == expected > 0, (rendered.images, expected)
    assert rendered.broken == [], rendered.broken
    assert rendered.screenshot.stat().st_size > 20_000  # a page of charts, not a blank one
    return rendered
