"""docs/architecture.md and CONTRIBUTING.md stay true: the paths, packages, threads and make
targets they name exist, and every package the distribution maps is on the page."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURE = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
CONTRIBUTING = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
# A path in backquotes or in the flow diagram: folder/…/name.ext (or a folder ending in /).
PATH = re.compile(
    r"(?<![\w./-])((?:[a-z_]+/)+(?:[A-Za-z_][\w.-]*\.(?:py|c|md|yaml|yml|json|sh)|[A-Za-z_<>]+)?)"
)
# Packages whose folder is named by a shorter path on the page (processor/derive/ is derive/).
PACKAGED = ("cli", "conventions", "processor", "instrumentation", "demo", "report", "rules")


def _named_paths(text: str) -> set[str]:
    found = set()
    for match in PATH.finditer(text):
        path = match.group(1)
        if "<" in path or path.startswith(("http", "docs/")) and not path.endswith(".md"):
            continue
        found.add(path)
    return found


def _exists(path: str) -> bool:
    if (ROOT / path).exists():
        return True
    # Inside the flow diagram and tables, modules of the processor are named from its root.
    return (ROOT / "processor" / path).exists()


def test_every_path_the_architecture_page_names_exists() -> None:
    missing = sorted(p for p in _named_paths(ARCHITECTURE) if not _exists(p))
    assert missing == []


def test_every_path_contributing_names_exists() -> None:
    missing = sorted(p for p in _named_paths(CONTRIBUTING) if not _exists(p) and "../" not in p)
    assert missing == []


def test_every_mapped_package_folder_is_on_the_architecture_page() -> None:
    folders = set(PYPROJECT["tool"]["setuptools"]["package-dir"].values())
    absent = sorted(f for f in folders if f"`{f}/`" not in ARCHITECTURE)
    assert absent == []


def _thread_names() -> set[str]:
    """Names given to threads (and to the HTTP servers, whose thread takes the server's name)."""
    names = set()
    for path in (ROOT / "processor").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            callee = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if callee == "Thread":
                for kw in node.keywords:
                    if kw.arg == "name" and isinstance(kw.value, ast.Constant):
                        names.add(kw.value.value)
            elif callee == "HttpServer" and len(node.args) >= 4 and isinstance(node.args[3], ast.Constant):
                names.add(node.args[3].value)
    return names


def test_the_thread_table_lists_every_long_lived_thread() -> None:
    section = ARCHITECTURE.split("## Threads", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`([a-z][\w-]*)`", section.split("|---|", 1)[1]))
    threads = _thread_names() - {"apiusage-state-interrupt"}  # a one-shot helper, not a role
    assert threads - listed == set(), "threads missing from docs/architecture.md"
    assert {n for n in listed if not n.endswith(".py")} - threads == set(), "listed threads that do not exist"


@pytest.mark.parametrize("target", re.findall(r"^make ([a-z-]+)", CONTRIBUTING, re.M))
def test_the_make_targets_contributing_shows_exist(target: str) -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(rf"^{re.escape(target)}:", makefile, re.M), f"make {target} is not in the Makefile"
