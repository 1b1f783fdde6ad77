"""End to end for the experiment alerts: a FastAPI service evaluates a flag with the real OpenFeature
SDK and its OpenTelemetry TracingHook → OTLP/gRPC → processor (experiment join, SQLite state, the
leader's refresh computing the checks every 200 ms) → real Prometheus (the shipped rules,
shortened) → Alertmanager → webhook: the treatment that raises 4xx fires ApiExperimentGuardrailFailed,
and its sample ratio, as planned, fires nothing.

20 consumers, the odd ones in treatment, 5 calls each; a treated consumer's first 2 calls are
answered 400, two control consumers' first call too: control 2 of 50 requests 4xx (4 %),
treatment 20 of 50 (40 %)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml
from statsmodels.stats import proportion

from tests.support.alerting import Webhook, alertmanager_config, prometheus_config, shortened_rules
from tests.support.experiment_checks import TODAY, iso_day
from tests.support.flag_service import FLAG, KEYS, SERVICE, drive, flag_service
from tests.support.polling import wait_until
from tests.support.processor import read_until, running_processor, sample
from tests.support.prometheus import query, start_alertmanager, start_prometheus

pytestmark = [pytest.mark.slow, pytest.mark.live]

CONTROL_4XX = frozenset(KEYS[0:4:2])
CHECKS = '{__name__=~"api_experiment_(running|guardrail_failed|p_value|sample_ratio_.*)"}'
EXPERIMENTS = {
    "version": 1,
    "experiments": {
        FLAG: {
            "service": SERVICE,
            "flag": FLAG,
            "variants": ["control", "treatment"],
            "control": "control",
            "primary": "error_ratio",
            "guardrails": ["client_error_ratio"],
            # Its last day: the checks' interim boundary is p < 0.020 to 0.025 (information
            # fraction 13/14 to 1), which the treatment's p = 4.3e-06 passes.
            "start": iso_day(TODAY - 13),
            "planned_days": 14,
        }
    },
}


def fails(key: str, treated: bool, n: int) -> bool:
    """Treated consumers get 400 on their first two calls, two control ones on their first."""
    return (treated and n <= 2) or (not treated and key in CONTROL_4XX and n == 1)


def test_a_treatment_raising_4xx_fires_the_guardrail_alert(tmp_path: Path) -> None:
    experiments = tmp_path / "experiments.yaml"
    experiments.write_text(yaml.safe_dump(EXPERIMENTS))
    config = {
        "experiments": str(experiments),
        "state": {
            "flush_interval": "100ms",
            "refresh_interval": "200ms",
            "experiment_checks_interval": "200ms",
        },
    }
    webhook = Webhook()
    try:
        with (
            running_processor(config) as proc,
            start_alertmanager(tmp_path, alertmanager_config(webhook.url)) as am,
        ):
            hostport, rule_files = shortened_rules(tmp_path, proc.metrics_url)
            with start_prometheus(tmp_path, prometheus_config(hostport, am), rule_files=rule_files) as prom:
                app, provider = flag_service(proc.grpc_endpoint, fails, domain="guardrail-e2e")
                statuses = asyncio.run(drive(app, 5))
                assert (statuses.count(200), statuses.count(400)) == (78, 22)
                assert provider.force_flush(10_000)
                provider.shutdown()
                labels = {"service": SERVICE, "experiment": FLAG, "variant": "treatment"}
                m = read_until(
                    proc.scrape,
                    lambda s: (
                        sample(s, "api_experiment_guardrail_failed", **labels, metric="client_error_ratio")
                        == 1
                    ),
                    30,
                    interval=0.2,
                )
                alert = wait_until(
                    lambda: webhook.alert("ApiExperimentGuardrailFailed"),
                    60,
                    lambda: (
                        f"ApiExperimentGuardrailFailed at the webhook; Prometheus has {query(prom, CHECKS)}"
                    ),
                    interval=0.5,
                )
                srm = query(prom, 'ALERTS{alertname="ApiExperimentSampleRatioMismatch"}')
    finally:
        webhook.close()
    # The processor's checks: what `apiusage experiments report` says of the same store.
    p = proportion.test_proportions_2indep(20, 50, 2, 50, method="agresti-caffo", compare="diff").pvalue
    assert sample(m, "api_experiment_running", service=SERVICE, experiment=FLAG) == 1
    assert sample(m, "api_experiment_sample_ratio_p_value", service=SERVICE, experiment=FLAG) == 1.0
    assert sample(m, "api_experiment_sample_ratio_mismatch", service=SERVICE, experiment=FLAG) == 0
    assert sample(m, "api_experiment_p_value", **labels, metric="client_error_ratio") == pytest.approx(
        p, rel=1e-9
    )
    assert sample(m, "apiusage_experiment_checks_total", outcome="failure") == 0
    assert alert["path"] == "/apiusage-tickets"
    assert alert["labels"] == {
        "alertname": "ApiExperimentGuardrailFailed",
        "severity": "warning",
        "category": "product",
        "service": SERVICE,
        "experiment": FLAG,
        "variant": "treatment",
        "metric": "client_error_ratio",
    }
    assert alert["annotations"] == {
        "summary": "A running experiment's treatment is significantly worse than its control on a guardrail.",
        "description": f"treatment of experiment {FLAG} on {SERVICE} is significantly worse than the "
        f"control on its client_error_ratio guardrail (p = {p:.2g}): pause the flag or roll the "
        "treatment back.",
        "runbook_url": f"http://{hostport}/runbooks/ApiExperimentGuardrailFailed",
        "dashboard_url": "http://grafana.example:3000/d/apiusage-experiments/experiments?viewPanel=8"
        f"&var-service={SERVICE}&var-experiment={FLAG}",
    }
    assert srm == []
