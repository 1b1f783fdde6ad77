"""Grafana's provisioning files are well-formed and point at folders that exist: each path
they name inside the Grafana container is mounted by docker-compose.yml from a folder of
this repository that holds what Grafana expects there."""

from __future__ import annotations

import json
from pathlib import PurePosixPath

import yaml

from tests.grafana.grafana_support import GRAFANA, ROOT, dashboards, variables

PROVISIONING = GRAFANA / "provisioning"


def load(folder: str) -> list[dict]:
    files = sorted((PROVISIONING / folder).glob("*.yaml")) + sorted((PROVISIONING / folder).glob("*.yml"))
    assert files, f"no provisioning file in grafana/provisioning/{folder}"
    out = []
    for path in files:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert isinstance(data, dict) and data.get("apiVersion") == 1, f"{path.name}: apiVersion 1 expected"
        out.append(data)
    return out


def grafana_mounts() -> dict[PurePosixPath, str]:
    """Container path -> host path (relative to the repository) of the grafana service's bind mounts."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    out = {}
    for volume in compose["services"]["grafana"]["volumes"]:
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            out[PurePosixPath(target)] = source
    return out


def host_path(container_path: str):
    """The repository folder that docker-compose.yml mounts at (or above) `container_path`."""
    path = PurePosixPath(container_path)
    for target, source in sorted(grafana_mounts().items(), key=lambda kv: -len(kv[0].parts)):
        if path == target or target in path.parents:
            return (ROOT / source / path.relative_to(target)).resolve()
    raise AssertionError(f"{container_path} is not mounted into the grafana container")


def test_provisioning_folders_are_mounted_where_grafana_reads_them():
    mounts = grafana_mounts()
    for kind in ("datasources", "dashboards"):
        assert mounts[PurePosixPath(f"/etc/grafana/provisioning/{kind}")] == f"./grafana/provisioning/{kind}"


def test_dashboard_provider_points_at_the_dashboards():
    (provisioning,) = load("dashboards")
    (provider,) = provisioning["providers"]
    assert provider["type"] == "file" and provider["folder"] == "API usage"
    assert provider["disableDeletion"] is True and provider["allowUiUpdates"] is False
    folder = host_path(provider["options"]["path"])
    assert folder == (GRAFANA / "dashboards").resolve()
    files = sorted(p.name for p in folder.glob("*.json"))
    assert files == sorted(m["__file__"] for m in dashboards().values())
    for path in folder.glob("*.json"):
        json.loads(path.read_text(encoding="utf-8"))


def test_home_dashboard_is_a_provisioned_file():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    env = compose["services"]["grafana"]["environment"]
    assert host_path(env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]).is_file()
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true" and env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


def test_datasources_have_fixed_uids_the_dashboards_use():
    (provisioning,) = load("datasources")
    sources = {d["uid"]: d for d in provisioning["datasources"]}
    assert len(sources) == len(provisioning["datasources"])
    prometheus = sources["apiusage-prometheus"]
    assert prometheus["type"] == "prometheus" and prometheus["isDefault"] is True
    for model in dashboards().values():
        assert variables(model)["datasource"]["current"]["value"] == "apiusage-prometheus"
    # Exemplars open the trace in a provisioned trace data source.
    (destination,) = prometheus["jsonData"]["exemplarTraceIdDestinations"]
    assert destination["name"] == "trace_id"
    assert sources[destination["datasourceUid"]]["type"] in ("jaeger", "tempo")


def test_datasource_urls_name_compose_services_and_their_ports():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    services = compose["services"]
    default_ports = {"prometheus": 9090, "alertmanager": 9093, "jaeger": 16686}
    (provisioning,) = load("datasources")
    for source in provisioning["datasources"]:
        host, _, port = source["url"].removeprefix("http://").partition(":")
        assert host in services, f"{source['name']}: {host} is not a docker-compose service"
        assert int(port) == default_ports[host], f"{source['name']}: {host} listens on {default_ports[host]}"


def test_scrape_interval_matches_the_datasource_time_interval():
    """Grafana derives $__rate_interval from timeInterval: it must be Prometheus's scrape interval."""
    (provisioning,) = load("datasources")
    prometheus = next(d for d in provisioning["datasources"] if d["type"] == "prometheus")
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())["global"]["scrape_interval"]
    assert prometheus["jsonData"]["timeInterval"] == scrape
