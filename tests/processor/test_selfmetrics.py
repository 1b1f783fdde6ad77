"""The one table of internal telemetry (processor/selfmetrics.py) against docs/metrics.md and a live
processor's /metrics, both ways; the closed label sets (telemetry.py enums) against the docs too."""

from __future__ import annotations

import re
from pathlib import Path

from apiusage.processor import selfmetrics
from apiusage.processor.telemetry import DataQualityCheck, ExportOutcome, IgnoreReason, RejectReason
from prometheus_client.parser import text_string_to_metric_families

from tests.support.components import free_port
from tests.support.derivation import export_request, post, span
from tests.support.processor import get, running_processor

ROOT = Path(__file__).resolve().parents[2]
METRICS_MD = (ROOT / "docs" / "metrics.md").read_text()


def _section(title: str) -> str:
    start = METRICS_MD.index(title)
    end = METRICS_MD.find("\n#", start + len(title))
    return METRICS_MD[start : end if end != -1 else None]


def _first_column(section: str) -> list[str]:
    """The backticked value in the first column of each table row (not of the header row)."""
    return re.findall(r"^\| `([^`]+)` \|(?![^\n]*\n\|-)", section, flags=re.M)


def _documented_families() -> dict[str, tuple[str, frozenset[str]]]:
    """{exposed name: (type, labels)} from the tables of docs/metrics.md's pipeline-health section."""
    start = METRICS_MD.index("## Pipeline health metrics (`apiusage_*`)")
    end = METRICS_MD.index("### `outcome` of `apiusage_export_requests_total`")
    out: dict[str, tuple[str, frozenset[str]]] = {}
    for line in METRICS_MD[start:end].splitlines():
        m = re.match(r"^\| `(apiusage_\w+)` \|", line)
        if m is None:
            continue
        name = m.group(1)
        kind, labels = (cell.strip() for cell in line.split("|")[2:4])
        labels = re.sub(r"\([^)]*\)", "", labels)  # `outcome` (`success`, `failure`): values, not labels
        found = frozenset(re.findall(r"`(\w+)`", labels)) - {"le"}
        assert name not in out, f"docs/metrics.md lists {name} twice"
        out[name] = (kind.split()[0], found)
    return out


def _declared() -> dict[str, tuple[str, frozenset[str]]]:
    return {f.exposed_name: (f.kind.value, frozenset(f.labels)) for f in selfmetrics.FAMILIES}


def test_docs_table_lists_exactly_the_declared_families() -> None:
    documented, declared = _documented_families(), _declared()
    assert len(declared) == 37  # + the experiment join (3), apiusage_release_versions_retired_total, checks
    assert sorted(set(declared) - set(documented)) == [], "declared but not in docs/metrics.md"
    assert sorted(set(documented) - set(declared)) == [], "in docs/metrics.md but not declared"
    for name, (kind, labels) in declared.items():
        assert documented[name] == (kind, labels), name


def test_docs_label_value_tables_match_the_enums() -> None:
    pairs = [
        ("### `outcome` of `apiusage_export_requests_total`", ExportOutcome),
        ("### `reason` of `apiusage_spans_rejected_total`", RejectReason),
        ("### `reason` of `apiusage_spans_ignored_total`", IgnoreReason),
        ("### `check` of `apiusage_data_quality_issues_total`", DataQualityCheck),
    ]
    for title, enum in pairs:
        documented = _first_column(_section(title))
        assert sorted(documented) == sorted(m.value for m in enum), title


def test_every_refusal_the_http_server_makes_is_an_export_outcome() -> None:
    """_httpserver.py names its own refusals (timeout, malformed...); the receiver counts them."""
    source = (ROOT / "processor" / "_httpserver.py").read_text()
    kinds = set(re.findall(r'_refuse\(\s*\d+,\s*"(\w+)"', source))
    assert kinds == {"timeout", "malformed", "connection_limit", "shutting_down"}
    assert kinds <= {o.value for o in ExportOutcome}


def test_a_family_with_labels_cannot_be_given_one_value() -> None:
    try:
        selfmetrics.SPANS_REJECTED.family(3)
    except ValueError as exc:
        assert "apiusage_spans_rejected has labels ('reason',)" in str(exc)
    else:
        raise AssertionError("a labelled family took a single value")


def _exposed(text: str) -> dict[str, tuple[str, frozenset[str]]]:
    out: dict[str, tuple[str, frozenset[str]]] = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("apiusage_"):
            continue
        name = f"{family.name}_total" if family.type == "counter" else family.name
        labels = frozenset(k for s in family.samples for k in s.labels) - {"le"}
        out[name] = (family.type, labels)
    return out


def test_a_live_processor_exposes_exactly_the_declared_families() -> None:
    """State store and trace forwarding on: every component that exports something is running."""
    forward = {"exporters": {"otlp": {"endpoint": f"http://127.0.0.1:{free_port()}"}}}
    with running_processor(forward) as running:
        assert post(running.http_endpoint, export_request([span(route="/v1/orders")])) == 200
        running.wait_processed(1)
        status, body, _ = get(running.metrics_url)
        assert status == 200
    exposed, declared = _exposed(body.decode()), _declared()
    assert sorted(set(exposed) - set(declared)) == [], "exposed but not declared"
    assert sorted(set(declared) - set(exposed)) == [], "declared but not exposed"
    for name, (kind, labels) in exposed.items():
        # A labelled family without samples yet shows no labels: compare those that have some.
        assert kind == declared[name][0], name
        if labels:
            assert labels == declared[name][1], name
