"""Run mypy over the `apiusage` packages as installed names, with repository paths in its output.

pyproject.toml maps each `apiusage.<name>` to a top-level folder (`processor/`, `rules/`...),
which mypy cannot follow from an editable install. This links the folders under
build/typecheck/apiusage/ in that mapping, runs `mypy -p apiusage` there with the
[tool.mypy] settings of pyproject.toml, and prints each path as the repository's
(`apiusage/processor/app.py` -> `processor/app.py`). Arguments go to mypy.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    sys.exit("scripts/typecheck.py needs Python 3.11 or newer (tomllib)")

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / "build" / "typecheck"


def package_dirs() -> dict[str, str]:
    """`apiusage.<name>` -> folder, from pyproject.toml's [tool.setuptools] package-dir."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        mapping = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    return {name.removeprefix("apiusage."): folder for name, folder in mapping.items()}


def link_tree() -> Path:
    """build/typecheck/apiusage/<name> -> <folder>, replacing links that point elsewhere."""
    package = TREE / "apiusage"
    package.mkdir(parents=True, exist_ok=True)
    wanted = package_dirs()
    for entry in package.iterdir():
        if entry.name not in wanted and entry.is_symlink():
            entry.unlink()
    for name, folder in wanted.items():
        link = package / name
        target = ROOT / folder
        if link.is_symlink() and Path(os.readlink(link)) == target:
            continue
        if link.is_symlink():
            link.unlink()
        link.symlink_to(target, target_is_directory=True)
    return TREE


def main(argv: list[str]) -> int:
    tree = link_tree()
    command = [
        sys.executable,
        "-m",
        "mypy",
        "--config-file",
        str(ROOT / "pyproject.toml"),
        "--cache-dir",
        str(tree / ".mypy_cache"),
        "-p",
        "apiusage",
        *argv,
    ]
    done = subprocess.run(command, cwd=tree, capture_output=True, text=True)
    folders = package_dirs()
    pattern = re.compile(r"^apiusage/(\w+)/", re.MULTILINE)
    for stream, text in ((sys.stdout, done.stdout), (sys.stderr, done.stderr)):
        stream.write(pattern.sub(lambda m: f"{folders.get(m.group(1), 'apiusage/' + m.group(1))}/", text))
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
