"""Instructions per request of each instrumentation variant, counted by callgrind.

The timings of ``bench/instrumentation_overhead.py`` move by tens of percent on a shared VM;
an instruction count does not.  For each variant of that benchmark (bare FastAPI,
OpenTelemetry, apiusage with the schema version 1 features, apiusage with every feature)
this runs the same requests under ``valgrind --tool=callgrind`` twice, with N and with 0
measured requests after the same warm-up, and prints (instructions(N) - instructions(0)) / N
and the enrichment's share of OpenTelemetry's own instructions. The hash seed, the span
export thread's timer, the GIL switch interval and the start-up heap's garbage collection
are pinned (see _run), so that a repeated run gives the same count within 0.1%.

    .venv/bin/python bench/instrumentation_instructions.py [--requests 400]

Needs valgrind. Takes a few minutes (callgrind runs Python about 50 times slower).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

VARIANTS = ("bare", "otel", "apiusage_v1", "apiusage")
WARM_UP = 300


async def _run(name: str, count: int) -> None:
    # What the count depends on is made independent of the wall clock, which callgrind
    # slows 50 times and unevenly: the span export thread runs when its queue holds a
    # batch (OTEL_BSP_SCHEDULE_DELAY, set by the parent, turns off its timer) and the
    # interpreter does not hand the GIL over every 5 ms.
    sys.setswitchinterval(30)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import instrumentation_overhead as bench

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(bench.CATALOG)
    try:
        app, provider = bench.variants(f.name)[name]
        scopes = bench.requests()
        await bench.drive(app, scopes, WARM_UP)
        gc.collect()
        # The start-up heap (FastAPI, pydantic, the SDK) is left out of later collections:
        # whether a full collection over it falls inside the measured requests otherwise
        # moves the figure by tens of thousands of instructions a request.
        gc.freeze()
        if count:
            await bench.drive(app, scopes, count)
        if provider is not None:
            provider.force_flush()
    finally:
        os.unlink(f.name)


def _instructions(name: str, count: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={tmp}/out",
                sys.executable,
                os.path.abspath(__file__),
                "--child",
                name,
                str(count),
            ],
            capture_output=True,
            text=True,
            check=True,
            # The same hash seed in every run: set and dict layouts (so their collisions)
            # stay put, which otherwise move the count by thousands a request.
            env={**os.environ, "PYTHONHASHSEED": "0", "OTEL_BSP_SCHEDULE_DELAY": "600000"},
        )
    found = re.search(r"Collected : (\d+)", out.stderr)
    if found is None:
        raise SystemExit(f"callgrind printed no count for {name}: {out.stderr[-500:]}")
    return int(found.group(1))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--child"]:
        asyncio.run(_run(args[1], int(args[2])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="measured requests per variant")
    n = parser.parse_args(args).requests
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    runs = [(name, count) for name in VARIANTS for count in (0, n)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        counts = dict(zip(runs, pool.map(lambda r: _instructions(*r), runs), strict=True))
    per = {name: (counts[name, n] - counts[name, 0]) / n for name in VARIANTS}
    otel = per["otel"] - per["bare"]
    for name in VARIANTS:
        print(f"  {name:12s} {per[name] / 1e3:9.1f} k instructions/request")
    v1, full = per["apiusage_v1"] - per["otel"], per["apiusage"] - per["otel"]
    print(f"OpenTelemetry's own: {otel / 1e3:.1f} k; apiusage adds {full / 1e3:.1f} k ({full / otel:.1%})")
    print(f"  schema version 1 features alone: {v1 / 1e3:.1f} k ({v1 / otel:.1%})")
    verdict = "yes" if full / otel < 0.10 else "NO"
    print(f"ours under 10% of OpenTelemetry's: {verdict}")
    return 0 if verdict == "yes" else 1


if __name__ == "__main__":
    raise SystemExit(main())
