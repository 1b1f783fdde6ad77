"""experiments.yaml: the protocol file read by the processor and the experiments report."""

from __future__ import annotations

import datetime as dt

import pytest
from apiusage.conventions.experiments import ExperimentsError, load_experiments, parse_experiments

GOOD = """\
version: 1
experiments:
  checkout-v2:
    service: orders-api
    flag: checkout-v2
    variants: [control, treatment]
    control: control
    split: {control: 3, treatment: 1}
    segment:
      plan_tiers: [pro, enterprise]
      clients: [orders-sdk]
      routes: ["POST /v2/orders", "* /v1/orders/:id"]
    primary: client_error_ratio
    guardrails: [error_ratio, latency_p95, adoption]
    feature: orders
    minimum_detectable_effect: 0.2
    alpha: 0.01
    power: 0.9
    start: 2026-11-02
    planned_days: 14
  search-ranking:
    service: search-api
    flag: ranking
    variants: [a, b, c]
    control: b
"""


def test_a_full_file_reads_into_the_model(tmp_path):
    path = tmp_path / "experiments.yaml"
    path.write_text(GOOD)
    experiments = load_experiments(path)
    assert len(experiments) == 2
    e = experiments.experiments["checkout-v2"]
    assert (e.service, e.flag, e.variants, e.control) == (
        "orders-api",
        "checkout-v2",
        ("control", "treatment"),
        "control",
    )
    assert e.split == {"control": 0.75, "treatment": 0.25}
    assert e.metrics == ("client_error_ratio", "error_ratio", "latency_p95", "adoption")
    assert e.treatments == ("treatment",)
    assert (e.minimum_detectable_effect, e.alpha, e.power) == (0.2, 0.01, 0.9)
    assert (e.start, e.planned_days, e.feature) == (dt.date(2026, 11, 2), 14, "orders")
    other = experiments.for_flag("search-api", "ranking")
    assert other is not None and other.name == "search-ranking"
    assert other.split == {"a": pytest.approx(1 / 3), "b": pytest.approx(1 / 3), "c": pytest.approx(1 / 3)}
    assert (other.primary, other.guardrails, other.alpha, other.power) == ("error_ratio", (), 0.05, 0.8)
    assert experiments.for_flag("orders-api", "ranking") is None


def test_the_segment_matches_by_route_slots_method_tier_and_client():
    segment = (
        parse_experiments(_doc(segment={"routes": ["POST /v2/orders", "* /v1/orders/:id"]}))
        .experiments["x"]
        .segment
    )
    assert segment.matches("POST", "/v2/orders", "free", "any")
    assert not segment.matches("GET", "/v2/orders", "free", "any")
    assert segment.matches("DELETE", "/v1/orders/{order_id}", "free", "any")  # the same slots
    assert not segment.matches("GET", "/v1/orders", "free", "any")
    assert not segment.matches("GET", "not a route", "free", "any")
    tiers = (
        parse_experiments(_doc(segment={"plan_tiers": ["pro"], "clients": ["web"]})).experiments["x"].segment
    )
    assert tiers.matches("GET", "/a", "pro", "web")
    assert not tiers.matches("GET", "/a", "free", "web")
    assert not tiers.matches("GET", "/a", "pro", "cli")
    assert parse_experiments(_doc()).experiments["x"].segment.matches("GET", "/", "", "")


def _doc(**fields):
    body = {"service": "s", "flag": "f", "variants": ["a", "b"], "control": "a", **fields}
    return {"experiments": {"x": body}}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"variants": ["a"]}, "experiments.x.variants: an experiment needs at least two variants"),
        ({"variants": ["a", "a"]}, "experiments.x.variants[1]: 'a' is listed twice"),
        (
            {"variants": ["a", "b c"]},
            "experiments.x.variants[1]: not a name (letters, digits, _.:-, at most 63; got 'b c')",
        ),
        # Regression: "$" matched before a final newline, so "b\n" passed and never met a variant.
        (
            {"variants": ["a", "b\n"]},
            "experiments.x.variants[1]: not a name (letters, digits, _.:-, at most 63; got 'b\\n')",
        ),
        ({"control": "z"}, "experiments.x.control: 'z' is not one of the variants ['a', 'b']"),
        ({"split": {"a": 1}}, "experiments.x.split.b: every variant needs a weight"),
        ({"split": {"a": 1, "b": -1}}, "experiments.x.split.b: expected a positive number (got -1)"),
        ({"split": {"a": 1, "b": 1, "c": 1}}, "experiments.x.split.c: not one of the variants ['a', 'b']"),
        (
            {"primary": "revenue"},
            "experiments.x.primary: unknown metric 'revenue' (known: error_ratio, "
            "client_error_ratio, latency_p95, adoption, time_to_first_success)",
        ),
        (
            {"guardrails": ["adoption"]},
            "experiments.x.feature: required when 'adoption' is a metric (which feature?)",
        ),
        ({"alpha": 0}, "experiments.x.alpha: expected a number above 0.0 and at most 0.5 (got 0)"),
        (
            {"alpha": float("nan")},
            "experiments.x.alpha: expected a number above 0.0 and at most 0.5 (got nan)",
        ),
        ({"power": True}, "experiments.x.power: expected a number above 0.5 and at most 1.0 (got True)"),
        (
            {"planned_days": 0},
            "experiments.x.planned_days: expected a whole number of days, 1 to 366 (got 0)",
        ),
        ({"start": "2026-02-30"}, "experiments.x.start: not a date (got '2026-02-30')"),
        (
            {"segment": {"routes": ["/v1/orders"]}},
            "experiments.x.segment.routes[0]: expected 'METHOD /route' (got '/v1/orders')",
        ),
        (
            {"segment": {"regions": ["EU"]}},
            "experiments.x.segment.regions: unknown key (allowed: plan_tiers, clients, routes)",
        ),
        ({"flag": "a\x1b[31m"}, "experiments.x.flag: control characters are not allowed"),
        ({"owner": "me"}, "experiments.x.owner: unknown key"),
    ],
)
def test_each_mistake_is_named_with_its_key_path(fields, message):
    with pytest.raises(ExperimentsError) as caught:
        parse_experiments(_doc(**fields), "exp.yaml")
    assert str(caught.value).startswith(f"exp.yaml: {message}")


def test_whole_file_errors():
    with pytest.raises(
        ExperimentsError, match=r"^exp.yaml: expected a mapping with an 'experiments' key \(got a list\)$"
    ):
        parse_experiments([1], "exp.yaml")
    with pytest.raises(
        ExperimentsError, match=r"^exp.yaml: version: unsupported experiments file version \(got 2\)$"
    ):
        parse_experiments({"version": 2}, "exp.yaml")
    with pytest.raises(ExperimentsError, match=r"^exp.yaml: experiments.bad name: not an experiment name"):
        parse_experiments({"experiments": {"bad name": {}}}, "exp.yaml")
    with pytest.raises(ExperimentsError, match=r"^exp.yaml: experiments.e1\n: not an experiment name"):
        parse_experiments({"experiments": {"e1\n": _doc()["experiments"]["x"]}}, "exp.yaml")
    two = {"experiments": {"x": _doc()["experiments"]["x"], "y": _doc()["experiments"]["x"]}}
    with pytest.raises(
        ExperimentsError,
        match=r"^exp.yaml: experiments.y.flag: flag 'f' of service 's' is already experiment 'x'$",
    ):
        parse_experiments(two, "exp.yaml")
    assert len(parse_experiments(None)) == 0


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ExperimentsError, match=r"missing.yaml: experiments file not found$"):
        load_experiments(tmp_path / "missing.yaml")
    with pytest.raises(ExperimentsError, match=r": is a directory, not an experiments file$"):
        load_experiments(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiments:\n  x: [1,\n")
    with pytest.raises(ExperimentsError, match=r"bad.yaml: not valid YAML at line \d+, column \d+: "):
        load_experiments(bad)
    laughs = tmp_path / "laughs.yaml"
    laughs.write_text(
        "a: &a [x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
            for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        )
    )
    with pytest.raises(ExperimentsError, match=r"laughs.yaml: not valid YAML"):
        load_experiments(laughs)
