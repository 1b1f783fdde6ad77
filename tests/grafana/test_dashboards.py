"""The dashboard JSON: Grafana's schema, the dashboard-linter rules that matter, the panel
contract in apiusage.conventions.panels, and that the committed JSON is what grafana/build.py builds."""

from __future__ import annotations

import importlib.util
import json
import re
import sys

import jsonschema
import pytest

from tests.grafana.grafana_support import (
    CONSUMER_METRICS,
    DASHBOARDS,
    GRAFANA,
    ROOT,
    SCHEMAS,
    base_metric,
    contract,
    contract_uids,
    dashboards,
    data_panels,
    expanded_metrics,
    metric_names,
    panel,
    panels,
    recording_rules,
    referenced_variables,
    slugify,
    variables,
)
from tests.support.components import missing

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Rates over the SLO window (30 days, prometheus/slo.yaml) instead of $__rate_interval:
# an availability SLO and its error budget are defined over that fixed period.
SLO_WINDOW_PANELS = {("apiusage-overview", 9), ("apiusage-overview", 15)}
SLO_WINDOW = "30d"
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range", "__all"}


def schema(name: str) -> dict:
    return json.loads((SCHEMAS / f"{name}.jsonschema.json").read_text(encoding="utf-8"))


def validator(name: str, definition: str | None = None) -> jsonschema.Draft7Validator:
    doc = schema(name)
    if definition:
        doc = {**doc, "$ref": f"#/definitions/{definition}"}
    jsonschema.Draft7Validator.check_schema(doc)
    return jsonschema.Draft7Validator(doc)


def errors(v: jsonschema.Draft7Validator, instance, where: str) -> list[str]:
    return [
        f"{where}/{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in v.iter_errors(instance)
    ]


def test_there_are_exactly_the_four_contract_dashboards():
    assert set(dashboards()) == set(contract_uids())
    for want in contract.DASHBOARDS:
        model = dashboards()[want.uid]
        assert model["title"] == want.title
        assert slugify(model["title"]) == want.slug
        assert model["__file__"] == want.file == f"{want.slug}.json"


@pytest.mark.parametrize("uid", contract_uids())
def test_dashboard_validates_against_grafana_schema(uid):
    model = {k: v for k, v in dashboards()[uid].items() if k != "__file__"}
    problems = errors(validator("dashboard"), model, uid)
    targets = validator("prometheus")
    units = {d["const"] for d in schema("units")["definitions"].values() if "const" in d}
    for p in data_panels(model):
        where = f"{uid}/panel {p['id']}"
        kind = schema(p["type"])
        problems += errors(validator(p["type"], "Options"), p.get("options", {}), f"{where}/options")
        custom = p.get("fieldConfig", {}).get("defaults", {}).get("custom")
        if custom is not None and "FieldConfig" in kind["definitions"]:
            problems += errors(validator(p["type"], "FieldConfig"), custom, f"{where}/fieldConfig/custom")
        for t in p.get("targets", []):
            problems += errors(targets, t, f"{where}/target {t.get('refId')}")
        unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit")
        if unit not in units:
            problems.append(f"{where}: unit {unit!r} is not a Grafana unit")
    assert not problems, "\n".join(problems)


def test_vendored_schemas_are_the_noted_ones():
    readme = (SCHEMAS / "README.md").read_text(encoding="utf-8")
    assert "aba721fdefde7979d14dbd551a6ea0d4ed14599f" in readme
    for path in SCHEMAS.glob("*.json"):
        import hashlib

        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert f"{digest}  {path.name}" in readme, f"{path.name} differs from the copy noted in README.md"


# ----------------------------------------------------------------- dashboard-linter rules


@pytest.mark.parametrize("uid", contract_uids())
def test_lint_uids_ids_and_layout(uid):
    model = dashboards()[uid]
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", model["uid"])
    ids = [p["id"] for p in panels(model)]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {uid}: {sorted(ids)}"
    cells: dict[tuple[int, int], int] = {}
    for p in panels(model):
        g = p["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["y"] >= 0, p["id"]
        assert g["x"] + g["w"] <= 24, f"panel {p['id']} is wider than the grid"
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panels {cells[x, y]} and {p['id']} overlap at {(x, y)}"
                cells[x, y] = p["id"]


def test_uids_are_unique_and_stable():
    uids = [json.loads(p.read_text())["uid"] for p in DASHBOARDS.glob("*.json")]
    assert len(uids) == len(set(uids))
    assert set(uids) == set(contract_uids())


@pytest.mark.parametrize("uid", contract_uids())
def test_lint_datasource_variable_on_every_panel_and_target(uid):
    model = dashboards()[uid]
    ds = variables(model).get("datasource")
    assert ds and ds["type"] == "datasource" and ds["query"] == "prometheus"
    for p in data_panels(model):
        assert p.get("datasource") == DATASOURCE, f"panel {p['id']}"
        assert p.get("targets"), f"panel {p['id']} has no query"
        for t in p["targets"]:
            assert t.get("datasource") == DATASOURCE, f"panel {p['id']} target {t['refId']}"
    for name, var in variables(model).items():
        if var["type"] == "query":
            assert var.get("datasource") == DATASOURCE, f"variable {name}"


_RATE = re.compile(r"\b(rate|irate|increase|delta|idelta)\s*\(")


def range_arguments(expr: str) -> list[tuple[str, str]]:
    """(function, range) for every rate-like call: the [range] inside its parentheses."""
    out = []
    for m in _RATE.finditer(expr):
        depth, i = 1, m.end()
        while i < len(expr) and depth:
            depth += {"(": 1, ")": -1}.get(expr[i], 0)
            i += 1
        inner = expr[m.end() : i - 1]
        out += [(m.group(1), r.split(" offset ")[0].strip()) for r in re.findall(r"\[([^\[\]]+)\]", inner)]
    return out


@pytest.mark.parametrize("uid", contract_uids())
def test_lint_rate_interval(uid):
    for p in data_panels(dashboards()[uid]):
        for t in p["targets"]:
            allowed = {"$__rate_interval"} | ({SLO_WINDOW} if (uid, p["id"]) in SLO_WINDOW_PANELS else set())
            if t.get("instant"):
                allowed.add("$__range")  # an instant table over the range shown (sparse feedback)
            for fn, rng in range_arguments(t["expr"]):
                assert rng in allowed, f"panel {p['id']}: {fn}(...[{rng}]) should use $__rate_interval"


@pytest.mark.parametrize("uid", contract_uids())
def test_lint_titles_descriptions_units(uid):
    for p in data_panels(dashboards()[uid]):
        assert p.get("title"), p["id"]
        description = p.get("description", "")
        assert len(description) >= 40 and "?" in description, (
            f"panel {p['id']} ({p['title']}): the description must say which question it answers"
        )
        assert p.get("fieldConfig", {}).get("defaults", {}).get("unit"), f"panel {p['id']} has no unit"


@pytest.mark.parametrize("uid", contract_uids())
def test_lint_every_variable_used_is_defined(uid):
    model = dashboards()[uid]
    defined = set(variables(model)) | BUILTIN_VARIABLES
    for p in data_panels(model):
        used = referenced_variables(json.dumps(p["targets"]))
        assert used <= defined, f"panel {p['id']} uses undefined {used - defined}"
    for name, var in variables(model).items():
        assert referenced_variables(json.dumps(var.get("query", ""))) <= defined, name


@pytest.mark.parametrize("uid", contract_uids())
def test_histograms_ask_for_exemplars(uid):
    """Graphs of the request duration histogram show exemplars (trace ids) to jump to a trace."""
    for p in data_panels(dashboards()[uid]):
        if p["type"] not in ("timeseries", "heatmap"):
            continue
        for t in p["targets"]:
            if "api_request_duration_seconds_bucket" in metric_names(t["expr"]):
                assert t.get("exemplar") is True, f"panel {p['id']} target {t['refId']}"


@pytest.mark.parametrize("uid", contract_uids())
def test_consumer_gauges_are_aggregated_with_max_across_replicas(uid):
    for p in data_panels(dashboards()[uid]):
        for t in p["targets"]:
            used = {m for m in metric_names(t["expr"]) if base_metric(m) in CONSUMER_METRICS}
            if not used:
                continue
            assert "max without (instance)" in t["expr"], f"panel {p['id']}: {t['expr']}"
            summed = re.search(
                r"\b(sum|avg|count)\s*(?:by\s*\([^)]*\)\s*)?\(\s*(?:increase\(\s*)?("
                + "|".join(CONSUMER_METRICS)
                + ")",
                t["expr"],
            )
            assert not summed, f"panel {p['id']} adds replicas' consumer gauges: {t['expr']}"


@pytest.mark.parametrize("uid", contract_uids())
def test_each_dashboard_shows_its_firing_alerts(uid):
    model = dashboards()[uid]
    p = panel(model, 1)
    assert p is not None and p["title"] == "Firing alerts"
    (t,) = p["targets"]
    assert t["expr"].startswith("ALERTS{") and 'alertstate="firing"' in t["expr"]
    assert t.get("instant") is True


# ----------------------------------------------------------------- the panel contract


@pytest.mark.parametrize("item", contract.PANELS, ids=lambda i: f"{i.dashboard}-{i.id}")
def test_contract_panel_is_there_and_plots_its_metric(item):
    model = dashboards()[item.dashboard]
    p = panel(model, item.id)
    assert p is not None, f"{item.dashboard} has no panel {item.id}"
    assert p["title"] == item.title
    recording = recording_rules()
    plotted = set().union(*(expanded_metrics(t["expr"], recording) for t in p["targets"]))
    assert item.metric in plotted, f"panel {item.id} plots {plotted}, not {item.metric}"


@pytest.mark.parametrize("uid", contract_uids())
def test_contract_variables_exist(uid):
    model = dashboards()[uid]
    want = contract.dashboard(uid).variables
    assert set(want) <= set(variables(model)), f"{uid} lacks {set(want) - set(variables(model))}"
    for name in set(want) - {"datasource"}:
        var = variables(model)[name]
        if var["type"] == "query":
            assert var["multi"] and var["includeAll"] and var["allValue"] == ".*", name


# ----------------------------------------------------------------- generated, not hand-edited


def load_builder():
    spec = importlib.util.spec_from_file_location("grafana_build", GRAFANA / "build.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_committed_json_is_what_build_py_builds():
    if sys.version_info < (3, 11):
        pytest.skip("grafana-foundation-sdk needs Python 3.11")
    if importlib.util.find_spec("grafana_foundation_sdk") is None:
        missing("grafana-foundation-sdk (the dev extra)")
    build = load_builder()
    stale = build.stale(build.render())
    assert not stale, f"stale dashboards {stale}: run `python grafana/build.py` and commit the JSON"


def test_a_contract_panel_takes_its_title_from_the_contract_only():
    if sys.version_info < (3, 11):
        pytest.skip("grafana-foundation-sdk needs Python 3.11")
    if importlib.util.find_spec("grafana_foundation_sdk") is None:
        missing("grafana-foundation-sdk (the dev extra)")
    load_builder()
    from boards.alert_links import Alerts
    from boards.kit import CONTRACT, Board, q, timeseries_panel

    board = Board(contract.OVERVIEW, Alerts())
    args = ("description", "short", 12, 8, q("up"))
    board.add(timeseries_panel(), 2, CONTRACT, *args)
    assert board.panels[-1].build().title == "Requests per second by route"
    with pytest.raises(ValueError, match="apiusage-overview panel 2 is in the panel contract"):
        board.add(timeseries_panel(), 2, "Requests by route", *args)
    with pytest.raises(ValueError, match="apiusage-overview panel 99 is not in the panel contract"):
        board.add(timeseries_panel(), 99, CONTRACT, *args)


def test_sdk_pin_matches_the_grafana_image():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    (sdk,) = re.findall(r"grafana-foundation-sdk==\d+!(\d+\.\d+)\.\d+", pyproject)
    compose = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    (image,) = re.findall(r"image:\s*grafana/grafana:(\d+\.\d+)\.\d+", compose)
    assert sdk == image, f"the SDK builds for Grafana {sdk}, docker-compose.yml runs {image}"
    readme = (SCHEMAS / "README.md").read_text(encoding="utf-8")
    assert f"!{sdk}.0" in readme
