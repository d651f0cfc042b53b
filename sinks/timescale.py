"""TimescaleDB writer: batched, idempotent upserts with retries.

Each batch is COPYed into a temporary staging table and merged with one
``INSERT … SELECT … ON CONFLICT DO UPDATE`` per table, all in one
transaction. A replayed row overwrites itself with the same values, so the
at-least-once delivery of Bytewax recovery never double counts.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from operator import attrgetter, itemgetter
from typing import Any

import psycopg
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from psycopg import sql

from observatory.operators.sessions import SessionRow
from observatory.operators.stats import StatsRow
from observatory.operators.windows import CountersRow
from observatory.sinks.base import Backoff, retry

log = logging.getLogger("observatory.sinks.timescale")


@dataclass(frozen=True)
class TableSpec:
    """How rows of one record type land in one table."""

    table: str
    columns: tuple[str, ...]
    key: tuple[str, ...]

    def __post_init__(self) -> None:
        positions = [self.columns.index(c) for c in self.key]
        # itemgetter with one position returns a bare value: keep keys tuples.
        getter = itemgetter(*positions) if len(positions) > 1 else (lambda v: (v[positions[0]],))
        object.__setattr__(self, "_key_of", getter)

    def row_key(self, values: Sequence[Any]) -> tuple:
        return self._key_of(values)


_STATS_COLUMNS = tuple(f.name for f in fields(StatsRow) if f.name != "hourly")
_STATS_KEY = (
    "bucket", "window_seconds", "tenant", "service", "provider", "model", "operation", "tool"
)  # fmt: skip
LLM_STATS = TableSpec("llm_stats", _STATS_COLUMNS, _STATS_KEY)
LLM_STATS_HOURLY = TableSpec("llm_stats_hourly", _STATS_COLUMNS, _STATS_KEY)


def _stats_values(row: StatsRow) -> tuple:
    return tuple(
        list(row.exemplar_trace_ids) if name == "exemplar_trace_ids" else getattr(row, name)
        for name in _STATS_COLUMNS
    )


_SESSION_COLUMNS = tuple(f.name for f in fields(SessionRow))
AGENT_SESSIONS = TableSpec(
    "agent_sessions", _SESSION_COLUMNS, ("tenant", "session_id", "started_at")
)
_session_values = attrgetter(*_SESSION_COLUMNS)
PIPELINE_COUNTERS = TableSpec("pipeline_counters", ("name", "worker", "value"), ("name", "worker"))


def route(row: Any) -> Iterable[tuple[TableSpec, tuple]]:
    """The table and column values of each database row a record becomes."""
    if isinstance(row, StatsRow):
        yield (LLM_STATS_HOURLY if row.hourly else LLM_STATS), _stats_values(row)
    elif isinstance(row, SessionRow):
        yield AGENT_SESSIONS, _session_values(row)
    elif isinstance(row, CountersRow):
        for name, value in row.values:
            yield PIPELINE_COUNTERS, (name, row.shard, value)


class TimescaleWriter:
    """Write typed rows to TimescaleDB.

    Not thread-safe: one writer per Bytewax worker.
    """

    def __init__(
        self,
        url: str,
        *,
        batch_rows: int = 5000,
        backoff: Backoff | None = None,
        connect_timeout_s: float = 10.0,
        router: Callable[[Any], Iterable[tuple[TableSpec, tuple]]] = route,
    ):
        self._url = url
        self._batch_rows = batch_rows
        self._backoff = backoff or Backoff()
        self._connect_timeout = int(max(connect_timeout_s, 1))
        self._router = router
        self._conn: psycopg.Connection | None = None
        self._staged: set[str] = set()
        self.rows_written = 0
        self.retries = 0

    # --- connection ----------------------------------------------------------------

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self._url, connect_timeout=self._connect_timeout, application_name="observatory"
            )
            self._staged.clear()
        return self._conn

    def _drop_connection(self, _exc: BaseException) -> None:
        self.retries += 1
        if self._conn is not None:
            with contextlib.suppress(Exception):  # already broken; nothing more to do
                self._conn.close()
        self._conn = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- writing -------------------------------------------------------------------

    def write(self, rows: Iterable[Any]) -> int:
        """Upsert rows; returns how many distinct rows were written."""
        by_table: dict[str, tuple[TableSpec, dict[tuple, tuple]]] = {}
        for row in rows:
            for spec, values in self._router(row):
                # The last version of a row in a batch wins (ON CONFLICT cannot
                # touch one row twice in a statement).
                by_table.setdefault(spec.table, (spec, {}))[1][spec.row_key(values)] = values
        written = 0
        for spec, keyed in by_table.values():
            values = list(keyed.values())
            for start in range(0, len(values), self._batch_rows):
                chunk = values[start : start + self._batch_rows]
                retry(
                    lambda spec=spec, chunk=chunk: self._upsert(spec, chunk),
                    what=f"writing {len(chunk)} rows to {spec.table}",
                    retryable=(psycopg.OperationalError, psycopg.InterfaceError),
                    backoff=self._backoff,
                    on_retry=self._drop_connection,
                )
                written += len(chunk)
        self.rows_written += written
        return written

    def _upsert(self, spec: TableSpec, values: list[tuple]) -> None:
        conn = self._connection()
        stage = sql.Identifier(f"_stage_{spec.table}")
        target = sql.Identifier(spec.table)
        columns = sql.SQL(", ").join(map(sql.Identifier, spec.columns))
        updates = sql.SQL(", ").join(
            sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c))
            for c in (*spec.columns, "updated_at")
            if c not in spec.key
        )
        with conn.transaction(), conn.cursor() as cur:
            if spec.table not in self._staged:
                cur.execute(
                    sql.SQL(
                        "CREATE TEMP TABLE IF NOT EXISTS {stage} "
                        "(LIKE {target} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
                    ).format(stage=stage, target=target)
                )
                self._staged.add(spec.table)
            with cur.copy(
                sql.SQL("COPY {stage} ({cols}) FROM STDIN").format(stage=stage, cols=columns)
            ) as copy:
                for row in values:
                    copy.write_row(row)
            cur.execute(
                sql.SQL(
                    "INSERT INTO {target} ({cols}, updated_at) SELECT {cols}, now() FROM {stage} "
                    "ON CONFLICT ({key}) DO UPDATE SET {updates}"
                ).format(
                    target=target,
                    cols=columns,
                    stage=stage,
                    key=sql.SQL(", ").join(map(sql.Identifier, spec.key)),
                    updates=updates,
                )
            )


class _TimescalePartition(StatelessSinkPartition[Any]):
    def __init__(self, writer: TimescaleWriter):
        self._writer = writer

    def write_batch(self, items: list[Any]) -> None:
        self._writer.write(items)

    def close(self) -> None:
        self._writer.close()


class TimescaleSink(DynamicSink[Any]):
    """Bytewax sink: one :class:`TimescaleWriter` per worker."""

    def __init__(self, url: str, **writer_options: Any):
        self._url = url
        self._options = writer_options

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _TimescalePartition:
        return _TimescalePartition(TimescaleWriter(self._url, **self._options))


#: Hypertables whose old chunks the retention job drops.
RETAINED_TABLES = ("llm_stats", "llm_stats_hourly", "agent_sessions")


def drop_old_chunks(
    conn: psycopg.Connection, older_than_days: int, tables: Sequence[str] = RETAINED_TABLES
) -> dict[str, int]:
    """Drop whole chunks older than the horizon (TimescaleDB ``drop_chunks``, Apache edition).

    Returns how many chunks each table lost. Whole chunks only: a chunk that
    straddles the horizon is kept until all of it is older.
    """
    dropped = {}
    for table in tables:
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()[0]
        if not exists:
            continue
        rows = conn.execute(
            "SELECT drop_chunks(%s::regclass, older_than => now() - make_interval(days => %s))",
            (table, older_than_days),
        ).fetchall()
        dropped[table] = len(rows)
    return dropped


class RetentionJob:
    """Runs :func:`drop_old_chunks` now and then every ``interval_s`` in a daemon thread."""

    def __init__(self, url: str, older_than_days: int, *, interval_s: float = 3600.0):
        import threading

        self._url = url
        self._days = older_than_days
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="retention", daemon=True)

    def start(self) -> RetentionJob:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True) as conn:
                    dropped = drop_old_chunks(conn, self._days)
                if any(dropped.values()):
                    log.info("retention: dropped chunks older than %sd: %s", self._days, dropped)
            except psycopg.Error as exc:
                log.warning("retention: %s", str(exc).strip().splitlines()[0] if str(exc) else exc)
            self._stop.wait(self._interval)
