"""The alert rules as the dashboards see them: which alerts link to which panel.

Every panel an alert's `dashboard_url` points at gets a link to that alert's runbook, and
each dashboard's "Firing alerts" panel lists the alerts that point at it.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERT_RULES = ROOT / "alert_rules"


@dataclass
class AlertLink:
    alert: str
    runbook_url: str | None


@dataclass
class Alerts:
    by_panel: dict[tuple[str, int], list[AlertLink]] = field(default_factory=lambda: defaultdict(list))
    by_dashboard: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))


_DASHBOARD_URL = re.compile(r"/d/(?P<uid>[^/?#]+)(?:/[^?#]*)?\?(?P<query>.*)")
_VIEW_PANEL = re.compile(r"(?:^|&)viewPanel=(?:panel-)?(?P<id>\d+)")


def parse_dashboard_url(url: str) -> tuple[str, int] | None:
    """(dashboard uid, panel id) of `<grafana>/d/<uid>/<slug>?viewPanel=<id>&...`, else None."""
    m = _DASHBOARD_URL.search(url)
    if not m:
        return None
    p = _VIEW_PANEL.search(m["query"])
    return (m["uid"], int(p["id"])) if p else None


def alert_rule_files(folder: Path = ALERT_RULES) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix in (".yml", ".yaml") and p.is_file())


def alert_rules(folder: Path = ALERT_RULES) -> Iterable[dict]:
    """Every alerting rule of the Prometheus rule files in `folder`."""
    for path in alert_rule_files(folder):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for group in data.get("groups") or []:
            for rule in group.get("rules") or []:
                if "alert" in rule:
                    yield rule


def load_alerts(folder: Path = ALERT_RULES) -> Alerts:
    out = Alerts()
    for rule in alert_rules(folder):
        annotations = rule.get("annotations") or {}
        target = parse_dashboard_url(str(annotations.get("dashboard_url", "")))
        if target is None:
            continue
        runbook = annotations.get("runbook_url")
        runbook = str(runbook) if runbook and "{{" not in str(runbook) else None
        links = out.by_panel[target]
        if all(link.alert != rule["alert"] for link in links):
            links.append(AlertLink(rule["alert"], runbook))
            out.by_dashboard[target[0]].add(rule["alert"])
    return out
