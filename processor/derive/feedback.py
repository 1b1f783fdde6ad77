"""Developer feedback events, as the sinks see them (from OTLP log records named apiusage.feedback)."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Feedback"]


class Feedback(NamedTuple):
    """One feedback event: what a developer told the API, through the service's own endpoint."""

    service: str
    route: str  # the route template it is about, or "" when about none
    category: str
    score: str  # "1".."5"
    consumer_id: str | None  # stored id (derive.requests.consumer_key), never a label
    time_ns: int
