"""The report's Prometheus client, and PromQL string literals for label values."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request

__all__ = ["PrometheusClient", "PrometheusError", "string"]


class PrometheusError(Exception):
    """Prometheus cannot be reached or refused a query; the message says which and why."""


class PrometheusClient:
    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _get(self, path: str, params: dict[str, str]) -> object:
        url = f"{self.base_url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            try:
                detail = json.load(exc).get("error", exc.reason)
            except ValueError:
                detail = exc.reason
            raise PrometheusError(
                f"Prometheus at {self.base_url} refused {params.get('query', path)!r}: {detail}"
            ) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PrometheusError(f"cannot reach Prometheus at {self.base_url}: {reason}") from None
        if body.get("status") != "success":
            raise PrometheusError(f"Prometheus at {self.base_url}: {body.get('error', body)}")
        return body["data"]

    def check(self) -> None:
        self._get("/api/v1/status/buildinfo", {})

    def query(self, expr: str, at: float) -> list[tuple[dict, float]]:
        data = self._get("/api/v1/query", {"query": expr, "time": f"{at:.3f}"})
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]  # type: ignore[index]

    def query_range(
        self, expr: str, start: float, end: float, step: float
    ) -> list[tuple[dict, list[tuple[float, float]]]]:
        data = self._get(
            "/api/v1/query_range",
            {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:.0f}"},
        )
        return [(r["metric"], [(float(t), float(v)) for t, v in r["values"]]) for r in data["result"]]  # type: ignore[index]

    def alerts(self) -> list[dict]:
        return self._get("/api/v1/alerts", {})["alerts"]  # type: ignore[index]

    def targets(self) -> list[dict]:
        return self._get("/api/v1/targets", {"state": "active"})["activeTargets"]  # type: ignore[index]


def string(value: str) -> str:
    """A PromQL string literal: any label value, quotes, backslashes and control characters included."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return '"' + re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", escaped) + '"'
