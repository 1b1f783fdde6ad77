"""OTLP logs requests holding feedback records, for the processor's feedback tests."""

from __future__ import annotations

from apiusage.demo.otlp import add_attributes
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

__all__ = ["CATEGORY", "CONSUMER", "ORDERS", "ROUTE", "SCORE", "T", "fb", "feedback_attrs", "logs_request"]

SCORE, CATEGORY, ROUTE = "apiusage.feedback.score", "apiusage.feedback.category", "apiusage.feedback.route"
CONSUMER = "apiusage.consumer.id"
T = 1_700_000_000_123_456_789


def feedback_attrs(
    score: object = 4, category: object = "docs", route: object = None, **extra: object
) -> dict:
    return {SCORE: score, CATEGORY: category, ROUTE: route, **extra}


def logs_request(*resources: tuple[dict, list[dict]]) -> ExportLogsServiceRequest:
    """A request of resources, each (resource attributes, records); a record is a dict with
    optional `event_name`, `time`, `observed`, `body` and `attributes`."""
    request = ExportLogsServiceRequest()
    for resource, records in resources:
        rl = request.resource_logs.add()
        add_attributes(rl.resource.attributes, resource)
        scope = rl.scope_logs.add()
        scope.scope.name = "tests.feedback"
        for r in records:
            record = scope.log_records.add()
            record.event_name = r.get("event_name", "")
            record.time_unix_nano = r.get("time", 0)
            record.observed_time_unix_nano = r.get("observed", 0)
            if "body" in r:
                record.body.string_value = r["body"]
            add_attributes(record.attributes, r.get("attributes", {}))
    return request


def fb(**kwargs: object) -> dict:
    """A feedback record named by the OTLP event_name field."""
    attributes = kwargs.pop("attributes", feedback_attrs())
    return {"event_name": "apiusage.feedback", "time": T, "attributes": attributes, **kwargs}


ORDERS = {"service.name": "orders-api"}
