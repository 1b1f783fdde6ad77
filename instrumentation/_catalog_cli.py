"""``apiusage catalog ...``: write a catalog from an OpenAPI document, or check one.

The ``apiusage`` CLI calls :func:`register` with its argparse sub-parsers, then
``args.func(args)`` and exits with the returned status. Errors are one line on stderr
and status 2, never a traceback. Only PyYAML is needed, except for ``--app``, which
imports the user's FastAPI app.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from apiusage.conventions._yaml import YamlLimits, safe_load
from apiusage.conventions.catalog import CatalogError, dump_catalog, load_catalog

from ._openapi import catalog_from_openapi

EXIT_ERROR = 2
# OpenAPI documents nest deeper and hold longer descriptions than the data files YamlLimits suits;
# still bounded, so a hostile document is refused by name instead of raising RecursionError.
_OPENAPI_YAML = YamlLimits(max_depth=256, max_scalar_chars=1 << 20)


class _Failure(Exception):
    """A user-facing error: printed as is."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``catalog`` command and its sub-commands to an ``apiusage`` parser."""
    catalog = subparsers.add_parser(
        "catalog",
        help="work with endpoint catalogs (deprecations, sunsets, replacements)",
        description="Work with endpoint catalogs (see docs/catalog.md).",
    )
    commands = catalog.add_subparsers(dest="catalog_command", metavar="COMMAND")
    commands.required = True

    from_openapi = commands.add_parser(
        "from-openapi",
        help="write a catalog from a service's OpenAPI document",
        description=(
            "Write a catalog from an OpenAPI document: every operation that is "
            "deprecated (OpenAPI 'deprecated: true', FastAPI's deprecated=True) or carries "
            "x-deprecated-since, x-sunset, x-replacement, x-deprecation-link or x-feature, and "
            "every operation that declares query parameters or JSON request body fields (their "
            "names, for api_unused_parameters)."
        ),
    )
    source = from_openapi.add_mutually_exclusive_group(required=True)
    source.add_argument("--file", metavar="PATH", help="OpenAPI document, JSON or YAML")
    source.add_argument("--url", metavar="URL", help="fetch the document over http(s)")
    source.add_argument("--app", metavar="MODULE:ATTR", help="import a FastAPI app and use app.openapi()")
    from_openapi.add_argument("--service", required=True, help="service name in the catalog")
    from_openapi.add_argument("-o", "--output", metavar="FILE", help="write here instead of standard output")
    from_openapi.add_argument(
        "--feature-key", default="x-feature", help="operation key naming the feature (x-feature)"
    )
    from_openapi.add_argument(
        "--body-depth",
        type=int,
        default=1,
        metavar="N",
        help="levels of JSON body fields to declare, as APIUSAGE_BODY_FIELD_DEPTH records them (1)",
    )
    from_openapi.add_argument(
        "--no-parameters",
        dest="parameters",
        action="store_false",
        help="leave declared parameters out (deprecation facts only)",
    )
    from_openapi.set_defaults(func=run_from_openapi)

    check = commands.add_parser(
        "check", help="validate a catalog file", description="Validate a catalog file."
    )
    check.add_argument("file", help="catalog file (YAML)")
    check.set_defaults(func=run_check)


def run_from_openapi(args: argparse.Namespace) -> int:
    try:
        document, source = _read_document(args)
        catalog = catalog_from_openapi(
            document, args.service, source, args.feature_key, args.parameters, args.body_depth
        )
        text = dump_catalog(catalog, header=f"apiusage endpoint catalog, generated from {source}")
        if args.output:
            try:
                Path(args.output).write_text(text, encoding="utf-8")
            except OSError as exc:
                raise _Failure(f"cannot write {args.output}: {exc.strerror or exc}") from None
            endpoints = catalog.services[0].endpoints
            names = sum(len(ep.query_parameters) + len(ep.body_fields) for ep in endpoints)
            print(
                f"wrote {len(endpoints)} endpoint(s) of {args.service} ({names} declared parameter(s)) "
                f"to {args.output}",
                file=sys.stderr,
            )
        else:
            sys.stdout.write(text)
    except (_Failure, CatalogError) as exc:
        print(f"apiusage catalog from-openapi: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return 0


def run_check(args: argparse.Namespace) -> int:
    try:
        catalog = load_catalog(args.file)
    except CatalogError as exc:
        print(f"apiusage catalog check: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    for svc in catalog.services:
        deprecated = sum(1 for ep in svc.endpoints if ep.deprecated)
        names = sum(len(ep.query_parameters) + len(ep.body_fields) for ep in svc.endpoints)
        declared = f", {names} declared parameter(s)" if names else ""
        print(f"{svc.name}: {len(svc.endpoints)} endpoint(s), {deprecated} deprecated{declared}")
    return 0


def _read_document(args: argparse.Namespace) -> tuple[Any, str]:
    if args.file:
        try:
            text = Path(args.file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise _Failure(f"cannot read {args.file}: {reason}") from None
        return _parse(text, args.file), args.file
    if args.url:
        if not args.url.startswith(("http://", "https://")):
            raise _Failure(f"--url must be an http(s) URL (got {args.url!r})")
        try:
            with urllib.request.urlopen(args.url, timeout=30) as response:
                text = response.read().decode("utf-8")
        except urllib.error.HTTPError as exc:
            raise _Failure(f"cannot fetch {args.url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise _Failure(f"cannot fetch {args.url}: {reason}") from None
        return _parse(text, args.url), args.url
    return _app_document(args.app), args.app


def _parse(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        pass
    except RecursionError:
        raise _Failure(f"{source}: JSON nested too deep to read") from None
    try:
        return safe_load(text, _OPENAPI_YAML)
    except yaml.YAMLError as exc:
        raise _Failure(f"{source}: neither JSON nor YAML: {exc}") from None


def _app_document(reference: str) -> Any:
    module_name, _, attr = reference.partition(":")
    if not module_name or not attr:
        raise _Failure(f"--app expects MODULE:ATTR, like app.main:app (got {reference!r})")
    # Like uvicorn: the app's module is found from the current directory.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as exc:
        raise _Failure(f"cannot import {reference}: {type(exc).__name__}: {exc}") from None
    openapi = getattr(obj, "openapi", None)
    if not callable(openapi):
        raise _Failure(f"{reference} is not a FastAPI app (it has no openapi() method)")
    try:
        return openapi()
    except Exception as exc:
        raise _Failure(f"{reference}.openapi() failed: {type(exc).__name__}: {exc}") from None
