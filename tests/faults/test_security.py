"""Secrets and prompt text never leak; SQL is never built from values; TLS/SASL settings
reach every client.

The leak test runs the flow with alert routes whose URL tokens and routing key are
fresh secrets, a database password that is fresh for this session, spans carrying
prompt and completion text with a unique marker, and an alert receiver whose first
answers are error pages quoting the request. Then it searches everything the run
left behind: the flow's output, every dead letter, every row of every table in the
database, and the messages of the errors a user can meet.
"""

from __future__ import annotations

import random
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
import yaml
from bytewax.connectors.kafka import KafkaSink
from harness import (
    REPO,
    EchoingReceiver,
    Result,
    alert_routes,
    produce,
    read_topic,
    run_flow,
    write_config,
)
from hostile import genai_span, parse, spoiled_with_prompt, with_prompt_text
from psycopg import sql
from sqlcheck import check_source, check_tree
from workload import simulate

from observatory.flows.config import parse_config
from observatory.flows.kafka_io import DeadLetterSink, KafkaBatchSource
from observatory.flows.pipeline import build_flow
from observatory.operators.windows import CountersRow
from observatory.sinks.alerts import AlertConfigError, AlertOutboxSink, build_channels
from observatory.sinks.base import Backoff, GiveUp
from observatory.sinks.timescale import TimescaleSink, TimescaleWriter

PACKAGE = ("flows", "operators", "detectors", "sinks", "schemas")
SASL = {
    "security.protocol": "SASL_SSL",
    "sasl.mechanisms": "SCRAM-SHA-512",
    "sasl.username": "observatory",
    "sasl.password": "kafka-secret-0",
    "ssl.ca.location": "/etc/observatory/kafka-ca.pem",
}
SASL_PLAIN = {
    "security.protocol": "SASL_PLAINTEXT",
    "sasl.mechanisms": "PLAIN",
    "sasl.username": "observatory",
    "sasl.password": SASL["sasl.password"],
}
TLS_URL = (
    "postgresql://observatory:db-secret-0@db.internal:5432/observatory"
    "?sslmode=verify-full&sslrootcert=/etc/observatory/pg-ca.pem"
)
#: A tiny hourly budget per tenant: alerts (and so deliveries) within minutes of traffic.
DETECTORS = {
    "budget": {
        "budgets": [{"name": "tiny", "period": "hour", "group_by": ["tenant"], "limit_usd": 0.01}]
    }
}


def leaks(texts: dict[str, str], needles: dict[str, str]) -> list[str]:
    """Which needle (by name) appears in which text (by name)."""
    return [
        f"{needle_name} in {text_name}"
        for text_name, text in texts.items()
        for needle_name, needle in needles.items()
        if needle and needle in text
    ]


def database_dump(database_url: str) -> dict[str, str]:
    """Every row of every table (all schemas but PostgreSQL's own), as text."""
    dump = {}
    with psycopg.connect(database_url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind IN ('r', 'p')"
            " AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
            " AND n.nspname NOT LIKE 'pg_toast%'"
        ).fetchall()
        for schema, name in tables:
            query = sql.SQL("SELECT coalesce(string_agg(t::text, E'\\n'), '') FROM {} t").format(
                sql.Identifier(schema, name)
            )
            try:
                dump[f"table {schema}.{name}"] = conn.execute(query).fetchone()[0]
            except psycopg.errors.InsufficientPrivilege:
                continue  # TimescaleDB's own catalog rows the application cannot read
    return dump


def cli(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "observatory.flows.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def error_messages(
    services, tmp_path: Path, topic: str, env: dict, routes_config: dict
) -> dict[str, str]:
    """What a user sees when things go wrong, with the real secrets configured."""
    out = {}
    password = services.password
    down = write_config(tmp_path / "db-down.yaml", services, topic, "d")
    raw = yaml.safe_load(down.read_text())
    raw["database"]["url"] = f"postgresql://observatory:{password}@127.0.0.1:1/observatory"
    down.write_text(yaml.safe_dump(raw))
    result = cli("run", "--config", str(down), "--stop-at-end")
    assert result.returncode == 2 and "cannot reach the database" in result.stderr
    out["run with the database unreachable"] = result.stdout + result.stderr

    for name, client, expected in (
        ("SASL against a plaintext broker", SASL_PLAIN, "cannot reach Kafka"),
        ("SASL_SSL with a missing CA file", SASL, "invalid Kafka client settings"),
    ):
        sasl = write_config(tmp_path / "sasl.yaml", services, topic, "d", kafka={"client": client})
        raw = yaml.safe_load(sasl.read_text())
        raw["kafka"]["connect_timeout_seconds"] = 3
        sasl.write_text(yaml.safe_dump(raw))
        result = cli("run", "--config", str(sasl), "--stop-at-end")
        assert result.returncode == 2 and expected in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        out[f"run with {name}"] = result.stdout + result.stderr

    checked = write_config(
        tmp_path / "check.yaml", services, topic, "d", kafka={"client": SASL}, alerts=routes_config
    )
    result = cli("config", "check", str(checked), env=env)
    assert result.returncode == 0, result.stderr
    out["config check"] = result.stdout + result.stderr

    try:
        build_channels(parse_config({"alerts": routes_config}).alerts, env={})
    except AlertConfigError as exc:
        out["missing route secret"] = str(exc)
    writer = TimescaleWriter(
        f"postgresql://observatory:{password}@127.0.0.1:1/observatory_test",
        backoff=Backoff(initial_s=0.05, max_s=0.1, deadline_s=0.3),
        connect_timeout_s=1,
    )
    with pytest.raises(GiveUp) as raised:
        writer.write([CountersRow("shard-0", (("records", 1),))])
    out["database write giving up"] = f"{raised.type.__name__}: {raised.value}"
    return out


def test_no_secret_or_prompt_text_anywhere(
    services, database_url, new_topic, tmp_path, record_result
):
    marker = f"PROMPT{uuid.uuid4().hex}TEXT"
    work = simulate(calls=4000, minutes=40, seed=13)
    records = [(with_prompt_text(v, marker), h) for v, h in work.records]
    rng = random.Random(13)
    usable = [v for v, _ in work.records if genai_span(parse(v))]
    bad = [(spoiled_with_prompt(rng.choice(usable), marker), []) for _ in range(20)]
    receiver = EchoingReceiver(failures=4).start()
    try:
        routes = alert_routes(receiver.url, tmp_path)
        topic, dlq = new_topic(), new_topic(1)
        produce(services.bootstrap, topic, records + bad)
        config = write_config(
            tmp_path / "flow.yaml", services, topic, dlq, alerts=routes.config, detectors=DETECTORS
        )
        flow = run_flow(config, tmp_path / "flow.log", env=routes.env)
        dead = read_topic(services.bootstrap, dlq)
        errors = error_messages(services, tmp_path, topic, routes.env, routes.config)
    finally:
        receiver.stop()

    texts = {"flow output": flow.text(), **database_dump(database_url), **errors}
    texts["dead-letter values and headers"] = "\n".join(
        repr(m.value()) + repr(m.headers()) for m in dead
    )
    dead_headers = "\n".join(repr(m.headers()) for m in dead)
    secrets = {
        "slack URL token": routes.secrets[0],
        "PagerDuty routing key": routes.secrets[1],
        "webhook URL token": routes.secrets[2],
        "database password": services.password,
        "SASL password": SASL["sasl.password"],
    }
    prompt_checked = {k: v for k, v in texts.items() if k != "dead-letter values and headers"}
    found = leaks(texts, secrets) + leaks(
        {**prompt_checked, "dead-letter headers": dead_headers}, {"prompt text": marker}
    )

    # The run really used what is searched for; otherwise finding nothing means nothing.
    paths = " ".join(m.path for m in receiver.messages)
    assert routes.secrets[0] in paths and routes.secrets[2] in paths
    assert any(m.body.get("routing_key") == routes.secrets[1] for m in receiver.messages)
    assert any(marker.encode() in m.value() for m in dead), "no dead letter carried the prompt"
    with psycopg.connect(database_url) as conn:
        echoed = conn.execute(
            "SELECT count(*) FROM alert_deliveries WHERE error LIKE '%upstream error for%'"
        ).fetchone()[0]
    assert echoed >= 1, "no error page quoting a secret was recorded"
    assert leaks({"x": f"a{marker}b"}, {"m": marker}) == ["m in x"]

    result = record_result(
        Result(
            scenario="security (leak search)",
            spans=work.spans,
            records=len(records) + len(bad),
            faults=f"4 error pages quoting secrets, {len(errors)} error paths",
            notes={
                "texts_searched": len(texts),
                "characters_searched": sum(map(len, texts.values())),
                "secrets": len(secrets),
                "dead_letters": len(dead),
                "leaks": found,
            },
        )
    )
    result.rows_checked = sum(t.count("\n") + 1 for k, t in texts.items() if k.startswith("table"))
    assert not found, found


def test_no_sql_is_built_from_values():
    findings = check_tree(REPO, PACKAGE)
    assert not findings, "\n".join(map(str, findings))
    # The check finds the real thing (each of these is an injection):
    violations = """
def f(cur, user, table):
    cur.execute(f"SELECT * FROM t WHERE id = {user}")
    cur.execute("SELECT * FROM t WHERE name = '%s'" % user)
    cur.execute("DELETE FROM {} WHERE x = 1".format(table))
    cur.execute("UPDATE t SET a = 1 WHERE b = '" + user + "'")
    query = f"INSERT INTO t VALUES ({user})"
    cur.execute(sql.SQL(f"SELECT * FROM {table}"))
"""
    assert [f.line for f in check_source(violations)] == [3, 4, 5, 6, 7, 8, 8]
    # ... and passes what is safe: parameters, sql composition, module constants.
    safe = """
_KEY = "a = %s"
_MARK = f"UPDATE t SET b = 1 WHERE {_KEY}"
TABLES = ("x", "y")
def f(cur, user, table):
    cur.execute("SELECT * FROM t WHERE id = %s", (user,))
    cur.execute(_MARK, (user,))
    cur.execute("TRUNCATE " + ", ".join(TABLES))
    cur.execute(sql.SQL("SELECT * FROM {} WHERE x = %s").format(sql.Identifier(table)), (user,))
    print(f"  SELECT * FROM {table};")
"""
    assert check_source(safe) == []


def test_kafka_and_postgres_tls_settings_reach_every_client(monkeypatch):
    config = parse_config(
        {
            "kafka": {"bootstrap_servers": "broker.internal:9093", "client": SASL},
            "database": {"url": TLS_URL},
            "detectors": DETECTORS,
        }
    )
    # build_flow asks the broker for the partitions; that is all it needs from it here.
    monkeypatch.setattr(KafkaBatchSource, "list_parts", lambda self: ["otlp_spans-0"])
    steps = list(walk(build_flow(config, stop_at_end=True)))
    sources = [s.source for s in steps if hasattr(s, "source")]
    sinks = [s.sink for s in steps if hasattr(s, "sink")]

    assert sources and all(isinstance(s, KafkaBatchSource) for s in sources)
    for source in sources:
        assert SASL.items() <= source._config.items()
        assert source._config["bootstrap.servers"] == "broker.internal:9093"
        consumer_config = {**source._config}  # what build_part hands to each Consumer
        assert SASL.items() <= consumer_config.items()
    # Dead letters: bytewax's KafkaSink (extra settings in _add_config) or ours.
    kafka_sinks = [s for s in sinks if isinstance(s, KafkaSink | DeadLetterSink)]
    assert kafka_sinks
    for sink in kafka_sinks:
        settings = sink._add_config if isinstance(sink, KafkaSink) else sink._config
        assert SASL.items() <= settings.items()
    database_sinks = [s for s in sinks if isinstance(s, TimescaleSink | AlertOutboxSink)]
    assert len(database_sinks) == 2 and all(s._url == TLS_URL for s in database_sinks)


def test_postgres_sslmode_reaches_libpq(services, tmp_path):
    """The URL's libpq parameters are used as given: `sslmode=require` against this
    (TLS-less) server fails the way libpq says, instead of silently going plain."""
    config = write_config(tmp_path / "tls.yaml", services, "t", "d")
    raw = yaml.safe_load(config.read_text())
    raw["database"]["url"] = services.database_url + "?sslmode=require"
    config.write_text(yaml.safe_dump(raw))
    result = cli("migrate", "--config", str(config))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "server does not support SSL" in result.stderr
    assert services.password not in result.stdout + result.stderr


def walk(flow):
    for step in flow.substeps:
        yield step
        yield from walk(step)
