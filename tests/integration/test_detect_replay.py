"""`observatory detect`: stored aggregates replayed through a detector config."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from test_database import stats_row

from observatory.flows.config import parse_config
from observatory.flows.replay import replay
from observatory.sinks.timescale import TimescaleWriter


def test_replay_finds_the_spike_a_config_would_alert_on(db, database_url):
    rng = random.Random(3)
    start = datetime(2026, 3, 1, tzinfo=UTC)
    rows = []
    for minute in range(240):
        calls = rng.randint(18, 22)
        row = stats_row(start + timedelta(minutes=minute), calls=calls)
        if 200 <= minute < 206:  # a ×10 spend spike
            row = stats_row(start + timedelta(minutes=minute), calls=calls * 10)
        rows.append(row)
    TimescaleWriter(database_url).write(rows)
    sensitive = parse_config({"detectors": {"cost_spike": {"min_effect": 1.0}}}, env={})
    alerts = replay(db, sensitive, start, start + timedelta(hours=4))
    cost = [a for a in alerts if a.kind == "cost_spike"]
    assert cost, "the spike was not found"
    assert all(
        start + timedelta(minutes=200) <= a.window_start < start + timedelta(minutes=207)
        for a in cost
    )
    blunt = parse_config({"detectors": {"cost_spike": {"min_effect": 1000.0}}}, env={})
    assert not [
        a for a in replay(db, blunt, start, start + timedelta(hours=4)) if a.kind == "cost_spike"
    ]
