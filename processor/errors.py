"""The processor's exception root: every error it raises on purpose derives from ProcessorError.

`except ProcessorError` catches a bad configuration (config.ConfigError), a start-up that
cannot succeed (app.StartupError), the state store (state.store.StoreError,
state.snapshot.SnapshotError), the plan lookup (derive.plans.PlanLookupError), undecodable
OTLP bodies (receivers.scan.ScanError, receivers.payload.InvalidPayload/PayloadTooLarge) and
the HTTP servers' own refusals (_httpserver.BindError, BodyTooLarge, ClientGone).  Errors that
were a ValueError or an OSError still are, so existing handlers keep working.
"""

from __future__ import annotations

__all__ = ["ProcessorError"]


class ProcessorError(Exception):
    """Base of the processor's own errors; the message says what is wrong and where."""
