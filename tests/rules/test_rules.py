"""The generated Prometheus rules: fresh, lint-clean, unit-tested with promtool, styled,
and linked to a runbook and a dashboard panel of the panel contract (apiusage.conventions.panels)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from apiusage.conventions import panels as contract
from apiusage.rules import PANELS, SloError, alerts, load_slo, parse_slo, render, stale

from tests.support.prometheus import promtool

ROOT = Path(__file__).resolve().parents[2]
RULES = sorted((ROOT / "alert_rules").glob("*.rules.yml"))
SLO = ROOT / "prometheus" / "slo.yaml"
UNIT_TESTS = sorted((Path(__file__).parent / "promtool").glob("*.test.yml"))
CAMEL = re.compile(r"[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]+)*")


def alert_rules() -> list[dict]:
    out = []
    for f in RULES:
        for group in yaml.safe_load(f.read_text())["groups"]:
            out += [r for r in group["rules"] if "alert" in r]
    return out


def test_generated_rule_files_are_committed_and_fresh() -> None:
    slo = load_slo(SLO)
    assert sorted(p.name for p in RULES) == sorted(render(slo))
    assert stale(slo, ROOT / "alert_rules") == [], "alert_rules/ is stale: run `apiusage rules`"


def test_every_group_sets_its_interval() -> None:
    for f in RULES:
        for group in yaml.safe_load(f.read_text())["groups"]:
            assert re.fullmatch(r"\d+[sm]", group.get("interval", "")), (f.name, group["name"])


@pytest.mark.live
def test_promtool_lint_is_clean() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", "--lint=all", "--lint-fatal", *map(str, RULES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.live
@pytest.mark.parametrize("test_file", UNIT_TESTS, ids=lambda p: p.name)
def test_promtool_unit_tests(test_file: Path) -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", str(test_file)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=test_file.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _unit_cases() -> list[tuple[str, dict]]:
    out = []
    for f in UNIT_TESTS:
        doc = yaml.safe_load(f.read_text())
        assert doc.get("evaluation_interval"), f"{f.name}: set evaluation_interval"
        for group in doc["tests"]:
            assert group.get("interval"), f"{f.name}: every test group sets interval"
            out += [(f.name, case) for case in group.get("alert_rule_test") or []]
    return out


def test_every_alert_has_a_firing_and_a_quiet_unit_test_with_full_annotations() -> None:
    cases = _unit_cases()
    for rule in alert_rules():
        name = rule["alert"]
        mine = [c for _, c in cases if c["alertname"] == name]
        firing = [a for c in mine for a in c.get("exp_alerts") or []]
        assert firing, f"{name}: no promtool test where it fires"
        assert any(not c.get("exp_alerts") for c in mine), f"{name}: no test where it stays quiet"
        for a in firing:
            assert set(a["exp_annotations"]) == set(rule["annotations"]), name
            assert {"severity", "category"} <= set(a["exp_labels"]), name


def _panels() -> tuple[dict[str, contract.Dashboard], set[tuple[str, int]]]:
    return {d.uid: d for d in contract.DASHBOARDS}, {(p.dashboard, p.id) for p in contract.PANELS}


_DASHBOARD = re.compile(
    r"^(?P<base>https?://[^/]+(?:/[^?]*)?)/d/(?P<uid>[\w-]+)/(?P<slug>[\w-]+)"
    r"\?viewPanel=(?P<id>\d+)(?P<vars>.*)$"
)
_VAR = re.compile(
    r"&var-(\w+)=\{\{ \$labels\.(\w+) \| urlquery \}\}"
    r"|\{\{ with \$labels\.(\w+) \}\}&var-(\w+)=\{\{ \. \| urlquery \}\}\{\{ end \}\}"
)


def test_alert_style_runbooks_and_dashboard_links() -> None:
    slo = load_slo(SLO)
    dashboards, panels = _panels()
    fired_labels: dict[str, set[str]] = {}
    for _, case in _unit_cases():
        for a in case.get("exp_alerts") or []:
            fired_labels.setdefault(case["alertname"], set()).update(a["exp_labels"])
    names = [r["alert"] for r in alert_rules()]
    assert len(names) == len(set(names)), "one rule per alert name"
    assert len(names) >= 20
    for rule in alert_rules():
        name = rule["alert"]
        assert CAMEL.fullmatch(name) and len(name) <= 40, name
        assert set(rule["labels"]) == {"severity", "category"}, name
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
        assert rule["labels"]["category"] in ("api", "product", "pipeline"), name
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        notes = rule["annotations"]
        assert set(notes) == {"summary", "description", "runbook_url", "dashboard_url"}, name
        assert notes["summary"].endswith(".") and "{{" not in notes["summary"], name
        assert notes["summary"][0].isupper() and len(notes["summary"]) <= 100, name
        assert "{{" in notes["description"] and notes["description"].endswith("."), name
        assert notes["runbook_url"] == slo.links.runbook_base_url + name
        assert (ROOT / "runbooks" / f"{name}.md").is_file(), f"{name}: no runbook"
        m = _DASHBOARD.match(notes["dashboard_url"])
        assert m, f"{name}: dashboard_url {notes['dashboard_url']}"
        assert m["base"] == slo.links.grafana_url
        uid, panel = m["uid"], int(m["id"])
        assert uid in dashboards and m["slug"] == dashboards[uid].slug, name
        assert (uid, panel) in panels, f"{name}: panel {uid}/{panel} is not in the panel contract"
        rest = m["vars"]
        for v in _VAR.finditer(rest):
            var, label = (v[1], v[2]) if v[1] else (v[4], v[3])
            assert var == label, name
            assert var in dashboards[uid].variables, f"{name}: {uid} has no variable {var}"
            assert label in fired_labels[name] or label == "route", f"{name}: no label {label}"
        assert _VAR.sub("", rest) == "", f"{name}: unexpected dashboard_url tail {rest!r}"


def test_panel_contract_is_one_table_without_clashes() -> None:
    dashboards, panels = _panels()
    assert len(panels) == len(contract.PANELS), "a (dashboard, panel id) pair twice"
    keys = [p.key for p in contract.PANELS if p.key]
    assert len(keys) == len(set(keys)), "an alert panel key twice"
    assert {p.dashboard for p in contract.PANELS} == set(dashboards)
    assert PANELS["memory"] == ("apiusage-pipeline", 17) and PANELS["ttfs"] == ("apiusage-adoption", 4)
    assert {a.panel for a in alerts(load_slo(SLO))} <= set(PANELS), "an alert panel not in the contract"
    with pytest.raises(KeyError, match="no panel with key 'nope'"):
        contract.linked("nope")
    with pytest.raises(KeyError, match="no dashboard 'nope'"):
        contract.dashboard("nope")


def test_slo_file_mistakes_are_reported_with_their_paths() -> None:
    with pytest.raises(SloError) as info:
        parse_slo(
            {
                "defaults": {"availability": 100, "latency": {"threshold": 0.3, "target": 99}},
                "services": {"a": {"routes": [{"method": "GET"}]}},
                "links": {"grafana_url": "grafana:3000"},
            },
            "slo.yaml",
        )
    assert str(info.value) == (
        "slo.yaml is invalid:\n"
        "  defaults.availability: must be a percentage between 0 and 100, exclusive (got 100)\n"
        "  services.a.routes[0]: needs method and route, as in the api_requests_total labels\n"
        "  services.a.routes[0]: set availability, latency or both (otherwise the service's apply)\n"
        "  links.grafana_url: must be an http(s) URL (got 'grafana:3000')\n"
        "  defaults.latency.threshold: must be one of histogram_buckets [0.005, 0.01, 0.025, 0.05, "
        "0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0] (got 0.3); the latency SLO counts requests in the "
        "bucket le=threshold"
    )


@pytest.mark.live
def test_defaults_alone_generate_lint_clean_rules(tmp_path: Path) -> None:
    slo = parse_slo({})
    assert {a.name for a in alerts(slo)} == {r["alert"] for r in alert_rules()}
    for name, text in render(slo).items():
        (tmp_path / name).write_text(text)
    result = subprocess.run(
        [
            promtool(),
            "check",
            "rules",
            "--lint=all",
            "--lint-fatal",
            *map(str, sorted(tmp_path.glob("*.yml"))),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "service!~" not in (tmp_path / "slo.rules.yml").read_text()
    assert "apiusage_route:slo" not in (tmp_path / "slo.rules.yml").read_text().split("alerts")[1]
