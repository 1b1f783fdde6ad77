"""The admin endpoint: consumer ids for customer success, behind a bearer token, audited.

Off unless `admin.token` or `admin.token_file` is set.  Tokens are compared in
constant time and never logged; every request, allowed or not, is written to
the audit log.
"""

from __future__ import annotations

import hmac
import json
import logging
from urllib.parse import parse_qs, urlsplit

from ._httpserver import HttpServer, QuietHandler, Served
from .config import AdminConfig, Secret
from .state.listing import AuditLog, at_risk_consumers, deprecated_consumers, now_ms
from .state.service import StateService
from .state.store import StoreError

__all__ = ["AdminServer", "read_token"]

log = logging.getLogger("apiusage.processor.admin")
_WINDOWS = {"1d": 1, "7d": 7, "30d": 30, "90d": 90}


def read_token(config: AdminConfig) -> str:
    """The admin token; raises ValueError naming the key when its file is unusable."""
    return Secret(config.token, config.token_file).read("admin")


class _AdminHandler(QuietHandler):
    token: bytes
    state: StateService
    audit: AuditLog

    def _json(self, status: int, body: object, **headers: str) -> None:
        self.send_body(status, json.dumps(body, indent=2).encode() + b"\n", "application/json",
                       headers)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        given = self.headers.get("Authorization", "")
        scheme, _, credential = given.partition(" ")
        authorized = scheme.lower() == "bearer" and hmac.compare_digest(
            credential.strip().encode(), self.token)
        audit = {"remote": self.client_address[0], "path": url.path, "query": query,
                 "authorized": authorized}
        if not authorized:
            if self._audited(**audit, status=401):
                self._json(401, {"error": "a valid bearer token is required"},
                           **{"WWW-Authenticate": 'Bearer realm="apiusage-admin"'})
            return
        try:
            status, body, count = self._answer(url.path, query)
        except ValueError as exc:
            status, body, count = 400, {"error": str(exc)}, 0
        except StoreError as exc:  # the store is down or damaged: say so rather than hang up
            status, body, count = 503, {"error": str(exc)}, 0
        if self._audited(**audit, status=status, consumers_returned=count):
            self._json(status, body)

    def _audited(self, **entry: object) -> bool:
        """Write the audit line; when it cannot be written, answer 503 and disclose nothing."""
        try:
            self.audit.write(**entry)
        except OSError as exc:
            log.error("admin.audit_log %s cannot be written: %s", self.audit.path, exc)
            self._json(503, {"error": f"the audit log cannot be written ({exc.strerror or exc}); "
                                      "no consumer ids without it"})
            return False
        return True

    def _answer(self, path: str, query: dict[str, str]) -> tuple[int, object, int]:
        state = self.state
        accounts = state.plans.accounts if state.plans is not None else {}
        if path == "/v1/consumers/deprecated":
            window = query.get("window", "30d")
            if window not in _WINDOWS:
                raise ValueError(f"window must be one of {', '.join(_WINDOWS)} (got {window!r})")
            endpoints = state.read(lambda store: deprecated_consumers(
                store, state.catalog, now_ms(), _WINDOWS[window], query.get("service"),
                query.get("method"), query.get("route"), accounts))
            return 200, {"endpoints": endpoints}, sum(len(e["consumers"]) for e in endpoints)
        if path == "/v1/consumers/at-risk":
            rows = state.read(lambda store: at_risk_consumers(
                store, now_ms(), query.get("service"), accounts))
            return 200, {"consumers": rows}, len(rows)
        return 404, {"error": "try /v1/consumers/deprecated or /v1/consumers/at-risk"}, 0


class AdminServer(Served):
    def __init__(self, config: AdminConfig, state: StateService) -> None:
        handler = type("AdminHandler", (_AdminHandler,), {
            "token": read_token(config).encode(), "state": state,
            "audit": AuditLog(config.audit_log)})
        self._server = HttpServer(config.endpoint, handler, "admin.endpoint", "admin")
