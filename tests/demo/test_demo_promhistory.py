"""The history for Prometheus: the processor's series over the backfilled weeks, as TSDB blocks a
real Prometheus serves, continuing into the live scrape's series."""

from __future__ import annotations

import pytest
from apiusage.demo import CATALOG
from apiusage.demo.app import EXPORT_BASE_BYTES, load_plans
from apiusage.demo.launch.backfill import EXPORT_WEEKLY_GROWTH, Backfill
from apiusage.demo.launch.demo import PSEUDONYM_KEY
from apiusage.demo.launch.promhistory import below, series_lines, write_history

from tests.support.prometheus import promtool, query, start_prometheus

INSTANCE = "127.0.0.1:19464"
LABELS = f'instance="{INSTANCE}",job="apiusage"'


def test_series_lines_keep_request_families_and_add_the_scrape_labels():
    text = "\n".join(
        [
            "# HELP api_requests_total Requests.",
            "# TYPE api_requests_total counter",
            'api_requests_total{service="a",route="/x"} 3.0',
            'api_requests_total{service="a",route="/y"} 66136.62447060762',
            'api_requests_created{service="a",route="/x"} 1.7e9',
            "api_up 1.0",
            'apiusage_spans_received_total{transport="http"} 9.0',
            'api_request_duration_seconds_bucket{service="a",le="+Inf"} 2.0',
            "",
        ]
    )
    assert series_lines(text, LABELS) == {
        f'api_requests_total{{{LABELS},service="a",route="/x"}}': "3.0",
        f'api_requests_total{{{LABELS},service="a",route="/y"}}': "66136.624469",
        f"api_up{{{LABELS}}}": "1.0",
        f'api_request_duration_seconds_bucket{{{LABELS},service="a",le="+Inf"}}': "2.0",
    }


@pytest.mark.parametrize(
    "value, want",
    [
        ("3.0", "3.0"),
        ("0", "0"),
        ("+Inf", "+Inf"),
        ("NaN", "NaN"),
        ("66136.62447060762", "66136.624469"),
        ("0.5", "0.499999"),
        ("1e-9", "0.0"),
    ],
)
def test_a_reading_is_never_above_what_the_live_processor_may_sum_to(value, want):
    assert below(value) == want


@pytest.mark.slow
@pytest.mark.live
def test_prometheus_serves_the_history_up_to_the_live_counters(tmp_path):
    from demo_support import needs_issue15

    needs_issue15("catalog")  # the processor reads the demo catalog
    tool = promtool()
    history = Backfill(load_plans(), PSEUDONYM_KEY, days=12, rate=20.0, seed=7, live_duration=1200.0)
    data = tmp_path / "prometheus" / "data"
    result = write_history(
        history, data, job="apiusage", instance=INSTANCE, catalog=str(CATALOG), promtool=tool, snapshots=48
    )
    assert result.snapshots == 48 and result.series > 200 and result.samples > 48 * 200
    assert any(p.is_dir() and (p / "meta.json").exists() for p in data.iterdir())  # a TSDB block
    with start_prometheus(tmp_path, "global: {scrape_interval: 1h}\nscrape_configs: []\n") as url:
        at = history.now
        total = query(url, 'sum(api_requests_total{job="apiusage"})', at=at)
        assert float(total[0]["value"][1]) == pytest.approx(
            sum(max(c.count, 1.0) for c in history.calls), rel=1e-6
        )
        labels = query(url, 'count by (instance, job) (api_requests_total{service="orders-api"})', at=at)
        assert [r["metric"] for r in labels] == [{"instance": INSTANCE, "job": "apiusage"}]
        # Six hours apart: a rate over a day has samples in it, a week back too.
        week = query(url, 'sum(rate(api_requests_total{job="apiusage"}[1d] offset 7d))', at=at)
        assert 0.3 * 20 < float(week[0]["value"][1]) < 2 * 20
        hour = query(url, 'sum(rate(api_requests_total{job="apiusage"}[1h] offset 7d))', at=at)
        assert hour == []  # never a misleading rate from far apart samples
        if _has_design():
            download = '{route="/v2/exports/{export_id}/download"}'

            def mean(offset: str) -> str:
                return (
                    f"sum(rate(api_response_body_size_bytes_sum{download}[1d]{offset}))"
                    f" / sum(rate(api_response_body_size_bytes_count{download}[1d]{offset}))"
                )

            now_mean = float(query(url, mean(""), at=at)[0]["value"][1])
            assert now_mean == pytest.approx(EXPORT_BASE_BYTES, rel=0.05)  # the last day: today's size
            ratio = float(query(url, f"({mean('')}) / ({mean(' offset 7d')})", at=at)[0]["value"][1])
            # What ApiResponseSizeGrowing compares with its factor 1.5: the weekly growth, or more
            # when an incident's short 500 answers fell into the day a week back (they pull that
            # day's mean down: 2.8 was seen, depending on the hour the history ends at).
            assert EXPORT_WEEKLY_GROWTH * 0.95 < ratio < EXPORT_WEEKLY_GROWTH * 3, ratio


def _has_design() -> bool:
    import importlib.util

    return importlib.util.find_spec("apiusage.processor.derive.design_metrics") is not None
