"""The `apiusage` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

__all__ = ["main"]

_MISSING_EXTRA = ("the processor's dependencies are not installed ({name}); "
                  "install them with: pip install 'apiusage[processor]'")


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
        from .state.listing import AuditLog, at_risk_consumers, deprecated_consumers, now_ms
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
            result = {"endpoints": deprecated_consumers(
                store, catalog, now_ms(), args.window, args.service, args.method, args.route,
                plans.accounts)}
            count = sum(len(e["consumers"]) for e in result["endpoints"])
        else:
            result = {"consumers": at_risk_consumers(store, now_ms(), args.service,
                                                     plans.accounts)}
            count = len(result["consumers"])
    except StoreError as exc:
        print(f"apiusage: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    import getpass
    try:  # no audit line, no consumer ids
        AuditLog(config.admin.audit_log).write(
            remote=f"cli:{getpass.getuser()}", path=f"consumers {args.which}",
            query={k: v for k, v in vars(args).items() if k in ("service", "method", "route",
                                                                 "window") and v is not None},
            authorized=True, status=0, consumers_returned=count)
    except (ValueError, OSError) as exc:
        print(f"apiusage: {exc}", file=sys.stderr)
        return 2
    if args.format == "json":
        print(json.dumps(result, indent=2))
    else:
        _print_table(args.which, result)
    return 0


def _print_table(which: str, result: dict) -> None:
    if which == "deprecated":
        if not result["endpoints"]:
            print("no deprecated endpoints (catalog or apiusage.endpoint.deprecated spans)")
        for ep in result["endpoints"]:
            print(f"{ep['method']} {ep['route']} ({ep['service']}) sunset {ep['sunset'] or '-'}, "
                  f"replacement {ep['replacement'] or '-'}: {len(ep['consumers'])} consumers in "
                  f"{ep['window_days']} days")
            for c in ep["consumers"]:
                print(f"  {c['consumer_id']:<24} {c['account'] or '':<20} {c['plan_tier']:<12} "
                      f"{c['client_name']}/{c['client_version']:<12} last {c['last_call']}  "
                      f"calls {c['calls']:g}")
        return
    if not result["consumers"]:
        print("no consumers at risk")
    for c in result["consumers"]:
        print(f"{c['consumer_id']:<24} {c['account'] or '':<20} {c['plan_tier']:<12} "
              f"last 7 days {c['calls_last_7_days']:g} vs weekly average "
              f"{c['weekly_average_previous_4_weeks']:g} ({c['service']})")


def _duration(text: str) -> int:
    units = {"h": 3600, "d": 86400, "w": 604800}
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit() or int(text[:-1]) <= 0:
        raise argparse.ArgumentTypeError(f"must be like 12h, 7d or 2w (got {text!r})")
    return int(text[:-1]) * units[text[-1]]


def _report(args: argparse.Namespace) -> int:
    """Write the HTML usage report from a Prometheus."""
    import time
    from pathlib import Path

    from .report.build import PrometheusClient, PrometheusError, build_report, render_html

    client = PrometheusClient(args.prometheus)
    try:
        client.check()
    except PrometheusError as exc:
        print(f"apiusage: {exc} (set --prometheus to its URL)", file=sys.stderr)
        return 2
    now = time.time()
    sections = build_report(client, args.range, now, args.service)
    page = render_html(sections, args.prometheus, args.range, now, args.service)
    try:
        Path(args.output).write_text(page, encoding="utf-8")
    except OSError as exc:
        print(f"apiusage: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
        return 2
    failed = sum(1 for s in sections if not s.question)
    print(f"wrote {args.output} ({len(sections)} sections"
          + (f", {failed} could not be built" if failed else "") + ")")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="apiusage", description="API usage analytics from OpenTelemetry spans.")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    serve = commands.add_parser("serve", help="receive OTLP spans and expose usage metrics")
    serve.add_argument("--config", metavar="FILE",
                       help="YAML config file (default: embedded defaults)")
    serve.set_defaults(func=_serve)
    consumers = commands.add_parser(
        "consumers", help="list consumer ids: deprecated-endpoint callers, consumers at risk")
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
    consumers.set_defaults(func=_consumers)
    from .rules.command import register as register_rules_commands

    register_rules_commands(commands)  # apiusage rules, apiusage runbooks check
    from .launch.command import register as register_demo_command

    register_demo_command(commands)  # apiusage demo
    report = commands.add_parser("report", help="write a self-contained HTML usage report")
    report.add_argument("--prometheus", default="http://localhost:9090", metavar="URL",
                        help="Prometheus base URL (default: %(default)s, the demo's)")
    report.add_argument("-o", "--output", default="apiusage-report.html", metavar="FILE")
    report.add_argument("--range", type=_duration, default=7 * 86400, metavar="PERIOD",
                        help="period to cover: 12h, 7d, 2w (default 7d)")
    report.add_argument("--service", help="only this service")
    report.set_defaults(func=_report)
    try:
        from apiusage.instrumentation import _catalog_cli
    except ImportError:
        pass  # the catalog commands come with the instrumentation package
    else:
        _catalog_cli.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
