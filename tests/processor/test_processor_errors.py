"""One exception root for the processor: every public exception class it defines derives from it."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import apiusage.processor
from apiusage.processor.errors import ProcessorError


def _exception_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(apiusage.processor.__path__, "apiusage.processor."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == module.__name__
                and not name.startswith("_")
            ):
                found[f"{module.__name__}.{name}"] = obj
    return found


def test_every_public_processor_exception_derives_from_the_root() -> None:
    classes = _exception_classes()
    assert "apiusage.processor.config.ConfigError" in classes
    assert "apiusage.processor.app.StartupError" in classes
    strays = sorted(name for name, cls in classes.items() if not issubclass(cls, ProcessorError))
    assert strays == []
    assert len(classes) == 14, sorted(classes)  # a new one: make it derive from ProcessorError


def test_the_root_keeps_the_old_bases() -> None:
    """Handlers written for ValueError / OSError still catch what they caught."""
    from apiusage.processor._httpserver import BindError
    from apiusage.processor.derive.plans import PlanLookupError
    from apiusage.processor.receivers.payload import InvalidPayload
    from apiusage.processor.receivers.scan import ScanError, TooManySpans

    assert issubclass(ScanError, ValueError) and issubclass(TooManySpans, ScanError)
    assert issubclass(PlanLookupError, ValueError) and issubclass(InvalidPayload, ValueError)
    error = BindError(98, "127.0.0.1:4318 is already in use: set x to a free port")
    assert isinstance(error, OSError) and isinstance(error, ProcessorError)
    assert (error.errno, error.strerror) == (98, "127.0.0.1:4318 is already in use: set x to a free port")


def test_the_compiled_scanner_raises_the_rooted_scan_error() -> None:
    from apiusage.processor.receivers.fields import FieldScanner
    from apiusage.processor.receivers.scan import ScanError

    try:
        FieldScanner([("a",)], ["service.name"]).scan(b"\xff\xff")
    except ProcessorError as exc:
        assert type(exc) is ScanError
        assert str(exc) == "truncated tag (ExportTraceServiceRequest) at byte 0"
    else:
        raise AssertionError("a truncated body was accepted")
