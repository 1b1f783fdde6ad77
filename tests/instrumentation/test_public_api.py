"""The public surface: a complete __all__, lazy imports, and the installed entry points."""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
from importlib.metadata import entry_points

import apiusage.instrumentation as pkg
import pytest
from opentelemetry.instrumentation.distro import BaseDistro
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.sdk._configuration import _BaseConfigurator


def test_all_is_complete_and_resolvable():
    assert sorted(pkg.__all__) == sorted(pkg._LOCATIONS)
    for name in pkg.__all__:
        assert getattr(pkg, name) is not None
    # Every public class or function of the private modules is either re-exported or internal
    # plumbing listed here on purpose.
    internal = {
        "Scrubber",
        "DeprecationHeaders",
        "RouteTable",
        "RouteInfo",
        "install",
        "patch_fastapi",
        "unpatch_fastapi",
        "has_middleware",
        "build_enricher",
        "check_key",
        "parse_key",
        "import_callable",
        "api_version_from_route",
        "clip",
        "normalise_header",
        "deprecation_value",
        "sunset_value",
        "link_value",
        "expand_target",
        "operation_endpoint",
        "register",
        "run_from_openapi",
        "run_check",
        "ConsumerResolver",
        "PlanTierResolver",
        "set_attributes",
        "edit_frozen",
        # schema version 2 plumbing (_design.py)
        "Design",
        "Exchange",
        "is_json",
        "query_parameter_names",
        "is_name",
        "body_field_names",
        "validation_errors",
        "validation_lists",
        "client_region",
        "header_map",
    }
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{pkg.__name__}.{info.name}")
        for name, obj in vars(module).items():
            if name.startswith("_") or not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            if getattr(obj, "__module__", "") != module.__name__:
                continue
            assert name in pkg.__all__ or name in internal, f"{info.name}.{name}: export it"


def test_unknown_attribute():
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        pkg.nope  # noqa: B018


def _entry_point(group: str):
    found = [ep for ep in entry_points(group=group) if ep.name == "apiusage"]
    assert len(found) == 1, f"apiusage is not registered in {group}; reinstall the package"
    return found[0]


def test_instrumentor_entry_point():
    ep = _entry_point("opentelemetry_instrumentor")
    cls = ep.load()
    assert issubclass(cls, BaseInstrumentor) and cls is pkg.ApiUsageInstrumentor
    assert cls().instrumentation_dependencies() == ("fastapi >= 0.100",)


def test_distro_entry_point_only_sets_defaults(monkeypatch):
    ep = _entry_point("opentelemetry_distro")
    cls = ep.load()
    assert issubclass(cls, BaseDistro) and cls is pkg.ApiUsageDistro
    for name in (
        "OTEL_TRACES_EXPORTER",
        "OTEL_METRICS_EXPORTER",
        "OTEL_LOGS_EXPORTER",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "console")  # the user's choice wins
    cls().configure()
    assert {
        k: os.environ[k]
        for k in (
            "OTEL_TRACES_EXPORTER",
            "OTEL_METRICS_EXPORTER",
            "OTEL_LOGS_EXPORTER",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        )
    } == {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "console",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
    }


def test_configurator_entry_point():
    cls = _entry_point("opentelemetry_configurator").load()
    assert issubclass(cls, _BaseConfigurator) and cls is pkg.ApiUsageConfigurator


def test_instrumentor_raises_when_asked(monkeypatch):
    instrumentor = pkg.ApiUsageInstrumentor()
    with pytest.raises(pkg.ConfigurationError, match="no pseudonymization key is set"):
        instrumentor._instrument(on_error="raise", environ={})
