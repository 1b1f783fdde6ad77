"""Runbooks: `apiusage runbooks check`, and the HTML the processor serves at /runbooks/."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from apiusage.processor.config import ConfigError, parse_config
from apiusage.processor.runbooks import RunbookLibrary, check_runbooks, find_runbooks_dir

from tests.support.processor import apiusage_command, get, running_processor
from tests.support.prometheus import promtool

ROOT = Path(__file__).resolve().parents[2]
RULES = sorted((ROOT / "alert_rules").glob("*.rules.yml"))


@pytest.mark.live
def test_cli_check_passes_on_the_repository() -> None:
    promtool()
    result = subprocess.run(
        [*apiusage_command(), "runbooks", "check"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "every PromQL snippet parses" in result.stdout


def test_default_folder_is_the_repository_runbooks() -> None:
    assert find_runbooks_dir(None) == ROOT / "runbooks"
    assert find_runbooks_dir("/elsewhere") == Path("/elsewhere")


def _copy(tmp_path: Path) -> Path:
    folder = tmp_path / "runbooks"
    shutil.copytree(ROOT / "runbooks", folder)
    return folder


@pytest.mark.live
def test_check_names_each_problem(tmp_path: Path) -> None:
    promtool()
    folder = _copy(tmp_path)
    (folder / "ApiTrafficSurge.md").unlink()
    (folder / "NoSuchAlert.md").write_text("# NoSuchAlert\n")
    drop = folder / "ApiTrafficDrop.md"
    drop.write_text(drop.read_text().replace("## Impact", "## Effects"))
    rejected = folder / "ApiUsageSpansRejected.md"
    text = rejected.read_text().replace(
        "sum by (instance, reason) (rate(apiusage_spans_rejected_total[5m]))",
        "sum by (instance, reason) (rate(apiusage_spans_rejected_total[5m])",
    )
    rejected.write_text(text)
    line = text.splitlines().index("```promql") + 1
    problems = check_runbooks(folder, RULES)
    assert problems[0] == (
        f"ApiTrafficSurge: no runbook; copy {folder}/TEMPLATE.md to {folder}/ApiTrafficSurge.md"
    )
    assert f"{drop}: missing section '## Impact'" in problems
    assert f"{folder}/NoSuchAlert.md: no alert named NoSuchAlert in the rule files" in problems
    snippet = [p for p in problems if "does not parse" in p]
    assert len(snippet) == 1
    assert snippet[0].startswith(
        f"{rejected}:{line}: PromQL snippet 1 (in '## Diagnosis') does not "
        "parse: could not parse expression: "
    )
    assert "unclosed left parenthesis" in snippet[0]


@pytest.mark.live
def test_check_cli_fails_with_the_problems(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    (folder / "ApiUsageLabelOverflow.md").write_text("# ApiUsageLabelOverflow\n\n## Meaning\n\nx\n")
    result = subprocess.run(
        [
            *apiusage_command(),
            "runbooks",
            "check",
            "--runbooks-dir",
            str(folder),
            "--rules-dir",
            str(ROOT / "alert_rules"),
            "--skip-promql",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert f"{folder}/ApiUsageLabelOverflow.md: missing section '## Diagnosis'" in result.stderr


def test_processor_serves_every_runbook_as_html() -> None:
    names = sorted(p.stem for p in (ROOT / "runbooks").glob("*.md") if p.stem != "TEMPLATE")
    with running_processor() as proc:
        base = proc.metrics_url.removesuffix("/metrics")
        status, body, headers = get(f"{base}/runbooks/")
        assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
        for name in names:
            assert f'<a href="{name}">{name}</a>' in body.decode()
            status, page, headers = get(f"{base}/runbooks/{name}")
            assert status == 200, name
            assert f"<h1>{name}</h1>" in page.decode() and "<h2>Diagnosis</h2>" in page.decode()
            assert "script-src" not in headers["Content-Security-Policy"]
        status, md, headers = get(f"{base}/runbooks/ApiTrafficDrop.md")
        assert status == 200 and md.startswith(b"# ApiTrafficDrop\n")
        for bad in ("TEMPLATE", "NoSuchAlert", "..%2Fpyproject", "Api%3Cscript%3E", "a.b"):
            status, body, _ = get(f"{base}/runbooks/{bad}")
            assert status == 404 and b"<" not in body, bad
        status, _, headers = get(f"{base}/runbooks", headers={})
        assert status in (200, 301)


def test_runbooks_dir_is_configurable_and_raw_html_is_escaped(tmp_path: Path) -> None:
    (tmp_path / "EvilAlert.md").write_text(
        "# EvilAlert <script>alert(1)</script>\n\n<img src=x onerror=alert(1)>\n\n"
        "[click](javascript:alert(1))\n"
    )
    with running_processor({"exporters": {"prometheus": {"runbooks_dir": str(tmp_path)}}}) as proc:
        base = proc.metrics_url.removesuffix("/metrics")
        status, page, _ = get(f"{base}/runbooks/EvilAlert")
        assert status == 200
        text = page.decode()
        assert "<script>" not in text and "<img" not in text and 'href="javascript' not in text
        assert "&lt;script&gt;" in text
        assert get(f"{base}/runbooks/ApiTrafficDrop")[0] == 404


def test_runbooks_dir_must_exist() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"exporters": {"prometheus": {"runbooks_dir": "/no/such/folder"}}}, "x.yaml")
    assert "exporters.prometheus.runbooks_dir: is not a folder: /no/such/folder" in str(info.value)


def test_library_without_folder() -> None:
    library = RunbookLibrary(None)
    assert library.names() == [] and library.page("ApiTrafficDrop") is None
    assert b"runbooks_dir" in library.index()
