"""The wheel the Dockerfile builds, built from exactly what its build stage copies, and run.

One fresh venv gets only the `processor` extra and runs `apiusage serve`; another gets only the
`instrumentation` extra and instruments a FastAPI app, with none of the processor's servers
importable (like client_python's no-optionals job). Packages come from the configured pip
index, through pip's cache.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from apiusage.processor.config import load_config

from tests.support.components import free_port
from tests.support.polling import wait_until
from tests.support.prometheus import http_get

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PIP_TIMEOUT = 300


def build_stage_copies(dockerfile: str) -> list[str]:
    """The sources of the build stage's `COPY` lines (the first stage; `--from` copies left out)."""
    lines = dockerfile.replace("\\\n", " ").splitlines()
    stages = 0
    sources: list[str] = []
    for line in lines:
        words = shlex.split(line, comments=True)
        if not words:
            continue
        instruction = words[0].upper()
        if instruction == "FROM":
            stages += 1
            if stages > 1:
                break
        elif instruction == "COPY" and stages == 1:
            args = words[1:]
            if args and args[0].startswith("["):
                args = json.loads(line.split(None, 1)[1])
            if any(a.startswith("--from") for a in args):
                continue
            args = [a for a in args if not a.startswith("--")]
            sources += args[:-1]
    return sources


def test_build_stage_copies_are_parsed() -> None:
    text = (
        "FROM python AS build\n"
        "COPY --chown=1:1 a b /src/\n"
        'COPY ["c d", "/src/"]\n'
        "COPY e \\\n  /src/e  # folder\n"
        "FROM python\n"
        "COPY --from=build /wheels /tmp\n"
        "COPY late /x\n"
    )
    assert build_stage_copies(text) == ["a", "b", "c d", "e"]


def _run(command: list[str], cwd: Path | None = None, timeout: float = PIP_TIMEOUT) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{shlex.join(command)} failed ({done.returncode}):\n{done.stderr[-4000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip wheel --no-deps` over a copy of exactly the Dockerfile's build-stage sources."""
    src = tmp_path_factory.mktemp("check-wheel-src")
    sources = build_stage_copies((ROOT / "Dockerfile").read_text(encoding="utf-8"))
    assert {"pyproject.toml", "processor", "runbooks"} <= set(sources), sources
    for name in sources:
        origin = ROOT / name
        assert origin.exists(), f"the Dockerfile copies {name}, which is not in the repository"
        if origin.is_dir():
            shutil.copytree(origin, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        else:
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, src / name)
    out = tmp_path_factory.mktemp("check-wheel-dist")
    # No build isolation: the test venv already has setuptools and wheel, and needs no index.
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(src)]
    )
    (built,) = out.glob("apiusage-*.whl")
    return built


def test_wheel_holds_every_package_and_data_file(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    runbooks = {p.name for p in (ROOT / "runbooks").glob("*.md")}
    assert {
        n.removeprefix("apiusage/runbooks/") for n in names if n.startswith("apiusage/runbooks/")
    } >= runbooks
    rules = {p.name for p in (ROOT / "alert_rules").glob("*.yml")}
    assert {n.removeprefix("apiusage/alert_rules/") for n in names if n.endswith(".yml")} >= rules
    for package in ("cli", "conventions", "processor", "instrumentation", "demo", "report", "rules"):
        assert f"apiusage/{package}/__init__.py" in names, package
    assert "apiusage/prometheus/slo.yaml" in names
    assert "apiusage/demo/catalog.yaml" in names


def _venv(where: Path, *requirements: str) -> Path:
    """A fresh venv (no system site packages) with `requirements`; returns its bin folder."""
    venv.EnvBuilder(with_pip=True, system_site_packages=False, clear=True).create(where)
    bin_dir = where / "bin"
    _run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", *requirements])
    return bin_dir


@pytest.fixture(scope="module")
def processor_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _venv(tmp_path_factory.mktemp("check-venv-processor"), f"{wheel}[processor]")


@pytest.fixture(scope="module")
def instrumentation_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # FastAPI and httpx only for the test app and its in-process client (no server: no uvicorn).
    return _venv(tmp_path_factory.mktemp("check-venv-instr"), f"{wheel}[instrumentation]", "fastapi", "httpx")


def _apiusage(bin_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / "apiusage"), *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def _commands(help_text: str) -> list[str]:
    """The subcommands `apiusage --help` lists (argparse indents each by four spaces)."""
    return re.findall(r"^    (\w[\w-]*)", help_text, re.MULTILINE)


def _listen_only_config(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A config that changes nothing but the three listen addresses (the defaults, 4317/4318/9464,
    may be taken by another test or another process on a shared machine)."""
    ports = {name: f"127.0.0.1:{free_port()}" for name in ("grpc", "http", "prometheus")}
    text = (
        "receivers:\n  otlp:\n    protocols:\n"
        f"      grpc:\n        endpoint: {ports['grpc']}\n"
        f"      http:\n        endpoint: {ports['http']}\n"
        f"exporters:\n  prometheus:\n    endpoint: {ports['prometheus']}\n"
    )
    path = tmp_path / "check-listen-only.yaml"
    path.write_text(text, encoding="utf-8")
    return path, ports


def test_listen_only_config_is_the_defaults_but_for_addresses(tmp_path: Path) -> None:
    path, ports = _listen_only_config(tmp_path)
    config, defaults = load_config(path), load_config(None)
    protocols = defaults.receivers.otlp.protocols
    expected = dataclasses.replace(
        defaults,
        receivers=dataclasses.replace(
            defaults.receivers,
            otlp=dataclasses.replace(
                defaults.receivers.otlp,
                protocols=dataclasses.replace(
                    protocols,
                    grpc=dataclasses.replace(protocols.grpc, endpoint=ports["grpc"]),
                    http=dataclasses.replace(protocols.http, endpoint=ports["http"]),
                ),
            ),
        ),
        exporters=dataclasses.replace(
            defaults.exporters,
            prometheus=dataclasses.replace(defaults.exporters.prometheus, endpoint=ports["prometheus"]),
        ),
    )
    assert config == expected


@pytest.fixture
def serving(processor_venv: Path, tmp_path: Path) -> Iterator[str]:
    """`apiusage serve` from the processor-only venv, in an empty folder; yields the metrics base URL."""
    config, ports = _listen_only_config(tmp_path)
    process = subprocess.Popen(
        [str(processor_venv / "apiusage"), "serve", "--config", str(config)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://{ports['prometheus']}"
    try:
        try:
            wait_until(
                lambda: process.poll() is not None or http_get(f"{base}/readyz")[0] == 200,
                60,
                "/readyz",
                interval=0.25,
                ignore=(OSError, ValueError),
            )
        except AssertionError:
            process.kill()
        assert process.poll() is None, f"apiusage serve exited:\n{process.communicate(timeout=10)[1][-4000:]}"
        yield base
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err[-4000:]
    assert "Traceback" not in err, err[-4000:]


def test_processor_only_install_serves_readyz_and_a_packaged_runbook(serving: str) -> None:
    assert http_get(f"{serving}/readyz") == (200, b"ready\n")
    status, body = http_get(f"{serving}/runbooks/ApiTrafficDrop")
    assert status == 200
    page = body.decode()
    assert "<title>Runbook: ApiTrafficDrop</title>" in page
    # The packaged runbooks/ApiTrafficDrop.md, rendered.
    assert "<h1>ApiTrafficDrop</h1>" in page and "<h2>Meaning</h2>" in page
    status, body = http_get(f"{serving}/metrics")
    assert status == 200 and b"apiusage_" in body


def test_processor_only_cli_names_the_missing_extras(processor_venv: Path, tmp_path: Path) -> None:
    help_ = _apiusage(processor_venv, "--help", cwd=tmp_path)
    assert help_.returncode == 0, help_.stderr
    # `catalog` needs only PyYAML, so it is there too (and works).
    assert _commands(help_.stdout) == [
        "serve",
        "consumers",
        "rules",
        "runbooks",
        "demo",
        "report",
        "release-notes",
        "experiments",
        "catalog",
    ]
    catalog = _apiusage(processor_venv, "catalog", "check", str(ROOT / "demo/catalog.yaml"), cwd=tmp_path)
    assert (catalog.returncode, catalog.stdout) == (
        0,
        "orders-api: 17 endpoint(s), 3 deprecated, 25 declared parameter(s)\n",
    ), catalog.stderr
    demo = _apiusage(processor_venv, "demo", cwd=tmp_path)
    assert (demo.returncode, demo.stdout) == (1, "")
    assert "pip install 'apiusage[demo]'" in demo.stderr and "Traceback" not in demo.stderr, demo.stderr
    # The rule generator and the report need no extra: they run, and say what is wrong here.
    rules = _apiusage(processor_venv, "rules", "--check", cwd=tmp_path)
    assert rules.returncode == 2 and "prometheus/slo.yaml" in rules.stderr, rules.stderr
    assert "Traceback" not in rules.stderr
    # In a checkout, the installed generator agrees with the committed rule files.
    packaged = _apiusage(processor_venv, "rules", "--check", cwd=ROOT)
    assert packaged.returncode == 0, packaged.stderr
    report = _apiusage(
        processor_venv, "report", "--prometheus", f"http://127.0.0.1:{free_port()}", cwd=tmp_path
    )
    assert report.returncode == 2 and "set --prometheus to its URL" in report.stderr, report.stderr
    assert "Traceback" not in report.stderr
    notes = _apiusage(
        processor_venv,
        "release-notes",
        "--service",
        "orders-api",
        "--version",
        "1.5.0",
        "--prometheus",
        f"http://127.0.0.1:{free_port()}",
        cwd=tmp_path,
    )
    assert notes.returncode == 2 and "set --prometheus to its URL" in notes.stderr, notes.stderr
    assert "Traceback" not in notes.stderr
    # The statistics are the `experiments` extra's: the command says so, and nothing else.
    experiments = _apiusage(processor_venv, "experiments", "report", cwd=tmp_path)
    assert (experiments.returncode, experiments.stdout) == (2, ""), experiments.stderr
    assert "pip install 'apiusage[processor,experiments]'" in experiments.stderr, experiments.stderr
    assert "Traceback" not in experiments.stderr


def test_instrumentation_only_install_instruments_an_app(instrumentation_venv: Path, tmp_path: Path) -> None:
    out = _run(
        [str(instrumentation_venv / "python"), str(Path(__file__).with_name("instrumented_app.py"))],
        cwd=tmp_path,
    )
    result = json.loads(out)
    assert result["status"] == 200
    (span,) = result["server_spans"]
    assert {k: v for k, v in span.items() if k.startswith("apiusage.")} == {
        "apiusage.schema_version": 2,
        "apiusage.consumer.id": "270af4b1bdda28a89fbdaeaf628f270b",
        "apiusage.consumer.plan_tier": "unknown",
        "apiusage.client.name": "acme-sdk",
        "apiusage.client.version": "1.2.3",
        "apiusage.api.version": "v1",
        "apiusage.endpoint.deprecated": False,
    }
    assert span["http.route"] == "/v1/orders/{order_id}"
    # The processor's servers stay out of a user's service (grpcio does come in: the OTLP/gRPC
    # span exporter of the instrumentation extra needs it).
    assert result["importable"] == {
        "prometheus_client": False,
        "uvicorn": False,
        "httptools": False,
        "markdown_it": False,
        "grpc_status": False,
        "fastapi": True,
    }


def test_instrumentation_only_cli_names_the_processor_extra(
    instrumentation_venv: Path, tmp_path: Path
) -> None:
    help_ = _apiusage(instrumentation_venv, "--help", cwd=tmp_path)
    assert help_.returncode == 0, help_.stderr
    # The command modules import nothing of their tool: every command is listed, and says what
    # to install when it runs.
    assert _commands(help_.stdout) == [
        "serve",
        "consumers",
        "rules",
        "runbooks",
        "demo",
        "report",
        "release-notes",
        "experiments",
        "catalog",
    ]
    for command in (["serve"], ["consumers", "deprecated"]):
        done = _apiusage(instrumentation_venv, *command, cwd=tmp_path)
        assert (done.returncode, done.stdout) == (2, ""), done.stderr
        assert "pip install 'apiusage[processor]'" in done.stderr and "Traceback" not in done.stderr
    demo = _apiusage(instrumentation_venv, "demo", cwd=tmp_path)
    assert demo.returncode == 1 and "pip install 'apiusage[demo]'" in demo.stderr, demo.stderr


# Third-party modules the demo imports -> the distribution that provides them.
DEMO_DISTRIBUTIONS = {
    "yaml": "pyyaml",
    "fastapi": "fastapi",
    "pydantic": "pydantic",
    "httpx": "httpx",
    "opentelemetry": "opentelemetry-proto",
    "uvicorn": "uvicorn",
    "google": "protobuf",
    "prometheus_client": "prometheus-client",
    "openfeature": "openfeature-sdk",  # and its OpenTelemetry hook, a namespace package beside it
}


def _demo_imports() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "demo").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"apiusage", "__future__"}


def test_demo_extra_resolves_and_covers_the_demo_imports(wheel: Path, tmp_path: Path) -> None:
    unknown = _demo_imports() - DEMO_DISTRIBUTIONS.keys()
    assert not unknown, (
        f"the demo imports {sorted(unknown)}: add them to the demo extra and DEMO_DISTRIBUTIONS"
    )
    report = tmp_path / "check-demo-report.json"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--report",
            str(report),
            f"{wheel}[demo]",
        ]
    )
    # PEP 503 names: the report spells them as each project does (PyYAML, prometheus_client).
    resolved = {
        re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower()
        for item in json.loads(report.read_text())["install"]
    }
    needed = {DEMO_DISTRIBUTIONS[m] for m in _demo_imports()}
    # The demo launcher also runs the service under `opentelemetry-instrument` and uvicorn.
    needed |= {"opentelemetry-instrumentation", "opentelemetry-instrumentation-fastapi", "uvicorn"}
    # openfeature.contrib.hook.opentelemetry (the demo's flag hook) comes from its own distribution.
    needed.add("openfeature-hooks-opentelemetry")
    assert needed <= resolved, sorted(needed - resolved)
