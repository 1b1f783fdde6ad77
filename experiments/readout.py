"""An experiment's per-variant data, read from the state store's experiment tables.

`read_experiment()` answers what the statistics need (experiments/data.py) from one state of
the store (SQLite or PostgreSQL alike):

- requests, errors (5xx), client errors (4xx) and the latency histogram: the daily tallies of
  `experiment_days` and `experiment_latency` whose UTC day overlaps [since_ms, until_ms), each
  request under the variant it was served, as span counts (the spans received: the sample
  sizes); `estimated_*` are the sampling-weighted totals, None where they equal the spans
  (unsampled traffic);
- consumers: the `experiment_consumers` rows first assigned to the variant within
  [since_ms, until_ms) (by their first exposure), contaminated ones (later seen in another
  variant) included and counted apart;
- adopters: of those, the consumers with a call of the experiment's `feature` at or after their
  assignment (`consumer_features.last_call >= first_seen`: the last call is after it exactly when
  some call is);
- time to first success: first 2xx exposure minus first exposure, in seconds, for those who
  succeeded; at most MAX_TTFS_SAMPLE values per variant, a uniform sample without replacement
  chosen by a keyed hash of the consumer id (the same consumers on every run, and the sample
  stays put as the experiment grows), read in pages so memory stays bounded at any size.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import defaultdict

from apiusage.conventions.experiments import Experiment
from apiusage.processor.state.schema import EXPERIMENT_LATENCY_BOUNDS
from apiusage.processor.state.store import DAY_MS, Store

from .data import VariantData

__all__ = ["MAX_TTFS_SAMPLE", "read_experiment"]

MAX_TTFS_SAMPLE = 10_000
_PAGE = 50_000  # consumer rows per query of the time-to-first-success pass


def read_experiment(
    store: Store, experiment: Experiment, since_ms: int | None = None, until_ms: int | None = None
) -> dict[str, VariantData]:
    """Per variant (the declared ones in their order, then any other the store holds), the data of
    `experiment` between `since_ms` (inclusive) and `until_ms` (exclusive), Unix ms; None: open."""
    with store.consistent():
        return _read(store, experiment, since_ms, until_ms)


def _read(store: Store, experiment: Experiment, since_ms: int | None, until_ms: int | None) -> dict:
    key = (experiment.service, experiment.name)
    first_day = since_ms // DAY_MS if since_ms is not None else None
    last_day = (until_ms - 1) // DAY_MS if until_ms is not None else None
    days_where, days_params = _range("day", first_day, last_day, inclusive=True)
    seen_where, seen_params = _range("first_seen", since_ms, until_ms)
    n = len(EXPERIMENT_LATENCY_BOUNDS) + 1

    # (spans, span errors, span 4xx, weighted requests, weighted errors, weighted 4xx)
    tallies: dict[str, tuple[float, ...]] = {}
    for variant, *sums in store.query(
        "SELECT variant, SUM(spans), SUM(span_errors), SUM(span_client_errors), SUM(requests), "
        "SUM(errors), SUM(client_errors) FROM experiment_days "
        f"WHERE service = ? AND experiment = ?{days_where} GROUP BY variant",
        (*key, *days_params),
    ):
        tallies[variant] = tuple(float(value) for value in sums)
    latency: dict[str, list[float]] = defaultdict(lambda: [0.0] * n)
    for variant, bucket, count in store.query(
        "SELECT variant, bucket, SUM(spans) FROM experiment_latency "
        f"WHERE service = ? AND experiment = ?{days_where} GROUP BY variant, bucket",
        (*key, *days_params),
    ):
        latency[variant][min(max(int(bucket), 0), n - 1)] += float(count)
    groups: dict[str, tuple[int, int, int]] = {}
    for variant, consumers, contaminated, never in store.query(
        "SELECT variant, COUNT(*), SUM(CASE WHEN other_variant IS NULL THEN 0 ELSE 1 END), "
        "SUM(CASE WHEN first_success IS NULL THEN 1 ELSE 0 END) FROM experiment_consumers "
        f"WHERE service = ? AND experiment = ?{seen_where} GROUP BY variant",
        (*key, *seen_params),
    ):
        groups[variant] = (int(consumers), int(contaminated), int(never))
    adopters: dict[str, int] = {}
    if experiment.feature:
        where = seen_where.replace("first_seen", "e.first_seen")
        # CROSS JOIN: SQLite keeps this order (the experiment's rows scanned, each consumer's
        # feature row looked up by its primary key), as report.py's joins do.
        for variant, count in store.query(
            "SELECT e.variant, COUNT(*) FROM experiment_consumers e CROSS JOIN consumer_features f "
            "WHERE e.service = ? AND e.experiment = ?" + where + " AND f.service = e.service "
            "AND f.feature = ? AND f.consumer_id = e.consumer_id AND f.last_call >= e.first_seen "
            "GROUP BY e.variant",
            (*key, *seen_params, experiment.feature),
        ):
            adopters[variant] = int(count)
    samples = _ttfs_samples(store, experiment, seen_where, seen_params)

    variants = list(experiment.variants)
    variants += sorted((set(tallies) | set(latency) | set(groups)) - set(variants))
    out: dict[str, VariantData] = {}
    for variant in variants:
        requests, errors, client_errors, *weighted = tallies.get(variant, (0.0,) * 6)
        estimated = [
            None if _same(w, spans) else w
            for w, spans in zip(weighted, (requests, errors, client_errors), strict=True)
        ]
        consumers, contaminated, never = groups.get(variant, (0, 0, 0))
        out[variant] = VariantData(
            variant=variant,
            requests=requests,
            errors=errors,
            client_errors=client_errors,
            consumers=consumers,
            contaminated=contaminated,
            latency_counts=tuple(latency[variant]) if variant in latency else (0.0,) * n,
            adopters=adopters.get(variant, 0),
            ttfs_seconds=samples.get(variant, ()),
            never_succeeded=never,
            estimated_requests=estimated[0],
            estimated_errors=estimated[1],
            estimated_client_errors=estimated[2],
        )
    return out


def _same(weighted: float, spans: float) -> bool:
    """The weighted sum equals the span count: every weight was 1 (sums of floats, so nearly)."""
    return abs(weighted - spans) <= 1e-9 * max(1.0, spans)


def _range(column: str, low: int | None, high: int | None, inclusive: bool = False) -> tuple[str, list[int]]:
    """` AND` conditions bounding `column` to [low, high) (or [low, high]), and their parameters."""
    where, params = "", []
    if low is not None:
        where += f" AND {column} >= ?"
        params.append(low)
    if high is not None:
        where += f" AND {column} {'<=' if inclusive else '<'} ?"
        params.append(high)
    return where, params


def _ttfs_samples(
    store: Store, experiment: Experiment, seen_where: str, seen_params: list[int]
) -> dict[str, tuple[float, ...]]:
    """Per variant, up to MAX_TTFS_SAMPLE times to first success (seconds): the consumers with the
    smallest keyed hash of their id (bottom-k: a uniform sample without replacement)."""
    secret = hashlib.blake2b(f"{experiment.service}\0{experiment.name}".encode()).digest()[:32]
    heaps: dict[str, list[tuple[int, float]]] = defaultdict(list)
    after = ""
    while True:
        # Keyset pages in primary-key order: each query is a range of the experiment's rows.
        rows = store.query(
            "SELECT consumer_id, variant, first_success - first_seen FROM experiment_consumers "
            f"WHERE service = ? AND experiment = ? AND consumer_id > ?{seen_where} "
            f"AND first_success IS NOT NULL ORDER BY consumer_id LIMIT {_PAGE}",
            (experiment.service, experiment.name, after, *seen_params),
        )
        for consumer, variant, delta in rows:
            digest = hashlib.blake2b(consumer.encode("utf-8", "surrogatepass"), key=secret, digest_size=8)
            rank = -int.from_bytes(digest.digest(), "big")
            heap = heaps[variant]
            item = (rank, max(0.0, float(delta) / 1000))
            if len(heap) < MAX_TTFS_SAMPLE:
                heapq.heappush(heap, item)
            elif item > heap[0]:  # a smaller hash than the largest kept
                heapq.heapreplace(heap, item)
        if len(rows) < _PAGE:
            break
        after = rows[-1][0]
    return {variant: tuple(sorted(seconds for _, seconds in heap)) for variant, heap in heaps.items()}
