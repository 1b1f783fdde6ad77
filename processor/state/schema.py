"""The state schema and its versioned migrations, the same for SQLite and PostgreSQL.

Times are Unix milliseconds (BIGINT); `day` is days since 1970-01-01 UTC.
A migration is a list of statements applied in one transaction with its
version recorded in `schema_migrations`; start-up applies the missing ones.
Never edit a released migration: append a new one.  `{without_rowid}` is
" WITHOUT ROWID" on SQLite (the primary key is the table, so a scan in key
order reads no second B-tree) and nothing on PostgreSQL.

Version 2 replaced the one wide daily `activity` table, whose every window
count scanned days x pairs, with the incremental model of docs/state.md:
one "last seen" row per consumer and endpoint, feature or client version
(window counts read O(pairs)), and two narrow daily tables for the answers
that need days.
"""

from __future__ import annotations

__all__ = ["EXPERIMENT_LATENCY_BOUNDS", "MIGRATIONS", "LATEST", "TTFS_BUCKETS", "ttfs_bucket_sql"]

# Upper bounds (seconds) of the time-to-first-success histogram; retired_consumers keeps its
# tallies by index into these, so changing them needs a migration.
TTFS_BUCKETS = (1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0, 259200.0, 604800.0)

# Upper bounds (seconds) of the per-variant latency tallies of experiment_latency: 1 ms times
# 1.25^i up to 70 s (each bucket spans 25%, so a p95 read from them is within about 12%); the
# index len(bounds) holds the slower ones. Stored by index, so changing them needs a migration.
EXPERIMENT_LATENCY_BOUNDS = tuple(round(0.001 * 1.25**i, 9) for i in range(51))


def ttfs_bucket_sql(first_seen: str = "first_seen", first_success: str = "first_success") -> str:
    """SQL: the TTFS bucket index of a consumer row, -1 when it never succeeded."""
    delta = f"({first_success} - {first_seen})"
    cases = " ".join(f"WHEN {delta} <= {int(b * 1000)} THEN {i}" for i, b in enumerate(TTFS_BUCKETS))
    return f"CASE WHEN {first_success} IS NULL THEN -1 {cases} ELSE {len(TTFS_BUCKETS)} END"


MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            """CREATE TABLE consumers (
            service TEXT NOT NULL,
            consumer_id TEXT NOT NULL,
            first_seen BIGINT NOT NULL,
            first_success BIGINT,
            last_seen BIGINT NOT NULL,
            first_plan_tier TEXT NOT NULL,
            plan_tier TEXT NOT NULL,
            client_name TEXT NOT NULL,
            client_version TEXT NOT NULL,
            PRIMARY KEY (service, consumer_id)
        )""",
            "CREATE INDEX consumers_last_seen ON consumers (last_seen)",
            """CREATE TABLE activity (
            day INTEGER NOT NULL,
            service TEXT NOT NULL,
            consumer_id TEXT NOT NULL,
            method TEXT NOT NULL,
            route TEXT NOT NULL,
            feature TEXT NOT NULL,
            client_name TEXT NOT NULL,
            client_version TEXT NOT NULL,
            calls DOUBLE PRECISION NOT NULL,
            errors DOUBLE PRECISION NOT NULL,
            last_call BIGINT NOT NULL,
            PRIMARY KEY (day, service, consumer_id, method, route, feature, client_name,
                         client_version)
        )""",
            "CREATE INDEX activity_endpoint ON activity (service, method, route, last_call)",
            "CREATE INDEX activity_consumer ON activity (service, consumer_id, day)",
            "CREATE INDEX activity_last_call ON activity (last_call)",
            """CREATE TABLE endpoints (
            service TEXT NOT NULL,
            method TEXT NOT NULL,
            route TEXT NOT NULL,
            deprecated INTEGER NOT NULL,
            first_seen BIGINT NOT NULL,
            last_seen BIGINT NOT NULL,
            PRIMARY KEY (service, method, route)
        )""",
        ],
    ),
    (
        2,
        [
            # consumers again, keyed by its primary key alone (SQLite), so the joins that read a
            # consumer's plan tier cost one B-tree search.
            """CREATE TABLE consumers_v2 (
            service TEXT NOT NULL,
            consumer_id TEXT NOT NULL,
            first_seen BIGINT NOT NULL,
            first_success BIGINT,
            last_seen BIGINT NOT NULL,
            first_plan_tier TEXT NOT NULL,
            plan_tier TEXT NOT NULL,
            client_name TEXT NOT NULL,
            client_version TEXT NOT NULL,
            PRIMARY KEY (service, consumer_id)
        ){without_rowid}""",
            "INSERT INTO consumers_v2 SELECT service, consumer_id, first_seen, first_success, last_seen, "
            "first_plan_tier, plan_tier, client_name, client_version FROM consumers",
            "DROP TABLE consumers",
            "ALTER TABLE consumers_v2 RENAME TO consumers",
            "CREATE INDEX consumers_last_seen ON consumers (last_seen)",
            """CREATE TABLE consumer_endpoints (
            service TEXT NOT NULL,
            method TEXT NOT NULL,
            route TEXT NOT NULL,
            consumer_id TEXT NOT NULL,
            first_day INTEGER NOT NULL,
            last_call BIGINT NOT NULL,
            calls DOUBLE PRECISION NOT NULL,
            errors DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (service, method, route, consumer_id)
        ){without_rowid}""",
            """CREATE TABLE consumer_features (
            service TEXT NOT NULL,
            feature TEXT NOT NULL,
            consumer_id TEXT NOT NULL,
            last_call BIGINT NOT NULL,
            calls DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (service, feature, consumer_id)
        ){without_rowid}""",
            """CREATE TABLE consumer_clients (
            service TEXT NOT NULL,
            client_name TEXT NOT NULL,
            client_version TEXT NOT NULL,
            consumer_id TEXT NOT NULL,
            last_call BIGINT NOT NULL,
            calls DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (service, client_name, client_version, consumer_id)
        ){without_rowid}""",
            """CREATE TABLE consumer_days (
            service TEXT NOT NULL,
            consumer_id TEXT NOT NULL,
            day INTEGER NOT NULL,
            calls DOUBLE PRECISION NOT NULL,
            errors DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (service, consumer_id, day)
        ){without_rowid}""",
            # Weeks start on Monday: week = (day + 3) / 7 (1970-01-01 was a Thursday).
            """CREATE TABLE consumer_weeks (
            service TEXT NOT NULL,
            consumer_id TEXT NOT NULL,
            week INTEGER NOT NULL,
            calls DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (service, consumer_id, week)
        ){without_rowid}""",
            """CREATE TABLE endpoint_days (
            service TEXT NOT NULL,
            method TEXT NOT NULL,
            route TEXT NOT NULL,
            day INTEGER NOT NULL,
            consumer_id TEXT NOT NULL,
            calls DOUBLE PRECISION NOT NULL,
            errors DOUBLE PRECISION NOT NULL,
            last_call BIGINT NOT NULL,
            PRIMARY KEY (service, method, route, day, consumer_id)
        ){without_rowid}""",
            # Consumers deleted by retention, tallied so api_new_consumers_total and the onboarding
            # histogram never go down; ttfs_bucket is an index into TTFS_BUCKETS, -1: no success.
            """CREATE TABLE retired_consumers (
            service TEXT NOT NULL,
            first_plan_tier TEXT NOT NULL,
            ttfs_bucket INTEGER NOT NULL,
            consumers BIGINT NOT NULL,
            ttfs_seconds DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (service, first_plan_tier, ttfs_bucket)
        )""",
            "INSERT INTO endpoint_days (service, method, route, day, consumer_id, calls, errors, "
            "last_call) SELECT service, method, route, day, consumer_id, SUM(calls), SUM(errors), "
            "MAX(last_call) FROM activity GROUP BY service, method, route, day, consumer_id",
            "INSERT INTO consumer_days (service, consumer_id, day, calls, errors) SELECT service, "
            "consumer_id, day, SUM(calls), SUM(errors) FROM activity GROUP BY service, consumer_id, day",
            "INSERT INTO consumer_weeks (service, consumer_id, week, calls) SELECT service, consumer_id, "
            "(day + 3) / 7, SUM(calls) FROM activity GROUP BY service, consumer_id, (day + 3) / 7",
            "INSERT INTO consumer_endpoints (service, method, route, consumer_id, first_day, last_call, "
            "calls, errors) SELECT service, method, route, consumer_id, MIN(day), MAX(last_call), "
            "SUM(calls), SUM(errors) FROM activity GROUP BY service, method, route, consumer_id",
            "INSERT INTO consumer_features (service, feature, consumer_id, last_call, calls) SELECT "
            "service, feature, consumer_id, MAX(last_call), SUM(calls) FROM activity WHERE feature <> '' "
            "GROUP BY service, feature, consumer_id",
            "INSERT INTO consumer_clients (service, client_name, client_version, consumer_id, last_call, "
            "calls) SELECT service, client_name, client_version, consumer_id, MAX(last_call), SUM(calls) "
            "FROM activity GROUP BY service, client_name, client_version, consumer_id",
            "DROP TABLE activity",
        ],
    ),
    # The newest consumer report of the replica that computes them (state/snapshot.py), read by
    # the others; one row, replaced at each refresh.  BYTEA: zlib-compressed JSON (any type
    # name is a column type in SQLite; bytes are stored as a BLOB).
    (
        3,
        [
            """CREATE TABLE report_snapshot (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            version BIGINT NOT NULL,
            generated_ms BIGINT NOT NULL,
            written_ms BIGINT NOT NULL,
            writer TEXT NOT NULL,
            report BYTEA NOT NULL
        )""",
        ],
    ),
    # Version 4 (issue 15): which parameters and body fields consumers send, and who gave
    # feedback.  One "last seen" row per pair, like consumer_endpoints, not one per day: at
    # 100,000 consumers sending ~5 names a request, daily rows would be five endpoint_days
    # tables; a pair row answers every window exactly (docs/state.md).
    (
        4,
        [
            """CREATE TABLE consumer_parameters (
            service TEXT NOT NULL,
            method TEXT NOT NULL,
            route TEXT NOT NULL,
            location TEXT NOT NULL,
            parameter TEXT NOT NULL,
            consumer_id TEXT NOT NULL,
            first_day INTEGER NOT NULL,
            last_call BIGINT NOT NULL,
            calls DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (service, method, route, location, parameter, consumer_id)
        ){without_rowid}""",
            # Every request's names, with or without a consumer: "nobody sent it in 30 days".
            """CREATE TABLE parameters (
            service TEXT NOT NULL,
            method TEXT NOT NULL,
            route TEXT NOT NULL,
            location TEXT NOT NULL,
            parameter TEXT NOT NULL,
            first_seen BIGINT NOT NULL,
            last_seen BIGINT NOT NULL,
            PRIMARY KEY (service, method, route, location, parameter)
        ){without_rowid}""",
            """CREATE TABLE consumer_feedback (
            service TEXT NOT NULL,
            consumer_id TEXT NOT NULL,
            first_seen BIGINT NOT NULL,
            last_seen BIGINT NOT NULL,
            events BIGINT NOT NULL,
            PRIMARY KEY (service, consumer_id)
        ){without_rowid}""",
        ],
    ),
    # Version 5 (issue 16): releases and experiments.  `releases`: the first time each
    # service.version was seen (the release marker).  `experiment_consumers`: one row per
    # consumer in an experiment, holding the variant it was first assigned (it stays there)
    # and the first other variant it was later seen in (contamination).  `experiment_days` and
    # `experiment_latency`: per variant and day, the request tallies and the latency histogram
    # (by index into EXPERIMENT_LATENCY_BOUNDS) the statistics read.
    (
        5,
        [
            """CREATE TABLE releases (
            service TEXT NOT NULL,
            version TEXT NOT NULL,
            first_seen BIGINT NOT NULL,
            last_seen BIGINT NOT NULL,
            requests DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (service, version)
        ){without_rowid}""",
            """CREATE TABLE experiment_consumers (
            service TEXT NOT NULL,
            experiment TEXT NOT NULL,
            consumer_id TEXT NOT NULL,
            variant TEXT NOT NULL,
            first_seen BIGINT NOT NULL,
            last_seen BIGINT NOT NULL,
            first_success BIGINT,
            other_variant TEXT,
            requests DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (service, experiment, consumer_id)
        ){without_rowid}""",
            """CREATE TABLE experiment_days (
            service TEXT NOT NULL,
            experiment TEXT NOT NULL,
            variant TEXT NOT NULL,
            day INTEGER NOT NULL,
            requests DOUBLE PRECISION NOT NULL,
            errors DOUBLE PRECISION NOT NULL,
            client_errors DOUBLE PRECISION NOT NULL,
            duration_sum DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (service, experiment, variant, day)
        ){without_rowid}""",
            """CREATE TABLE experiment_latency (
            service TEXT NOT NULL,
            experiment TEXT NOT NULL,
            variant TEXT NOT NULL,
            day INTEGER NOT NULL,
            bucket INTEGER NOT NULL,
            count DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (service, experiment, variant, day, bucket)
        ){without_rowid}""",
        ],
    ),
    # Version 6: unweighted span counts beside the sampling-weighted tallies.  A sampled span
    # stands for 1/p requests (its adjusted count); the weighted sums estimate the traffic, but
    # the statistics need the number of spans actually observed as their sample size (ten
    # times the spans at 10% sampling would make every test ~3x too confident).  Rows written
    # before this version hold only the weighted tallies: their span counts are set to those
    # rounded, which is exact for unsampled traffic (every weight 1), the case almost all of
    # them are (experiments shipped in version 5, just before this); for sampled rows the old
    # data overstates the sample size, as it did before.
    (
        6,
        [
            "ALTER TABLE experiment_days ADD COLUMN spans BIGINT NOT NULL DEFAULT 0",
            "ALTER TABLE experiment_days ADD COLUMN span_errors BIGINT NOT NULL DEFAULT 0",
            "ALTER TABLE experiment_days ADD COLUMN span_client_errors BIGINT NOT NULL DEFAULT 0",
            "ALTER TABLE experiment_latency ADD COLUMN spans BIGINT NOT NULL DEFAULT 0",
            # CAST: ROUND gives a double in both dialects; the columns hold whole numbers.
            "UPDATE experiment_days SET spans = CAST(ROUND(requests) AS BIGINT), "
            "span_errors = CAST(ROUND(errors) AS BIGINT), "
            "span_client_errors = CAST(ROUND(client_errors) AS BIGINT)",
            "UPDATE experiment_latency SET spans = CAST(ROUND(count) AS BIGINT)",
        ],
    ),
]

LATEST = MIGRATIONS[-1][0]
