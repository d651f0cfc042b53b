"""The tool dimension against the real services.

* Migration 0006 on a database that already holds aggregates: old rows keep
  their values (tool = ''), and rows of the same old key but different tools
  are kept apart by the new unique key.
* ``observatory detect`` replaying stored tool rows finds the failing tool.
* A span stream in which one tool of one service starts failing → Kafka → the
  flow → ``llm_stats`` rows per tool in TimescaleDB, equal to the pandas
  ground truth, and an ``error_surge`` alert naming the tool, with its
  observed and expected error rates, in ``anomalies`` and at PagerDuty.
"""

from __future__ import annotations

import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import psycopg
import pytest
from support import produce, run_flow, write_config
from test_database import stats_row
from test_end_to_end import compare_stats, stored

from observatory.flows.config import parse_config
from observatory.flows.evaluate import alert_facts
from observatory.flows.groundtruth import calls_frame, window_stats
from observatory.flows.receiver import AlertReceiver
from observatory.flows.replay import replay
from observatory.flows.simulate import Summary, make_records
from observatory.flows.traffic import MINUTE_NS, NS, Incident, Simulator
from observatory.schemas import migrations
from observatory.sinks.timescale import TimescaleWriter

# --- migration 0006 on existing data --------------------------------------------------------


@pytest.fixture
def old_schema(database_url):
    """A schema migrated to 0005 only (the database before the tool column), dropped after."""
    name = f"pre_tool_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
        conn.execute(f"SET search_path TO {name}, public")
        conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for migration in migrations.available():
            if migration.version < 6:
                conn.execute(migration.sql)
                conn.execute(
                    "INSERT INTO schema_migrations VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
        yield conn, name
        conn.execute(f"DROP SCHEMA {name} CASCADE")


def _insert_old_row(conn, table: str, bucket: datetime, operation: str, calls: int) -> None:
    conn.execute(
        f"INSERT INTO {table} (bucket, window_seconds, tenant, service, provider, model,"
        " operation, calls, errors, input_tokens, output_tokens, cached_input_tokens,"
        " reasoning_tokens, cost_usd, unpriced_calls)"
        " VALUES (%s, 60, 't', 's', '', '', %s, %s, 1, 0, 0, 0, 0, 0, %s)",
        (bucket, operation, calls, calls),
    )


def test_migration_0006_applies_to_a_database_with_data(old_schema, database_url):
    conn, schema = old_schema
    bucket = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)
    for table in ("llm_stats", "llm_stats_hourly"):
        _insert_old_row(conn, table, bucket, "execute_tool", 7)
        _insert_old_row(conn, table, bucket, "invoke_agent", 2)

    applied = migrations.apply(conn, progress=lambda _: None)
    assert [m.version for m in applied] == [6]

    for table in ("llm_stats", "llm_stats_hourly"):
        rows = conn.execute(f"SELECT operation, tool, calls FROM {table} ORDER BY 1").fetchall()
        assert rows == [("execute_tool", "", 7), ("invoke_agent", "", 2)]
        key = conn.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conname = %s AND connamespace = %s::regnamespace",
            (f"{table}_key", schema),
        ).fetchone()[0]
        assert key.endswith("operation, tool)"), key

    # The writer's upsert (ON CONFLICT on the new key) on the migrated tables: per-tool
    # rows of the old key's bucket land beside the old row, and a replay overwrites.
    url = f"{database_url}?options={quote(f'-csearch_path={schema},public')}"
    rows = [
        stats_row(bucket, calls=3, model="", operation="execute_tool", tool="run_sql", errors=2),
        stats_row(bucket, calls=4, model="", operation="execute_tool", tool="search_web"),
    ]
    writer = TimescaleWriter(url)
    writer.write(rows)
    writer.write(rows)
    writer.close()
    got = conn.execute(
        "SELECT tool, calls, errors FROM llm_stats WHERE operation = 'execute_tool' ORDER BY 1"
    ).fetchall()
    assert got == [("", 7, 1), ("run_sql", 3, 2), ("search_web", 4, 0)]
    view = conn.execute("SELECT tool, calls, errors FROM tool_errors_hourly ORDER BY 1").fetchall()
    assert view == [("", 7, 1)]  # the hourly table got no new rows here
    assert migrations.apply(conn, progress=lambda _: None) == []


# --- observatory detect on stored tool rows ---------------------------------------------


def test_replay_of_stored_tool_rows_finds_the_failing_tool(db, database_url):
    rng = random.Random(4)
    start = datetime(2026, 3, 1, tzinfo=UTC)
    rows = []
    for minute in range(120):
        bucket = start + timedelta(minutes=minute)
        for tool in ("run_sql", "search_web"):
            calls = rng.randint(18, 24)
            failing = tool == "run_sql" and 90 <= minute < 95
            errors = calls // 2 if failing else int(rng.random() < 0.3)
            rows.append(
                stats_row(
                    bucket,
                    calls=calls,
                    model="",
                    operation="execute_tool",
                    tool=tool,
                    errors=errors,
                )
            )
    TimescaleWriter(database_url).write(rows)
    config = parse_config({}, env={})
    alerts = replay(db, config, start, start + timedelta(hours=2))
    tool_alerts = [a for a in alerts if a.detector == "tool_error_rate"]
    assert [(a.kind, dict(a.subject)) for a in tool_alerts] == [
        ("error_surge", {"service": "s", "tool": "run_sql"})
    ]
    alert = tool_alerts[0]
    assert start + timedelta(minutes=90) <= alert.window_start < start + timedelta(minutes=93)
    assert alert.observed >= 0.4 and alert.expected < 0.05
    assert "tool=run_sql" in alert.summary


# --- a failing tool, end to end -------------------------------------------------------------

PAGERDUTY_ENV = "OBSERVATORY_TEST_TOOL_PD_KEY"


def _tool_incident_traffic():
    """40 minutes of agent traffic; run_sql of agent-worker fails 80% from minute 25 to 33.

    400 calls a minute keep 12+ run_sql calls a minute on agent-worker at the low
    of the daily cycle, so the surge is clear at any time of day the test runs.
    """
    end_ns = (int(time.time()) // 60 - 5) * MINUTE_NS
    start_ns = end_ns - 40 * MINUTE_NS
    incident = Incident(
        "tool_error_surge",
        start_ns + 25 * MINUTE_NS,
        start_ns + 33 * MINUTE_NS,
        0.8,
        service="agent-worker",
        tool="run_sql",
    )
    sim = Simulator(
        start_ns=start_ns, end_ns=end_ns, calls_per_minute=400, incidents=[incident], seed=17
    )
    spans = sim.generate()
    records = [
        (value, headers)
        for value, headers, _ in make_records(
            spans,
            random.Random(17),
            encoding="mixed",
            max_spans=40,
            malformed_rate=0.0,
            summary=Summary(),
        )
    ]
    return sim, incident, records


def test_a_failing_tool_lands_per_tool_and_raises_an_alert_naming_it(
    tmp_path, topic, dlq_topic, db, database_url, monkeypatch
):
    sim, incident, records = _tool_incident_traffic()
    # Every partition gets data, so that every one reports progress and windows close.
    assert produce(topic, records, partition_of=lambda i: i % 4) == len(records)
    receiver = AlertReceiver().start()
    monkeypatch.setenv(PAGERDUTY_ENV, "t" * 32)
    config = write_config(
        tmp_path,
        topic,
        dlq_topic,
        database_url,
        detectors={"error_surge": {"warmup_windows": 15}},
        alerts={
            "routes": {
                "pd": {
                    "type": "pagerduty",
                    "routing_key_env": PAGERDUTY_ENV,
                    "url": f"{receiver.url}/pagerduty",
                }
            },
            "poll_interval_seconds": 0.2,
        },
    )
    try:
        result = run_flow(config)
        time.sleep(1.0)
    finally:
        receiver.stop()
    assert result.returncode == 0, result.stderr[-3000:]

    # Rows per tool, exactly the ground truth's (which derives the tool key itself).
    truth = calls_frame(sim.truth)
    stats = stored(db, "llm_stats")
    compare_stats(window_stats(truth), stats)
    tools = stats[stats["operation"] == "execute_tool"]
    assert set(tools["tool"]) == {"search_web", "read_file", "run_sql", "call_api", "summarize"}
    assert (stats[stats["operation"] != "execute_tool"]["tool"] == "").all()
    failing = tools[(tools["tool"] == "run_sql") & (tools["service"] == "agent-worker")]
    during = failing["bucket"].between(
        _utc(incident.start_ns + MINUTE_NS), _utc(incident.end_ns - MINUTE_NS)
    )
    assert failing[during]["errors"].sum() / failing[during]["calls"].sum() > 0.6
    assert failing[~during]["errors"].sum() / failing[~during]["calls"].sum() < 0.1

    # The incident: error_surge about (agent-worker, run_sql), opened during the incident.
    anomalies = db.execute(
        "SELECT kind, subject, metric, detected_at FROM anomalies"
        " WHERE detector = 'tool_error_rate' ORDER BY detected_at"
    ).fetchall()
    assert anomalies, "no tool error alert was raised\n" + result.stderr[-3000:]
    assert anomalies == [
        (
            "error_surge",
            {"service": "agent-worker", "tool": "run_sql"},
            "error_rate",
            anomalies[0][3],
        )
    ]
    assert _utc(incident.start_ns) < anomalies[0][3] <= _utc(incident.start_ns + 4 * MINUTE_NS)

    # Its notification, as delivered to PagerDuty: the tool, observed vs expected error rate.
    triggers = [
        m.body["payload"]
        for m in receiver.pagerduty_triggers()
        if alert_facts(m)[0] == "tool_error_surge"
    ]
    assert len(triggers) == 1, [m.body for m in receiver.pagerduty_triggers()]
    details = triggers[0]["custom_details"]
    assert details["dimensions"] == {"service": "agent-worker", "tool": "run_sql"}
    assert details["metric"] == "error_rate"
    assert details["observed"] > 0.3 and details["expected"] < 0.05
    assert "tool=run_sql" in triggers[0]["summary"]
    assert "error_rate observed" in triggers[0]["summary"]


def _utc(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // NS, tz=UTC)
