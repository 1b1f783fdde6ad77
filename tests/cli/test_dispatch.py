"""The one `apiusage` parser: every tool's commands, and a broken tool is an error, not a gap."""

from __future__ import annotations

import subprocess
import sys

import pytest
from apiusage import cli


def _commands(parser) -> list[str]:
    action = next(a for a in parser._actions if a.dest == "command")
    return list(action.choices)


def test_every_tool_registers_its_commands() -> None:
    assert _commands(cli.build_parser()) == [
        "serve",
        "consumers",
        "rules",
        "runbooks",
        "demo",
        "report",
        "release-notes",
        "experiments",
        "catalog",
    ]


def test_a_tool_whose_own_import_fails_is_an_error_not_a_missing_command(monkeypatch) -> None:
    # What a refactor that leaves a stale import does: the name is ours, so it must surface.
    def broken(name: str):
        if name == "apiusage.rules.command":
            raise ImportError(
                "cannot import name 'write' from 'apiusage.rules.generate'", name="apiusage.rules.generate"
            )
        return real(name)

    real = cli.importlib.import_module
    monkeypatch.setattr(cli.importlib, "import_module", broken)
    with pytest.raises(ImportError, match="apiusage.rules.generate"):
        cli.build_parser()


def test_a_tool_missing_a_third_party_package_is_left_out(monkeypatch) -> None:
    def missing(name: str):
        if name == "apiusage.report.command":
            raise ModuleNotFoundError("No module named 'somelib'", name="somelib")
        return real(name)

    real = cli.importlib.import_module
    monkeypatch.setattr(cli.importlib, "import_module", missing)
    assert "report" not in _commands(cli.build_parser())
    assert "serve" in _commands(cli.build_parser())


def test_python_m_apiusage_cli_is_the_apiusage_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "apiusage.cli", "report", "--range", "3x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "argument --range: must be like 12h, 7d or 2w (got '3x')" in done.stderr
    assert "Traceback" not in done.stderr
