"""Scripted experiment scenarios with known effects, drawn from numpy's seeded Generator."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from apiusage.conventions.experiments import Experiment, parse_experiments
from apiusage.experiments.data import VariantData
from apiusage.processor.state.schema import EXPERIMENT_LATENCY_BOUNDS

BOUNDS = np.asarray(EXPERIMENT_LATENCY_BOUNDS)
BUCKETS = len(EXPERIMENT_LATENCY_BOUNDS) + 1


def experiment(**overrides: Any) -> Experiment:
    """checkout-v2 on orders-api, control/treatment 50/50, primary error_ratio by default."""
    body: dict[str, Any] = {
        "service": "orders-api",
        "flag": "checkout-v2",
        "variants": ["control", "treatment"],
        "control": "control",
        "primary": "error_ratio",
        "guardrails": ["client_error_ratio"],
    }
    body.update(overrides)
    return parse_experiments({"experiments": {"checkout-v2": body}}).experiments["checkout-v2"]


def bucketed(durations: np.ndarray) -> tuple[float, ...]:
    """Durations (seconds) tallied as the store does: bucket i holds (bound[i-1], bound[i]]."""
    index = np.searchsorted(BOUNDS, durations, side="left")
    return tuple(float(c) for c in np.bincount(index, minlength=BUCKETS))


def latency(rng: np.random.Generator, n: int, median: float = 0.08, sigma: float = 0.5) -> tuple[float, ...]:
    """A lognormal latency histogram; scaling `median` scales every quantile (the p95 too)."""
    return bucketed(rng.lognormal(np.log(median), sigma, n))


def variant(
    name: str,
    rng: np.random.Generator,
    *,
    requests: int = 20_000,
    error_rate: float = 0.008,
    client_error_rate: float = 0.012,
    consumers: int = 1_000,
    contaminated: int = 0,
    median_latency: float = 0.08,
    adoption: float = 0.3,
    ttfs_scale: float = 30.0,
    ttfs_samples: int = 500,
    never_succeeded: int = 0,
) -> VariantData:
    """One variant's data with the given true rates, drawn from `rng`."""
    return VariantData(
        variant=name,
        requests=float(requests),
        errors=float(rng.binomial(requests, error_rate)),
        client_errors=float(rng.binomial(requests, client_error_rate)),
        consumers=consumers,
        contaminated=contaminated,
        latency_counts=latency(rng, requests, median_latency),
        adopters=int(rng.binomial(consumers, adoption)),
        ttfs_seconds=tuple(float(x) for x in rng.exponential(ttfs_scale, ttfs_samples)),
        never_succeeded=never_succeeded,
    )


def fixed(
    name: str,
    *,
    requests: float = 20_000,
    errors: float = 160,
    client_errors: float = 240,
    consumers: int = 1_000,
    contaminated: int = 0,
    latency_counts: Sequence[float] | None = None,
    adopters: int = 300,
    ttfs: Sequence[float] = (),
    never_succeeded: int = 0,
) -> VariantData:
    """A variant with exact counts (for exact sentences)."""
    if latency_counts is None:
        latency_counts = [0.0] * BUCKETS
        latency_counts[20] = requests  # all requests in (bound[19], bound[20]] = (69 ms, 87 ms]
    return VariantData(
        name,
        float(requests),
        float(errors),
        float(client_errors),
        consumers,
        contaminated,
        tuple(float(c) for c in latency_counts),
        adopters,
        tuple(ttfs),
        never_succeeded,
    )
