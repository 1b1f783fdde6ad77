"""The experiment join (derive/experiments.py): flag evaluations from span events and log records
to exact Exposures, either arriving first, bounded pending maps, and what it counts."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import yaml
from apiusage.conventions.experiments import Experiments, parse_experiments
from apiusage.processor.config import ExperimentJoinConfig, LimitsConfig, UsageConfig, parse_config
from apiusage.processor.derive.experiments import ExperimentJoin
from apiusage.processor.derive.flags import Exposure, FlagEvaluation
from apiusage.processor.derive.request_metrics import RequestMetrics
from apiusage.processor.derive.requests import ApiRequest, Deriver, span_field_sources
from apiusage.processor.pipeline import SpanQueue, Worker
from apiusage.processor.receivers.fields import FieldScanner
from apiusage.processor.telemetry import FLAG_SOURCES, FlagOutcome, PipelineStats

from tests.support.derivation import post
from tests.support.otlp import request_with_spans
from tests.support.polling import read_until, wait_until
from tests.support.processor import running_processor, sample

SERVICE = "orders-api"
# The one experiment of the running processor below.
EXPERIMENT = {
    "service": SERVICE,
    "flag": "checkout-v2",
    "variants": ["control", "treatment"],
    "control": "control",
}
TRACE = bytes(range(1, 17))
END = 1_764_000_000_000_000_000


def experiments() -> Experiments:
    return parse_experiments(
        {
            "version": 1,
            "experiments": {
                "checkout-v2": {
                    "service": SERVICE,
                    "flag": "checkout-v2",
                    "variants": ["control", "treatment"],
                    "control": "control",
                    "feature": "orders",
                },
                "pro-search": {
                    "service": SERVICE,
                    "flag": "search-ranker",
                    "variants": ["bm25", "neural"],
                    "control": "bm25",
                    "segment": {
                        "plan_tiers": ["pro"],
                        "clients": ["orders-sdk"],
                        "routes": ["GET /v1/search", "* /v1/orders/{id}"],
                    },
                },
                # Same flag key in another service: another experiment.
                "billing-flag": {
                    "service": "billing-api",
                    "flag": "checkout-v2",
                    "variants": ["off", "on"],
                    "control": "off",
                },
            },
        },
        "experiments.yaml",
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Exposures:
    """An exposure sink that keeps every batch."""

    def __init__(self) -> None:
        self.batches: list[list[Exposure]] = []

    def consume_exposures(self, exposures: Sequence[Exposure]) -> None:
        self.batches.append(list(exposures))

    @property
    def all(self) -> list[Exposure]:
        return [x for batch in self.batches for x in batch]


def join(
    ttl: float = 120, max_evaluations: int = 100_000, max_requests: int = 100_000
) -> tuple[ExperimentJoin, Exposures, PipelineStats, Clock]:
    sink, stats, clock = Exposures(), PipelineStats(), Clock()
    config = ExperimentJoinConfig(
        ttl=ttl,  # type: ignore[arg-type]
        max_pending_evaluations=max_evaluations,
        max_pending_requests=max_requests,
    )
    return ExperimentJoin(experiments(), config, stats, [sink], clock=clock), sink, stats, clock


def sid(i: int) -> bytes:
    return i.to_bytes(8, "big")


def request(
    i: int,
    flags: tuple[tuple[str, str], ...] | None = None,
    service: str = SERVICE,
    method: str = "POST",
    route: str = "/v1/orders",
    status: str = "201",
    plan: str = "pro",
    client: str = "orders-sdk",
    duration: float = 0.042,
    weight: float = 1.0,
) -> ApiRequest:
    return ApiRequest(
        service,
        method,
        route,
        status,
        plan,
        "false",
        client,
        "2.1.0",
        "v1",
        "orders",
        f"consumer-{i}",
        duration,
        weight,
        END + i,
        TRACE,
        sid(i),
        flags=flags,
    )


def evaluation(i: int, variant: str, flag: str = "checkout-v2", service: str = SERVICE) -> FlagEvaluation:
    return FlagEvaluation(service, flag, variant, TRACE, sid(i), END + i)


def exposure(
    i: int,
    variant: str,
    experiment: str = "checkout-v2",
    method: str = "POST",
    route: str = "/v1/orders",
    status: str = "201",
    duration: float = 0.042,
    weight: float = 1.0,
    service: str = SERVICE,
    plan: str = "pro",
    client: str = "orders-sdk",
) -> Exposure:
    return Exposure(
        service,
        experiment,
        variant,
        method,
        route,
        status,
        plan,
        client,
        "orders",
        f"consumer-{i}",
        duration,
        weight,
        END + i,
    )


def outcomes(stats: PipelineStats) -> dict[tuple[str, str], int]:
    """The non-zero flag evaluation counts."""
    return {k: n for k, n in stats.flag_evaluations.items() if n}


def dropped(stats: PipelineStats) -> dict[tuple[str, str], int]:
    return {k: n for k, n in stats.experiment_join_dropped.items() if n}


def test_span_event_evaluations_become_exact_exposures() -> None:
    j, sink, stats, _ = join()
    j.consume(
        [
            request(1, (("checkout-v2", "treatment"),)),
            request(2, (("checkout-v2", "control"), ("other-flag", "on")), status="404", weight=4.0),
            request(3),  # no flag evaluated: no exposure
            request(4, (("checkout-v2", "on"),), service="billing-api", duration=-1.0),
            request(5, (("checkout-v2", "treatment"),), service="inventory-api"),  # no experiments
        ]
    )
    assert sink.all == [
        exposure(1, "treatment"),
        exposure(2, "control", status="404", weight=4.0),
        exposure(4, "on", "billing-flag", duration=-1.0, service="billing-api"),
    ]
    assert len(sink.batches) == 1  # one call per batch
    assert outcomes(stats) == {("span_event", "exposure"): 3, ("span_event", "not_experiment"): 2}
    # Requests of services with experiments are held for late log records; the others are not.
    assert stats.experiment_join_pending == {"evaluations": 0, "requests": 4}


def test_log_evaluation_first_then_its_request_in_a_later_batch() -> None:
    j, sink, stats, clock = join()
    j.consume_flag_evaluations([evaluation(7, "treatment"), evaluation(8, "control")])
    assert sink.all == []
    assert stats.experiment_join_pending == {"evaluations": 2, "requests": 0}
    clock.now += 60
    j.consume([request(7, status="500", duration=1.5)])
    assert sink.all == [exposure(7, "treatment", status="500", duration=1.5)]
    assert outcomes(stats) == {("log", "exposure"): 1}
    assert stats.experiment_join_pending == {"evaluations": 1, "requests": 1}


def test_request_first_then_its_log_evaluation_in_a_later_batch() -> None:
    j, sink, stats, clock = join()
    j.consume([request(9), request(10, method="GET", route="/v1/search", plan="free")])
    assert sink.all == []
    clock.now += 119
    j.consume_flag_evaluations([evaluation(9, "control"), evaluation(10, "neural", flag="search-ranker")])
    assert sink.all == [exposure(9, "control")]
    # Request 10 is a free-tier one: outside pro-search's segment.
    assert outcomes(stats) == {("log", "exposure"): 1, ("log", "out_of_segment"): 1}


def test_a_request_evaluated_by_span_event_and_log_record_counts_once() -> None:
    j, sink, stats, _ = join()
    # Request first (with its span event), then the log record of the same evaluation.
    j.consume([request(1, (("checkout-v2", "treatment"),))])
    j.consume_flag_evaluations([evaluation(1, "treatment"), evaluation(1, "treatment")])
    # Log record first, then the request with its span event.
    j.consume_flag_evaluations([evaluation(2, "control")])
    j.consume([request(2, (("checkout-v2", "control"),))])
    # Two span events of one flag on one request; two log records before the request.
    j.consume([request(3, (("checkout-v2", "control"), ("checkout-v2", "control")))])
    j.consume_flag_evaluations([evaluation(4, "treatment"), evaluation(4, "treatment")])
    j.consume([request(4)])
    assert sink.all == [
        exposure(1, "treatment"),
        exposure(2, "control"),
        exposure(3, "control"),
        exposure(4, "treatment"),
    ]
    assert outcomes(stats) == {
        ("span_event", "exposure"): 3,
        ("span_event", "duplicate"): 1,
        ("log", "exposure"): 1,
        ("log", "duplicate"): 4,
    }


def test_one_request_in_two_experiments_is_exposed_to_each() -> None:
    j, sink, _, _ = join()
    j.consume_flag_evaluations([evaluation(5, "neural", flag="search-ranker")])
    j.consume(
        [
            request(
                5, (("checkout-v2", "treatment"),), method="GET", route="/v1/orders/{order_id}", status="200"
            )
        ]
    )
    kw = {"method": "GET", "route": "/v1/orders/{order_id}", "status": "200"}
    assert sink.all == [exposure(5, "treatment", **kw), exposure(5, "neural", "pro-search", **kw)]


def test_segment_filters_plan_tier_client_and_route() -> None:
    j, sink, stats, _ = join()
    ev = (("search-ranker", "neural"),)
    j.consume(
        [
            request(1, ev, method="GET", route="/v1/search"),  # in
            request(2, ev, method="POST", route="/v1/search"),  # GET only
            request(3, ev, method="DELETE", route="/v1/orders/{order_id}"),  # any method, {id} = {order_id}
            request(4, ev, method="GET", route="/v1/search", plan="free"),
            request(5, ev, method="GET", route="/v1/search", client="curl"),
            request(6, ev, method="GET", route="/v1/orders"),  # not a segment route
            request(7, ev, method="GET", route="/v1/{bad"),  # an unreadable route template
            request(8, ev, method="GET", route="/v1/search"),  # in again (memoised answer)
        ]
    )
    assert sink.all == [
        exposure(1, "neural", "pro-search", method="GET", route="/v1/search"),
        exposure(3, "neural", "pro-search", method="DELETE", route="/v1/orders/{order_id}"),
        exposure(8, "neural", "pro-search", method="GET", route="/v1/search"),
    ]
    assert outcomes(stats) == {("span_event", "exposure"): 3, ("span_event", "out_of_segment"): 5}


def test_undeclared_variants_are_counted_never_exposed() -> None:
    j, sink, stats, _ = join()
    j.consume([request(1, (("checkout-v2", "Treatment"),)), request(2, (("checkout-v2", "__other__"),))])
    j.consume_flag_evaluations([evaluation(3, "blue"), evaluation(4, "control")])
    j.consume([request(3), request(4)])
    assert sink.all == [exposure(4, "control")]
    assert outcomes(stats) == {
        ("span_event", "undeclared_variant"): 2,
        ("log", "undeclared_variant"): 1,
        ("log", "exposure"): 1,
    }


def test_log_evaluations_that_cannot_join_are_counted() -> None:
    j, sink, stats, _ = join()
    j.consume_flag_evaluations(
        [
            FlagEvaluation(SERVICE, "checkout-v2", "control", b"", b"", END),  # outside any span
            evaluation(1, "on", flag="unknown-flag"),
            evaluation(2, "on", service="inventory-api"),
        ]
    )
    assert sink.all == []
    assert outcomes(stats) == {("log", "unjoinable"): 1, ("log", "not_experiment"): 2}
    assert stats.experiment_join_pending == {"evaluations": 0, "requests": 0}


def test_pending_entries_expire_after_the_ttl_and_are_counted() -> None:
    j, sink, stats, clock = join(ttl=120)
    j.consume_flag_evaluations([evaluation(1, "control")])
    j.consume([request(2)])
    clock.now += 120  # exactly the TTL: gone
    j.consume_flag_evaluations([evaluation(2, "control")])
    j.consume([request(1)])
    assert sink.all == []
    assert dropped(stats) == {("evaluations", "expired"): 1, ("requests", "expired"): 1}
    # Evaluation 2 now waits, request 1 is held: both from the later batches.
    assert stats.experiment_join_pending == {"evaluations": 1, "requests": 1}
    clock.now += 119.5
    j.consume([])
    assert stats.experiment_join_pending == {"evaluations": 1, "requests": 1}
    clock.now += 0.5
    j.consume_flag_evaluations([])
    assert stats.experiment_join_pending == {"evaluations": 0, "requests": 0}
    assert dropped(stats) == {("evaluations", "expired"): 2, ("requests", "expired"): 2}


def test_pending_maps_evict_their_oldest_entry_when_full() -> None:
    j, sink, stats, _ = join(max_evaluations=3, max_requests=2)
    j.consume_flag_evaluations([evaluation(i, "treatment") for i in range(1, 6)])
    assert dropped(stats) == {("evaluations", "evicted"): 2}
    j.consume([request(i) for i in (1, 2, 3, 4, 5)])  # 1 and 2 were evicted: not joined
    assert sink.all == [exposure(3, "treatment"), exposure(4, "treatment"), exposure(5, "treatment")]
    assert dropped(stats) == {("evaluations", "evicted"): 2, ("requests", "evicted"): 3}
    assert stats.experiment_join_pending == {"evaluations": 0, "requests": 2}
    j.consume_flag_evaluations([evaluation(3, "control"), evaluation(5, "control")])
    # 3 was pushed out of the request map (it waits now); 5 is held and already decided.
    assert outcomes(stats)["log", "duplicate"] == 1
    assert stats.experiment_join_pending == {"evaluations": 1, "requests": 2}


def test_a_resent_span_is_a_new_request_and_keeps_the_maps_ordered() -> None:
    """An exporter's retry delivers a span again: counted again, as the request metrics do."""
    j, sink, stats, clock = join(ttl=10)
    j.consume([request(1, (("checkout-v2", "control"),)), request(2)])
    clock.now += 5
    j.consume([request(1, (("checkout-v2", "control"),))])
    assert sink.all == [exposure(1, "control"), exposure(1, "control")]
    clock.now += 5  # request 2 expires; the re-sent 1 (moved to the end) does not
    j.consume([])
    assert stats.experiment_join_pending["requests"] == 1
    assert dropped(stats) == {("requests", "expired"): 1}  # 2; the copy of 1 replaced the first


def test_100000_pending_evaluations_stay_bounded() -> None:
    j, sink, stats, clock = join(max_evaluations=10_000)
    for batch in range(100):
        j.consume_flag_evaluations(
            [evaluation(batch * 1000 + i, f"v{batch * 1000 + i}") for i in range(1000)]
        )
    assert stats.experiment_join_pending == {"evaluations": 10_000, "requests": 0}
    assert dropped(stats) == {("evaluations", "evicted"): 90_000}
    # The newest 10,000 are the ones kept: their requests join (as undeclared variants).
    j.consume([request(99_999), request(89_999)])
    assert outcomes(stats) == {("log", "undeclared_variant"): 1}
    assert sink.all == []
    clock.now += 120
    j.consume([])
    assert stats.experiment_join_pending == {"evaluations": 0, "requests": 0}
    assert dropped(stats)["evaluations", "expired"] == 9_999


def test_control_characters_never_reach_an_exposure() -> None:
    """Values arrive sanitised; anything else is not a declared flag or variant, only counted."""
    j, sink, stats, _ = join()
    j.consume(
        [
            request(1, (("checkout-v2\n", "control"), ("checkout-v2", "control\x00"))),
            request(2, (("checkout-v2", "treat\u200bment"),)),
        ]
    )
    j.consume_flag_evaluations([evaluation(3, "control\r\n"), evaluation(4, "x", flag="checkout\x1b-v2")])
    j.consume([request(3), request(4)])
    assert sink.all == []
    assert outcomes(stats) == {
        ("span_event", "not_experiment"): 1,
        ("span_event", "undeclared_variant"): 2,
        ("log", "undeclared_variant"): 1,
        ("log", "not_experiment"): 1,
    }


def test_a_failing_exposure_sink_loses_its_batch_only() -> None:
    class Broken:
        def consume_exposures(self, exposures: Sequence[Exposure]) -> None:
            raise RuntimeError("boom")

    sink, stats = Exposures(), PipelineStats()
    j = ExperimentJoin(experiments(), ExperimentJoinConfig(), stats, [Broken(), sink])
    j.consume([request(1, (("checkout-v2", "control"),)), request(2, (("checkout-v2", "treatment"),))])
    assert sink.all == [exposure(1, "control"), exposure(2, "treatment")]
    assert stats.processing_errors == 2


def test_every_outcome_and_source_is_exposed_from_zero() -> None:
    stats = PipelineStats()
    assert set(stats.flag_evaluations) == {(s, o.value) for s in FLAG_SOURCES for o in FlagOutcome}
    assert set(stats.flag_evaluations.values()) == {0}


def test_join_bounds_come_from_the_config() -> None:
    config = parse_config(
        {"processors": {"experiment_join": {"ttl": "5m", "max_pending_requests": 7}}}
    ).processors.experiment_join
    assert (config.ttl, config.max_pending_evaluations, config.max_pending_requests) == (300, 100_000, 7)


def test_docs_list_every_flag_outcome() -> None:
    text = (Path(__file__).resolve().parents[3] / "docs" / "metrics.md").read_text()
    start = text.index("### `outcome` of `apiusage_flag_evaluations_total`")
    section = text[start : text.index("\n#", start + 10)]
    documented = re.findall(r"^\| `([^`]+)` \|(?![^\n]*\n\|-)", section, flags=re.M)
    assert sorted(documented) == sorted(o.value for o in FlagOutcome)


def test_pending_entries_expire_by_the_clock_with_no_further_batch() -> None:
    """After traffic stops, held entries still leave at their TTL, counted, with no batch."""
    j, sink, stats, clock = join(ttl=120)
    j.consume_flag_evaluations([evaluation(1, "control"), evaluation(2, "treatment")])
    clock.now += 60
    j.consume([request(3), request(4), request(5, (("checkout-v2", "control"),))])
    assert stats.experiment_join_pending == {"evaluations": 2, "requests": 3}
    clock.now += 60  # the evaluations' TTL, not yet the requests'
    j.expire_pending()
    assert dropped(stats) == {("evaluations", "expired"): 2}
    assert stats.experiment_join_pending == {"evaluations": 0, "requests": 3}
    clock.now += 59.9
    j.expire_pending()
    assert stats.experiment_join_pending == {"evaluations": 0, "requests": 3}
    clock.now += 0.1
    j.expire_pending()
    assert dropped(stats) == {("evaluations", "expired"): 2, ("requests", "expired"): 3}
    assert stats.experiment_join_pending == {"evaluations": 0, "requests": 0}
    # Expiry decides nothing: the only outcome is the span event's exposure.
    assert outcomes(stats) == {("span_event", "exposure"): 1}
    assert sink.all == [exposure(5, "control")]


def test_what_waits_at_shutdown_is_counted_as_dropped() -> None:
    j, sink, stats, clock = join(ttl=120)
    j.consume_flag_evaluations([evaluation(1, "control")])
    j.consume([request(2), request(3)])
    j.drop_pending()
    assert dropped(stats) == {("evaluations", "shutdown"): 1, ("requests", "shutdown"): 2}
    assert stats.experiment_join_pending == {"evaluations": 0, "requests": 0}
    j.drop_pending()  # twice: nothing more
    clock.now += 1000
    j.expire_pending()
    assert dropped(stats) == {("evaluations", "shutdown"): 1, ("requests", "shutdown"): 2}
    assert sink.all == [] and outcomes(stats) == {}


def test_the_worker_expires_the_join_when_no_batch_comes_and_counts_its_rest_at_shutdown() -> None:
    """Through the real worker: a span whose evaluation never comes is still a request in the
    request metrics; the join's entries expire by its clock with the queue idle, and what is
    left when the worker stops is counted."""
    stats = PipelineStats()
    sink, clock = Exposures(), Clock()
    config = ExperimentJoinConfig(ttl=120)  # type: ignore[arg-type]
    j = ExperimentJoin(experiments(), config, stats, [sink], clock=clock)
    requests = RequestMetrics(LimitsConfig(), (0.1,), stats)
    queue = SpanQueue(100_000)
    worker = Worker(queue, Deriver(UsageConfig(), stats), [requests, j], stats, expire_interval=0.02)
    scanner = FieldScanner(span_field_sources(UsageConfig()), [("service.name",)])
    worker.start()
    try:
        assert queue.offer(*scanner.scan(request_with_spans(3).SerializeToString()))
        assert queue.reserve(2)
        queue.put_flag_evaluations([evaluation(10, "control"), evaluation(11, "treatment")])
        wait_until(lambda: stats.experiment_join_pending == {"evaluations": 2, "requests": 3}, 5, "held")
        assert stats.spans_processed == 3
        snapshot = requests.snapshot().counters["api_requests"]
        assert snapshot == {(SERVICE, "GET", "/v1/orders", "200", "unknown", "false"): 3.0}, snapshot
        clock.now += 120  # no batch after this
        wait_until(lambda: stats.experiment_join_pending == {"evaluations": 0, "requests": 0}, 5, "expired")
        assert dropped(stats) == {("evaluations", "expired"): 2, ("requests", "expired"): 3}
        assert queue.reserve(1)
        queue.put_flag_evaluations([evaluation(12, "control")])
        assert queue.offer(*scanner.scan(request_with_spans(2).SerializeToString()))
        wait_until(lambda: stats.spans_processed == 5, 5, "the second batch")
    finally:
        assert worker.stop(5)
    assert dropped(stats) == {
        ("evaluations", "expired"): 2,
        ("requests", "expired"): 3,
        ("evaluations", "shutdown"): 1,
        ("requests", "shutdown"): 2,
    }
    assert stats.experiment_join_pending == {"evaluations": 0, "requests": 0}
    assert outcomes(stats) == {} and sink.all == []
    assert stats.processing_errors == 0


def test_a_running_processor_expires_held_requests_after_traffic_stops(tmp_path: Path) -> None:
    """OTLP/HTTP in, /metrics out: a request of a service with experiments whose evaluation never
    comes is counted as a request at once, and leaves the join at its TTL with no batch after it;
    what waits when the processor stops is counted too."""
    path = tmp_path / "experiments.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "experiments": {"checkout-v2": EXPERIMENT}}))
    extra = {"experiments": str(path), "processors": {"experiment_join": {"ttl": "1s"}}}
    with running_processor(extra) as running:
        assert post(running.http_endpoint, request_with_spans(2, service=SERVICE).SerializeToString()) == 200
        m = running.wait_processed(2)
        labels = {"method": "GET", "route": "/v1/orders", "status_code": "200", "plan_tier": "unknown"}
        assert sample(m, "api_requests_total", service=SERVICE, deprecated="false", **labels) == 2
        assert sample(m, "apiusage_experiment_join_pending", kind="requests") == 2
        m = read_until(
            running.scrape,
            lambda m: sample(m, "apiusage_experiment_join_pending", kind="requests") == 0,
            10,
        )
        assert sample(m, "apiusage_experiment_join_dropped_total", kind="requests", reason="expired") == 2
        assert sample(m, "apiusage_experiment_join_dropped_total", kind="requests", reason="shutdown") == 0
        assert sample(m, "apiusage_spans_processed_total") == 2  # no batch came after the two spans
        assert post(running.http_endpoint, request_with_spans(3, service=SERVICE).SerializeToString()) == 200
        running.wait_processed(5)
        stats = running.processor.stats
    assert stats.experiment_join_dropped["requests", "shutdown"] == 3
    assert stats.experiment_join_dropped["requests", "expired"] == 2
    assert stats.experiment_join_pending == {"evaluations": 0, "requests": 0}
