"""Exactness under restarts, parallelism and late data (≥ 100k spans, real services)."""

from __future__ import annotations

import json
import random
import signal
import socket
import subprocess
import sys
import time

import pytest
from support import produce, run_flow, write_config
from test_dead_letters import read_all
from test_end_to_end import compare_stats, simulate, stored

from observatory.flows.groundtruth import calls_frame, session_stats, window_stats
from observatory.flows.simulate import NS, Summary, make_records


@pytest.fixture(scope="module")
def workload():
    """~100k spans of mixed-dialect traffic over 3 hours of event time."""
    # Ends at the last midnight UTC: the daily cycle, so the span count, is the same
    # whatever the hour the suite runs at.
    last_midnight = time.time() // 86400 * 86400
    sim, records, _ = simulate(
        68_000, minutes=180, seed=5, encoding="otlp_proto", max_spans=50, end=last_midnight
    )
    assert sim.summary.spans >= 100_000
    return sim, records


def check_against_truth(db, sim) -> None:
    truth = calls_frame(sim.truth)
    compare_stats(window_stats(truth), stored(db, "llm_stats"))
    hourly = stored(db, "llm_stats_hourly")
    compare_stats(window_stats(truth, window_s=3600), hourly)
    sessions = stored(db, "agent_sessions").set_index(["tenant", "session_id"]).sort_index()
    expected = session_stats(truth).set_index(["tenant", "session_id"]).sort_index()
    assert list(sessions.index) == list(expected.index)
    assert (sessions["llm_calls"] == expected["llm_calls"]).all()
    assert (sessions["tool_calls"] == expected["tool_calls"]).all()


def start_flow(config, *extra):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "observatory.flows.cli",
            "run",
            "--config",
            str(config),
            "--stop-at-end",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigkill_mid_stream_then_restart_gives_exact_tables(
    tmp_path, topic, dlq_topic, db, database_url, workload
):
    sim, records = workload
    produce(topic, records)
    config = write_config(tmp_path, topic, dlq_topic, database_url)
    rng = random.Random(42)
    kills = 0
    for _ in range(5):
        proc = start_flow(config)
        time.sleep(rng.uniform(1.0, 3.5))
        if proc.poll() is not None:
            break  # finished before we could kill it
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    assert kills >= 3, "the flow finished too fast to be killed three times"
    final = run_flow(config, timeout=600)
    assert final.returncode == 0, final.stderr[-3000:]
    check_against_truth(db, sim)


def _free_ports(n: int) -> list[int]:
    """n distinct free ports (all sockets held until every port is chosen)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.mark.parametrize("layout", ["two_processes", "two_workers"])
def test_parallel_runs_match_the_single_worker_truth(
    tmp_path, topic, dlq_topic, db, database_url, workload, layout
):
    sim, records = workload
    produce(topic, records)
    config = write_config(tmp_path, topic, dlq_topic, database_url)
    if layout == "two_workers":
        result = run_flow(config, "--workers", "2", timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
    else:
        addresses = ";".join(f"127.0.0.1:{port}" for port in _free_ports(2))
        procs = [start_flow(config, "-a", addresses, "-i", str(i)) for i in range(2)]
        for proc in procs:
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err[-3000:]
    check_against_truth(db, sim)


def test_late_data_becomes_corrections_or_counted_dead_letters(
    tmp_path, topic, dlq_topic, db, database_url
):
    sim, records, _ = simulate(3000, minutes=30, seed=9, encoding="otlp_proto")
    # Everything on one partition, so event time arrives in order.
    produce(topic, records, partition_of=lambda i: 0)
    config = write_config(
        tmp_path,
        topic,
        dlq_topic,
        database_url,
        pipeline={"allowed_lateness_seconds": 120, "watermark_delay_seconds": 5},
    )
    assert run_flow(config).returncode == 0

    end_ns = max(c.end_ns for c in sim.truth)
    # Traffic that arrives after the first run: one slice slightly late (within the
    # allowed lateness), one far too late.
    slightly = _late_traffic(ending_at=end_ns - 60 * NS, seed=10)
    far = _late_traffic(ending_at=end_ns - 20 * 60 * NS, seed=11)
    produce(topic, slightly[0] + far[0], partition_of=lambda i: 0)
    assert run_flow(config).returncode == 0

    counters = dict(
        db.execute(
            "SELECT name, sum(value)::bigint FROM pipeline_counters GROUP BY name"
        ).fetchall()
    )
    truth = calls_frame(sim.truth + slightly[1])
    far_calls = len(far[1])
    assert counters["late_calls_dead_lettered"] == far_calls
    assert counters["late_corrections"] > 0
    compare_stats(window_stats(truth), stored(db, "llm_stats"))

    # The far-too-late calls are in the dead-letter topic, counted.
    late_records = [
        m
        for m in read_all(dlq_topic, idle_s=10.0)
        if dict(m.headers() or []).get("observatory.reason") == b"too_late"
    ]
    assert sum(json.loads(m.value())["calls"] for m in late_records) == far_calls


def _late_traffic(*, ending_at: int, seed: int):
    """One minute of traffic ending at ``ending_at``; returns (records, truth)."""
    from observatory.flows.simulate import Simulator

    sim = Simulator(calls=200, start_ns=ending_at - 60 * NS, end_ns=ending_at, seed=seed)
    spans = sim.generate()
    records = [
        (v, h)
        for v, h, _ in make_records(
            spans,
            random.Random(seed),
            encoding="otlp_proto",
            max_spans=10,
            malformed_rate=0,
            summary=Summary(),
        )
    ]
    return records, sim.truth
