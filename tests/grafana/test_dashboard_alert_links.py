"""Every alert's dashboard_url opens a panel here that plots what the alert fires on, and that
panel links to the alert's runbook; each dashboard's "Firing alerts" panel lists its alerts."""

from __future__ import annotations

import re
import urllib.parse

import pytest

from tests.grafana.grafana_support import (
    alert_rule_files,
    base_metric,
    contract,
    dashboards,
    expanded_metrics,
    panel,
    recording_rules,
    rules,
    slugify,
    variables,
)
from tests.support.components import missing


def alerts() -> list[dict]:
    return [r for r in rules(alert_rule_files()) if "alert" in r]


def parse(url: str) -> tuple[str, str, int, set[str]]:
    """(uid, slug, panel id, template variable names) of a dashboard_url (Go templates removed)."""
    plain = re.sub(r"\{\{.*?\}\}", "x", url)
    parts = urllib.parse.urlsplit(plain)
    m = re.fullmatch(r"/d/([^/]+)/([^/]+)", parts.path)
    assert m, f"not a /d/<uid>/<slug> URL: {url}"
    query = urllib.parse.parse_qs(parts.query)
    (view,) = query["viewPanel"]
    names = {k.removeprefix("var-") for k in query if k.startswith("var-")}
    names |= set(re.findall(r"var-(\w+)=", url))  # inside {{ with ... }} blocks
    return m[1], m[2], int(view), names


@pytest.fixture(scope="module")
def alert_rules() -> list[dict]:
    found = alerts()
    if not found:
        missing("alert rules in alert_rules/ (apiusage rules writes them)")
    return found


def test_every_alert_links_to_a_panel_that_plots_its_metric(alert_rules):
    recording = recording_rules()
    by_panel = {(p.dashboard, p.id): p for p in contract.PANELS}
    problems = []
    for rule in alert_rules:
        name = rule["alert"]
        url = (rule.get("annotations") or {}).get("dashboard_url")
        if not url:
            problems.append(f"{name}: no dashboard_url annotation")
            continue
        uid, slug, panel_id, names = parse(url)
        model = dashboards().get(uid)
        if model is None:
            problems.append(f"{name}: no dashboard {uid}")
            continue
        if slug != slugify(model["title"]):
            problems.append(f"{name}: slug {slug} is not {slugify(model['title'])}")
        p = panel(model, panel_id)
        if p is None:
            problems.append(f"{name}: {uid} has no panel {panel_id}")
            continue
        unknown = names - set(variables(model))
        if unknown:
            problems.append(f"{name}: {uid} has no template variable {sorted(unknown)}")
        fires_on = {base_metric(m) for m in expanded_metrics(str(rule["expr"]), recording)}
        plotted = {base_metric(m) for t in p["targets"] for m in expanded_metrics(t["expr"], recording)}
        listed = by_panel.get((uid, panel_id))
        contract_metric = listed.metric if listed else None
        if contract_metric is None:
            problems.append(f"{name}: panel {uid}/{panel_id} is not in the panel contract")
        elif base_metric(contract_metric) not in fires_on:
            problems.append(
                f"{name} fires on {sorted(fires_on)}, but panel {uid}/{panel_id} is about {contract_metric}"
            )
        if not fires_on & plotted:
            problems.append(
                f"{name}: panel {uid}/{panel_id} plots {sorted(plotted)}, none of {sorted(fires_on)}"
            )
    assert not problems, "\n".join(problems)


def test_linked_panels_carry_the_runbook_link(alert_rules):
    problems = []
    for rule in alert_rules:
        annotations = rule.get("annotations") or {}
        uid, _, panel_id, _ = parse(annotations["dashboard_url"])
        p = panel(dashboards()[uid], panel_id)
        runbook = annotations.get("runbook_url")
        links = {link["url"]: link["title"] for link in p.get("links", [])}
        if runbook not in links:
            problems.append(f"{uid} panel {panel_id} has no link to {rule['alert']}'s runbook {runbook}")
    assert not problems, "\n".join(problems)


def test_firing_alert_panels_list_exactly_their_alerts(alert_rules):
    want: dict[str, set[str]] = {uid: set() for uid in dashboards()}
    for rule in alert_rules:
        uid, *_ = parse(rule["annotations"]["dashboard_url"])
        want[uid].add(rule["alert"])
    for uid, names in want.items():
        expr = panel(dashboards()[uid], 1)["targets"][0]["expr"]
        listed = set(re.search(r'alertname=~"([^"]*)"', expr).group(1).split("|")) - {"^$"}
        assert listed == names, (
            f"{uid}: the firing alerts panel lists {sorted(listed)}, alerts {sorted(names)}"
        )
