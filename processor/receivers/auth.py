"""Bearer-token authentication for the receivers: per-service tokens, compared in constant time."""

from __future__ import annotations

import hmac

from ..config import ReceiverAuth

__all__ = ["Authenticator", "ANY_SERVICE"]

ANY_SERVICE = "*"


class Authenticator:
    """Maps an Authorization header to the service its token may send for, or None."""

    def __init__(self, config: ReceiverAuth) -> None:
        # Read once at start-up; the values never reach a log or an error message.
        self._tokens = [
            (t.read(f"receivers.otlp.auth.tokens[{i}]").encode(), t.service or ANY_SERVICE)
            for i, t in enumerate(config.tokens)
        ]

    def service_for(self, authorization: str | None) -> str | None:
        if not authorization:
            return None
        scheme, _, credential = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None
        given = credential.strip().encode()
        found = None
        for token, service in self._tokens:  # every token is compared: timing says nothing
            if hmac.compare_digest(given, token) and found is None:
                found = service
        return found
