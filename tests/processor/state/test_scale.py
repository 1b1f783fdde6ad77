"""20,000 consumers' month of history sent over OTLP: the consumer families count exactly what
was sent, fresh spans reach the request metrics while that history is being written, and admin
requests are answered while a refresh of it runs."""

from __future__ import annotations

import threading
import time

import pytest

from tests.support.polling import wait_until
from tests.support.processor import get, matching, running_processor, sample
from tests.support.state_scale import SERVICE, Exporter, History, fresh_request, send_history

pytestmark = pytest.mark.slow

TOKEN = "s3cret-admin-token-0123456789"
CONSUMERS = 20_000


def _nonzero(samples: dict, name: str, *labels: str) -> dict[tuple, float]:
    """{label values: value} of `name` for SERVICE, zeros left out (absent and 0 say the same)."""
    return {
        tuple(dict(lb)[k] for k in labels): v
        for lb, v in matching(samples, name, service=SERVICE).items()
        if v
    }


def test_20k_consumers_over_otlp_are_counted_exactly_while_fresh_spans_keep_flowing(tmp_path) -> None:
    history = History(CONSUMERS)
    want = history.expected()
    requests = list(history.requests())  # built before the processor starts its flush clock
    config = {
        "state": {"flush_interval": "4s", "refresh_interval": "1h"},
        "admin": {"token": TOKEN, "endpoint": "127.0.0.1:0", "audit_log": str(tmp_path / "audit.log")},
    }
    with running_processor(config) as running:
        state = running.processor.state
        assert send_history(running.http_endpoint, requests) == want.spans
        running.wait_processed(want.spans, timeout=30)

        # The first flush writes the whole history (about 110,000 rows) in one go: while it
        # runs, fresh spans of another service must reach the request metrics.
        flush = wait_until(lambda: state.health.flush_started, 20, "a flush", interval=0.02)
        exporter = Exporter(running.http_endpoint, timeout=5)
        sent_at = time.monotonic()
        exporter.export(fresh_request("fresh-api", 25), sent_at + 5)
        exporter.close()
        during = wait_until(
            lambda: (
                m
                if sum(matching(m := running.scrape(), "api_requests_total", service="fresh-api").values())
                == 25
                else None
            ),
            5,
            "fresh spans in api_requests_total",
            interval=0.02,
        )
        fresh_took = time.monotonic() - sent_at
        flush_went_on = state.health.flush_started == flush

        # Written: what is left is at most the fresh spans' endpoint row, due at the next flush.
        wait_until(
            lambda: state.health.flush_started is None and state.activity.pending() <= 1,
            60,
            "the flush of the history",
            interval=0.02,
        )
        # One refresh of the 20,000 consumers, and an admin request while it runs.
        refresh = threading.Thread(target=state.refresh, daemon=True)
        refresh.start()
        wait_until(lambda: state.health.refresh_started, 10, "a running refresh", interval=0.02)
        url = running.processor.urls()["admin"] + "/deprecated"
        started = time.monotonic()
        status, _, _ = get(url, {"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        admin_took = time.monotonic() - started
        admin_during_refresh = state.health.refresh_started is not None
        refresh.join(30)
        refresh_took = time.monotonic() - started
        after = running.scrape()

    assert not refresh.is_alive(), f"one refresh of {CONSUMERS} consumers took over {refresh_took:.0f}s"
    assert flush_went_on, "the flush ended before the fresh spans were counted: send more history"
    assert fresh_took < 3.0, f"fresh spans took {fresh_took:.1f}s to reach the request metrics"
    assert sample(during, "apiusage_state_pending_rows") > 0  # the history was still being written
    assert sample(after, "apiusage_state_refreshes_total", outcome="success") == 2  # start-up's too
    assert sample(after, "apiusage_state_flushes_total", outcome="failure") == 0
    assert sample(after, "apiusage_state_rows_dropped_total") == 0
    # consumer rows, activity rows, 8 endpoint rows and fresh-api's one (maybe not yet written)
    assert (
        sample(after, "apiusage_state_rows_written_total") + sample(after, "apiusage_state_pending_rows")
        == CONSUMERS + want.activity_rows + 8 + 1
    )

    assert _nonzero(after, "api_new_consumers_total", "plan_tier") == {
        (plan,): n for plan, n in want.new.items()
    }
    assert _nonzero(after, "api_active_consumers", "plan_tier", "window") == dict(want.active)
    assert _nonzero(after, "api_endpoint_consumers", "method", "route", "window") == dict(want.endpoint)
    assert _nonzero(after, "api_feature_consumers", "feature", "window") == dict(want.feature)
    assert _nonzero(after, "api_client_version_consumers", "client_version", "window") == dict(want.client)
    # spot checks that the history is what it claims: every plan in every window
    assert sum(want.new.values()) == CONSUMERS
    assert {w for _, w in want.active} == {"1d", "7d", "30d"}
    assert sum(n for (_, w), n in want.active.items() if w == "30d") == CONSUMERS

    assert status == 200
    # Answered while the refresh still ran, or the refresh was too short to tell.
    assert admin_during_refresh or state.health.refresh_seconds < 1.5
    assert admin_took < 1.5, f"the admin request waited {admin_took:.1f}s for the refresh"
