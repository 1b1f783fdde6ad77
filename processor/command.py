"""`apiusage serve` and `apiusage consumers`: registered on the main parser by `apiusage.cli`."""

from __future__ import annotations

import argparse
import sys

__all__ = ["register"]

_MISSING_EXTRA = (
    "the processor's dependencies are not installed ({name}); "
    "install them with: pip install 'apiusage[processor]'"
)


def _serve(args: argparse.Namespace) -> int:
    try:
        from .app import Processor
        from .config import ConfigError, load_config
    except ImportError as exc:
        print(f"apiusage: {_MISSING_EXTRA.format(name=exc.name)}", file=sys.stderr)
        return 2
    from .app import StartupError, raise_open_file_limit

    raise_open_file_limit()
    try:
        config = load_config(args.config)
        processor = Processor(config)
        processor.start()
    except (ConfigError, StartupError) as exc:
        print(f"apiusage: {exc}", file=sys.stderr)
        return 2
    lines = [f"apiusage processor ready ({args.config or 'embedded defaults'})"]
    lines += [f"  {name:<10} {url}" for name, url in processor.urls().items()]
    print("\n".join(lines), flush=True)
    return 0 if processor.run_until_signal() else 1


def _consumers(args: argparse.Namespace) -> int:
    """List consumer ids for customer success, from the configured state store (audited)."""
    try:
        import json

        from .app import StartupError, load_catalog_file
        from .config import ConfigError, load_config
        from .derive.plans import PlanLookup, PlanLookupError
        from .state.listing import (
            AuditLog,
            at_risk_consumers,
            deprecated_consumers,
            now_ms,
            unused_parameter_list,
        )
        from .state.store import StoreError, open_store
    except ImportError as exc:
        print(f"apiusage: {_MISSING_EXTRA.format(name=exc.name)}", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config)
        catalog = load_catalog_file(config.catalog)
        lookup = config.processors.plan_lookup
        store = open_store(config.state)
    except (ConfigError, StartupError, StoreError) as exc:
        print(f"apiusage: {exc}", file=sys.stderr)
        return 2
    try:
        plans = PlanLookup(lookup.file, lookup.sql)
        try:
            plans.load(store.query)
        except PlanLookupError as exc:
            print(f"apiusage: warning: no account names: {exc}", file=sys.stderr)
        if args.which == "deprecated":
            result = {
                "endpoints": deprecated_consumers(
                    store,
                    catalog,
                    now_ms(),
                    args.window,
                    args.service,
                    args.method,
                    args.route,
                    plans.accounts,
                )
            }
            count = sum(len(e["consumers"]) for e in result["endpoints"])
        elif args.which == "unused-parameters":
            if catalog is None:
                print(
                    "apiusage: warning: no catalog configured (the catalog: key): "
                    "no declared parameters to compare",
                    file=sys.stderr,
                )
            result = {
                "endpoints": unused_parameter_list(
                    store,
                    catalog,
                    now_ms(),
                    args.service,
                    args.method,
                    args.route,
                    config.processors.limits.max_label_length,
                )
            }
            count = 0  # parameter names, no consumer ids
        else:
            result = {"consumers": at_risk_consumers(store, now_ms(), args.service, plans.accounts)}
            count = len(result["consumers"])
    except StoreError as exc:
        print(f"apiusage: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    import getpass

    try:  # no audit line, no consumer ids
        AuditLog(config.admin.audit_log).write(
            remote=f"cli:{getpass.getuser()}",
            path=f"consumers {args.which}",
            query={
                k: v
                for k, v in vars(args).items()
                if k in ("service", "method", "route", "window") and v is not None
            },
            authorized=True,
            status=0,
            consumers_returned=count,
        )
    except (ValueError, OSError) as exc:
        print(f"apiusage: {exc}", file=sys.stderr)
        return 2
    if args.format == "json":
        print(json.dumps(result, indent=2))
    else:
        _print_table(args.which, result)
    return 0


def _print_table(which: str, result: dict) -> None:
    if which == "unused-parameters":
        if not result["endpoints"]:
            print("no catalog endpoint with declared parameters was called in the last 30 days")
        for ep in result["endpoints"]:
            print(
                f"{ep['method']} {ep['route']} ({ep['service']}) last call {ep['last_call']}: "
                f"{len(ep['unused'])} of {ep['declared']} declared parameters not sent in "
                f"{ep['window_days']} days"
            )
            for p in ep["unused"]:
                print(f"  {p['location']:<6} {p['name']}")
        return
    if which == "deprecated":
        if not result["endpoints"]:
            print("no deprecated endpoints (catalog or apiusage.endpoint.deprecated spans)")
        for ep in result["endpoints"]:
            print(
                f"{ep['method']} {ep['route']} ({ep['service']}) sunset {ep['sunset'] or '-'}, "
                f"replacement {ep['replacement'] or '-'}: {len(ep['consumers'])} consumers in "
                f"{ep['window_days']} days"
            )
            for c in ep["consumers"]:
                print(
                    f"  {c['consumer_id']:<24} {c['account'] or '':<20} {c['plan_tier']:<12} "
                    f"{c['client_name']}/{c['client_version']:<12} last {c['last_call']}  "
                    f"calls {c['calls']:g}"
                )
        return
    if not result["consumers"]:
        print("no consumers at risk")
    for c in result["consumers"]:
        print(
            f"{c['consumer_id']:<24} {c['account'] or '':<20} {c['plan_tier']:<12} "
            f"last 7 days {c['calls_last_7_days']:g} vs weekly average "
            f"{c['weekly_average_previous_4_weeks']:g} ({c['service']})"
        )


def register(commands: argparse._SubParsersAction) -> None:
    """Add `apiusage serve` and `apiusage consumers` to the main parser."""
    serve = commands.add_parser("serve", help="receive OTLP spans and expose usage metrics")
    serve.add_argument("--config", metavar="FILE", help="YAML config file (default: embedded defaults)")
    serve.set_defaults(func=_serve)
    consumers = commands.add_parser(
        "consumers",
        help="list consumer ids (deprecated-endpoint callers, consumers at risk), unused parameters",
    )
    consumers.add_argument("--config", metavar="FILE", help="the processor's config file")
    consumers.add_argument("--format", choices=["table", "json"], default="table")
    which = consumers.add_subparsers(dest="which", metavar="LIST")
    which.required = True
    deprecated = which.add_parser("deprecated", help="consumers still calling deprecated endpoints")
    deprecated.add_argument("--service")
    deprecated.add_argument("--method")
    deprecated.add_argument("--route")
    deprecated.add_argument("--window", type=int, default=30, metavar="DAYS")
    at_risk = which.add_parser("at-risk", help="consumers whose usage fell sharply")
    at_risk.add_argument("--service")
    unused = which.add_parser(
        "unused-parameters", help="declared parameters (catalog) nobody sent in 30 days, per endpoint"
    )
    unused.add_argument("--service")
    unused.add_argument("--method")
    unused.add_argument("--route")
    consumers.set_defaults(func=_consumers)
