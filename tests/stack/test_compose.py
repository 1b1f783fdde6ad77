"""docker-compose.yml, the Dockerfile and the configs they mount.  No Docker engine runs here,
so the file is validated by `docker-compose config` (Debian's docker-compose 1.29) and the
rest is checked statically: every mounted path exists, images and packages are pinned,
services have healthchecks and state lives in named volumes, and each config the stack
mounts is valid for the component that reads it, at the path where it is mounted."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest
import yaml

from tests.support.components import missing

pytestmark = pytest.mark.live

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SERVICES = {"processor", "demo", "traffic", "prometheus", "alertmanager", "alert-log", "grafana", "jaeger"}
PROJECT_IMAGE = "apiusage:0.1.0"


@pytest.fixture(scope="module")
def config() -> dict:
    """The configuration as docker-compose itself resolves it."""
    exe = shutil.which("docker-compose")
    if exe is None:
        missing("docker-compose (Debian package docker-compose; scripts/system-deps.sh installs it)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    env.pop("APIUSAGE_PSEUDONYM_KEY", None)
    env.pop("GRAFANA_ADMIN_PASSWORD", None)
    run = subprocess.run(
        [exe, "--project-directory", str(ROOT), "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    assert run.returncode == 0, f"docker-compose config failed:\n{run.stderr}"
    return yaml.safe_load(run.stdout)


def raw() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def mounts(service: dict) -> list[dict]:
    """The service's volumes as {type, source, target, read_only}, from the long syntax (docker
    compose v2) or the short one (`docker-compose config` 1.29 prints `source:target:mode`)."""
    out = []
    for v in service.get("volumes", []):
        if isinstance(v, dict):
            out.append(
                {
                    "type": v["type"],
                    "source": v.get("source", ""),
                    "target": v["target"],
                    "read_only": bool(v.get("read_only")),
                }
            )
        else:
            source, target, *mode = v.split(":")
            kind = "bind" if source.startswith(("/", ".")) else "volume"
            out.append({"type": kind, "source": source, "target": target, "read_only": mode == ["ro"]})
    return out


def binds(service: dict) -> list[tuple[Path, PurePosixPath, bool]]:
    """(host path, container path, read-only) of the service's bind mounts."""
    return [
        (Path(m["source"]), PurePosixPath(m["target"]), m["read_only"])
        for m in mounts(service)
        if m["type"] == "bind"
    ]


def named_volume_at(config: dict, service: str, target: str) -> bool:
    named = set(config.get("volumes") or {})
    return any(
        m["type"] == "volume" and m["target"] == target and m["source"] in named
        for m in mounts(config["services"][service])
    )


def host_path(service: dict, container_path: str) -> Path:
    """Where the file at `container_path` inside the service comes from, on this machine."""
    path = PurePosixPath(container_path)
    for source, target, _ in sorted(binds(service), key=lambda b: -len(b[1].parts)):
        if path == target or target in path.parents:
            return source / path.relative_to(target)
    raise AssertionError(f"{container_path} is not bind-mounted")


def test_compose_config_is_valid_and_complete(config):
    assert set(config["services"]) == SERVICES


def test_every_mounted_path_exists_in_the_repository(config):
    for name, service in config["services"].items():
        for source, target, read_only in binds(service):
            assert source.exists(), f"{name}: {source} (mounted at {target}) does not exist"
            assert source.resolve().is_relative_to(ROOT), f"{name}: {source} is outside the repository"
            assert read_only, f"{name}: {source} should be mounted read-only"


def test_state_lives_in_named_volumes(config):
    want = {
        "processor": "/var/lib/apiusage",
        "prometheus": "/prometheus",
        "alertmanager": "/alertmanager",
        "grafana": "/var/lib/grafana",
    }
    for name, target in want.items():
        assert named_volume_at(config, name, target), f"{name}: {target} is not a named volume"


def test_images_are_pinned(config):
    for name, service in config["services"].items():
        image = service["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: {image} is not pinned to a version"
        if "build" in service:
            assert image == PROJECT_IMAGE
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    (base,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, re.M)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base), base
    assert re.findall(r"^FROM (\S+)", dockerfile, re.M) == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]


def test_services_have_healthchecks(config):
    for name, service in config["services"].items():
        check = service.get("healthcheck") or {}
        if name == "traffic":  # a bounded batch job without a port; documented in the file
            assert check.get("disable") is True or check.get("test") == ["NONE"]
            continue
        assert check.get("test") and check["test"][0] == "CMD", f"{name} has no healthcheck"
    # Ordered start: the demo waits for a ready processor, the traffic for a ready demo.
    depends = {n: s.get("depends_on", {}) for n, s in config["services"].items()}
    assert depends["demo"]["processor"]["condition"] == "service_healthy"
    assert depends["traffic"]["demo"]["condition"] == "service_healthy"
    assert depends["grafana"]["prometheus"]["condition"] == "service_healthy"


def test_processor_config_is_valid_where_it_is_mounted(config):
    """deploy/processor.yaml parses with the processor's own strict loader, once its container
    paths are mapped to the files the compose file mounts there; what it forwards to exists."""
    from apiusage.processor.config import parse_config

    processor = config["services"]["processor"]
    command = processor["command"]
    container_config = command[command.index("--config") + 1]
    data = yaml.safe_load(host_path(processor, container_config).read_text(encoding="utf-8"))
    state_dir = str(PurePosixPath(data["state"]["sqlite"]["path"]).parent)
    assert named_volume_at(config, "processor", state_dir), "the state must be in a named volume"
    prometheus = data["exporters"]["prometheus"]
    prometheus["runbooks_dir"] = str(host_path(processor, prometheus["runbooks_dir"]))
    data["catalog"] = str(host_path(processor, data["catalog"]))
    parsed = parse_config(data)
    endpoint = parsed.exporters.otlp.endpoint
    host, port = re.fullmatch(r"http://([\w-]+):(\d+)", endpoint).groups()
    assert host == "jaeger" and port == "4318"  # Jaeger's OTLP/HTTP receiver
    assert config["services"]["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    from apiusage.instrumentation.catalog import load_catalog

    load_catalog(data["catalog"])
    ports = {
        int(p["target"]) if isinstance(p, dict) else int(str(p).split(":")[-1]) for p in processor["ports"]
    }
    assert {4317, 4318, 9464} <= ports


def test_demo_service_runs_under_zero_code_instrumentation(config):
    from apiusage.instrumentation import ENVIRONMENT_VARIABLES

    demo = config["services"]["demo"]
    assert demo["command"][:3] == ["opentelemetry-instrument", "uvicorn", "apiusage.demo.app:app"]
    env = demo["environment"]
    known = set(ENVIRONMENT_VARIABLES)
    for name in env:
        if name.startswith("APIUSAGE_"):
            assert name in known, f"{name} is not an apiusage instrumentation variable"
    assert len(env["APIUSAGE_PSEUDONYM_KEY"]) >= 16
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://processor:4317"
    for variable in ("APIUSAGE_PLAN_TIERS", "APIUSAGE_CATALOG"):
        assert host_path(demo, env[variable]).is_file(), variable
    traffic = config["services"]["traffic"]["command"]
    assert traffic[traffic.index("--target") + 1] == "http://demo:8000"
    for flag in ("--duration", "--max-requests"):
        assert flag in traffic, f"the traffic generator must be bounded ({flag})"


def test_prometheus_config_is_the_projects_with_compose_hostnames(config):
    """deploy/prometheus.yml = prometheus/prometheus.yml except that localhost becomes the
    compose service names; its rule_files resolve to the mounted alert_rules/."""
    ours = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    theirs = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    renamed = {"localhost:9464": "processor:9464", "localhost:9093": "alertmanager:9093"}

    def rename(node):
        if isinstance(node, dict):
            return {k: rename(v) for k, v in node.items()}
        if isinstance(node, list):
            return [rename(v) for v in node]
        return renamed.get(node, node) if isinstance(node, str) else node

    assert ours == rename(theirs)
    prometheus = config["services"]["prometheus"]
    flags = dict(f.removeprefix("--").split("=", 1) for f in prometheus["command"] if "=" in f)
    assert "exemplar-storage" in flags["enable-feature"]
    config_path = PurePosixPath(flags["config.file"])
    assert host_path(prometheus, str(config_path)).resolve() == (ROOT / "deploy" / "prometheus.yml")
    for pattern in ours["rule_files"]:
        container = os.path.normpath(config_path.parent / pattern)
        folder = host_path(prometheus, str(PurePosixPath(container).parent))
        matched = sorted(folder.glob(PurePosixPath(container).name))
        assert matched and folder.resolve() == (ROOT / "alert_rules"), f"{pattern} matches nothing"
    for job in ours["scrape_configs"]:
        for static in job["static_configs"]:
            for target in static["targets"]:
                host = target.split(":")[0]
                assert host == "localhost" or host in config["services"], target


def test_alertmanager_config_and_its_webhook(config):
    alertmanager = config["services"]["alertmanager"]
    flags = dict(f.removeprefix("--").split("=", 1) for f in alertmanager["command"] if "=" in f)
    path = host_path(alertmanager, flags["config.file"])
    assert path.resolve() == (ROOT / "prometheus" / "alertmanager.yml")
    am = yaml.safe_load(path.read_text())
    for pattern in am.get("templates", []):
        assert sorted(path.parent.glob(pattern)), f"template {pattern} matches nothing"
    urls = {w["url"] for r in am["receivers"] for w in r.get("webhook_configs", [])}
    ports = {int(re.match(r"http://(?:localhost|127\.0\.0\.1):(\d+)/", u).group(1)) for u in urls}
    log = config["services"]["alert-log"]
    assert log["network_mode"] == "service:alertmanager"
    assert ports == {int(log["command"][log["command"].index("--port") + 1])}
    amtool = shutil.which("amtool")
    if amtool:
        run = subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr


def test_python_packages_of_the_image_are_pinned():
    """deploy/requirements.txt pins everything the image installs, within pyproject.toml's ranges."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pins = {}
    for line in (ROOT / "deploy" / "requirements.txt").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not pinned: {line}"
            pins[canonicalize_name(name)] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [
        *project["dependencies"],
        *project["optional-dependencies"]["processor"],
        *project["optional-dependencies"]["instrumentation"],
        *project["optional-dependencies"]["demo"],  # the demo service and its traffic
    ]
    for spec in wanted:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        if name == "apiusage":  # the demo extra names the other two
            continue
        assert name in pins, f"{req.name} is not pinned in deploy/requirements.txt"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{req.name}=={pins[name]} is not in {req.specifier}"
        )
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "-r deploy/requirements.txt" in dockerfile and "--no-index" in dockerfile
