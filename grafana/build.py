"""Builds the Grafana dashboards in grafana/dashboards/*.json with grafana-foundation-sdk.

    python grafana/build.py          # rewrite the JSON files
    python grafana/build.py --check  # exit 1 if a committed file differs from what this builds

The SDK is pinned (pyproject.toml, `dev` extra) to the Grafana version docker-compose.yml
runs.  One module per dashboard in grafana/boards/, their shared parts in boards/kit.py.  The
panel contract in apiusage.conventions.panels (uids, slugs, titles, panel ids and the metric
each panel plots) is what alert rules link to; the builders take uids, titles and file names
from it, and the tests hold the dashboards to it.

The alert rules in alert_rules/ are read too: every panel an alert's `dashboard_url`
points at gets a link to that alert's runbook, and each dashboard's "Firing alerts" panel
lists the alerts that point at it.  Regenerate after changing the rules.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from apiusage.conventions import panels as contract
from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.cog.encoder import JSONEncoder

# boards/ sits beside this script, which runs as `python grafana/build.py` or is loaded by
# path (tests), never as an installed package.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from boards import adoption, deprecations, design, experiments, overview, pipeline, releases  # noqa: E402
from boards.alert_links import Alerts, load_alerts  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "grafana" / "dashboards"

# uid -> builder; each dashboard's file is named after its slug in the panel contract.
BUILDERS: dict[str, Callable[[Alerts], dashboard.Dashboard]] = {
    contract.OVERVIEW: overview.overview,
    contract.ADOPTION: adoption.adoption,
    contract.DEPRECATIONS: deprecations.deprecations,
    contract.PIPELINE: pipeline.pipeline,
    contract.DESIGN: design.design,
    contract.RELEASES: releases.releases,
    contract.EXPERIMENTS: experiments.experiments,
}


def render(alerts: Alerts | None = None) -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    alerts = load_alerts() if alerts is None else alerts
    out = {}
    for uid, build in BUILDERS.items():
        model = build(alerts).build()
        out[contract.dashboard(uid).file] = (
            json.dumps(model, cls=JSONEncoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        )
    return out


def stale(rendered: dict[str, str], folder: Path = OUT) -> list[str]:
    """Names of the files in `folder` that differ from `rendered` (or are missing / extra)."""
    names = {p.name for p in folder.glob("*.json")} | set(rendered)
    return sorted(
        n
        for n in names
        if n not in rendered
        or not (folder / n).exists()
        or (folder / n).read_text(encoding="utf-8") != rendered[n]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed JSON is stale")
    args = parser.parse_args(argv)
    rendered = render()
    if args.check:
        bad = stale(rendered)
        if bad:
            print(f"stale dashboards: {', '.join(bad)}; run: python grafana/build.py", file=sys.stderr)
            return 1
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    for extra in set(p.name for p in OUT.glob("*.json")) - set(rendered):
        (OUT / extra).unlink()
    for name, text in rendered.items():
        (OUT / name).write_text(text, encoding="utf-8")
    print(f"wrote {len(rendered)} dashboards to {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
