"""`apiusage experiments report`: each experiment's per-variant figures, tests and verdict.

It reads the processor's config for the experiments file (the `experiments:` key, or
`--experiments FILE`) and the state store, where the processor keeps each consumer's assigned
variant and the per-variant day tallies; the statistics need the `experiments` extra.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
import time

__all__ = ["register"]

_MISSING_EXTRA = "this command needs the '{name}' package: pip install 'apiusage[processor,experiments]'"


def _day_ms(text: str) -> int:
    try:
        day = _dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None
    return int(_dt.datetime(day.year, day.month, day.day, tzinfo=_dt.timezone.utc).timestamp() * 1000)


def _report(args: argparse.Namespace) -> int:
    try:
        from apiusage.conventions.experiments import Experiments, ExperimentsError, load_experiments
        from apiusage.processor.config import ConfigError, load_config, load_experiments_file
        from apiusage.processor.state.store import StoreError, open_store

        from .checks import first_exposure_day, information_fraction
        from .readout import read_experiment
        from .render import render_markdown, render_text
        from .verdict import analyse
    except ImportError as exc:
        print(f"apiusage: {_MISSING_EXTRA.format(name=exc.name)}", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config)
        experiments: Experiments | None
        if args.experiments:
            experiments = load_experiments(args.experiments)
        else:
            experiments = load_experiments_file(config.experiments)
        if experiments is None:
            raise ConfigError(
                "no experiments file: set 'experiments:' in the processor config or pass --experiments"
            )
        if not config.state.enabled:
            raise ConfigError("state.enabled is false: the experiment data lives in the state store")
        store = open_store(config.state)
    except (ConfigError, ExperimentsError, StoreError) as exc:
        print(f"apiusage: {exc}", file=sys.stderr)
        return 2
    try:
        chosen = list(experiments)
        if args.experiment is not None:
            if args.experiment not in experiments.experiments:
                names = ", ".join(sorted(experiments.experiments)) or "none"
                message = f"no experiment {args.experiment!r} in the file (it has: {names})"
                print(f"apiusage: {message}", file=sys.stderr)
                return 1
            chosen = [experiments.experiments[args.experiment]]
        render = render_markdown if args.format == "markdown" else render_text
        until = args.until if args.until is not None else int(time.time() * 1000)
        pages = []
        for experiment in chosen:
            since = args.since
            if since is None and experiment.start is not None:
                since = _day_ms(experiment.start.isoformat())
            data = read_experiment(store, experiment, since, until)
            # Only declared variants are counted by the processor; anything else is not analysed.
            declared = {v: data[v] for v in experiment.variants if v in data}
            # Before the planned end an interim look (as the experiment checks, the same function):
            # a result must pass the O'Brien-Fleming boundary; at or after it, alpha.
            first = first_exposure_day(store, experiment) if experiment.start is None else None
            fraction = information_fraction(experiment, until, first)
            pages.append(render(analyse(experiment, declared, fraction)))
        print("\n".join(pages), end="")
        return 0
    except StoreError as exc:
        print(f"apiusage: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # data the statistics refuse (counts that cannot be)
        print(f"apiusage: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()


def register(commands: argparse._SubParsersAction) -> None:
    """Add `apiusage experiments report` to the main parser."""
    experiments = commands.add_parser("experiments", help="experiment results: per variant, with statistics")
    which = experiments.add_subparsers(dest="which", metavar="ACTION")
    which.required = True
    report = which.add_parser("report", help="per-variant figures, tests and a verdict for each experiment")
    report.add_argument("--config", metavar="FILE", help="the processor's config file")
    report.add_argument("--experiments", metavar="FILE", help="the experiments file (default: the config's)")
    report.add_argument("--experiment", metavar="NAME", help="only this experiment")
    report.add_argument(
        "--since", type=_day_ms, metavar="DATE", help="first day (default: the experiment's start)"
    )
    report.add_argument("--until", type=_day_ms, metavar="DATE", help="the day after the last (default: now)")
    report.add_argument("--format", choices=["text", "markdown"], default="text")
    report.set_defaults(func=_report)
