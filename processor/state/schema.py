"""The state schema and its versioned migrations, the same for SQLite and PostgreSQL.

Times are Unix milliseconds (BIGINT); `day` is days since 1970-01-01 UTC.
A migration is a list of statements applied in one transaction with its
version recorded in `schema_migrations`; start-up applies the missing ones.
Never edit a released migration: append a new one.
"""

from __future__ import annotations

__all__ = ["MIGRATIONS", "LATEST"]

MIGRATIONS: list[tuple[int, list[str]]] = [
    (1, [
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
    ]),
    # The newest consumer report of the replica that computes them (state/snapshot.py), read by
    # the others; one row, replaced at each refresh.  BYTEA: zlib-compressed JSON (any type
    # name is a column type in SQLite; bytes are stored as a BLOB).
    (3, [
        """CREATE TABLE report_snapshot (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            version BIGINT NOT NULL,
            generated_ms BIGINT NOT NULL,
            written_ms BIGINT NOT NULL,
            writer TEXT NOT NULL,
            report BYTEA NOT NULL
        )""",
    ]),
]

LATEST = MIGRATIONS[-1][0]
