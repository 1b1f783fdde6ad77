"""Answers that need consumer ids, for customer success: who still calls a deprecated endpoint,
who is at risk of churning; and, for API designers, which declared parameters nobody sends.
Shared by the admin endpoint and `apiusage consumers`."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from ..derive.routes import catalog_key
from .report import (
    DAY_MS,
    UNUSED_AFTER_DAYS,
    consumer_trends,
    deprecated_callers,
    deprecated_endpoints,
    is_at_risk,
    unused_parameters,
)
from .store import Store

__all__ = ["deprecated_consumers", "at_risk_consumers", "unused_parameter_list", "AuditLog", "iso"]


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="seconds")


def deprecated_consumers(
    store: Store,
    catalog,
    now_ms: int,
    window_days: int,
    service: str | None = None,
    method: str | None = None,
    route: str | None = None,
    accounts: Mapping[str, str] | None = None,
) -> list[dict]:
    """One entry per deprecated endpoint (optionally filtered), with its consumers in the window."""
    accounts = accounts or {}
    out = []
    for ep in deprecated_endpoints(store, catalog):
        if (
            (service and ep.service != service)
            or (method and ep.method != method.upper())
            or (route and ep.route != route)
        ):
            continue
        callers = deprecated_callers(store, ep.service, ep.method, ep.route, now_ms - window_days * DAY_MS)
        out.append(
            {
                "service": ep.service,
                "method": ep.method,
                "route": ep.route,
                "sunset": ep.sunset.isoformat() if ep.sunset else None,
                "replacement": " ".join(ep.replacement) if ep.replacement else None,
                "window_days": window_days,
                "consumers": [
                    {
                        "consumer_id": consumer,
                        "account": accounts.get(consumer),
                        "plan_tier": plan,
                        "client_name": client,
                        "client_version": version,
                        "last_call": iso(last),
                        "calls": calls,
                    }
                    for consumer, plan, client, version, last, calls in callers
                ],
            }
        )
    return out


def at_risk_consumers(
    store: Store, now_ms: int, service: str | None = None, accounts: Mapping[str, str] | None = None
) -> list[dict]:
    """Consumers whose last 7 days fell below half their previous 4-week weekly average."""
    accounts = accounts or {}
    rows = [
        r
        for r in consumer_trends(store, now_ms // DAY_MS)
        if is_at_risk(r[6], r[7]) and (service is None or r[0] == service)
    ]
    rows.sort(key=lambda r: (-(r[7] - r[6]), r[0], r[1]))
    return [
        {
            "service": s,
            "consumer_id": c,
            "account": accounts.get(c),
            "plan_tier": plan,
            "client_name": client,
            "client_version": version,
            "last_seen": iso(last),
            "calls_last_7_days": recent,
            "weekly_average_previous_4_weeks": average,
        }
        for s, c, plan, client, version, last, recent, average in rows
    ]


def unused_parameter_list(
    store: Store,
    catalog,
    now_ms: int,
    service: str | None = None,
    method: str | None = None,
    route: str | None = None,
    max_length: int = 128,
) -> list[dict]:
    """Per catalog endpoint called in the last 30 days (optionally filtered): the declared
    parameters no request sent in them; no consumer ids."""
    return [
        {
            "service": u.service,
            "method": u.method,
            "route": u.route,
            "last_call": iso(u.last_call_ms),
            "window_days": UNUSED_AFTER_DAYS,
            "declared": u.declared,
            "unused": [{"location": location, "name": name} for location, name in u.names],
        }
        for u in unused_parameters(store, catalog, now_ms, max_length, service)
        if (not method or u.method == method.upper()) and (not route or _same_route(u.route, route))
    ]


def _same_route(observed: str, asked: str) -> bool:
    """`asked` names the observed route in any template syntax (`/orders/:id` for `/orders/{id}`),
    as the catalog's routes match the spans'."""
    if observed == asked:
        return True
    key = catalog_key(asked)
    return key is not None and key == catalog_key(observed)


class AuditLog:
    """Append-only JSON lines: who asked for consumer ids, when, and what they got."""

    def __init__(self, path: str, key: str = "admin.audit_log") -> None:
        """Check now that the log can be appended to; raises ValueError naming `key` and the file."""
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600))
        except OSError as exc:
            raise ValueError(f"{key}: cannot append to the audit log {path}: {exc.strerror or exc}") from None

    def write(self, **entry: object) -> None:
        """Append one line; raises OSError when the log cannot be written (say so, disclose nothing)."""
        record = {"time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"), **entry}
        line = json.dumps(record, sort_keys=True) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)


def now_ms() -> int:
    return int(time.time() * 1000)
