"""Versioned SQL migrations (``NNNN_name.sql``), applied in order, each once.

Each file runs in its own transaction together with its bookkeeping row, under
an advisory lock, so concurrent ``observatory migrate`` calls are safe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg import sql

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_ID = 0x0B5E_4A70  # arbitrary, constant: "observatory migrations"


#: The tables the flow and the alert dispatcher write (views and bookkeeping aside).
DATA_TABLES = (
    "llm_stats",
    "llm_stats_hourly",
    "agent_sessions",
    "pipeline_counters",
    "anomalies",
    "alert_outbox",
    "alert_deliveries",
)


def empty_data_tables(conn: psycopg.Connection) -> None:
    """Empty every data table (tests and the evaluation start from nothing)."""
    names = sql.SQL(", ").join(map(sql.Identifier, DATA_TABLES))
    conn.execute(sql.SQL("TRUNCATE {}").format(names))


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    found = []
    for entry in resources.files(__name__).iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    return sorted(found, key=lambda m: m.version)


def apply(conn: psycopg.Connection, *, progress=print) -> list[Migration]:
    """Apply every migration not yet recorded; return the ones applied."""
    applied: list[Migration] = []
    conn.autocommit = True
    conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for migration in available():
            if migration.version in done:
                continue
            progress(f"applying migration {migration.version:04d}_{migration.name}")
            with conn.transaction():
                conn.execute(migration.sql)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
            applied.append(migration)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    return applied


def pending(conn: psycopg.Connection) -> list[Migration]:
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()[0]
    done = (
        {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        if exists
        else set()
    )
    return [m for m in available() if m.version not in done]
