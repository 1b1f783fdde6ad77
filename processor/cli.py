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
    from .app import StartupError

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
