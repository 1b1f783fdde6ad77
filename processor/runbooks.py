"""Runbooks: one Markdown file per alert, served as HTML by the processor and linted.

Where they come from (`find_runbooks_dir`): `exporters.prometheus.runbooks_dir`
when set; else the `runbooks/` folder next to the `processor` package, which is
the repository's `runbooks/` in a checkout or an editable install, and the
packaged copies (`apiusage/runbooks/`) in a regular install.

Served on the metrics port at `/runbooks/` (index) and `/runbooks/<AlertName>`.
Only names made of ASCII letters and digits are served, Markdown is rendered
with raw HTML disabled (it is shown escaped), and the page forbids scripts.
"""

from __future__ import annotations

import html
import importlib.resources
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from markdown_it import MarkdownIt

__all__ = [
    "SECTIONS",
    "RunbookLibrary",
    "Snippet",
    "alert_names",
    "check_runbooks",
    "find_runbooks_dir",
    "promql_snippets",
]

SECTIONS = ("Meaning", "Impact", "Diagnosis", "Mitigation")
TEMPLATE = "TEMPLATE"
NAME = re.compile(r"[A-Za-z0-9]+")
_FENCE = re.compile(r"^(`{3,}|~{3,})\s*([\w-]*)\s*$")


def find_runbooks_dir(configured: str | None) -> Path | None:
    """The configured folder, else the repository's (or the packaged) `runbooks/`, else None."""
    if configured:
        return Path(configured)
    try:  # `apiusage.runbooks`: the repository's folder in a checkout, the packaged copy otherwise
        packaged = Path(str(importlib.resources.files("apiusage.runbooks")))
    except ModuleNotFoundError:
        return None
    return packaged if packaged.is_dir() else None


# --------------------------------------------------------------------------- serving

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 52rem; margin: 2rem auto; padding: 0 1rem;
       color: #1f2328; }}
pre {{ background: #f6f8fa; padding: .8rem; overflow-x: auto; border-radius: 6px; }}
code {{ font: 14px ui-monospace, monospace; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #d0d7de; padding: .3rem .6rem; }}
nav {{ font-size: 14px; margin-bottom: 1rem; }}
</style></head>
<body><nav><a href="./">All runbooks</a></nav>
{body}
</body></html>
"""
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    # No scripts, no remote anything: a runbook page is text and links.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'",
    "Cache-Control": "no-cache",
}


def _markdown() -> MarkdownIt:
    from markdown_it import MarkdownIt

    # js-default: CommonMark plus tables, raw HTML disabled (escaped), unsafe link schemes refused.
    return MarkdownIt("js-default")


class RunbookLibrary:
    """Renders the runbooks of one folder, re-reading a file when it changes."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self._md: MarkdownIt | None = None
        self._cache: dict[str, tuple[float, bytes]] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        if self.folder is None or not self.folder.is_dir():
            return []
        return sorted(
            p.stem for p in self.folder.glob("*.md") if NAME.fullmatch(p.stem) and p.stem != TEMPLATE
        )

    def _path(self, name: str) -> Path | None:
        if self.folder is None or not NAME.fullmatch(name) or name == TEMPLATE:
            return None
        path = self.folder / f"{name}.md"
        try:
            return path if path.is_file() else None
        except OSError:  # e.g. a name longer than the file system allows: no such runbook
            return None

    def markdown(self, name: str) -> bytes | None:
        path = self._path(name)
        return path.read_bytes() if path else None

    def page(self, name: str) -> bytes | None:
        """The runbook as an HTML page, or None when there is no such runbook."""
        path = self._path(name)
        if path is None:
            return None
        mtime = path.stat().st_mtime
        with self._lock:
            cached = self._cache.get(name)
            if cached and cached[0] == mtime:
                return cached[1]
            if self._md is None:
                self._md = _markdown()
            body = self._md.render(path.read_text(encoding="utf-8", errors="replace"))
            page = _PAGE.format(title=f"Runbook: {html.escape(name)}", body=body).encode()
            self._cache[name] = (mtime, page)
            return page

    def index(self) -> bytes:
        items = "\n".join(f'<li><a href="{html.escape(n)}">{html.escape(n)}</a></li>' for n in self.names())
        where = html.escape(str(self.folder)) if self.folder else "no runbooks folder"
        body = (
            f"<h1>Runbooks</h1>\n<p>One per alert of the apiusage bundle ({where}).</p>\n<ul>\n{items}\n</ul>"
            if items
            else f"<h1>Runbooks</h1>\n<p>No runbooks found ({where}): set "
            "<code>exporters.prometheus.runbooks_dir</code>.</p>"
        )
        return _PAGE.format(title="Runbooks", body=body).encode()

    def handle(self, path: str) -> tuple[int, bytes, str, dict[str, str]] | None:
        """(status, body, content type, headers) for a path under /runbooks, else None."""
        if path == "/runbooks":
            return 301, b"", "text/plain; charset=utf-8", {"Location": "/runbooks/"}
        if not path.startswith("/runbooks/"):
            return None
        name = path.removeprefix("/runbooks/")
        if name in ("", "index.html"):
            return 200, self.index(), "text/html; charset=utf-8", HEADERS
        if name.endswith(".md") and (text := self.markdown(name[:-3])) is not None:
            return 200, text, "text/markdown; charset=utf-8", HEADERS
        page = self.page(name)
        if page is None:
            return (
                404,
                b"no such runbook: see /runbooks/ for the list\n",
                "text/plain; charset=utf-8",
                HEADERS,
            )
        return 200, page, "text/html; charset=utf-8", HEADERS


# --------------------------------------------------------------------------- checking


@dataclass(frozen=True)
class Snippet:
    runbook: str
    number: int  # 1-based, in file order
    line: int  # of the opening fence
    section: str
    text: str


def alert_names(rule_files: Iterable[Path]) -> list[str]:
    names = []
    for f in rule_files:
        doc = yaml.safe_load(Path(f).read_text(encoding="utf-8")) or {}
        for group in doc.get("groups") or []:
            names += [r["alert"] for r in group.get("rules") or [] if "alert" in r]
    return names


def _sections(lines: list[str]) -> dict[str, tuple[int, str]]:
    """## heading → (line number, text under it)."""
    out: dict[str, tuple[int, list[str]]] = {}
    current = None
    fence = None
    for i, line in enumerate(lines, 1):
        m = _FENCE.match(line)
        if m:
            fence = None if fence and line.startswith(fence) else (fence or m.group(1))
        if fence is None and line.startswith("## "):
            current = line[3:].strip()
            out[current] = (i, [])
        elif current is not None:
            out[current][1].append(line)
    return {k: (n, "\n".join(body)) for k, (n, body) in out.items()}


def promql_snippets(name: str, text: str) -> list[Snippet]:
    out: list[Snippet] = []
    body: list[str] = []
    section, fence, start = "", None, 0
    for i, line in enumerate(text.splitlines(), 1):
        if fence is None:
            if line.startswith("## "):
                section = line[3:].strip()
            m = _FENCE.match(line)
            if m:
                fence, start, body = (m.group(1), m.group(2)), i, []
        elif line.strip().startswith(fence[0]):
            if fence[1] == "promql":
                out.append(Snippet(name, len(out) + 1, start, section, "\n".join(body)))
            fence = None
        else:
            body.append(line)
    return out


def _check_one(path: Path, name: str) -> list[str]:
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    problems = []
    if not lines or lines[0].strip() != f"# {name}":
        problems.append(f"{path}: the first line must be '# {name}'")
    sections = _sections(lines)
    order = [s for s in sections if s in SECTIONS]
    for s in SECTIONS:
        if s not in sections:
            problems.append(f"{path}: missing section '## {s}'")
        elif not sections[s][1].strip():
            problems.append(f"{path}:{sections[s][0]}: section '## {s}' is empty")
    if not problems and order != list(SECTIONS):
        problems.append(f"{path}: sections must come in the order {', '.join(SECTIONS)}")
    if "Diagnosis" in sections:
        diagnosis = sections["Diagnosis"][1]
        if "```promql" not in diagnosis:
            problems.append(f"{path}: '## Diagnosis' needs at least one ```promql block to run")
        if "/d/" not in diagnosis:
            problems.append(f"{path}: '## Diagnosis' must name the dashboard to open (/d/<uid>/...)")
    return problems


class _Literal(yaml.SafeDumper):
    pass


_Literal.add_representer(
    str, lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", v, style="|" if "\n" in v else None)
)

_PROMTOOL_ERROR = re.compile(r'group "(?P<group>[^"]+)", rule (?P<rule>\d+), "[^"]*": (?P<msg>.*)')


def _check_promql(snippets: list[Snippet], promtool: str, folder: Path) -> list[str]:
    if not snippets:
        return []
    exe = shutil.which(promtool)
    if exe is None:
        return [
            f"{promtool} not found: install Prometheus (Debian: prometheus) to check the PromQL "
            "snippets, or pass --skip-promql"
        ]
    groups: dict[str, list[dict]] = {}
    for s in snippets:
        groups.setdefault(s.runbook, []).append(
            {"record": f"runbook_snippet_{s.number}", "expr": s.text.strip() or "MISSING"}
        )
    doc = {"groups": [{"name": g, "rules": rules} for g, rules in groups.items()]}
    by_key = {(s.runbook, s.number): s for s in snippets}
    with tempfile.TemporaryDirectory(prefix="apiusage-runbooks-") as tmp:
        rules = Path(tmp) / "snippets.rules.yml"
        rules.write_text(yaml.dump(doc, Dumper=_Literal, sort_keys=False, width=1000))
        result = subprocess.run(
            [exe, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
        )
    if result.returncode == 0:
        return []
    problems = []
    for line in (result.stdout + result.stderr).splitlines():
        m = _PROMTOOL_ERROR.search(line)
        if not m:
            continue
        found = by_key.get((m.group("group"), int(m.group("rule"))))
        if found is not None:
            problems.append(
                f"{folder / (found.runbook + '.md')}:{found.line}: PromQL snippet {found.number} "
                f"(in '## {found.section}') does not parse: {m.group('msg')}\n"
                + "\n".join(f"    {x}" for x in found.text.splitlines())
            )
    return problems or [
        f"promtool check rules failed on the runbook snippets:\n{result.stdout}{result.stderr}"
    ]


def check_runbooks(
    folder: Path, rule_files: Iterable[Path], promtool: str = "promtool", check_promql: bool = True
) -> list[str]:
    """Every problem, one line each (empty when the runbooks are complete)."""
    folder = Path(folder)
    alerts = sorted(set(alert_names(rule_files)))
    problems = []
    present = {p.stem: p for p in folder.glob("*.md")}
    for name in alerts:
        if name not in present:
            problems.append(
                f"{name}: no runbook; copy {folder / (TEMPLATE + '.md')} to {folder / (name + '.md')}"
            )
    snippets: list[Snippet] = []
    for stem, path in sorted(present.items()):
        if stem == TEMPLATE:
            continue
        if stem not in alerts:
            problems.append(f"{path}: no alert named {stem} in the rule files")
            continue
        problems += _check_one(path, stem)
        snippets += promql_snippets(stem, path.read_text(encoding="utf-8"))
    if check_promql:
        problems += _check_promql(snippets, promtool, folder)
    return problems
