"""Real Prometheus and Alertmanager for tests, on loopback, with temporary data folders.

Needs Debian's prometheus and prometheus-alertmanager packages (scripts/system-deps.sh
installs them for `make test`); a test using these helpers is skipped when they are
missing, and fails under CI=true.

    with start_prometheus(tmp_path, config_text, rule_files=[...]) as base_url:
        query(base_url, "up")   # → [{"metric": {...}, "value": [ts, "1"]}, ...]
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .components import free_port, missing

T = TypeVar("T")


def binary(*names: str, package: str) -> str:
    """The first of `names` on PATH, or skip (fail under CI=true) naming the Debian package."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    missing(f"{names[0]} (Debian package {package}: run make test)")


def promtool() -> str:
    return binary("promtool", package="prometheus")


def amtool() -> str:
    return binary("amtool", package="prometheus-alertmanager")


def http_get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _ready(base_url: str) -> bool:
    status, _ = http_get(f"{base_url}/-/ready", timeout=2)
    return status == 200


@contextlib.contextmanager
def _server(command: list[str], base_url: str, log: Path, name: str, timeout: float = 30) -> Iterator[str]:
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while not _ready_quietly(base_url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{name} did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _ready_quietly(base_url: str) -> bool:
    try:
        return _ready(base_url)
    except OSError:
        return False


@contextlib.contextmanager
def start_prometheus(
    tmp_path: Path, config_text: str, rule_files: Iterable[str | Path] = ()
) -> Iterator[str]:
    """A Prometheus server on 127.0.0.1 with `config_text` as its configuration; `rule_files`
    (paths) replace the config's own `rule_files`. Yields its base URL."""
    exe = binary("prometheus", package="prometheus")
    folder = tmp_path / "prometheus"
    folder.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load(config_text) or {}
    files = [str(Path(f).resolve()) for f in rule_files]
    if files:
        config["rule_files"] = files
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    command = [
        exe,
        f"--config.file={folder / 'prometheus.yml'}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
        f"--web.external-url={base_url}",
    ]
    with _server(command, base_url, folder / "prometheus.log", "prometheus") as url:
        yield url


@contextlib.contextmanager
def start_alertmanager(tmp_path: Path, config_text: str) -> Iterator[str]:
    """An Alertmanager on 127.0.0.1 (no clustering) with `config_text`. Yields its base URL."""
    exe = binary("prometheus-alertmanager", "alertmanager", package="prometheus-alertmanager")
    folder = tmp_path / "alertmanager"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "alertmanager.yml").write_text(config_text)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    command = [
        exe,
        f"--config.file={folder / 'alertmanager.yml'}",
        f"--storage.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    with _server(command, base_url, folder / "alertmanager.log", "alertmanager") as url:
        yield url


def query(base_url: str, promql: str, at: float | None = None) -> list[dict[str, Any]]:
    """An instant query; the `result` list of the answer (raises on an error answer)."""
    params = {"query": promql}
    if at is not None:
        params["time"] = str(at)
    status, body = http_get(f"{base_url}/api/v1/query?{urllib.parse.urlencode(params)}")
    answer = json.loads(body)
    if status != 200 or answer.get("status") != "success":
        raise AssertionError(f"query {promql!r} failed ({status}): {answer}")
    return answer["data"]["result"]


def alerts(base_url: str) -> list[dict[str, Any]]:
    """Prometheus's active alerts (pending and firing)."""
    status, body = http_get(f"{base_url}/api/v1/alerts")
    assert status == 200, body
    return json.loads(body)["data"]["alerts"]
