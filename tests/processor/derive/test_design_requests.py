"""Deriver, schema version 2: sizes, names, validation errors, error type and regions, from span tuples
built by hand (the scanner returns string arrays as tuples of at most max_array_items + 1 values)."""

from __future__ import annotations

import time

from apiusage.processor.config import UsageConfig
from apiusage.processor.derive.requests import SPAN_FIELDS, ApiRequest, Deriver
from apiusage.processor.telemetry import PipelineStats

NOW = time.time_ns()
TID, SID = bytes(range(1, 17)), bytes(range(1, 9))
BASE = {"method": "POST", "route": "/v2/orders", "status_code": 422, "consumer_id": "c1", "schema_version": 2}


def span(resource: int = 0, **fields: object) -> tuple:
    unknown = set(fields) - set(SPAN_FIELDS)
    assert not unknown, unknown
    values = {**BASE, **fields}
    return (resource, 2, NOW - 50_000_000, NOW, TID, SID, "", 0, *(values.get(f) for f in SPAN_FIELDS))


def derive(
    *spans: tuple, resources: list[tuple] | None = None, config: UsageConfig | None = None
) -> tuple[list[ApiRequest], dict[str, int]]:
    stats = PipelineStats()
    out = Deriver(config or UsageConfig(), stats, max_label_length=16).derive(
        resources or [("orders-api", "eu-west-1")], list(spans)
    )
    return out, {k: v for k, v in stats.data_quality_issues.items() if v}


def design(r: ApiRequest) -> tuple:
    return r[16:24]  # the schema-2 fields (releases and flags follow)


def test_schema_2_span_fills_every_design_field() -> None:
    [r], issues = derive(
        span(
            request_size=512,
            response_size=2048.0,  # an integral double (OTLP/JSON doubleValue) is an integer
            query_parameters=("limit", "offset"),
            body_fields=("quantity", "sku", "address.city"),
            validation_locations=("body.quantity", "query.limit"),
            validation_types=("int_parsing", "missing"),
            error_type="RequestValidationError",
            client_region="de",
        )
    )
    assert design(r) == (
        512,
        2048,
        ("limit", "offset"),
        ("quantity", "sku", "address.city"),
        (("body.quantity", "int_parsing"), ("query.limit", "missing")),
        "RequestValidati…",  # bounded like every label (max_label_length 16 here)
        "DE",
        "eu-west-1",
    )
    assert type(r.response_size) is int
    assert issues == {}


def test_version_1_and_2_spans_in_one_batch() -> None:
    v1 = span(schema_version=1, status_code=200)
    v2 = span(resource=1, request_size=0, response_size=10, client_region="US")
    [a, b], issues = derive(v1, v2, resources=[("orders-api",), ("billing", "us-east-1")])
    # A one-group resource tuple (a scanner built with the service keys only) has no region.
    assert a[:4] == ("orders-api", "POST", "/v2/orders", "200")
    assert design(a) == (None,) * 8
    assert b.service == "billing"
    assert design(b) == (0, 10, None, None, None, None, "US", "us-east-1")
    assert issues == {}


def test_bad_sizes_are_none_and_counted() -> None:
    spans = [
        span(request_size=-1, response_size=True),  # booleans are not sizes
        span(request_size="512", response_size=1.5),
        span(request_size=float("nan"), response_size=float("inf")),
        span(request_size=0, response_size=2**62),
    ]
    out, issues = derive(*spans)
    assert [(r.request_size, r.response_size) for r in out] == [
        (None, None),
        (None, None),
        (None, None),
        (0, 2**62),
    ]
    assert issues == {"invalid_body_size": 6}


def test_names_are_sanitised_deduplicated_and_bad_elements_counted() -> None:
    [r], issues = derive(
        span(
            query_parameters=("limit", "li\x00mit", "limit", 7, "", "a" * 40, "li mit"),
            body_fields=("x\ny", "\u200bz", None),
        )
    )
    # NUL and the line feed become spaces (as every label value); "li mit" is then a duplicate.
    assert r.query_parameters == ("limit", "li mit", "aaaaaaaaaaaaaaa…")
    assert r.body_fields == ("x y", " z")
    # one per attribute with a bad element: the query list (7 and "") and the body list (None)
    assert issues == {"invalid_name": 2}


def test_a_scalar_where_an_array_belongs_is_dropped_and_counted() -> None:
    [r], issues = derive(span(query_parameters="limit,offset", body_fields=("ok",)))
    assert (r.query_parameters, r.body_fields) == (None, ("ok",))
    assert issues == {"invalid_name": 1}


def test_an_empty_array_says_no_names() -> None:
    [r], issues = derive(span(query_parameters=(), body_fields=()))
    assert (r.query_parameters, r.body_fields) == ((), ())
    assert issues == {}


def test_lists_longer_than_the_cap_are_cut_and_counted() -> None:
    config = UsageConfig(max_names_per_request=3)
    # The scanner keeps max_array_items + 1 entries: one more than the cap shows the cut.
    [r], issues = derive(
        span(
            query_parameters=("a", "b", "c", "d"),
            body_fields=("a", "b", "c"),
            validation_locations=("body.a", "body.b", "body.c", "body.d"),
            validation_types=("missing",) * 4,
        ),
        config=config,
    )
    assert r.query_parameters == ("a", "b", "c")
    assert r.body_fields == ("a", "b", "c")
    assert r.validation_errors == (("body.a", "missing"), ("body.b", "missing"), ("body.c", "missing"))
    assert issues == {"names_truncated": 2}


def test_validation_errors_zip_and_keep_the_common_prefix() -> None:
    out, issues = derive(
        span(
            validation_locations=("body.a", "body.b", "body.a"), validation_types=("missing", "int_parsing")
        ),
        span(validation_locations=("body.a",)),  # types missing altogether
        span(validation_locations=("body.a", 3, "query.q"), validation_types=("missing", "x", 4)),
        span(validation_locations=("body.a", "body.a"), validation_types=("missing", "missing")),
    )
    assert [r.validation_errors for r in out] == [
        (("body.a", "missing"), ("body.b", "int_parsing")),
        (),
        (("body.a", "missing"),),  # a bad element drops its pair, not its neighbours' partners
        (("body.a", "missing"), ("body.a", "missing")),  # each error counts: no deduplication
    ]
    assert issues == {"validation_mismatch": 2, "invalid_name": 1}


def test_client_region_is_a_two_letter_code() -> None:
    regions = ["US", "fr", "Jp", "T1", "USA", "", "É1", 49, ("US",), "XX"]
    out, issues = derive(*(span(client_region=v) for v in regions))
    assert [r.client_region for r in out] == ["US", "FR", "JP", None, None, None, None, None, None, "XX"]
    assert issues == {"invalid_client_region": 6}


def test_error_type_and_server_region_are_bounded_labels() -> None:
    out, issues = derive(
        span(error_type="500"),
        span(error_type=""),
        span(error_type=500),
        span(resource=1, error_type="Timeout\nError"),
        resources=[("a", "eu-west-1"), ("b", "region\x00with-a-very-long-name")],
    )
    assert [r.error_type for r in out] == ["500", None, "500", "Timeout Error"]
    assert [r.server_region for r in out] == ["eu-west-1"] * 3 + ["region with-a-v…"]
    assert issues == {}


def test_other_resource_region_values() -> None:
    out, _ = derive(span(), span(resource=1), span(resource=2), resources=[("a", None), ("b", ""), ("c", 7)])
    assert [r.server_region for r in out] == [None, None, "7"]


def test_remembered_lists_still_count_their_issues_every_time() -> None:
    stats = PipelineStats()
    deriver = Deriver(UsageConfig(), stats, max_label_length=16)
    lists = [("limit", "offset"), ("limit", 7), ("x" * 40,), ("a", "a")]
    for _ in range(3):
        out = deriver.derive([("svc", None)], [span(query_parameters=v) for v in lists])
        assert [r.query_parameters for r in out] == [
            ("limit", "offset"),
            ("limit",),
            ("xxxxxxxxxxxxxxx…",),
            ("a",),
        ]
    assert stats.data_quality_issues["invalid_name"] == 3


def test_the_instrumentations_cut_marker_is_counted_never_a_name() -> None:
    """A list the instrumentation cut ends with TRUNCATED: a names_truncated count, not a name."""
    from apiusage.conventions.attributes import TRUNCATED

    stats = PipelineStats()
    deriver = Deriver(UsageConfig(), stats)
    (r,) = deriver.derive(
        [("orders-api",)],
        [
            span(
                query_parameters=("a", "b", TRUNCATED),
                validation_locations=("body.x", TRUNCATED),
                validation_types=("missing", TRUNCATED),
            )
        ],
    )
    assert r.query_parameters == ("a", "b")
    assert r.validation_errors == (("body.x", "missing"),)
    assert stats.data_quality_issues["names_truncated"] == 2


def test_names_that_read_as_folded_or_cut_are_dropped_and_counted() -> None:
    [r], issues = derive(
        span(
            query_parameters=("__other__", "limit", "__truncated__", "cursor"),
            body_fields=("__other__",),
            validation_locations=("body.__other__", "__other__", "body.__truncated__", "query.limit"),
            validation_types=("missing", "missing", "missing", "__other__"),
        )
    )
    # Left in, "__other__" would add to the folded series of every endpoint, and a mid-list
    # marker would be a name nobody sent.
    assert r.query_parameters == ("limit", "cursor")
    assert r.body_fields == ()
    assert r.validation_errors == ()
    assert issues == {"invalid_name": 3}


def test_sizes_past_the_largest_otlp_int_are_no_sizes() -> None:
    [r], issues = derive(span(request_size=1e300, response_size=float(2**62)))
    assert (r.request_size, r.response_size) == (None, 2**62)
    assert issues == {"invalid_body_size": 1}


def test_a_boolean_schema_version_is_unknown_whatever_it_equals() -> None:
    out, issues = derive(
        span(schema_version=True),
        span(schema_version=False),
        span(schema_version=2.0),  # an integral double of a known version is that version
        span(schema_version="2"),
        span(schema_version=3),
    )
    assert len(out) == 5
    assert issues == {"unknown_schema_version": 3}
