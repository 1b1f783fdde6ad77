"""Consumer state at scale (issue 13): build 90-day histories through the store's real write path
and time the refresh (`build_report`) and a flush on top of them, per engine and size.

For every (engine, size) a fresh subprocess (so peak RSS is that case's own):

1. opens the store with `open_store(StateConfig(...))` (SQLite: a file in a temporary folder;
   PostgreSQL: a throwaway server, initdb + pg_ctl on a free loopback port, stock settings),
2. writes the history of bench/state_history.py with `store.write(batch)`, one batch per flush
   (at most `--batch-rows` activity rows, a consumer's day never split), and times it,
3. applies retention once (400 days, the default: nothing to delete, but the processor runs it
   hourly and the store refreshes its planner statistics there), prints the rows of every table
   and the size on disk (SQLite: file + -wal + -shm; PostgreSQL: `pg_database_size`),
4. times `build_report(store.reader(), NOW, catalog, LimitsConfig())`: the first run on a fresh
   read connection ("first"; the OS page cache is warm from the build, the engine's is not), then
   the median of `--repeats` more; with `--analyze`, once more (best of 2) after `ANALYZE` of
   every table (SQLite with analysis_limit=1000), which the store does not run by itself, on a
   new read connection (SQLite reads the statistics when a connection loads the schema),
5. times one steady-state flush written on top of the full history, three times (median): the
   rows of 5% of the consumers active on the last day (5 s of a busy hour: every one of their
   rows of that day again, one more call each, so upserts onto existing keys), with their
   consumer and endpoint rows; N is printed,
   With `--parameters N` (issue 15) every request also carries N parameter and body field names
   (the same N per consumer and endpoint every day, as an SDK sends them): the flushes carry their
   consumer-parameter pair rows and per-endpoint parameter rows, the catalog declares 8 query and
   8 body names per endpoint, and the refresh computes api_parameter_consumers and
   api_unused_parameters too. Run it with 0 and 5 for the figures with and without them.
6. on the `--verify` size, recomputes in Python from the generated rows every distinct-consumer
   family, new consumers, time to first success, migrations, churn risk and cohorts, and prints
   "exact: yes" or the mismatches.

    python -m bench.state_scale                       # 1k, 10k, 100k on sqlite and postgres
    python -m bench.state_scale --sizes 1000,10000 --engines sqlite
    python -m bench.state_scale --quick               # 1k on both engines, about a minute
    python -m bench.state_scale --sizes 10000 --engines sqlite --parameters 5   # issue 15

Works on the schema before issue 13 too (8-field consumer rows: the generator's first_plan_tier
is dropped), so the same script gives the before and after figures.  `--duckdb` adds, when the
duckdb package is installed, a reference: the same activity rows loaded into DuckDB and the
distinct-consumer counts per endpoint and window computed there, exact and approximate.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator

from bench.state_history import DAYS, NOW_MS, SERVICE, TODAY, Expected, History, compare, endpoint_rows
from tests.support.postgres import bindir as postgres_bindir
from tests.support.postgres import postgres_server as durable_postgres

_RESULT = "RESULT "


@contextlib.contextmanager
def postgres_server(tmp: str) -> Iterator[str]:
    """A throwaway PostgreSQL server with stock settings (fsync on) on 127.0.0.1; its DSN."""
    if postgres_bindir() is None:
        raise SystemExit("PostgreSQL server not installed (Debian package postgresql)")
    with durable_postgres(tmp, durable=True) as server:
        yield server.dsn


def _vm_hwm_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _tables(store, engine: str) -> dict[str, int]:
    if engine == "sqlite":
        names = [
            n
            for (n,) in store.query(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
    else:
        names = [
            n
            for (n,) in store.query(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'public' ORDER BY table_name"
            )
        ]
    return {name: store.query(f'SELECT COUNT(*) FROM "{name}"')[0][0] for name in names}


def _disk(store, engine: str, path: str | None) -> dict[str, int]:
    if engine == "postgres":
        ((total,),) = store.query("SELECT pg_database_size(current_database())")
        ((indexes,),) = store.query(
            "SELECT COALESCE(SUM(pg_indexes_size(c.oid)), 0) FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r'"
        )
        return {"bytes": int(total), "index_bytes": int(indexes)}
    assert path is not None
    sizes = {
        suffix: os.path.getsize(path + suffix) if os.path.exists(path + suffix) else 0
        for suffix in ("", "-wal", "-shm")
    }
    out = {"bytes": sum(sizes.values()), "wal_bytes": sizes["-wal"]}
    with contextlib.suppress(Exception):  # dbstat is not compiled into every SQLite
        tables = {n for (n,) in store.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
        marks = ",".join("?" * len(tables))
        ((idx,),) = store.query(f"SELECT SUM(pgsize) FROM dbstat WHERE name NOT IN ({marks})", sorted(tables))
        out["index_bytes"] = int(idx or 0)
    return out


_NAMES = 8  # declared names per endpoint and location


def _names(consumer: str, method: str, route: str, n: int) -> list[tuple[str, str]]:
    """The n (location, name) pairs a consumer sends to an endpoint: the same every day."""
    start = zlib.crc32(f"{consumer} {method} {route}".encode())
    return [
        ("query", f"q{(start + j) % _NAMES}") if j % 2 == 0 else ("body", f"b{(start + j) % _NAMES}")
        for j in range(n)
    ]


def with_parameters(batch: tuple, n: int) -> tuple:
    """The batch with the consumer-parameter and parameter rows of its activity rows, n names
    per request (as ConsumerActivity.drain() gives them: one row per pair and flush)."""
    if n <= 0:
        return batch
    consumers, activity, endpoints = batch[:3]
    pairs: dict[tuple, list] = {}
    parameters: dict[tuple, list] = {}
    for day, s, c, m, r, *_, calls, _errors, last in activity:
        for location, name in _names(c, m, r, n):
            p = pairs.get((s, m, r, location, name, c))
            if p is None:
                pairs[s, m, r, location, name, c] = [day, last, calls]
            else:
                p[0], p[1], p[2] = min(p[0], day), max(p[1], last), p[2] + calls
            e = parameters.get((s, m, r, location, name))
            if e is None:
                parameters[s, m, r, location, name] = [last, last]
            else:
                e[0], e[1] = min(e[0], last), max(e[1], last)
    return (
        consumers,
        activity,
        endpoints,
        [(*k, *v) for k, v in pairs.items()],
        [(*k, *v) for k, v in parameters.items()],
        [],
    )


def _declaring(catalog, n: int):  # noqa: ANN001, ANN202
    """The catalog with 8 query and 8 body names declared per endpoint (n > 0); with 5 names a
    request, a few of them are never sent by anyone on some endpoints."""
    import dataclasses

    if n <= 0:
        return catalog
    query = tuple(f"q{k}" for k in range(_NAMES)) + ("never_sent",)
    body = tuple(f"b{k}" for k in range(_NAMES))
    return dataclasses.replace(
        catalog,
        services=tuple(
            dataclasses.replace(
                svc,
                endpoints=tuple(
                    dataclasses.replace(ep, query_parameters=query, body_fields=body) for ep in svc.endpoints
                ),
            )
            for svc in catalog.services
        ),
    )


def _flush_batch(history: History, i: int) -> tuple[list, list, list]:
    """5% of the last day's consumers calling again: their rows of the day once more, one call each."""
    import random

    rng = random.Random(1000 + i)
    days = history.last_day
    picked = rng.sample(days, max(1, len(days) // 20))
    consumers, activity = [], []
    now = NOW_MS - 60_000 + i * 1000  # later than every call of the history
    for consumer, rows in picked:
        s, c, first, _, _, first_plan, plan, name, version = consumer
        consumers.append((s, c, first, None, now, first_plan, plan, name, version))
        activity += [(*r[:8], 1.0, 0.0, now) for r in rows]
    return consumers, activity, endpoint_rows(activity)


def _secs(seconds: float | None, args: argparse.Namespace) -> str:
    return f"> {args.refresh_timeout:.0f} s (stopped)" if seconds is None else f"{seconds:.2f} s"


def _timed_refresh(store, reader, catalog, limits, timeout: float):  # noqa: ANN202
    """(seconds, report, reader) of one build_report; (None, None, a new reader) when it ran
    past `timeout` and was interrupted, as the processor's shutdown does."""
    from apiusage.processor.state.report import build_report
    from apiusage.processor.state.store import StoreError

    timer = threading.Timer(timeout, reader.interrupt)
    timer.daemon = True
    timer.start()
    t = time.perf_counter()
    try:
        report = build_report(reader, NOW_MS, catalog, limits)
        seconds = time.perf_counter() - t
    except StoreError:
        if not getattr(reader, "_interrupted", False):
            raise
        report = seconds = None
    finally:
        timer.cancel()
    if getattr(reader, "_interrupted", False):  # the timer may have fired just as it returned
        return seconds, report, store.reader()
    return seconds, report, reader


def _after_analyze(engine: str, path: str | None, config, refresh, reopen) -> tuple[dict, object]:
    """Planner statistics for every table (what the store does not do by itself), then the refresh
    again: SQLite `ANALYZE` with analysis_limit=1000 (bounded cost), PostgreSQL `ANALYZE`."""
    t = time.perf_counter()
    if engine == "sqlite":
        import sqlite3

        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA analysis_limit=1000")
        db.execute("ANALYZE")
        db.close()
    else:
        import psycopg

        with psycopg.connect(config.postgres.dsn, autocommit=True) as db:
            db.execute("ANALYZE")
    analyze = time.perf_counter() - t
    reopen()
    runs, report = [], None
    for _ in range(2):
        seconds, got = refresh()
        if seconds is None:
            break
        runs.append(seconds)
        report = got
    return {"analyze_s": analyze, "refresh_analyzed_s": min(runs) if runs else None}, report


def run_case(engine: str, size: int, args: argparse.Namespace) -> dict:
    """One engine and size, in this process; returns the figures."""
    from apiusage.instrumentation.catalog import parse_catalog
    from apiusage.processor.config import LimitsConfig, PostgresState, SqliteState, StateConfig
    from apiusage.processor.state import schema
    from apiusage.processor.state.report import ConsumerReport
    from apiusage.processor.state.store import open_store

    from bench.state_history import catalog_document

    new_model = schema.LATEST >= 2
    catalog = _declaring(parse_catalog(catalog_document(), "bench"), args.parameters)
    limits = LimitsConfig()
    verify = size == args.verify
    tmp = tempfile.mkdtemp(prefix=f"apiusage-bench-{engine}-{size}-", dir=args.tmp)
    os.chmod(tmp, 0o755)  # the PostgreSQL server runs as its own user
    result: dict = {
        "engine": engine,
        "consumers": size,
        "schema": schema.LATEST,
        "days": DAYS,
        "batch_rows": args.batch_rows,
        "parameters": args.parameters,
        "parameter_rows": 0,
    }
    try:
        with contextlib.ExitStack() as stack:
            path = None
            if engine == "sqlite":
                path = os.path.join(tmp, "state.db")
                config = StateConfig(sqlite=SqliteState(path))
            else:
                config = StateConfig(postgres=PostgresState(stack.enter_context(postgres_server(tmp))))
            store = open_store(config)
            stack.callback(store.close)
            history = History(size, seed=args.seed, batch_rows=args.batch_rows)
            expected = Expected() if verify else None
            label = f"{engine} {size:,}"
            start = last_note = time.perf_counter()
            for day, batch in history.batches():
                if expected is not None:
                    expected.add(batch)
                if not new_model:  # the 8-field consumer row: no first_plan_tier
                    batch = ([r[:5] + r[6:] for r in batch[0]], batch[1], batch[2])
                batch = with_parameters(batch, args.parameters)
                result["parameter_rows"] += sum(len(rows) for rows in batch[3:])
                store.write(batch)
                now = time.perf_counter()
                if now - last_note >= 15:
                    last_note = now
                    print(
                        f"  {label}: day {day + 1}/{DAYS}, {history.facts:,} facts, "
                        f"{history.facts / (now - start):,.0f} rows/s",
                        file=sys.stderr,
                        flush=True,
                    )
            build = time.perf_counter() - start
            result.update(
                facts=history.facts,
                flushes=history.batches_written,
                build_s=build,
                build_rows_per_s=history.facts / build,
            )
            print(f"  {label}: built {history.facts:,} facts in {build:.1f} s", file=sys.stderr, flush=True)
            # The processor applies retention at start and every hour (the new store's prune also
            # refreshes SQLite's planner statistics): once here, as after the last of those hours.
            t = time.perf_counter()
            if hasattr(store, "prune"):
                store.prune(TODAY - 400)
            else:
                store.delete_activity_before(TODAY - 400)
            result["retention_s"] = time.perf_counter() - t
            result["tables"] = _tables(store, engine)
            result["disk"] = _disk(store, engine, path)
            readers = [store.reader()]  # an interrupted reader refuses more reads: a new one then
            stack.callback(lambda: [r.close() for r in readers if r is not store])

            def refresh() -> tuple[float | None, object]:
                seconds, report, fresh = _timed_refresh(
                    store, readers[-1], catalog, limits, args.refresh_timeout
                )
                if fresh is not readers[-1]:
                    readers.append(fresh)
                return seconds, report

            result["refresh_timeout_s"] = args.refresh_timeout
            result["refresh_first_s"], report = refresh()
            print(
                f"  {label}: first refresh {_secs(result['refresh_first_s'], args)}",
                file=sys.stderr,
                flush=True,
            )
            runs = []
            while report is not None and len(runs) < args.repeats:
                seconds, report = refresh()
                if seconds is not None:
                    runs.append(seconds)
            result["refresh_runs_s"] = runs
            result["refresh_median_s"] = statistics.median(runs) if runs and report is not None else None
            if args.analyze:
                # SQLite loads planner statistics when a connection reads the schema: a new reader.
                analyzed, analyzed_report = _after_analyze(
                    engine, path, config, refresh, lambda: readers.append(store.reader())
                )
                result.update(analyzed)
                report = report or analyzed_report
            if expected is not None and report is not None:
                problems = compare(expected.values(), report)
                result["exact"] = "yes" if not problems else problems
            if report is None:
                report = ConsumerReport()
            endpoint_values = dict(report.endpoint_consumers)
            result["series"] = {
                family: len(getattr(report, family))
                for family in (
                    "active",
                    "endpoint_consumers",
                    "feature_consumers",
                    "client_versions",
                    "deprecated_consumers",
                    "migrated",
                    "cohorts",
                    "at_risk",
                    "parameter_consumers",
                    "unused_parameters",
                )
            }
            flushes = []
            for i in range(3):
                batch = _flush_batch(history, i)
                if not new_model:
                    batch = ([r[:5] + r[6:] for r in batch[0]], batch[1], batch[2])
                batch = with_parameters(batch, args.parameters)
                t = time.perf_counter()
                store.write(batch)
                flushes.append(time.perf_counter() - t)
            result["flush_rows"] = sum(len(rows) for rows in batch)
            result["flush_activity_rows"] = len(batch[1])
            result["flush_median_s"] = statistics.median(flushes)
            result["flush_runs_s"] = flushes
            result["peak_rss_mib"] = _vm_hwm_mib()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.duckdb:
        result["duckdb"] = duckdb_reference(size, args, endpoint_values)
    return result


def duckdb_reference(size: int, args: argparse.Namespace, ours: dict | None = None) -> dict | str:
    """The same activity rows in DuckDB (in memory, loaded from a CSV file): COUNT(DISTINCT) and
    approx_count_distinct of consumers per endpoint and window, timed, the approximation's error,
    and whether the exact counts equal `ours` (the report's api_endpoint_consumers)."""
    try:
        import duckdb
    except ImportError:
        return "duckdb not installed"
    import csv

    history = History(size, seed=args.seed, batch_rows=args.batch_rows)
    db = duckdb.connect()
    folder = tempfile.mkdtemp(prefix="apiusage-bench-duckdb-", dir=args.tmp)
    try:
        path = os.path.join(folder, "activity.csv")
        t = time.perf_counter()
        with open(path, "w", newline="") as f:  # DuckDB's CSV reader loads far faster than binds
            out_csv = csv.writer(f)
            for _, (_, rows, _) in history.batches():
                out_csv.writerows((r[0], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[10]) for r in rows)
        db.execute(
            "CREATE TABLE activity AS SELECT * FROM read_csv(?, header = false, columns = "
            "{'day': 'INTEGER', 'consumer_id': 'VARCHAR', 'method': 'VARCHAR', 'route': 'VARCHAR', "
            "'feature': 'VARCHAR', 'client_name': 'VARCHAR', 'client_version': 'VARCHAR', "
            "'calls': 'DOUBLE', 'last_call': 'BIGINT'})",
            [path],
        )
        load = time.perf_counter() - t
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    out: dict = {"load_s": load}
    for how in ("COUNT(DISTINCT consumer_id)", "approx_count_distinct(consumer_id)"):
        t = time.perf_counter()
        values = {}
        for window, days in Expected.WINDOWS.items():
            for m, r, n in db.execute(
                f"SELECT method, route, {how} FROM activity WHERE last_call >= ? GROUP BY 1, 2",
                [NOW_MS - days * 86_400_000],
            ).fetchall():
                values[m, r, window] = n
        out["exact_s" if how.startswith("COUNT") else "approx_s"] = time.perf_counter() - t
        out["exact" if how.startswith("COUNT") else "approx"] = values
    if ours is not None:
        out["same_as_store"] = {(SERVICE, *k): n for k, n in out["exact"].items()} == ours
    errors = sorted(abs(out["approx"][k] - n) / n for k, n in out["exact"].items() if n)
    out["approx_error_median"] = statistics.median(errors) if errors else 0.0
    out["approx_error_max"] = errors[-1] if errors else 0.0
    del out["exact"], out["approx"]
    return out


def _mib(n: int | None) -> str:
    return "" if n is None else f"{n / 2**20:,.0f} MiB"


def _fmt(seconds: float | None, r: dict) -> str:
    return f"> {r.get('refresh_timeout_s', 0):,.0f} (stopped)" if seconds is None else f"{seconds:.2f}"


def _analyzed(r: dict) -> str:
    if "analyze_s" not in r:
        return ""
    return f"{_fmt(r['refresh_analyzed_s'], r)} (ANALYZE {r['analyze_s']:.1f})"


def print_tables(results: list[dict]) -> None:
    print(
        "\n| engine | consumers | activity facts | build s (rows/s) | DB on disk (indexes) | "
        "refresh first s | refresh median s | after ANALYZE s | flush N rows: median s | peak RSS | "
        "exact |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        if "error" in r:
            print(f"| {r['engine']} | {r['consumers']:,} | {r['error']} |||||||||")
            continue
        disk = r["disk"]
        share = f" ({disk['index_bytes'] / disk['bytes']:.0%})" if disk.get("index_bytes") else ""
        exact = r.get("exact", "")
        if isinstance(exact, list):
            exact = f"NO ({len(exact)} mismatches)"
        print(
            f"| {r['engine']} | {r['consumers']:,} | {r['facts']:,} | {r['build_s']:,.0f} "
            f"({r['build_rows_per_s']:,.0f}) | {_mib(disk['bytes'])}{share} | "
            f"{_fmt(r['refresh_first_s'], r)} | {_fmt(r['refresh_median_s'], r)} | "
            f"{_analyzed(r)} | "
            f"{r['flush_rows']:,}: {r['flush_median_s']:.3f} | {r['peak_rss_mib']:,.0f} MiB | {exact} |"
        )
    print()
    for r in results:
        if "tables" in r:
            rows = ", ".join(f"{name} {n:,}" for name, n in r["tables"].items())
            names = (
                f", {r['parameters']} names a request ({r['parameter_rows']:,} parameter rows written)"
                if r.get("parameters")
                else ""
            )
            print(f"- {r['engine']} {r['consumers']:,} (schema {r['schema']}{names}): {rows}")
        if isinstance(r.get("exact"), list):
            for line in r["exact"]:
                print(f"    mismatch: {line}")
        if isinstance(r.get("duckdb"), dict):
            d = r["duckdb"]
            print(
                f"    duckdb reference: rows to CSV + load {d['load_s']:.1f} s, endpoint COUNT(DISTINCT) "
                f"x 3 windows {d['exact_s']:.2f} s (exact), approx_count_distinct {d['approx_s']:.2f} s, "
                f"error median {d['approx_error_median']:.1%}, max {d['approx_error_max']:.1%}; "
                f"exact counts equal the store's: {'yes' if d.get('same_as_store') else 'NO'}"
            )
        elif r.get("duckdb"):
            print(f"    duckdb reference: {r['duckdb']}")


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sizes", default="1000,10000,100000", help="consumers, comma-separated")
    p.add_argument("--engines", default="sqlite,postgres", help="sqlite, postgres or both")
    p.add_argument("--repeats", type=int, default=3, help="refreshes after the first (median)")
    p.add_argument(
        "--verify",
        type=int,
        default=None,
        help="the size whose values are recomputed in Python (default: the smallest)",
    )
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--batch-rows", type=int, default=50_000, help="activity rows per flush, at most")
    p.add_argument(
        "--parameters",
        type=int,
        default=0,
        choices=range(0, 2 * _NAMES + 1),
        metavar="N",
        help="parameter and body field names per request (issue 15; 0: none)",
    )
    p.add_argument("--timeout", type=float, default=2400, help="seconds per case before it is stopped")
    p.add_argument(
        "--refresh-timeout",
        type=float,
        default=600,
        help="seconds after which one refresh is interrupted and reported as stopped",
    )
    p.add_argument("--tmp", default="/tmp", help="where the databases go (removed afterwards)")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--duckdb", action="store_true", help="add the DuckDB reference (if installed)")
    p.add_argument(
        "--analyze", action="store_true", help="then ANALYZE every table and time the refresh again"
    )
    p.add_argument("--quick", action="store_true", help="1k consumers on both engines, 1 repeat")
    p.add_argument("--case", nargs=2, metavar=("ENGINE", "SIZE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.sizes, args.repeats = "1000", 1
    try:
        args.size_list = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        p.error(f"--sizes takes consumer counts separated by commas, e.g. 1000,10000 (got {args.sizes!r})")
    args.engine_list = [e.strip() for e in args.engines.split(",") if e.strip()]
    bad = [e for e in args.engine_list if e not in ("sqlite", "postgres")]
    if bad or not args.size_list or min(args.size_list) < 1:
        p.error(f"engines are sqlite and postgres (got {bad}); sizes are positive integers")
    if args.verify is None:
        args.verify = min(args.size_list)
    return args


def _child(engine: str, size: int, args: argparse.Namespace) -> None:
    # The parent stops a case that runs too long with SIGTERM: unwind, so the server is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(f"{engine} {size}: stopped (timeout)"))
    print(_RESULT + json.dumps(run_case(engine, size, args)), flush=True)


def main() -> None:
    args = _parse()
    if args.case:
        _child(args.case[0], int(args.case[1]), args)
        return
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.abspath(__file__)),
    ).stdout.strip()
    print(
        f"state at scale: {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"commit {head}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        flush=True,
    )
    results = []
    forwarded = [
        f"--{k.replace('_', '-')}={v}"
        for k, v in vars(args).items()
        if k in ("repeats", "verify", "seed", "batch_rows", "tmp", "refresh_timeout", "parameters")
    ]
    forwarded += ["--analyze"] if args.analyze else []
    for engine in args.engine_list:
        for size in args.size_list:
            cmd = [
                sys.executable,
                "-m",
                "bench.state_scale",
                "--case",
                engine,
                str(size),
                *forwarded,
                *(["--duckdb"] if args.duckdb and engine == args.engine_list[0] else []),
            ]
            print(f"{engine} {size:,} consumers ...", flush=True)
            child = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                text=True,
                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            )
            timed_out = False
            try:
                out, _ = child.communicate(timeout=args.timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                child.terminate()
                try:
                    out, _ = child.communicate(timeout=120)
                except subprocess.TimeoutExpired:
                    child.kill()
                    out, _ = child.communicate()
            lines = [line for line in out.splitlines() if line.startswith(_RESULT)]
            if child.returncode == 0 and lines:
                results.append(json.loads(lines[-1][len(_RESULT) :]))
            else:
                reason = (
                    f"timed out after {args.timeout:.0f} s" if timed_out else f"failed ({child.returncode})"
                )
                results.append({"engine": engine, "consumers": size, "error": reason})
            r = results[-1]
            if "error" not in r:
                exact = r.get("exact", "not checked")
                print(
                    f"  -> refresh first {_fmt(r['refresh_first_s'], r)} s, median "
                    f"{_fmt(r['refresh_median_s'], r)} s, flush {r['flush_median_s']:.3f} s, exact: "
                    f"{exact if isinstance(exact, str) else f'NO, {len(exact)} mismatches'}",
                    flush=True,
                )
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(results, f, indent=1)
    print_tables(results)


if __name__ == "__main__":
    main()
