"""What the statistics read for one variant of an experiment (from the state store's tables)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["VariantData"]


@dataclass(frozen=True)
class VariantData:
    """Counts are of the spans the processor received (the sample sizes the tests need); the
    `estimated_*` fields are the sampling-weighted totals (adjusted counts), None when the same."""

    variant: str
    requests: float
    errors: float  # 5xx
    client_errors: float  # 4xx
    consumers: int  # first assigned to this variant (contaminated ones included)
    contaminated: int  # of those, later seen in another variant
    latency_counts: tuple[float, ...]  # len(EXPERIMENT_LATENCY_BOUNDS) + 1, by bucket index
    adopters: int  # of `consumers`, how many used the experiment's feature since assignment
    # time to first success per consumer that succeeded (<= 10,000, a uniform sample)
    ttfs_seconds: tuple[float, ...]
    never_succeeded: int
    estimated_requests: float | None = None
    estimated_errors: float | None = None
    estimated_client_errors: float | None = None
