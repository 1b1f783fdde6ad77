"""The component lifecycle (processor/component.py): one ordered list started first to last and shut
down last to first with one deadline; a start-up that fails half-way stops what it started."""

from __future__ import annotations

import socket
import sqlite3
import tempfile
import time

import pytest
from apiusage.processor import selfmetrics
from apiusage.processor.app import Processor, StartupError
from apiusage.processor.component import Component, Components, StartFailed
from apiusage.processor.config import parse_config
from apiusage.processor.receivers.http import HttpReceiver

from tests.support.components import free_port
from tests.support.processor import LOOPBACK_CONFIG, merge

START_ORDER = ["metrics", "memory_limiter", "forwarder", "state", "admin", "worker", "otlp-http", "otlp-grpc"]


def _config(tmp: str, **extra: dict) -> dict:
    return merge(
        LOOPBACK_CONFIG,
        {
            "state": {"sqlite": {"path": f"{tmp}/state.db"}},
            "exporters": {"otlp": {"endpoint": f"http://127.0.0.1:{free_port()}"}},
            "admin": {"endpoint": "127.0.0.1:0", "token": "t" * 32, "audit_log": f"{tmp}/audit.log"},
            **extra,
        },
    )


def _refused(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture
def tmp() -> str:
    with tempfile.TemporaryDirectory(prefix="life-lifecycle-") as path:
        yield path


def test_components_start_in_order_and_stop_in_reverse(tmp: str, monkeypatch: pytest.MonkeyPatch) -> None:
    processor = Processor(parse_config(_config(tmp)))
    events: list[str] = []
    processor.start()
    try:
        assert processor.components.names == START_ORDER
        for component in processor.components:
            original = component.shutdown

            def recording(deadline: float, _name: str = component.name, _original=original) -> bool:
                events.append(_name)
                return _original(deadline)

            monkeypatch.setattr(component, "shutdown", recording)
    finally:
        assert processor.stop() is True
    assert events == list(reversed(START_ORDER))
    assert processor.readiness() == (False, "shutting down")


def test_every_component_is_one_and_the_families_they_export_cover_the_table(tmp: str) -> None:
    processor = Processor(parse_config(_config(tmp)))
    processor.start()
    try:
        exported: set[str] = set()
        for component in processor.components:
            assert isinstance(component, Component), component
            exported |= {f.name for f in component.families}
    finally:
        processor.stop()
    # apiusage_build_info is the metrics endpoint's; every other family belongs to the others.
    assert exported == {f.name for f in selfmetrics.FAMILIES}


def test_a_start_up_failing_half_way_stops_what_already_started(
    tmp: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    processor = Processor(parse_config(_config(tmp)))
    serving: list[int] = []

    def broken(self: HttpReceiver) -> None:
        ports = [processor.metrics.port, processor.admin.port]
        serving.extend(p for p in ports if not _refused(p))
        raise OSError("no threads left")

    monkeypatch.setattr(HttpReceiver, "start", broken)
    started = time.monotonic()
    with pytest.raises(StartupError) as caught:
        processor.start()
    assert time.monotonic() - started < 10
    assert str(caught.value) == "otlp-http did not start: no threads left"
    # What started before it (metrics, admin, the worker, the state threads) is stopped again.
    assert len(serving) == 2, "metrics and admin were not serving when the receiver failed"
    assert [p for p in serving if not _refused(p)] == []
    assert not processor.worker._thread.is_alive()
    assert not processor.state._flusher.is_alive() and not processor.state._refreshing.is_alive()
    assert processor.queue.closed
    assert processor.readiness() == (False, "starting")
    # ...and the SQLite file is free again: a second processor on it starts and stops cleanly.
    monkeypatch.undo()
    second = Processor(parse_config(_config(tmp)))
    second.start()
    assert second.stop() is True


def test_a_bind_failure_closes_what_was_built(tmp: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = _config(tmp, receivers={"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{port}"}}}})
        processor = Processor(parse_config(config))
        with pytest.raises(StartupError) as caught:
            processor.start()
    assert str(caught.value) == (
        f"127.0.0.1:{port} is already in use: set receivers.otlp.protocols.http.endpoint to a free port"
    )
    assert processor.components.names == START_ORDER[:-2]  # built up to the HTTP receiver
    assert processor.metrics._server._socket.fileno() == -1  # closed
    assert processor.admin._server._socket.fileno() == -1
    with pytest.raises(sqlite3.ProgrammingError, match="closed database"):
        processor.state.store._db.execute("SELECT 1")
    assert processor.queue.closed


class _Fake:
    families: tuple = ()

    def __init__(self, name: str, log: list[str], fail_start: bool = False, lose: bool = False) -> None:
        self.name, self._log, self._fail, self._lose = name, log, fail_start, lose

    def start(self) -> None:
        if self._fail:
            raise RuntimeError("boom")
        self._log.append(f"start {self.name}")

    def shutdown(self, deadline: float) -> bool:
        self._log.append(f"shutdown {self.name}")
        if self.name == "raises":
            raise RuntimeError("shutdown bug")
        return not self._lose


def test_components_shut_down_everything_even_past_a_failing_one() -> None:
    log: list[str] = []
    components = Components()
    for name in ("a", "raises", "c"):
        components.add(_Fake(name, log))
    components.start()
    assert components.shutdown(time.monotonic() + 1) is False
    assert log == ["start a", "start raises", "start c", "shutdown c", "shutdown raises", "shutdown a"]


def test_components_report_a_loss_and_a_failed_start() -> None:
    log: list[str] = []
    components = Components()
    components.add(_Fake("a", log, lose=True))
    components.add(_Fake("b", log, fail_start=True))
    components.add(_Fake("c", log))
    with pytest.raises(StartFailed, match="^b did not start: boom$"):
        components.start()
    assert log == ["start a", "shutdown c", "shutdown b", "shutdown a"]


def test_only_components_can_be_added() -> None:
    with pytest.raises(TypeError, match="^object is not a Component"):
        Components().add(object())  # type: ignore[arg-type]


def test_one_deadline_bounds_the_whole_stop(tmp: str) -> None:
    processor = Processor(parse_config(_config(tmp, processors={"queue": {"shutdown_timeout": "3s"}})))
    # drain 3 s + state 10 + 2 s + gRPC grace 2 s + forwarding 5 s + HTTP grace 5 s
    assert processor.shutdown_bound() == 27.0
    processor.start()
    ports = [processor.metrics.port, processor.admin.port, processor.http.port, processor.grpc.port]
    started = time.monotonic()
    # A deadline already past: every component still stops, none waits for its own bound.
    assert processor.components.shutdown(time.monotonic()) is True  # nothing was queued: none lost
    assert time.monotonic() - started < 3.0
    assert processor.queue.closed
    # The servers' threads were not waited for: each stops listening as it ends, soon after.
    while [p for p in ports if not _refused(p)] and time.monotonic() - started < 8.0:
        time.sleep(0.05)
    assert [p for p in ports if not _refused(p)] == []
