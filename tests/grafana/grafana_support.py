"""What the dashboard tests share: the files, the panel contract, PromQL helpers."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import yaml
from apiusage.conventions import panels as contract

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
SCHEMAS = Path(__file__).resolve().parent / "schema"
ALERT_RULES = ROOT / "alert_rules"
PROMETHEUS_DIR = ROOT / "prometheus"

# Consumer-state metrics: identical on every replica, aggregated with max, never summed.
CONSUMER_METRICS = (
    "api_active_consumers",
    "api_new_consumers_total",
    "api_time_to_first_success_seconds",
    "api_endpoint_consumers",
    "api_feature_consumers",
    "api_feature_adoption_ratio",
    "api_client_version_consumers",
    "api_deprecated_endpoint_consumers",
    "api_endpoint_sunset_timestamp_seconds",
    "api_migrated_consumers",
    "api_unused_endpoints",
    "api_endpoint_last_called_timestamp_seconds",
    "api_cohort_retention_ratio",
    "api_consumers_at_risk",
    "api_parameter_consumers",
    "api_unused_parameters",
    "api_feedback_consumers",
    "api_release_first_seen_timestamp_seconds",
    "api_release_rank",
    # Experiments (issue 16): assignment from the store, and the checks of the state refresh.
    "api_experiment_consumers",
    "api_experiment_contaminated_consumers",
    "api_experiment_running",
    "api_experiment_sample_ratio_p_value",
    "api_experiment_sample_ratio_mismatch",
    "api_experiment_guardrail_failed",
    "api_experiment_p_value",
)


@cache
def dashboards() -> dict[str, dict]:
    """uid -> dashboard model, for every grafana/dashboards/*.json."""
    out = {}
    for path in sorted(DASHBOARDS.glob("*.json")):
        model = json.loads(path.read_text(encoding="utf-8"))
        model["__file__"] = path.name
        out[model["uid"]] = model
    return out


def contract_uids() -> list[str]:
    """The uids of the panel contract's dashboards, sorted (for parametrize)."""
    return sorted(d.uid for d in contract.DASHBOARDS)


def panels(model: dict) -> Iterator[dict]:
    """Every panel, including those inside collapsed rows."""
    for panel in model.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def data_panels(model: dict) -> Iterator[dict]:
    return (p for p in panels(model) if p.get("type") != "row")


def panel(model: dict, panel_id: int) -> dict | None:
    return next((p for p in panels(model) if p.get("id") == panel_id), None)


def variables(model: dict) -> dict[str, dict]:
    return {v["name"]: v for v in model.get("templating", {}).get("list", [])}


def slugify(title: str) -> str:
    """Grafana's URL slug of a dashboard title."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w:$.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])")
_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "and",
    "or",
    "unless",
    "atan2",
    "inf",
    "nan",
    "Inf",
    "NaN",
}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, keywords and labels excluded)."""
    names: set[str] = set()
    for m in re.finditer(r"__name__\s*=~?\s*\"([^\"]*)\"", expr):
        names.update(n for n in m.group(1).split("|") if re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", n))
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    for m in _IDENT.finditer(text):
        name = m.group(1)
        rest = text[m.end() :].lstrip()
        if name in _KEYWORDS or rest.startswith("("):
            continue
        if re.fullmatch(r"\d+[smhdwy]", name) or name.startswith("$"):
            continue
        names.add(name)
    return names


_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def referenced_variables(text: str) -> set[str]:
    return {next(g for g in m.groups() if g) for m in _VAR.finditer(text)}


def substitute(expr: str, values: dict[str, str]) -> str:
    """The query with template variables replaced, as Grafana would send it."""

    def repl(m: re.Match) -> str:
        name = next(g for g in m.groups() if g)
        if name not in values:
            raise KeyError(f"no test value for ${name} in {expr}")
        return values[name]

    return _VAR.sub(repl, expr)


def default_values(model: dict, rate_interval: str) -> dict[str, str]:
    """Each variable's value with everything at its default ('All' is the variable's allValue)."""
    out = {"__rate_interval": rate_interval, "__interval": "1s", "__range": "5m"}
    for name, var in variables(model).items():
        current = (var.get("current") or {}).get("value")
        if var.get("includeAll") and current in ("$__all", ["$__all"], None):
            out[name] = var.get("allValue") or ".*"
        elif isinstance(current, list):
            out[name] = "|".join(current)
        else:
            out[name] = str(current)
    return out


def alert_rule_files() -> list[Path]:
    return sorted(p for p in ALERT_RULES.rglob("*") if p.suffix in (".yml", ".yaml") and p.is_file())


def rule_files() -> list[Path]:
    """Every Prometheus rule file of the project (recording and alerting)."""
    found = set(alert_rule_files())
    for path in PROMETHEUS_DIR.rglob("*"):
        if path.suffix in (".yml", ".yaml") and path.is_file():
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and isinstance(data.get("groups"), list):
                found.add(path)
    return sorted(found)


def rules(paths: list[Path]) -> Iterator[dict]:
    for path in paths:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for group in data.get("groups") or []:
            yield from group.get("rules") or []


@cache
def recording_rules() -> dict[str, list[str]]:
    """Recorded series name -> the expressions that compute it, from every rule file."""
    out: dict[str, list[str]] = {}
    for rule in rules(rule_files()):
        if "record" in rule:
            out.setdefault(rule["record"], []).append(str(rule["expr"]))
    return out


def expanded_metrics(expr: str, recording: dict[str, list[str]], depth: int = 0) -> set[str]:
    """Metric names of `expr`, with recording rules replaced by what they are computed from."""
    out = set()
    for name in metric_names(expr):
        out.add(name)
        if name in recording and depth < 10:
            for sub in recording[name]:
                out |= expanded_metrics(sub, recording, depth + 1)
    return out


def base_metric(name: str) -> str:
    """Histogram and summary series share their family name."""
    return re.sub(r"_(bucket|count|sum)$", "", name)
