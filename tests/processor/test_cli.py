"""`apiusage serve` as users run it: start, answer, refuse bad config, shut down cleanly."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import urllib.request

from tests.support.otlp import request_with_spans
from tests.support.processor import apiusage_command, get, running_processor, start_processor


def _serve(tmp_path, text: str) -> subprocess.CompletedProcess:
    config = tmp_path / "c.yaml"
    config.write_text(text)
    return subprocess.run(
        [*apiusage_command(), "serve", "--config", str(config)], capture_output=True, text=True, timeout=30
    )


def test_serve_answers_health_and_stops_on_sigterm(tmp_path) -> None:
    with start_processor(tmp_path) as running:
        base = running.metrics_url.removesuffix("/metrics")
        assert get(f"{base}/healthz")[:2] == (200, b"ok\n")
        assert get(f"{base}/readyz")[:2] == (200, b"ready\n")
        assert get(f"{base}/nope")[0] == 404
        body = request_with_spans(5).SerializeToString()
        req = urllib.request.Request(
            f"{running.http_endpoint}/v1/traces",
            data=body,
            headers={"Content-Type": "application/x-protobuf"},
        )
        assert urllib.request.urlopen(req, timeout=5).status == 200
        running.wait_processed(5)
        running.process.send_signal(signal.SIGTERM)
        assert running.process.wait(15) == 0
        assert "Traceback" not in running.process.stderr.read()


def test_bad_config_exits_2_with_the_path_and_no_traceback(tmp_path) -> None:
    result = _serve(tmp_path, "exporters:\n  prometheus:\n    endpoint: 9464\n")
    assert result.returncode == 2
    assert result.stderr == (
        f"apiusage: {tmp_path / 'c.yaml'} is invalid:\n"
        "  exporters.prometheus.endpoint: must be a string (got int 9464)\n"
    )


def test_port_in_use_names_the_config_key(tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _serve(
            tmp_path,
            f"""
receivers: {{otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:0"}}}}}}}}
exporters: {{prometheus: {{endpoint: "127.0.0.1:{port}"}}}}
""",
        )
    assert result.returncode == 2
    assert result.stderr == (
        f"apiusage: 127.0.0.1:{port} is already in use: set exporters.prometheus.endpoint to a free port\n"
    )


def test_shutdown_drains_every_accepted_span() -> None:
    with running_processor() as running:
        processor = running.processor
        body = request_with_spans(500).SerializeToString()
        for _ in range(20):
            req = urllib.request.Request(
                f"{running.http_endpoint}/v1/traces",
                data=body,
                headers={"Content-Type": "application/x-protobuf"},
            )
            assert urllib.request.urlopen(req, timeout=5).status == 200
        start = time.monotonic()
        assert processor.stop() is True
        assert time.monotonic() - start < 10
        snap = processor.request_metrics.snapshot()
        assert sum(snap.counters["api_requests"].values()) == 10_000
        assert processor.stats.spans_processed == 10_000
        assert processor.readiness() == (False, "shutting down")


def test_a_taken_receiver_port_fails_fast_and_names_its_key(tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        start = time.monotonic()
        result = _serve(
            tmp_path,
            f"""
receivers: {{otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:{port}"}}}}}}}}
exporters: {{prometheus: {{endpoint: "127.0.0.1:0"}}}}
state: {{sqlite: {{path: "{tmp_path / "s.db"}"}}}}
""",
        )
    assert time.monotonic() - start < 10  # it used to hang stopping a server never started
    assert result.returncode == 2
    assert result.stderr == (
        f"apiusage: 127.0.0.1:{port} is already in use: set "
        "receivers.otlp.protocols.http.endpoint to a free port\n"
    )


def test_an_unusable_state_path_is_a_message_not_a_traceback(tmp_path) -> None:
    (tmp_path / "file").write_text("")
    result = _serve(
        tmp_path,
        f"""
receivers: {{otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:0"}}}}}}}}
exporters: {{prometheus: {{endpoint: "127.0.0.1:0"}}}}
state: {{sqlite: {{path: "{tmp_path / "file" / "sub" / "s.db"}"}}}}
""",
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"apiusage: cannot create the folder of the SQLite state database "
        f"{tmp_path / 'file' / 'sub' / 's.db'}: Not a directory\n"
    )
