"""`apiusage rules` and `apiusage runbooks check`: registered on the main parser by cli.py."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["register"]


def _rules(args: argparse.Namespace) -> int:
    from .generate import stale, write
    from .slo import SloError, load_slo

    try:
        slo = load_slo(args.slo)
    except SloError as exc:
        print(f"apiusage: {exc}", file=sys.stderr)
        return 2
    source = Path(args.slo).as_posix()
    if args.check:
        old = stale(slo, args.out, source)
        for name in old:
            print(f"apiusage: {Path(args.out) / name} is stale: run `apiusage rules`", file=sys.stderr)
        return 1 if old else 0
    for path in write(slo, args.out, source):
        print(f"wrote {path}")
    return 0


def _runbooks_check(args: argparse.Namespace) -> int:
    from apiusage.processor.runbooks import check_runbooks, find_runbooks_dir

    folder = Path(args.runbooks_dir) if args.runbooks_dir else find_runbooks_dir(None)
    if folder is None:
        print("apiusage: no runbooks folder found; pass --runbooks-dir", file=sys.stderr)
        return 2
    rule_files = sorted(Path(args.rules_dir).glob("*.yml")) + sorted(Path(args.rules_dir).glob("*.yaml"))
    if not rule_files:
        print(f"apiusage: no rule files in {args.rules_dir}", file=sys.stderr)
        return 2
    problems = check_runbooks(folder, rule_files, promtool=args.promtool, check_promql=not args.skip_promql)
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        print(f"apiusage: {len(problems)} problem(s) in {folder}", file=sys.stderr)
        return 1
    print(f"{folder}: every alert has a runbook, every runbook an alert, every PromQL snippet parses")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    rules = commands.add_parser(
        "rules", help="generate the Prometheus recording and alerting rules from the SLO file"
    )
    rules.add_argument(
        "--slo", default="prometheus/slo.yaml", metavar="FILE", help="SLO file (default: prometheus/slo.yaml)"
    )
    rules.add_argument(
        "--out",
        default="alert_rules",
        metavar="DIR",
        help="where to write the rule files (default: alert_rules)",
    )
    rules.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if a rule file differs from what would be written",
    )
    rules.set_defaults(func=_rules)
    runbooks = commands.add_parser("runbooks", help="runbook tools")
    which = runbooks.add_subparsers(dest="runbooks_command", metavar="COMMAND")
    which.required = True
    check = which.add_parser(
        "check", help="every alert has a complete runbook, every runbook an alert, PromQL parses"
    )
    check.add_argument(
        "--rules-dir",
        default="alert_rules",
        metavar="DIR",
        help="rule files whose alerts need runbooks (default: alert_rules)",
    )
    check.add_argument(
        "--runbooks-dir", metavar="DIR", help="default: the repository's runbooks/ (or the packaged copies)"
    )
    check.add_argument(
        "--promtool",
        default="promtool",
        metavar="PATH",
        help="promtool used to parse the PromQL snippets (default: promtool on PATH)",
    )
    check.add_argument(
        "--skip-promql", action="store_true", help="do not parse PromQL snippets (no promtool needed)"
    )
    check.set_defaults(func=_runbooks_check)
