"""TimescaleDB writer: batched, idempotent upserts with retries.

Each batch is COPYed into a temporary staging table and merged with one
``INSERT … SELECT … ON CONFLICT DO UPDATE`` per table, all in one
transaction. A replayed row overwrites itself with the same values, so the
at-least-once delivery of Bytewax recovery never double counts.

A connection that fails is retried (see :mod:`.base`). A batch the database
refuses for what is *in* it (a value out of range, text it cannot store, an
index entry too big) would fail the same way forever, so it is split in
halves until the refused rows stand alone; those are logged with their key
and the database's reason, counted in ``pipeline_counters`` as
``rows_rejected`` (per sink worker), and the rest of the batch is written.
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
from psycopg import errors, sql

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


#: Errors about the rows themselves, not the connection: retrying cannot help.
BAD_DATA = (errors.DataError, errors.IntegrityError, errors.ProgramLimitExceeded)


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
        worker: str = "sink-0",
    ):
        self._url = url
        self._batch_rows = batch_rows
        self._backoff = backoff or Backoff()
        self._connect_timeout = int(max(connect_timeout_s, 1))
        self._router = router
        self._conn: psycopg.Connection | None = None
        self._staged: set[str] = set()
        self.rows_written = 0
        self.rows_rejected = 0
        self.retries = 0
        #: The ``worker`` of this writer's ``rows_rejected`` counter row.
        self.worker = worker

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
                written += self._write_chunk(spec, values[start : start + self._batch_rows])
        self.rows_written += written
        return written

    def _write_chunk(self, spec: TableSpec, chunk: list[tuple]) -> int:
        """Upsert ``chunk``, retrying outages; rows the database refuses are set aside."""
        try:
            self._retrying(
                lambda: self._upsert(spec, chunk), f"writing {len(chunk)} rows to {spec.table}"
            )
        except BAD_DATA as exc:
            if len(chunk) == 1:
                self._reject(spec, chunk[0], exc)
                return 0
            middle = len(chunk) // 2
            return self._write_chunk(spec, chunk[:middle]) + self._write_chunk(spec, chunk[middle:])
        return len(chunk)

    def _retrying(self, action: Callable[[], None], what: str) -> None:
        retry(
            action,
            what=what,
            retryable=(psycopg.OperationalError, psycopg.InterfaceError),
            permanent=BAD_DATA,
            backoff=self._backoff,
            on_retry=self._drop_connection,
        )

    def _reject(self, spec: TableSpec, values: tuple, exc: psycopg.Error) -> None:
        self.rows_rejected += 1
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        key = repr(spec.row_key(values))
        code = f"SQLSTATE {exc.sqlstate}" if exc.sqlstate else "psycopg, before sending"
        log.error(
            "%s refused a row (%s: %s); skipped it, key %s",
            spec.table,
            code,
            reason,
            key if len(key) <= 300 else key[:300] + "…",
        )
        self._retrying(self._count_rejected, "counting a rejected row")

    def _count_rejected(self) -> None:
        conn = self._connection()
        with conn.transaction():
            conn.execute(
                "INSERT INTO pipeline_counters (name, worker, value) "
                "VALUES ('rows_rejected', %s, 1) ON CONFLICT (name, worker) DO UPDATE "
                "SET value = pipeline_counters.value + 1, updated_at = now()",
                (self.worker,),
            )

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
        # Only now: a failed transaction takes the CREATE TEMP TABLE with it.
        self._staged.add(spec.table)


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
        writer = TimescaleWriter(self._url, worker=f"sink-{worker_index}", **self._options)
        return _TimescalePartition(writer)


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
