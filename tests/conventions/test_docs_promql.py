"""The docs' PromQL for one endpoint in any route syntax selects exactly its series (promtool)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.prometheus import promtool

DOCS = Path(__file__).resolve().parents[2] / "docs"
SAME_ENDPOINT = [
    "/v1/reports/{report_id}",
    "/v1/reports/{id:[0-9]{3}}",
    "/v1/reports/:reportId",
    "/v1/reports/<int:report_id>",
    "/v1/reports/*",
    "/v1/reports/:id(.:format)",  # Rails
    '/v1/reports/:"report-id"',  # Express 5
    "/v1/reports/{id}",  # the processor's path fallback
]
OTHER_ENDPOINTS = ["/v1/reports", "/v1/reports/summary", "/v1/reports/:id/items", "/v2/reports/{id}"]


def _route_selectors() -> list[tuple[str, str]]:
    """(doc, the quoted route=~ string) of every PromQL example that selects one endpoint."""
    found = []
    for doc in ("catalog.md", "metrics.md"):
        for block in re.findall(r"```promql\n(.*?)```", (DOCS / doc).read_text(encoding="utf-8"), re.S):
            found += [(doc, m) for m in re.findall(r'route=~("(?:[^"\\]|\\.)*")', block)]
    return found


def test_the_docs_have_the_examples() -> None:
    assert sorted(doc for doc, _ in _route_selectors()) == ["catalog.md", "metrics.md"]


@pytest.mark.parametrize(("doc", "selector"), _route_selectors())
def test_the_docs_query_selects_one_endpoint_in_every_syntax(tmp_path: Path, doc: str, selector: str) -> None:
    query = f"api_requests_total{{route=~{selector}}}"
    series = [
        {
            "series": 'api_requests_total{service="orders-api",route=' + _quoted(route) + "}",
            "values": "0+60x1440",
        }
        for route in SAME_ENDPOINT + OTHER_ENDPOINTS
    ]
    test = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    {
                        "expr": f"count({query})",
                        "eval_time": "1d",
                        "exp_samples": [{"labels": "{}", "value": len(SAME_ENDPOINT)}],
                    },
                    {
                        "expr": f"count by (route) ({query})",
                        "eval_time": "1d",
                        "exp_samples": [
                            {"labels": "{route=" + _quoted(route) + "}", "value": 1}
                            for route in SAME_ENDPOINT
                        ],
                    },
                ],
            }
        ],
    }
    path = tmp_path / "conv-docs-promql.test.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    result = subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def test_the_examples_agree_with_route_key() -> None:
    """What the query groups is what the catalog matches as one route."""
    from apiusage.conventions.routes import route_key

    assert {route_key(r) for r in SAME_ENDPOINT} == {"/v1/reports/{}"}
    assert "/v1/reports/{}" not in {route_key(r) for r in OTHER_ENDPOINTS}
