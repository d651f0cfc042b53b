"""Simulated OTLP traffic → real Kafka → the flow → real TimescaleDB, checked against pandas."""

from __future__ import annotations

import random
import time

import pandas as pd
import pytest
from support import produce, run_flow, write_config

from observatory.flows.groundtruth import KEY, calls_frame, session_stats, window_stats
from observatory.flows.simulate import NS, Simulator, Summary, make_records

STAT_COLUMNS = [
    "calls",
    "errors",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "reasoning_tokens",
    "unpriced_calls",
]


def simulate(
    calls: int,
    *,
    minutes: float = 30,
    seed: int = 11,
    encoding="mixed",
    malformed_rate=0.0,
    max_spans=25,
    end: float | None = None,
):
    end = time.time() if end is None else end
    sim = Simulator(
        calls=calls, start_ns=int((end - minutes * 60) * NS), end_ns=int(end * NS), seed=seed
    )
    spans = sim.generate()
    summary = Summary()
    records = [
        (v, h)
        for v, h, _ in make_records(
            spans,
            random.Random(seed),
            encoding=encoding,
            max_spans=max_spans,
            malformed_rate=malformed_rate,
            summary=summary,
        )
    ]
    return sim, records, summary


def stored(db, table: str) -> pd.DataFrame:
    cur = db.execute(f"SELECT * FROM {table}")
    return pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])


def compare_stats(expected: pd.DataFrame, actual: pd.DataFrame) -> None:
    key = KEY  # bucket, tenant, service, provider, model, operation, tool
    actual = actual.copy()
    actual["bucket"] = pd.to_datetime(actual["bucket"], utc=True)
    merged = expected.merge(actual, on=key, how="outer", suffixes=("_exp", "_act"), indicator=True)
    missing = merged[merged["_merge"] != "both"]
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        shown = missing[[*key, "calls_exp", "calls_act", "_merge"]].head(20)
        assert missing.empty, f"{len(missing)} rows only on one side:\n{shown}"
    for column in STAT_COLUMNS:
        assert (merged[f"{column}_exp"] == merged[f"{column}_act"]).all(), column
    assert ((merged["cost_usd_exp"] - merged["cost_usd_act"]).abs() <= 1e-9).all()
    assert ((merged["latency_max_ms_exp"] - merged["latency_max_ms_act"]).abs() <= 1e-6).all()
    for column in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "ttft_p95_ms"):
        exp, act = merged[f"{column}_exp"], merged[f"{column}_act"]
        assert (exp.isna() == act.isna()).all(), column
        both = exp.notna()
        rel = (exp[both] - act[both]).abs() / exp[both].clip(lower=1e-9)
        assert (rel <= 0.01).all(), f"{column}: worst relative error {rel.max():.4f}"


def test_simulated_traffic_lands_exactly_in_timescaledb(
    tmp_path, topic, dlq_topic, db, database_url
):
    sim, records, _summary = simulate(4000, malformed_rate=0.0)
    assert produce(topic, records) == len(records)
    config = write_config(tmp_path, topic, dlq_topic, database_url)

    result = run_flow(config)
    assert result.returncode == 0, result.stderr[-3000:]

    truth = calls_frame(sim.truth)
    expected_stats = window_stats(truth)
    assert len(expected_stats) > 500 and truth["model"].nunique() >= 6
    # Tool calls are rows per tool (the simulator's five tools), with their errors.
    assert (expected_stats[expected_stats["operation"] == "execute_tool"]["tool"] != "").all()
    assert expected_stats["tool"].nunique() == 6 and expected_stats["errors"].sum() > 0
    compare_stats(expected_stats, stored(db, "llm_stats"))

    # Hourly rows: exact sums of the same calls per hour.
    hourly = stored(db, "llm_stats_hourly")
    expected_hourly = window_stats(truth, window_s=3600)
    assert len(hourly) == len(expected_hourly)
    assert hourly["calls"].sum() == len(truth)
    assert abs(hourly["cost_usd"].sum() - truth["cost_usd"].fillna(0).sum()) < 1e-6

    # Sessions: counts and sums per conversation.
    sessions = stored(db, "agent_sessions").set_index(["tenant", "session_id"]).sort_index()
    expected = session_stats(truth).set_index(["tenant", "session_id"]).sort_index()
    assert list(sessions.index) == list(expected.index)
    for column in ("llm_calls", "tool_calls", "input_tokens", "output_tokens"):
        assert (sessions[column] == expected[column]).all(), column
    assert ((sessions["cost_usd"] - expected["cost_usd"]).abs() <= 1e-9).all()

    # Every span is accounted for.
    counters = dict(
        db.execute(
            "SELECT name, sum(value)::bigint FROM pipeline_counters GROUP BY name"
        ).fetchall()
    )
    assert counters["records"] == len(records)
    assert counters["spans"] == sim.summary.spans
    assert counters["spans_normalized"] == len(sim.truth)
    assert counters["spans_skipped_non_genai"] == sim.summary.non_genai_spans
    assert counters["spans_dead_lettered"] == counters["records_dead_lettered"] == 0
    assert counters["late_calls_dead_lettered"] == 0


@pytest.mark.parametrize("how", ["unknown_key", "kafka_down", "database_down"])
def test_run_fails_with_one_clear_line(tmp_path, topic, dlq_topic, database_url, how):
    sections = {}
    if how == "kafka_down":
        sections["kafka"] = {"bootstrap_servers": "127.0.0.1:1", "connect_timeout_seconds": 2}
    if how == "database_down":
        sections["database"] = {"url": "postgresql://observatory:x@127.0.0.1:1/none"}
    config = write_config(tmp_path, topic, dlq_topic, database_url, **sections)
    if how == "unknown_key":
        config.write_text(config.read_text() + "windows: 5\n")
    result = run_flow(config, timeout=60)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("observatory:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    expected = {
        "unknown_key": "windows: unknown field",
        "kafka_down": "cannot reach Kafka",
        "database_down": "cannot reach the database",
    }[how]
    assert expected in lines[0]
    assert "x@" not in result.stderr  # the password is never printed
