"""The apiusage processor: OTLP traces in, API-usage metrics out.

Errors it raises on purpose derive from one root, `apiusage.processor.errors.ProcessorError`
(ConfigError, StartupError, StoreError, SnapshotError, PlanLookupError, ScanError,
InvalidPayload, PayloadTooLarge, BindError...); those that were ValueError or OSError still are.
"""
