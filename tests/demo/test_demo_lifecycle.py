"""`apiusage demo` starting and stopping: taken ports, Ctrl-C mid-start, kill -9, no Prometheus."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import pytest
from demo_support import ALL_PORTS_FREE, descendants, need_monitoring, start_demo, wait_gone

from tests.support.processor import apiusage_command, get

pytestmark = pytest.mark.slow


@pytest.fixture
def taken_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.parametrize(
    "flag, what",
    [
        ("--metrics-port", "the processor's metrics and runbooks"),
        ("--api-port", "the demo API"),
        ("--prometheus-port", "Prometheus"),
    ],
)
def test_a_taken_port_is_named_with_the_flag_that_changes_it(tmp_path, taken_port, flag, what):
    if flag == "--prometheus-port":
        need_monitoring()  # without Prometheus its port is not needed, so not checked
    args = list(ALL_PORTS_FREE)
    args[args.index(flag) + 1] = str(taken_port)
    result = subprocess.run(
        [*apiusage_command(), "demo", *args, "--dir", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith(f"apiusage demo: port {taken_port} for {what}"), result.stderr
    assert "is already in use on 127.0.0.1" in result.stderr
    assert f"choose another with {flag} PORT" in result.stderr
    assert not (tmp_path / "run").exists()  # nothing was started or written


def test_the_same_port_twice_is_refused(tmp_path):
    args = list(ALL_PORTS_FREE)
    args[args.index("--api-port") + 1] = "18431"
    args[args.index("--metrics-port") + 1] = "18431"
    result = subprocess.run(
        [*apiusage_command(), "demo", *args, "--dir", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "port 18431 is given to both" in result.stderr and "--api-port" in result.stderr


def test_ctrl_c_during_start_up_leaves_nothing_running(tmp_path):
    demo = start_demo(tmp_path / "run")
    try:
        demo.wait_for(r"^history: \d+ days of", 60)  # the processor is up, the API is starting
        tree = demo.children()
        assert len(tree) >= 2, tree
        status = demo.interrupt(60)
        assert status == 0, (demo.output, demo.stderr)
        assert wait_gone(tree, 10) == []
        assert "apiusage demo: stopped" in demo.output
        assert "is running" not in demo.output
    finally:
        demo.kill_everything()


def test_a_second_ctrl_c_during_shutdown_still_leaves_nothing_behind(tmp_path):
    demo = start_demo(tmp_path / "run", "--history-days", "0", "--no-prometheus")
    try:
        demo.wait_running(60)
        tree = demo.children()
        demo.process.send_signal(signal.SIGINT)
        demo.wait_for(r"^apiusage demo: stopping", 10)
        started = time.monotonic()
        demo.process.send_signal(signal.SIGINT)
        assert demo.interrupt(30) == 0
        assert time.monotonic() - started < 8
        assert wait_gone(tree, 10) == []
    finally:
        demo.kill_everything()


def test_children_die_with_the_demo_even_on_kill_9(tmp_path):
    demo = start_demo(tmp_path / "run", "--history-days", "0")
    try:
        demo.wait_running(60)
        tree = demo.children()
        assert len(tree) >= 3, tree
        os.kill(demo.process.pid, signal.SIGKILL)  # no chance to clean up
        demo.process.wait(10)
        # Each child asked the kernel for SIGTERM when its parent dies (PR_SET_PDEATHSIG).
        assert wait_gone(tree, 30) == []
    finally:
        demo.kill_everything()


def test_without_prometheus_it_says_so_and_goes_on(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    demo = start_demo(
        tmp_path / "run", "--history-days", "3", "--summary-every", "1", env={"PATH": str(empty)}
    )
    try:
        demo.wait_running(60)
        assert "Prometheus is not on the PATH" in demo.output
        assert "apt-get install prometheus prometheus-alertmanager" in demo.output
        assert set(demo.urls) == {"demo API", "metrics", "runbooks"}
        for url in demo.urls.values():
            assert get(url, timeout=10)[0] == 200, url
        demo.wait_for(r"requests/s enterprise", 20)
        assert demo.interrupt(60) == 0, demo.stderr
    finally:
        demo.kill_everything()


def test_a_reader_that_goes_away_does_not_stop_the_clean_up(tmp_path):
    """`apiusage demo | head`: output fails, yet Ctrl-C still stops everything and removes the folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "APIUSAGE_"))}
    env["TMPDIR"] = str(tmp_path)  # the demo's temporary folder lands here
    process = subprocess.Popen(
        [
            *apiusage_command(),
            "demo",
            *ALL_PORTS_FREE,
            "--no-prometheus",
            "--history-days",
            "0",
            "--summary-every",
            "0.5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    tree = []
    try:
        folder = None
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("apiusage demo: state and logs in "):
                folder = line.split(" in ", 1)[1].split(" (")[0].strip()
            if "is running" in line:
                break
        assert folder and os.path.isdir(folder), folder
        tree = descendants(process.pid)
        process.stdout.close()  # the reader is gone: the next summary line hits a broken pipe
        time.sleep(2)
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0
        assert wait_gone(tree, 10) == []
        assert not os.path.exists(folder)
        assert "Traceback" not in (process.stderr.read() if process.stderr else "")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        for p in wait_gone(tree, 0):
            os.kill(p.pid, signal.SIGKILL)
        if process.stderr:
            process.stderr.close()
