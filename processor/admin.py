"""The admin endpoint: consumer ids for customer success, behind a bearer token, audited.

Off unless `admin.token` or `admin.token_file` is set.  Tokens are compared in
constant time and never logged; every request, allowed or not, is written to
the audit log.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from urllib.parse import parse_qs

from ._httpserver import HttpServer, Limits, Reply, Request, Served, log_refusals
from .config import AdminConfig, Secret
from .state.listing import AuditLog, at_risk_consumers, deprecated_consumers, now_ms, unused_parameter_list
from .state.service import StateService
from .state.store import StoreError

__all__ = ["AdminServer", "read_token"]

log = logging.getLogger("apiusage.processor.admin")

_WINDOWS = {"1d": 1, "7d": 7, "30d": 30, "90d": 90}


def read_token(config: AdminConfig) -> str:
    """The admin token; raises ValueError naming the key when its file is unusable."""
    return Secret(config.token, config.token_file).read("admin")


class _Admin:
    def __init__(self, token: bytes, state: StateService, audit: AuditLog) -> None:
        self.token = token
        self.state = state
        self.audit = audit

    async def handle(self, request: Request) -> Reply:
        # State reads and the audit log are blocking I/O: on a thread, off the server's loop.
        return await asyncio.to_thread(self._handle, request)

    def _handle(self, request: Request) -> Reply:
        query = {k: v[-1] for k, v in parse_qs(request.query).items()}
        given = request.headers.get("authorization", "")
        scheme, _, credential = given.partition(" ")
        authorized = scheme.lower() == "bearer" and hmac.compare_digest(
            credential.strip().encode(), self.token
        )
        audit = {"remote": request.client, **_audited_request(request.path, query), "authorized": authorized}
        if not authorized:
            return self._audited(
                _json(
                    401,
                    {"error": "a valid bearer token is required"},
                    {"WWW-Authenticate": 'Bearer realm="apiusage-admin"'},
                ),
                **audit,
                status=401,
            )
        if request.method not in ("GET", "HEAD"):
            return self._audited(
                _json(405, {"error": "use GET"}, {"Allow": "GET, HEAD"}), **audit, status=405
            )
        try:
            status, body, count = self._answer(request.path, query)
        except ValueError as exc:
            status, body, count = 400, {"error": str(exc)}, 0
        except StoreError as exc:  # the store is down or damaged: say so rather than hang up
            status, body, count = 503, {"error": str(exc)}, 0
        return self._audited(_json(status, body), **audit, status=status, consumers_returned=count)

    def _audited(self, reply: Reply, **entry: object) -> Reply:
        """`reply` once its audit line is written; when it cannot be, a 503 that discloses nothing."""
        try:
            self.audit.write(**entry)
        except OSError as exc:
            log.error("admin.audit_log %s cannot be written: %s", self.audit.path, exc)
            return _json(
                503,
                {
                    "error": f"the audit log cannot be written ({exc.strerror or exc}); "
                    "no consumer ids without it"
                },
            )
        return reply

    def _answer(self, path: str, query: dict[str, str]) -> tuple[int, object, int]:
        state = self.state
        accounts = state.plans.accounts if state.plans is not None else {}
        if path == "/v1/consumers/deprecated":
            window = query.get("window", "30d")
            if window not in _WINDOWS:
                raise ValueError(f"window must be one of {', '.join(_WINDOWS)} (got {window!r})")
            endpoints = state.read(
                lambda store: deprecated_consumers(
                    store,
                    state.catalog,
                    now_ms(),
                    _WINDOWS[window],
                    query.get("service"),
                    query.get("method"),
                    query.get("route"),
                    accounts,
                )
            )
            return 200, {"endpoints": endpoints}, sum(len(e["consumers"]) for e in endpoints)
        if path == "/v1/consumers/at-risk":
            rows = state.read(
                lambda store: at_risk_consumers(store, now_ms(), query.get("service"), accounts)
            )
            return 200, {"consumers": rows}, len(rows)
        if path == "/v1/parameters/unused":
            max_length = state.limits.max_label_length if state.limits is not None else 128
            endpoints = state.read(
                lambda store: unused_parameter_list(
                    store,
                    state.catalog,
                    now_ms(),
                    query.get("service"),
                    query.get("method"),
                    query.get("route"),
                    max_length,
                )
            )
            return 200, {"endpoints": endpoints}, 0  # names of parameters, no consumer ids
        return (
            404,
            {"error": "try /v1/consumers/deprecated, /v1/consumers/at-risk or /v1/parameters/unused"},
            0,
        )


# What of a request the audit log keeps: anyone, token or not, can send 64 KiB of path and query,
# and each request is a line.  Cut to at most 256 + 8 × 2 × 256 characters: about 4.5 KB a line
# for ASCII (JSON's \u escapes make it at most 12 bytes a character for the rest).
AUDIT_MAX_TEXT = 256
AUDIT_MAX_PARAMS = 8


def _audited_request(path: str, query: dict[str, str]) -> dict[str, object]:
    """The path and query for the audit line, each bounded; `truncated` says when something was cut."""
    cut = len(path) > AUDIT_MAX_TEXT or len(query) > AUDIT_MAX_PARAMS
    kept = {}
    for key, value in list(query.items())[:AUDIT_MAX_PARAMS]:
        cut = cut or len(key) > AUDIT_MAX_TEXT or len(value) > AUDIT_MAX_TEXT
        kept[key[:AUDIT_MAX_TEXT]] = value[:AUDIT_MAX_TEXT]
    entry: dict[str, object] = {"path": path[:AUDIT_MAX_TEXT], "query": kept}
    if cut:
        entry["truncated"] = True
    return entry


def _json(status: int, body: object, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, json.dumps(body, indent=2).encode() + b"\n", "application/json", headers or {})


class AdminServer(Served):
    def __init__(self, config: AdminConfig, state: StateService) -> None:
        admin = _Admin(read_token(config).encode(), state, AuditLog(config.audit_log))
        limits = Limits(max_connections=config.max_connections, on_refused=log_refusals("admin"))
        self._server = HttpServer(config.endpoint, admin.handle, "admin.endpoint", "admin", limits=limits)
